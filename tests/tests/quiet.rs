//! A quiet host: the collector's once-a-second tick evaluates the analyses when nothing else
//! happens, and the dump keeps the ticks, so a socket that ages in CLOSE_WAIT on a silent host
//! is reported live and, identically, by `tracer report` on the dump.
use std::{
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    EventExt,
    recorder_util::{Bin, Recording, TempDir, is_finding_line},
    require_root, test_pid,
};

const MIN_AGE: &str = "close_wait_min_age_s=3";

#[test]
fn a_close_wait_ages_into_a_finding_on_a_quiet_host() {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let bin = Bin::pinned();
    let tmp = TempDir::new("quiet");
    let dir = tmp.join("dump");
    let pid = me.to_string();
    let rec = Recording::start(
        &bin,
        &dir,
        &[
            "--pid",
            &pid,
            "--events",
            "tcp",
            "--print",
            "--json",
            "--threshold",
            MIN_AGE,
        ],
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    drop(client);
    let left_at = Instant::now();
    // From here this process does nothing: no event of it reaches the tracer but the
    // collector's own report of the socket sitting in CLOSE_WAIT, one second in.
    let finding = rec.wait_for(
        "the close_wait finding, raised by the clock alone",
        Duration::from_secs(15),
        |v| v.kind() == "close_wait" && v["pid"] == me && v["type"] == "finding",
    );
    let waited = left_at.elapsed();
    drop(server);
    drop(listener);
    let recorded = rec.stop();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(8),
        "raised {waited:?} after the peer closed (min age 3 s, ticks every second): {finding}"
    );
    assert_eq!(finding["local_port"], port, "{finding}");
    // The live lines: after the conn_status report, nothing of this process but findings.
    let lines = recorded.texts();
    let status_at = lines
        .iter()
        .position(|l| l.contains("\"conn_status\"") && l.contains("\"close_wait\""))
        .expect("the conn_status report of the CLOSE_WAIT");
    let finding_at = lines
        .iter()
        .position(|l| is_finding_line(l) && l.contains("\"close_wait\""))
        .expect("the finding line");
    let between: Vec<&String> = lines[status_at + 1..finding_at]
        .iter()
        .filter(|l| !is_finding_line(l))
        .collect();
    assert!(
        between.is_empty(),
        "events between the report and the finding (the host was meant to be quiet): {between:?}"
    );

    // The dump holds the ticks: the report raises the same finding, seen at the same time.
    let out = bin
        .run(
            &[
                "report".as_ref(),
                "--json".as_ref(),
                dir.as_os_str(),
                "--threshold".as_ref(),
                MIN_AGE.as_ref(),
            ],
            Duration::from_secs(60),
        )
        .ok();
    let report = out.json();
    let found: Vec<&Value> = report["findings"]
        .as_array()
        .map(|a| a.iter().filter(|f| f.kind() == "close_wait").collect())
        .unwrap_or_default();
    assert_eq!(found.len(), 1, "one close_wait in the report: {report}");
    assert_eq!(found[0]["pid"], me);
    assert_eq!(
        found[0]["first_seen"], finding["first_seen"],
        "{}",
        found[0]
    );
}
