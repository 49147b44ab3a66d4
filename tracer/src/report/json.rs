//! The report as one JSON document for scripts: `{"findings": [...], "stats": {...},
//! "timeline": [...]}` (a stable interface).
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{OPEN_SOCKET_ROWS_JSON, lifetime_rows, open_socket_rows, top_growers};
use crate::{analysis::Engine, host::HostInfo};

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
