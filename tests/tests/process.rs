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

fn unix_ns_now() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` to nanoseconds since the epoch.
fn parse_rfc3339_ns(ts: &str) -> Option<i128> {
    let b = ts.as_bytes();
    if b.len() != 30 || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[29] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, ns) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..29)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    Some(secs as i128 * 1_000_000_000 + ns as i128)
}

#[test]
fn rfc3339_parses() {
    assert_eq!(
        parse_rfc3339_ns("1970-01-01T00:00:01.000000002Z"),
        Some(1_000_000_002)
    );
    assert_eq!(
        parse_rfc3339_ns("2024-02-29T12:00:00.000000000Z"),
        Some(1_709_208_000 * 1_000_000_000)
    );
    assert_eq!(parse_rfc3339_ns("2024-02-29T12:00:00Z"), None);
}

#[test]
fn fork_exec_exit_with_code() {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let t = Tracer::for_test(&["--events", "process"]);
    let spawned_at = unix_ns_now();
    let mut w = Workload::spawn(&mut workload!("exit", "--code", 7));
    let wp = w.pid();
    assert_eq!(w.wait().code(), Some(7));
    let reaped_at = unix_ns_now();
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
    // Timestamps: RFC 3339 UTC with nanoseconds, on the wall clock, between spawn and reap.
    for e in ev.iter().filter(|e| e.pid() == wp) {
        let ts = e.str_of("ts").unwrap_or("");
        match parse_rfc3339_ns(ts) {
            Some(ns) => k.that(
                ns + 1_000_000 >= spawned_at && ns <= reaped_at + 1_000_000,
                format!("ts {ts} between spawn and reap (±1 ms): {e}"),
            ),
            None => k.that(false, format!("ts is RFC 3339 with nanoseconds: {e}")),
        }
        k.fields("uid", e, json!({"uid": 0}));
    }
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
