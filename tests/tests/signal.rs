//! Signals: who sent what to whom, and how the target died.
use std::{os::unix::process::ExitStatusExt, time::Duration};

use serde_json::{Value, json};
use tracer_tests::{
    Checks, EventExt, Tracer, Workload, position, require_root, test_pid, workload,
};

/// The kernel's comm of the calling thread (the sender's `comm` in signal events): libtest
/// names each test's thread after the test.
fn thread_comm() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// This test kills a child with `sig`: the signal event names this process as the sender and
/// the child as the target, and the child's exit names the signal.
fn kill_child(sig: i32, name: &str) {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let t = Tracer::for_test(&["--events", "signal,process"]);
    let mut w = Workload::spawn(&mut workload!("idle"));
    let wp = w.pid();
    w.expect("ready");
    w.signal(sig);
    let status = w.wait();
    assert_eq!(status.signal(), Some(sig), "the child died of {name}");
    t.wait_for("the child's exit", |e| e.is("exit", wp));
    let stopped = t.stop();
    let ev = stopped.events;
    let mut k = Checks::new();
    // The analysis names the sender of a fatal signal.
    k.find_with(
        "the signal_source finding",
        &stopped.findings,
        |f| f.kind() == "signal_source" && f["target_pid"] == wp,
        json!({
            "sender_pid": me, "target_comm": "workload", "signal": name, "count": 1,
            "from_kernel": false,
        }),
    );
    k.find_with(
        "the signal sent by this test",
        &ev,
        |e| e.kind() == "signal" && e["target_pid"] == wp,
        json!({
            "pid": me, "tid": gettid(), "comm": thread_comm(), "signal": sig,
            "signal_name": name, "target_comm": "workload", "code": 0, "from_kernel": false,
            "result": 0,
        }),
    );
    k.find_with(
        "the child's exit",
        &ev,
        |e| e.is("exit", wp),
        json!({
            "comm": "workload", "ppid": me, "exit_code": Value::Null, "signal": sig,
            "signal_name": name,
        }),
    );
    let sent = position(&ev, |e| e.kind() == "signal" && e["target_pid"] == wp);
    let exited = position(&ev, |e| e.is("exit", wp));
    k.that(
        matches!((sent, exited), (Some(a), Some(b)) if a < b),
        "the signal comes before the exit",
    );
    // SIGCHLD from the dying child to this process is hidden without --sigchld.
    k.that(
        !ev.iter().any(|e| e.kind() == "signal" && e["signal"] == 17),
        "no SIGCHLD without --sigchld",
    );
    k.finish(&ev);
}

#[test]
fn sigterm_to_a_child() {
    kill_child(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigkill_to_a_child() {
    kill_child(libc::SIGKILL, "SIGKILL");
}

/// With `--sigchld`, a child's exit shows as SIGCHLD from the child to its parent process.
/// The parent here is multi-threaded (libtest runs each test on its own thread, which is the
/// one that forked the child): the target is still this process.
#[test]
fn sigchld_is_shown_with_the_flag() {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let t = Tracer::for_test(&["--events", "signal,process", "--sigchld"]);
    let mut w = Workload::spawn(&mut workload!("exit", "--code", 3));
    let wp = w.pid();
    assert_eq!(w.wait().code(), Some(3));
    t.wait_for("the child's exit", |e| e.is("exit", wp));
    let chld = t.try_wait_for(Duration::from_secs(3), |e| {
        e.kind() == "signal" && e["signal"] == 17
    });
    let ev = t.stop().events;
    let mut k = Checks::new();
    match chld {
        Some(e) => k.fields(
            "SIGCHLD",
            &e,
            json!({
                // The kernel sends SIGCHLD (si_code CLD_EXITED > 0: SI_FROMKERNEL).
                "pid": wp, "comm": "workload", "target_pid": me, "signal_name": "SIGCHLD",
                "from_kernel": true, "code": 1,
            }),
        ),
        None => k.that(
            false,
            format!(
                "SIGCHLD from child {wp} to this process {me} (the forking thread is tid {}): \
                 no such event",
                gettid()
            ),
        ),
    }
    k.finish(&ev);
}
