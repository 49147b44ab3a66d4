//! The report: the engine's findings ranked by severity with their evidence, an incident
//! timeline (fatal signals, killed processes, OOM kills, fd exhaustion, findings) in time order
//! like a post-mortem, distributions (connection lifetimes per process, RSS over time for the
//! top growers) and event statistics; as text for people, or as one JSON document
//! `{"findings": [...], "stats": {...}, "timeline": [...]}` for scripts (a stable interface).
//! Also the one-line NEW/UPDATED rendering `live` prints as findings appear.
use std::{collections::BTreeMap, fmt::Write as _};

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::{
    analysis::{
        AnalysisArgs, Engine, Finding, FindingUpdate, Severity,
        state::{FdCount, MemTrack},
    },
    host::HostInfo,
    output,
    units::bytes_human,
};

/// Options of `tracer report` (and of the summary `replay` may print).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ReportArgs {
    /// One JSON document {"findings": [...], "stats": {...}, "timeline": [...]} instead of text.
    #[arg(long)]
    pub json: bool,
    /// Leave the incident timeline out of the JSON document.
    #[arg(long)]
    pub no_timeline: bool,
    /// Write the report as one self-contained HTML page with charts to FILE instead (no
    /// network or JavaScript needed to read it).
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    pub html: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

/// Prints the report of everything the engine saw to stdout.
pub fn print(engine: &Engine, args: &ReportArgs) {
    let host = engine.host();
    if args.json {
        let doc = json(engine, host, !args.no_timeline);
        output::print(&serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        output::print(text(engine, host).trim_end());
    }
}

/// Prints one NEW/UPDATED finding (what `live` shows as findings appear): a line for people,
/// or one JSON object per line.
pub fn print_update(u: &FindingUpdate, host: &HostInfo, json: bool) {
    if json {
        output::print(&update_json(u, host).to_string());
    } else {
        output::print(&update_line(u, host));
    }
}

/// Processes shown in the memory section.
const TOP_GROWERS: usize = 5;
/// Points of each grower's RSS series shown in text.
const SERIES_POINTS: usize = 8;
/// RSS distributions are in KiB, up to 64 TiB; larger values saturate (and are counted).
const RSS_MAX_KIB: u64 = 1 << 36;

/// `HH:MM:SS.mmm` of a boot-time timestamp.
fn clock(host: &HostInfo, ts_ns: u64) -> String {
    let s = host.rfc3339(ts_ns);
    s.get(11..23).unwrap_or(&s).to_owned()
}

/// `2026-11-24 03:04:05` of a boot-time timestamp.
fn date_time(host: &HostInfo, ts_ns: u64) -> String {
    let s = host.rfc3339(ts_ns);
    match (s.get(..10), s.get(11..19)) {
        (Some(d), Some(t)) => format!("{d} {t}"),
        _ => s,
    }
}

fn duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0..60 => format!("{:.1} s", ns as f64 / 1e9),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// One line for `live`: time, NEW/UPDATED, severity, kind, summary.
pub fn update_line(u: &FindingUpdate, host: &HostInfo) -> String {
    let mut line = format!(
        "{} {:<7} {:<8} {:<13} {}",
        clock(host, u.at_ns),
        u.kind.label(),
        u.finding.severity.name(),
        u.finding.kind(),
        u.finding.summary
    );
    if let Some(w) = u.finding.workload_text() {
        line.push_str(&format!(" [{w}]"));
    }
    line
}

/// The finding's JSON with `"update": "new" | "updated"` and the evaluation time `ts`.
pub fn update_json(u: &FindingUpdate, host: &HostInfo) -> Value {
    let mut v = u.finding.to_json(host);
    if let Value::Object(m) = &mut v {
        // Findings share the stream with events (and `oom_kill` is both): say which this is.
        m.insert("type".into(), json!("finding"));
        m.insert("update".into(), json!(u.kind.label().to_ascii_lowercase()));
        m.insert("ts".into(), json!(host.rfc3339(u.at_ns)));
    }
    v
}

/// The whole report as one JSON document.
pub fn json(engine: &Engine, host: &HostInfo, with_timeline: bool) -> Value {
    let findings: Vec<Value> = engine.findings().iter().map(|f| f.to_json(host)).collect();
    let mut doc = Map::new();
    doc.insert("findings".into(), Value::Array(findings));
    doc.insert("stats".into(), stats_json(engine, host));
    if with_timeline {
        let tl: Vec<Value> = engine
            .timeline()
            .entries()
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("ts".into(), json!(host.rfc3339(e.ts_ns)));
                }
                v
            })
            .collect();
        doc.insert("timeline".into(), Value::Array(tl));
    }
    Value::Object(doc)
}

fn stats_json(engine: &Engine, host: &HostInfo) -> Value {
    let st = engine.stats();
    let findings = engine.findings();
    let mut per_kind: BTreeMap<&str, u64> = BTreeMap::new();
    let mut per_sev: BTreeMap<&str, u64> = BTreeMap::new();
    for f in &findings {
        *per_kind.entry(f.kind()).or_default() += 1;
        *per_sev.entry(f.severity.name()).or_default() += 1;
    }
    let lifetimes: Vec<Value> = lifetime_rows(engine)
        .into_iter()
        .map(|r| {
            json!({
                "pid": r.pid, "comm": r.comm, "count": r.count, "p50_ms": r.p50, "p90_ms": r.p90,
                "p99_ms": r.p99, "max_ms": r.max, "outliers": r.outliers,
            })
        })
        .collect();
    let growers: Vec<Value> = top_growers(engine)
        .into_iter()
        .map(|(pid, t)| {
            let (first, last) = (t.first.map_or(0, |p| p.rss), t.last.map_or(0, |p| p.rss));
            let span = match (t.first, t.last) {
                (Some(f), Some(l)) if l.ts_ns > f.ts_ns => (l.ts_ns - f.ts_ns) as f64 / 1e9,
                _ => 0.0,
            };
            let rate = if span > 0.0 { ((last as f64 - first as f64) / span).round() as i64 } else { 0 };
            json!({
                "pid": pid, "comm": t.comm, "first_rss_bytes": first, "last_rss_bytes": last,
                "peak_rss_bytes": t.peak_rss, "growth_bytes_per_sec": rate, "samples": t.samples,
                "exited": t.exited_ns.map(|e| host.rfc3339(e)),
                "rss_series": t.history.iter().map(|p| json!([host.rfc3339(p.ts_ns), p.rss])).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "host": { "hostname": host.hostname, "kernel": host.kernel, "boot_id": host.boot_id, "mem_total_bytes": host.mem_total_bytes },
        "events": st.events,
        "events_per_kind": st.per_kind,
        "processes": st.processes(),
        "first_event": st.first_ns.map(|f| host.rfc3339(f)),
        "last_event": st.first_ns.map(|_| host.rfc3339(st.last_ns)),
        "span_s": (st.span_ns() as f64 / 1e6).round() / 1e3,
        "drops": st.drops,
        "drops_total": st.drops_total(),
        "findings": findings.len(),
        "findings_per_kind": per_kind,
        "findings_per_severity": per_sev,
        "timeline_omitted": engine.timeline().omitted,
        "connection_lifetimes": lifetimes,
        "memory_top_growers": growers,
        "open_sockets": open_socket_rows(engine, OPEN_SOCKET_ROWS_JSON)
            .into_iter()
            .map(|(pid, c)| json!({"pid": pid, "comm": c.comm, "sockets": c.sockets, "fds": c.fds}))
            .collect::<Vec<_>>(),
    })
}

/// Processes listed with their open sockets, in JSON and in text.
const OPEN_SOCKET_ROWS_JSON: usize = 100;
const OPEN_SOCKET_ROWS_TEXT: usize = 10;

/// The live processes holding the most open sockets at the end (most first, then by pid).
fn open_socket_rows(engine: &Engine, n: usize) -> Vec<(u32, &FdCount)> {
    let mut rows: Vec<(u32, &FdCount)> = engine.state().fds.with_sockets().into_iter().collect();
    rows.sort_by_key(|(pid, c)| (std::cmp::Reverse(c.sockets), *pid));
    rows.truncate(n);
    rows
}

struct LifetimeRow {
    pid: u32,
    comm: String,
    count: u64,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    outliers: u64,
}

/// Per-process connection lifetimes, most connections first (at most 20).
fn lifetime_rows(engine: &Engine) -> Vec<LifetimeRow> {
    let mut rows: Vec<LifetimeRow> = engine
        .stats()
        .conns
        .per_pid
        .iter()
        .map(|(pid, l)| LifetimeRow {
            pid: *pid,
            comm: l.comm.clone(),
            count: l.hist.len(),
            p50: l.hist.value_at_quantile(0.5),
            p90: l.hist.value_at_quantile(0.9),
            p99: l.hist.value_at_quantile(0.99),
            max: l.hist.max(),
            outliers: l.outliers,
        })
        .collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
    rows.truncate(20);
    rows
}

/// Processes whose RSS grew most over their recorded life.
fn top_growers(engine: &Engine) -> Vec<(u32, &MemTrack)> {
    let mut v: Vec<(u32, &MemTrack, i128)> = engine
        .state()
        .mem
        .sorted()
        .into_iter()
        .filter_map(|(pid, t)| {
            let (first, last) = (t.first?, t.last?);
            // A few samples within a second (a process starting up) say nothing about growth.
            if t.samples < 3 || last.ts_ns.saturating_sub(first.ts_ns) < 1_000_000_000 {
                return None;
            }
            let g = last.rss as i128 - first.rss as i128;
            (g > 0).then_some((pid, t, g))
        })
        .collect();
    v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    v.into_iter()
        .take(TOP_GROWERS)
        .map(|(p, t, _)| (p, t))
        .collect()
}

/// The evidence of a finding for people, field by field, as the text report and the HTML page
/// show it: (name, value with bytes made readable, whether the value is a list).
pub fn evidence_fields(f: &Finding) -> Vec<(String, String, bool)> {
    let Ok(Value::Object(m)) = serde_json::to_value(&f.evidence) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in m {
        if k == "kind" || v.is_null() {
            continue;
        }
        let (shown, list) = match &v {
            Value::String(s) => (s.clone(), false),
            Value::Number(n) if k.ends_with("_bytes") => {
                (bytes_human(n.as_u64().unwrap_or(0)), false)
            }
            Value::Number(n) if k.ends_with("_bytes_per_sec") => {
                (format!("{}/s", bytes_human(n.as_u64().unwrap_or(0))), false)
            }
            Value::Array(a) => {
                let items: Vec<String> = a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect();
                (items.join(", "), true)
            }
            other => (other.to_string(), false),
        };
        out.push((k, shown, list));
    }
    out
}

/// The evidence of a finding as `key=value` pairs on one line.
fn evidence_text(f: &Finding) -> String {
    let parts: Vec<String> = evidence_fields(f)
        .into_iter()
        .map(|(k, v, list)| {
            if list {
                format!("{k}=[{v}]")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    parts.join("  ")
}

/// The report for people.
pub fn text(engine: &Engine, host: &HostInfo) -> String {
    let mut o = String::new();
    let st = engine.stats();
    let span = match st.first_ns {
        Some(f) => format!(
            "{} .. {} UTC ({})",
            date_time(host, f),
            date_time(host, st.last_ns),
            duration(st.last_ns - f)
        ),
        None => "no events".into(),
    };
    let _ = writeln!(
        o,
        "tracer report: {} (kernel {}), {span}",
        host.hostname, host.kernel
    );
    let lost = st.drops_total();
    let _ = writeln!(
        o,
        "{} events from {} processes; {}",
        st.events,
        st.processes(),
        if lost == 0 {
            "no events lost".to_owned()
        } else {
            format!("{lost} events LOST in the kernel (see Events)")
        }
    );
    if let Some((a, b)) = st.recorder_gap_span {
        let _ = writeln!(
            o,
            "{} events NOT recorded by the recorder between {} and {} UTC ({} in the whole run)",
            st.recorder_lost,
            date_time(host, a),
            date_time(host, b),
            st.recorder_lost_total.max(st.recorder_lost)
        );
    }

    // Findings.
    let findings = engine.findings();
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let _ = writeln!(o);
    if findings.is_empty() {
        let _ = writeln!(o, "FINDINGS: none (nothing crossed the thresholds)");
    } else {
        let _ = writeln!(
            o,
            "FINDINGS ({}): {} critical, {} warning, {} info",
            findings.len(),
            count(Severity::Critical),
            count(Severity::Warning),
            count(Severity::Info)
        );
        for (i, f) in findings.iter().enumerate() {
            let _ = writeln!(
                o,
                "{:>3}. [{}] {}: {}",
                i + 1,
                f.severity.name(),
                f.kind(),
                f.summary
            );
            let _ = writeln!(o, "       {}", evidence_text(f));
            if let Some(w) = f.workload_text() {
                let _ = writeln!(o, "       culprit: {w}");
            }
            // A finding of an earlier boot of the dump: its own clock, and which boot.
            let (host, boot) = match &f.boot {
                Some(b) => (b, format!(" (boot {})", b.boot_id)),
                None => (host, String::new()),
            };
            let _ = writeln!(
                o,
                "       seen {} .. {}{boot}",
                clock(host, f.first_seen_ns),
                clock(host, f.last_seen_ns)
            );
        }
    }

    // Timeline.
    let tl = engine.timeline();
    let entries = tl.entries();
    let _ = writeln!(o);
    let omitted = if tl.omitted > 0 {
        format!("; {} earlier ones not kept", tl.omitted)
    } else {
        String::new()
    };
    let _ = writeln!(o, "TIMELINE ({} notable events{omitted})", entries.len());
    if entries.is_empty() {
        let _ = writeln!(
            o,
            "  (none: no fatal signals, kills, OOM kills, fd exhaustion or findings)"
        );
    }
    for e in entries {
        let _ = writeln!(o, "  {}  {:<8} {}", clock(host, e.ts_ns), e.what, e.text);
    }

    // Connection lifetimes.
    let rows = lifetime_rows(engine);
    if !rows.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "CONNECTION LIFETIMES (ms, per owning process, closed connections)"
        );
        let _ = writeln!(
            o,
            "  {:>7} {:<16} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6}",
            "pid", "comm", "conns", "p50", "p90", "p99", "max", ">7d"
        );
        for r in rows {
            let _ = writeln!(
                o,
                "  {:>7} {:<16} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6}",
                if r.pid == 0 {
                    "-".to_owned()
                } else {
                    r.pid.to_string()
                },
                r.comm,
                r.count,
                r.p50,
                r.p90,
                r.p99,
                r.max,
                r.outliers
            );
        }
    }

    // Memory.
    let growers = top_growers(engine);
    if !growers.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "MEMORY: top RSS growers");
        for (pid, t) in growers {
            let (Some(first), Some(last)) = (t.first, t.last) else {
                continue;
            };
            let span = last.ts_ns.saturating_sub(first.ts_ns);
            let rate = if span > 0 {
                (last.rss as f64 - first.rss as f64) / (span as f64 / 1e9)
            } else {
                0.0
            };
            let exited = t
                .exited_ns
                .map(|e| format!(", exited {}", clock(host, e)))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  {pid} {}: RSS {} -> {} (peak {}) over {}, {}/s{exited}",
                t.comm,
                bytes_human(first.rss),
                bytes_human(last.rss),
                bytes_human(t.peak_rss),
                duration(span),
                bytes_human(rate.max(0.0) as u64)
            );
            let (p50, p90, max, over) = rss_distribution(t);
            let _ = writeln!(
                o,
                "      RSS distribution: p50 {}  p90 {}  max {}{}",
                bytes_human(p50),
                bytes_human(p90),
                bytes_human(max),
                if over > 0 {
                    format!("  ({over} beyond 64 TiB)")
                } else {
                    String::new()
                }
            );
            let series: Vec<String> = thin(&t.history, SERIES_POINTS)
                .iter()
                .map(|p| {
                    format!(
                        "{} {}",
                        clock(host, p.ts_ns).get(..8).unwrap_or(""),
                        bytes_human(p.rss)
                    )
                })
                .collect();
            let _ = writeln!(o, "      over time: {}", series.join(", "));
        }
    }

    let sockets = open_socket_rows(engine, OPEN_SOCKET_ROWS_TEXT);
    if !sockets.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "OPEN SOCKETS (at the end, most first)");
        let _ = writeln!(
            o,
            "  {:>8} {:<16} {:>8} {:>8}",
            "pid", "comm", "sockets", "fds"
        );
        for (pid, c) in sockets {
            let fds = c.fds.map_or_else(|| "?".to_owned(), |n| n.to_string());
            let _ = writeln!(o, "  {pid:>8} {:<16} {:>8} {fds:>8}", c.comm, c.sockets);
        }
    }

    // Events.
    let _ = writeln!(o);
    let _ = writeln!(o, "EVENTS");
    let _ = writeln!(o, "  {:<14} {:>10} {:>8}", "kind", "count", "lost");
    let mut kinds: Vec<&str> = st.per_kind.keys().copied().collect();
    for k in st.drops.keys() {
        if !kinds.contains(&k.as_str()) {
            kinds.push(k);
        }
    }
    kinds.sort_unstable();
    for k in kinds {
        let _ = writeln!(
            o,
            "  {:<14} {:>10} {:>8}",
            k,
            st.per_kind.get(k).copied().unwrap_or(0),
            st.drops.get(k).copied().unwrap_or(0)
        );
    }
    o
}

/// p50, p90 and max of a process's recorded RSS, and how many values saturated.
fn rss_distribution(t: &MemTrack) -> (u64, u64, u64, u64) {
    let Ok(mut h) = Histogram::<u64>::new_with_bounds(1, RSS_MAX_KIB, 2) else {
        return (0, 0, 0, 0);
    };
    let mut over = 0;
    for p in &t.history {
        let kib = p.rss / 1024;
        if kib > RSS_MAX_KIB {
            over += 1;
        }
        h.saturating_record(kib.min(RSS_MAX_KIB));
    }
    (
        h.value_at_quantile(0.5) * 1024,
        h.value_at_quantile(0.9) * 1024,
        h.max() * 1024,
        over,
    )
}

/// At most `n` evenly spaced items, always including the first and the last.
fn thin<T: Copy>(v: &[T], n: usize) -> Vec<T> {
    if v.len() <= n || n < 2 {
        return v.to_vec();
    }
    (0..n).map(|i| v[i * (v.len() - 1) / (n - 1)]).collect()
}

#[cfg(test)]
mod tests {
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
}
