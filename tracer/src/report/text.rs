//! The report as text for people: findings with evidence, the timeline, distributions.
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::{
    clock, date_time, duration, evidence_fields, lifetime_rows, open_socket_rows, top_growers,
};
use crate::{
    analysis::{Engine, Finding, Severity, state::MemTrack},
    host::HostInfo,
    units::bytes_human,
};

/// Points of each grower's RSS series shown in text.
const SERIES_POINTS: usize = 8;
/// RSS distributions are in KiB, up to 64 TiB; larger values saturate (and are counted).
const RSS_MAX_KIB: u64 = 1 << 36;
/// Processes in the open-sockets table of the text report.
const OPEN_SOCKET_ROWS_TEXT: usize = 10;

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
    for k in st.kinds() {
        let _ = writeln!(
            o,
            "  {:<14} {:>10} {:>8}",
            k,
            st.per_kind.get(k),
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
