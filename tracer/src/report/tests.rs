//! The report on synthetic incidents: findings, timeline and statistics, in text and JSON.
use super::*;
use crate::analysis::testutil::Stream;

/// The Node service incident: monit SIGTERMs node every 30 s because it hit EMFILE.
fn incident() -> Stream {
    let mut s = Stream::new();
    s.proc_info(1, 0, "systemd", |_| {});
    s.proc_info(4242, 1, "monit", |i| {
        i.cmdline = vec!["/usr/bin/monit".into(), "-I".into()]
    });
    s.proc_info(5000, 4242, "node", |i| {
        i.cmdline = vec!["node".into(), "server.js".into()];
        i.nofile_limit = Some(1024);
        i.open_fds = Some(1024);
    });
    for c in 0..4u64 {
        let pid = 5000 + c as u32;
        let t = c * 30_000;
        for k in 0..40 {
            s.at(t + 1000 + k * 10).accept_failed(pid, "node", 24, 3000);
        }
        s.at(t + 20_000).signal(4242, "monit", 15, 0, pid, "node");
        s.at(t + 20_100).exit(pid, "node", 143 << 8);
        s.at(t + 22_000).fork(4242, "monit", pid + 1);
        s.at(t + 22_001)
            .exec(pid + 1, "node", "/usr/bin/node", &["node", "server.js"]);
    }
    s.finish();
    s
}

#[test]
fn json_report_has_findings_stats_and_timeline() {
    let s = incident();
    let doc = json(&s.engine, &s.host, true);
    let kinds: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"restart_loop")
            && kinds.contains(&"signal_source")
            && kinds.contains(&"fd_exhaustion"),
        "{kinds:?}"
    );
    // Most severe first.
    assert_eq!(doc["findings"][0]["severity"], "critical");
    for f in doc["findings"].as_array().unwrap() {
        for key in ["kind", "severity", "summary", "first_seen", "last_seen"] {
            assert!(!f[key].is_null(), "{key} missing in {f}");
        }
        assert!(
            f["first_seen"]
                .as_str()
                .unwrap()
                .starts_with("2026-11-24T00:1"),
            "{f}"
        );
    }
    let st = &doc["stats"];
    assert_eq!(st["events_per_kind"]["signal"], 4);
    assert_eq!(st["events_per_kind"]["tcp_accept"], 160);
    assert_eq!(st["drops_total"], 0);
    assert!(st["span_s"].as_f64().unwrap() > 100.0);
    let tl = doc["timeline"].as_array().unwrap();
    let whats: Vec<&str> = tl.iter().map(|e| e["what"].as_str().unwrap()).collect();
    assert!(
        whats.contains(&"signal")
            && whats.contains(&"exit")
            && whats.contains(&"fd_error")
            && whats.contains(&"finding")
    );
    // 40 EMFILEs within 400 ms are one timeline entry.
    let burst = tl.iter().find(|e| e["what"] == "fd_error").unwrap();
    assert_eq!(burst["count"], 40);
    let ts: Vec<&str> = tl.iter().map(|e| e["ts"].as_str().unwrap()).collect();
    let mut sorted = ts.clone();
    sorted.sort();
    assert_eq!(ts, sorted, "timeline in time order");
}

#[test]
fn text_report_ranks_findings_and_tells_the_story() {
    let s = incident();
    let t = text(&s.engine, &s.host);
    assert!(t.contains("FINDINGS ("), "{t}");
    assert!(t.contains("restart_loop"), "{t}");
    assert!(
        t.contains("SIGTERM from 4242 monit [/usr/bin/monit -I] to 5000 node"),
        "{t}"
    );
    assert!(
        t.contains("accept() failed 40 times with EMFILE in 5000 node on port 3000"),
        "{t}"
    );
    assert!(t.contains("TIMELINE"), "{t}");
    let first_critical = t.find("[critical]").unwrap();
    assert!(t.find("[warning]").is_none_or(|w| w > first_critical));
}

#[test]
fn an_empty_stream_reports_nothing_without_failing() {
    let mut s = Stream::new();
    s.finish();
    let t = text(&s.engine, &s.host);
    assert!(t.contains("FINDINGS: none"), "{t}");
    let doc = json(&s.engine, &s.host, false);
    assert_eq!(doc["findings"], json!([]));
    assert!(doc.get("timeline").is_none());
}

#[test]
fn distributions_render_lifetimes_and_memory_growth() {
    use tracer_common::tcp::state::*;
    let mut s = Stream::with_host_mem(16 << 30);
    for k in 0..100u64 {
        let sk = 0x7000 + k;
        s.at(k * 100)
            .tcp_state(0, "swapper/0", sk, SYN_RECV, ESTABLISHED, 0, 80, 50000);
        s.at(k * 100 + 1).accept_sk(300, "nginx", 10, 80, sk);
        s.at(k * 100 + 1 + k)
            .tcp_state(0, "swapper/0", sk, LAST_ACK, CLOSE, 300, 80, 50000);
    }
    // A connection that lasted longer than the histogram's maximum.
    s.at(20_000).tcp_state(
        0,
        "swapper/0",
        0x9999,
        SYN_RECV,
        ESTABLISHED,
        301,
        80,
        50000,
    );
    s.at(20_000 + 8 * 24 * 3600 * 1000).tcp_state(
        0,
        "swapper/0",
        0x9999,
        LAST_ACK,
        CLOSE,
        301,
        80,
        50000,
    );
    for k in 0..10u64 {
        s.at(k * 1000).mem(1200, "ruby", (1 << 30) + k * (64 << 20));
    }
    s.finish();
    let t = text(&s.engine, &s.host);
    assert!(t.contains("CONNECTION LIFETIMES"), "{t}");
    assert!(t.contains("nginx"), "{t}");
    assert!(t.contains("MEMORY: top RSS growers"), "{t}");
    assert!(t.contains("1200 ruby: RSS 1.0 GiB -> 1.6 GiB"), "{t}");
    let doc = json(&s.engine, &s.host, false);
    let rows = doc["stats"]["connection_lifetimes"].as_array().unwrap();
    let nginx = rows.iter().find(|r| r["pid"] == 300).unwrap();
    assert_eq!(nginx["count"], 100);
    assert!(nginx["max_ms"].as_u64().unwrap() >= 99);
    let long = rows.iter().find(|r| r["pid"] == 301).unwrap();
    assert_eq!(long["outliers"], 1);
}

#[test]
fn update_lines_say_new_then_updated() {
    let mut s = Stream::new();
    s.at(0).signal(4242, "monit", 15, 0, 5000, "node");
    let u = s.engine.take_updates();
    assert_eq!(u.len(), 1);
    let line = update_line(&u[0], &s.host);
    assert!(
        line.contains("NEW") && line.contains("signal_source") && line.contains("SIGTERM"),
        "{line}"
    );
    let j = update_json(&u[0], &s.host);
    assert_eq!(j["update"], "new");
    assert_eq!(j["kind"], "signal_source");
}
