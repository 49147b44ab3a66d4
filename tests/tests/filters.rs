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

/// What identifies an event in both a live stream and a replay of another tracer's recording of
/// the same moments: everything but the timing (each tracer has its own programs, so the same
/// kernel event reaches each at its own nanosecond and CPU).
fn comparable(e: &Value) -> Value {
    let mut e = e.clone();
    if let Some(m) = e.as_object_mut() {
        m.retain(|k, _| {
            !matches!(k.as_str(), "ts" | "time" | "ts_ns" | "cpu")
                && !k.ends_with("_ms")
                && !k.ends_with("_ns")
        });
    }
    e
}

/// `live --cgroup X` and `replay --cgroup X` of a dump recorded at the same time without any
/// filter show the same events of a process in a child cgroup of X, including the records the
/// kernel writes in softirq for the socket it owns (decided on the owner's cgroup). Before,
/// replay matched only X itself and rejected every socket owner.
#[test]
fn cgroup_filter_live_and_replay_agree_on_descendants() {
    use tracer_tests::{
        cgroup::Cgroup2,
        recorder_util::{Bin, Recording, TempDir},
    };
    if !require_root() {
        return;
    }
    let x = Cgroup2::create("tracer-test-cg").expect("create a cgroup v2 for the test");
    let child = x.child("child").expect("create its child");
    let bin = Bin::pinned();
    let tmp = TempDir::new("cgroup-filter");
    let dir = tmp.join("dump");
    let rec = Recording::start(&bin, &dir, &["--tcp-states"]);
    let live = Tracer::start(&["--cgroup", x.rel(), "--tcp-states"]);

    let mut server = workload!("tcp-server", "--bind", "127.0.0.1:0");
    let mut w = Workload::spawn(child.enter(&mut server));
    let wp = w.pid();
    let l = w.expect("listening");
    let addr: std::net::SocketAddr = l["addr"].as_str().unwrap().parse().unwrap();
    let client = TcpStream::connect(addr).unwrap();
    w.expect("accepted");
    // The server's socket enters CLOSE_WAIT in softirq (the writer is not its owner), then the
    // server aborts it: a reset sent by the owner.
    drop(client);
    std::thread::sleep(Duration::from_millis(200));
    w.send("abort");
    w.expect("aborted");
    w.send("exit");
    assert!(w.wait().success());
    live.wait_for("the workload's exit", |e| e.is("exit", wp));
    let live = live.stop().events;
    // The recorder drains its rings when stopped.
    rec.stop();
    let replay = bin
        .run(
            &[
                "replay".as_ref(),
                dir.as_os_str(),
                "--json".as_ref(),
                "--no-findings".as_ref(),
                "--cgroup".as_ref(),
                x.rel().as_ref(),
            ],
            Duration::from_secs(60),
        )
        .ok();
    let replayed: Vec<Value> = replay
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &Value| e.get("kind").is_some() && e["type"] != "finding")
        .collect();

    // conn_status comes from each tracer's own scan of its own map, at its own second. Memory
    // samples are compared from the workload's exec on: before it, the forked child joins the
    // cgroup after some of its page faults, which the unfiltered recorder counted and live
    // --cgroup (filtering in the kernel) did not, so their first samples differ by design.
    let pick = |ev: &[Value]| -> Vec<Value> {
        let exec = ev.iter().position(|e| e.is("exec", wp)).unwrap_or(0);
        ev.iter()
            .enumerate()
            .filter(|(i, e)| e.kind() != "conn_status" && (e.kind() != "mem_sample" || *i > exec))
            .map(|(_, e)| comparable(e))
            .collect()
    };
    let (a, b) = (pick(&live), pick(&replayed));
    let mut k = Checks::new();
    k.that(
        a == b,
        format!(
            "live --cgroup and replay --cgroup differ:\nlive:\n{}\nreplay:\n{}",
            tracer_tests::dump(&a),
            tracer_tests::dump(&b)
        ),
    );
    for kind in ["exec", "conn_open", "tcp_reset", "exit"] {
        k.that(
            live.iter().any(|e| e.is(kind, wp)),
            format!("live shows the workload's {kind}"),
        );
    }
    k.that(
        live.iter()
            .any(|e| e.kind() == "tcp_state" && e["owner_pid"] == wp && e.pid() != wp),
        "a state change written in softirq for the workload's socket",
    );
    k.that(
        live.iter().all(|e| e.pid() == wp || e["owner_pid"] == wp),
        "nothing from outside the cgroup",
    );
    k.finish(&live);
    drop(child);
}
