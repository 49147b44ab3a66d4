//! The process tree: fork, exec and exit, followed through descendants.
use std::time::Duration;

use serde_json::{Value, json};
use tracer_tests::{
    Checks, EventExt, Tracer, Workload, position, require_root, test_pid, workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

fn getppid() -> u32 {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() as u32 }
}

#[test]
fn fork_exec_exit_with_code() {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let t = Tracer::for_test(&["--events", "process"]);
    let mut w = Workload::spawn(&mut workload!("exit", "--code", 7));
    let wp = w.pid();
    assert_eq!(w.wait().code(), Some(7));
    t.wait_for("the child's exit", |e| e.is("exit", wp));
    let ev = t.stop().events;
    let mut k = Checks::new();
    k.find_with(
        "this process forking the child",
        &ev,
        |e| e.kind() == "fork" && e["child_pid"] == wp,
        json!({"pid": me, "ppid": getppid()}),
    );
    k.find_with(
        "the child's exec",
        &ev,
        |e| e.is("exec", wp),
        json!({
            "comm": "workload", "ppid": me, "filename": WORKLOAD,
            "args": [WORKLOAD, "exit", "--code", "7"],
        }),
    );
    k.find_with(
        "the child's exit",
        &ev,
        |e| e.is("exit", wp),
        json!({
            "comm": "workload", "ppid": me, "exit_code": 7, "signal": Value::Null,
            "signal_name": Value::Null,
        }),
    );
    let fork = position(&ev, |e| e.kind() == "fork" && e["child_pid"] == wp);
    let exec = position(&ev, |e| e.is("exec", wp));
    let exit = position(&ev, |e| e.is("exit", wp));
    k.that(
        matches!((fork, exec, exit), (Some(a), Some(b), Some(c)) if a < b && b < c),
        "fork, exec, exit in that order",
    );
    k.finish(&ev);
}

/// A grandchild forked (without exec) by a child is followed too, with the right parent.
#[test]
fn grandchildren_are_followed() {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let t = Tracer::for_test(&["--events", "process"]);
    let mut w = Workload::spawn(&mut workload!("fork-exit", "--code", 7));
    let wp = w.pid();
    let reaped = w.expect("reaped");
    let gp = reaped["child"].as_u64().unwrap() as u32;
    assert_eq!(reaped["status"], 7 << 8, "grandchild exit status");
    assert!(w.wait().success());
    t.wait_for("the child's exit", |e| e.is("exit", wp));
    let ev = t.stop().events;
    let mut k = Checks::new();
    k.find_with(
        "the child forking the grandchild",
        &ev,
        |e| e.is("fork", wp),
        json!({"child_pid": gp, "comm": "workload", "ppid": me}),
    );
    k.find_with(
        "the grandchild's exit",
        &ev,
        |e| e.is("exit", gp),
        json!({"exit_code": 7, "comm": "workload", "ppid": wp}),
    );
    k.find_with(
        "the child's exit",
        &ev,
        |e| e.is("exit", wp),
        json!({"exit_code": 0, "ppid": me}),
    );
    k.finish(&ev);
}

/// `--pid P` covers P's descendants that already exist when the tracer starts, not only those
/// forked later.
#[test]
fn descendants_started_before_the_tracer_are_followed() {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let mut w = Workload::spawn(&mut workload!("idle"));
    let wp = w.pid();
    w.expect("ready");
    let t = Tracer::for_test(&["--events", "process"]);
    w.send("exit 5");
    assert_eq!(w.wait().code(), Some(5));
    let exit = t.try_wait_for(Duration::from_secs(5), |e| e.is("exit", wp));
    let ev = t.stop().events;
    let mut k = Checks::new();
    match exit {
        Some(e) => k.fields(
            "the child's exit",
            &e,
            json!({"exit_code": 5, "comm": "workload", "ppid": me}),
        ),
        None => k.that(
            false,
            format!("the exit of child {wp}, started before the tracer: no such event"),
        ),
    }
    k.finish(&ev);
}
