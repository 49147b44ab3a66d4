//! The report: the engine's findings ranked by severity with their evidence, an incident
//! timeline (fatal signals, killed processes, OOM kills, fd exhaustion, findings) in time order
//! like a post-mortem, distributions (connection lifetimes per process, RSS over time for the
//! top growers) and event statistics; as text for people, or as one JSON document
//! `{"findings": [...], "stats": {...}, "timeline": [...]}` for scripts (a stable interface).
//! Also the one-line NEW/UPDATED rendering `live` prints as findings appear.
//!
//! `mod.rs` holds the command, the update line and what both renderings share (rows of the
//! tables, evidence fields); [`text`] and [`json`] the two renderings.
use serde_json::{Value, json};

use crate::{
    analysis::{
        AnalysisArgs, Engine, Finding, FindingUpdate,
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
    output::print(&update_text(u, host, json));
}

/// The line [`print_update`] prints (without its `\n`).
pub fn update_text(u: &FindingUpdate, host: &HostInfo, json: bool) -> String {
    if json {
        update_json(u, host).to_string()
    } else {
        update_line(u, host)
    }
}

/// Processes shown in the memory section.
const TOP_GROWERS: usize = 5;

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

/// Processes listed with their open sockets in the JSON report.
const OPEN_SOCKET_ROWS_JSON: usize = 100;

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

mod json;
#[cfg(test)]
mod tests;
mod text;

pub use self::{json::json, text::text};
