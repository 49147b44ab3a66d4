//! `runaway_alloc`: a process whose RSS grows fast and steadily, with a projection of when it
//! hits its limit (its memory cgroup's, else the host's memory).
//!
//! The kernel sends a memory sample each time a process's RSS or mapped bytes moved by a
//! threshold (16 MiB by default); growth is a least-squares fit of RSS over a sliding window
//! of those samples ([`super::state::MemHistory`]). Steady means most sample-to-sample moves
//! are increases, over long enough a span: a process that allocates a buffer and frees it, or
//! whose RSS saws up and down, is not a runaway.
use std::collections::BTreeMap;

use super::{
    Analysis, AnalysisConfig, Cx, Evidence, Finding, RunawayAlloc, Severity, comm_of, ns, round,
};
use crate::{
    event::{Body, Event},
    units::bytes_human,
};

pub struct Runaways {
    min_samples: u64,
    min_duration_ns: u64,
    min_rate: f64,
    min_growth: u64,
    min_steadiness: f64,
    critical_s: f64,
    /// Processes with new samples since the last evaluation.
    dirty: BTreeMap<u32, ()>,
}

/// A fitted growth over a process's recent samples, when it is a runaway.
pub struct Growth {
    pub rate: f64,
    pub window_s: f64,
    pub samples: u64,
}

impl Runaways {
    pub fn new(cfg: &AnalysisConfig) -> Runaways {
        Runaways {
            min_samples: cfg.mem_min_samples.max(2),
            min_duration_ns: ns(cfg.mem_min_duration_s),
            min_rate: cfg.mem_min_rate_bytes_per_sec as f64,
            min_growth: cfg.mem_min_growth_bytes,
            min_steadiness: cfg.mem_min_steadiness,
            critical_s: cfg.mem_critical_s,
            dirty: BTreeMap::new(),
        }
    }

    /// Whether `track`'s recent samples are a runaway.
    pub fn runaway(&self, track: &super::state::MemTrack) -> Option<Growth> {
        let r = &track.recent;
        let (first, last) = (r.front()?, r.back()?);
        if (r.len() as u64) < self.min_samples
            || last.ts_ns.saturating_sub(first.ts_ns) < self.min_duration_ns
        {
            return None;
        }
        if last.rss < first.rss.saturating_add(self.min_growth) {
            return None;
        }
        // Still growing: the latest sample is near the window's peak, not on the way down.
        let peak = r.iter().map(|p| p.rss).max().unwrap_or(0);
        if last.rss.saturating_add((peak - first.rss) / 10) < peak {
            return None;
        }
        let (ups, moves) = r
            .iter()
            .zip(r.iter().skip(1))
            .filter(|(a, b)| a.rss != b.rss)
            .fold((0u64, 0u64), |(u, m), (a, b)| {
                (u + u64::from(b.rss > a.rss), m + 1)
            });
        if moves == 0 || (ups as f64) < self.min_steadiness * moves as f64 {
            return None;
        }
        let (rate, window_s) = track.recent_growth()?;
        (rate >= self.min_rate).then_some(Growth {
            rate,
            window_s,
            samples: r.len() as u64,
        })
    }
}

/// The memory limit that applies to `pid`: its cgroup's when set (and below the host's
/// memory), else the host's.
pub fn limit_of(cx: &Cx<'_>, pid: u32) -> Option<(u64, &'static str)> {
    let host = (cx.host.mem_total_bytes > 0).then_some(cx.host.mem_total_bytes);
    match (cx.procs.get(pid).and_then(|p| p.mem_limit), host) {
        (Some(c), Some(h)) if c < h => Some((c, "cgroup")),
        (Some(c), None) => Some((c, "cgroup")),
        (_, Some(h)) => Some((h, "host")),
        (None, None) => None,
    }
}

impl Analysis for Runaways {
    fn name(&self) -> &'static str {
        "runaway_alloc"
    }

    fn observe(&mut self, ev: &Event, _cx: &Cx<'_>) -> bool {
        if let Body::MemSample(_) = ev.body {
            self.dirty.insert(ev.tgid, ());
        }
        false
    }

    fn findings(&mut self, _now_ns: u64, cx: &Cx<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        // Only processes that sent samples since the last evaluation can have changed; the
        // engine keeps findings raised earlier.
        for pid in std::mem::take(&mut self.dirty).into_keys() {
            let Some(track) = cx.state.mem.get(pid) else {
                continue;
            };
            let Some(g) = self.runaway(track) else {
                continue;
            };
            let (Some(first), Some(last)) = (track.recent.front(), track.recent.back()) else {
                continue;
            };
            let limit = limit_of(cx, pid);
            let to_limit = limit.map(|(l, _)| {
                if last.rss >= l {
                    0.0
                } else {
                    (l - last.rss) as f64 / g.rate
                }
            });
            let severity = match to_limit {
                Some(s) if s <= self.critical_s => Severity::Critical,
                _ => Severity::Warning,
            };
            let comm = comm_of(cx.procs, pid, &track.comm);
            let projection = match (limit, to_limit) {
                (Some((l, src)), Some(s)) => {
                    format!("; {src} limit {} in {}", bytes_human(l), human_secs(s))
                }
                _ => String::new(),
            };
            out.push(Finding {
                severity,
                summary: format!(
                    "{pid} ({comm}) memory grows {}/s: RSS {} -> {} in {:.0} s{projection}",
                    bytes_human(g.rate as u64),
                    bytes_human(first.rss),
                    bytes_human(last.rss),
                    g.window_s
                ),
                first_seen_ns: first.ts_ns,
                last_seen_ns: last.ts_ns,
                evidence: Evidence::RunawayAlloc(RunawayAlloc {
                    pid,
                    comm,
                    rss_bytes: last.rss,
                    mapped_bytes: last.mapped,
                    growth_bytes_per_sec: g.rate.round() as u64,
                    window_s: round(g.window_s, 1),
                    samples: g.samples,
                    limit_bytes: limit.map(|l| l.0),
                    limit_source: limit.map(|l| l.1.to_owned()),
                    seconds_to_limit: to_limit.map(|s| round(s, 1)),
                }),
            });
        }
        out
    }
}

pub(crate) fn human_secs(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_crawler_growing_steadily_is_a_runaway_with_a_projection() {
        let mut s = Stream::with_host_mem(16 << 30);
        s.proc_info(1200, 1, "ruby", |i| i.mem_limit = Some(4 << 30));
        // +16 MiB every 2 s (8 MiB/s), from 1 GiB, for 60 s.
        for k in 0..30u64 {
            s.at(k * 2000).mem(1200, "ruby", (1 << 30) + k * 16 * MIB);
        }
        let e = s.json_of("runaway_alloc");
        assert_eq!(e["pid"], 1200);
        assert_eq!(e["comm"], "ruby");
        assert_eq!(e["rss_bytes"], (1u64 << 30) + 29 * 16 * MIB);
        assert_eq!(e["growth_bytes_per_sec"], 8 * MIB);
        assert_eq!(e["limit_bytes"], 4u64 << 30);
        assert_eq!(e["limit_source"], "cgroup");
        let left = e["seconds_to_limit"].as_f64().unwrap();
        let want = ((4u64 << 30) - (1u64 << 30) - 29 * 16 * MIB) as f64 / (8 * MIB) as f64;
        assert!((left - want).abs() < 1.0, "{left} vs {want}");
        assert_eq!(e["severity"], "critical");
    }

    #[test]
    fn without_a_cgroup_limit_the_host_memory_is_the_limit() {
        let mut s = Stream::with_host_mem(16 << 30);
        for k in 0..30u64 {
            s.at(k * 2000).mem(1300, "node", (800 * MIB) + k * 16 * MIB);
        }
        let e = s.json_of("runaway_alloc");
        assert_eq!(e["limit_bytes"], 16u64 << 30);
        assert_eq!(e["limit_source"], "host");
        assert_eq!(e["severity"], "warning");
    }

    #[test]
    fn allocating_then_freeing_is_not_a_runaway() {
        let mut s = Stream::with_host_mem(16 << 30);
        for cycle in 0..10u64 {
            let t = cycle * 20_000;
            for k in 0..4u64 {
                s.at(t + k * 500)
                    .mem(1400, "batch", 100 * MIB + k * 64 * MIB);
            }
            for k in 0..4u64 {
                s.at(t + 3000 + k * 500)
                    .mem(1400, "batch", 100 * MIB + (3 - k) * 64 * MIB);
            }
        }
        s.finish();
        assert!(s.findings_of("runaway_alloc").is_empty());
    }

    #[test]
    fn slow_steady_growth_below_the_rate_is_not_a_runaway() {
        let mut s = Stream::with_host_mem(16 << 30);
        for k in 0..60u64 {
            s.at(k * 60_000).mem(1500, "java", (1 << 30) + k * 16 * MIB);
        }
        s.finish();
        assert!(s.findings_of("runaway_alloc").is_empty());
    }
}
