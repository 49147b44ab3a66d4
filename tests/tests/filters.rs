//! `--events`, `--comm` and `--pid`: what is selected, and that nothing else leaks through.
use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::process::ExitStatusExt,
    time::Duration,
};

use serde_json::{Value, json};
use tracer_tests::{Checks, EventExt, Tracer, Workload, require_root, test_pid, workload};

/// A loopback connection opened, used and closed inside this process.
fn tcp_exchange() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut s, _) = l.accept().unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    drop(c);
    drop(s);
}

fn kinds(ev: &[Value]) -> BTreeSet<String> {
    ev.iter().map(|e| e.kind().to_owned()).collect()
}

/// `--events process` shows the process tree and nothing of a TCP exchange happening at the
/// same time.
#[test]
fn events_selects_process_only() {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test(&["--events", "process"]);
    tcp_exchange();
    let mut w = Workload::spawn(&mut workload!("exit", "--code", 0));
    let wp = w.pid();
    assert!(w.wait().success());
    t.wait_for("the child's exit", |e| e.is("exit", wp));
    let ev = t.stop().events;
    let seen = kinds(&ev);
    let mut k = Checks::new();
    k.that(
        seen.iter()
            .all(|k| ["fork", "exec", "exit"].contains(&k.as_str())),
        format!("only process events, got kinds {seen:?}"),
    );
    for kind in ["fork", "exec", "exit"] {
        k.that(seen.contains(kind), format!("a {kind} event"));
    }
    k.finish(&ev);
}

/// `--events signal`: the signal, not the fork/exec/exit around it.
#[test]
fn events_selects_signal_only() {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test(&["--events", "signal"]);
    let mut w = Workload::spawn(&mut workload!("idle"));
    let wp = w.pid();
    w.expect("ready");
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait().signal(), Some(libc::SIGTERM));
    tcp_exchange();
    t.wait_for("the SIGTERM", |e| {
        e.kind() == "signal" && e["target_pid"] == wp
    });
    let ev = t.stop().events;
    let seen = kinds(&ev);
    let mut k = Checks::new();
    k.that(
        seen.iter().all(|k| k == "signal"),
        format!("only signal events, got kinds {seen:?}"),
    );
    k.finish(&ev);
}

/// `--pid P --events tcp`: P's children are followed even though fork events are not shown.
#[test]
fn pid_filter_follows_children_without_process_events() {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test(&["--events", "tcp"]);
    let mut w = Workload::spawn(&mut workload!("accept-emfile", "--bind", "127.0.0.1:0"));
    let wp = w.pid();
    let truth = w.expect("emfile");
    w.close_stdin();
    assert!(w.wait().success());
    let acc = t.try_wait_for(Duration::from_secs(5), |e| {
        e.is("tcp_accept", wp) && e.get("error").is_some()
    });
    let ev = t.stop().events;
    let mut k = Checks::new();
    match acc {
        Some(a) => k.fields(
            "the child's failed accept",
            &a,
            json!({"error": "EMFILE", "listen_fd": truth["listen_fd"]}),
        ),
        None => k.that(
            false,
            format!("tcp_accept of child {wp} (forked after the tracer started): no such event"),
        ),
    }
    k.that(
        kinds(&ev)
            .iter()
            .all(|k| k.starts_with("tcp_") || k.starts_with("socket_") || k.starts_with("conn_")),
        format!("only TCP events, got kinds {:?}", kinds(&ev)),
    );
    k.finish(&ev);
}

/// `--comm workload` (with `--pid` of this test): the workload's events, none of this
/// process's own (its threads are named after the tests).
#[test]
fn comm_selects_by_process_name() {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let t = Tracer::for_test(&["--comm", "workload"]);
    tcp_exchange();
    let mut w = Workload::spawn(&mut workload!("exit", "--code", 3));
    let wp = w.pid();
    assert_eq!(w.wait().code(), Some(3));
    t.wait_for("the workload's exit", |e| e.is("exit", wp));
    let ev = t.stop().events;
    let mut k = Checks::new();
    k.find_with(
        "the workload's exec",
        &ev,
        |e| e.is("exec", wp),
        json!({"comm": "workload", "ppid": me}),
    );
    k.find_with(
        "the workload's exit",
        &ev,
        |e| e.is("exit", wp),
        json!({"exit_code": 3}),
    );
    for e in &ev {
        let target_matches = e.kind() == "signal" && e["target_comm"] == "workload";
        k.that(
            e["comm"] == "workload" || target_matches,
            format!("only the workload's events: {e}"),
        );
    }
    k.that(
        !ev.iter().any(|e| e.pid() == me),
        "nothing from this process (its comm differs)",
    );
    k.finish(&ev);
}
