//! `runaway_alloc`: a process whose RSS grows fast and steadily, with a projection of when it
//! hits its limit (its memory cgroup's, else the host's memory).
//!
//! The kernel sends a memory sample each time a process's RSS or mapped bytes moved by a
//! step (1/32 of the value, 1 to 16 MiB); growth is a least-squares fit of RSS over a sliding
//! window of those samples ([`super::state::MemHistory`]). Steady means most sample-to-sample
//! moves are increases, over long enough a span: a process that allocates a buffer and frees
//! it, or whose RSS saws up and down, is not a runaway.
//!
//! Waiting for that span (30 s by default) is too late for a process that reaches its limit
//! in seconds: when the fitted growth projects the limit sooner than the span would be
//! complete, the process is raised at once as critical (an early warning), from fewer
//! samples but only once it has grown by a real amount and eaten a share of its headroom.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{
    Analysis, AnalysisConfig, Check, Cx, Evidence, Finding, Kinds, Severity, comm_of, ns, round,
    secs,
};
use crate::{
    event::{Body, Event},
    units::bytes_human,
};
use tracer_common::Kind;

/// The evidence of a `runaway_alloc` finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunawayAlloc {
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: u64,
    pub mapped_bytes: u64,
    pub growth_bytes_per_sec: u64,
    pub window_s: f64,
    pub samples: u64,
    pub limit_bytes: Option<u64>,
    /// "cgroup" or "host".
    pub limit_source: Option<String>,
    pub seconds_to_limit: Option<f64>,
    /// Raised before the window spanned mem_min_duration_s, because the limit is projected
    /// to be hit sooner.
    pub early_warning: bool,
}

impl Check for RunawayAlloc {
    fn key(&self, _first_seen_ns: u64) -> String {
        self.pid.to_string()
    }

    fn culprit(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn magnitude(&self) -> f64 {
        self.rss_bytes as f64
    }
}

/// Processes remembered as already warned early, at most (cleared when full).
const MAX_WARNED: usize = 4096;

pub struct Runaways {
    min_samples: u64,
    min_duration_ns: u64,
    min_rate: f64,
    min_growth: u64,
    min_steadiness: f64,
    critical_s: f64,
    early_min_samples: u64,
    early_min_duration_ns: u64,
    early_min_growth: u64,
    early_min_headroom_share: f64,
    /// Processes with new samples since the last evaluation.
    dirty: BTreeMap<u32, ()>,
    /// Processes raised early: their next samples need no evaluation at once.
    warned_early: BTreeSet<u32>,
}

/// A fitted growth over a process's recent samples, when it is a runaway.
pub struct Growth {
    pub rate: f64,
    pub window_s: f64,
    pub samples: u64,
    /// Raised before the window spanned its minimum duration: the limit comes sooner.
    pub early: bool,
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
            early_min_samples: cfg.mem_early_min_samples.max(2),
            early_min_duration_ns: ns(cfg.mem_early_min_duration_s),
            early_min_growth: cfg.mem_early_min_growth_bytes,
            early_min_headroom_share: cfg.mem_early_min_headroom_share,
            dirty: BTreeMap::new(),
            warned_early: BTreeSet::new(),
        }
    }

    /// Whether `track`'s recent window qualifies for the early path before any fit: enough
    /// samples, span and growth, the span not yet long enough for the regular path, and a
    /// limit to project to whose headroom it has eaten its share of. Cheap (no fit).
    fn early_candidate(&self, track: &super::state::MemTrack, limit: Option<u64>) -> bool {
        let r = &track.recent;
        let (Some(first), Some(last), Some(limit)) = (r.front(), r.back(), limit) else {
            return false;
        };
        let span = last.ts_ns.saturating_sub(first.ts_ns);
        let grown = last.rss.saturating_sub(first.rss);
        let headroom = limit.saturating_sub(first.rss);
        (r.len() as u64) >= self.early_min_samples
            && span >= self.early_min_duration_ns
            && span < self.min_duration_ns
            && grown >= self.early_min_growth
            && grown as f64 >= self.early_min_headroom_share * headroom as f64
    }

    /// Whether `track`'s recent samples are a runaway; `limit` (the process's memory limit)
    /// allows the early path.
    pub fn runaway(&self, track: &super::state::MemTrack, limit: Option<u64>) -> Option<Growth> {
        let r = &track.recent;
        let (first, last) = (r.front()?, r.back()?);
        let regular = (r.len() as u64) >= self.min_samples
            && last.ts_ns.saturating_sub(first.ts_ns) >= self.min_duration_ns
            && last.rss >= first.rss.saturating_add(self.min_growth);
        if !regular && !self.early_candidate(track, limit) {
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
        if rate < self.min_rate {
            return None;
        }
        let growth = Growth {
            rate,
            window_s,
            samples: r.len() as u64,
            early: !regular,
        };
        if regular {
            return Some(growth);
        }
        // Early, from few samples: the growth must also go on to the end, not be a burst then
        // a plateau (samples come per step moved, so a burst alone sends many rising ones).
        if rate <= 0.0 || !grows_to_the_end(r) {
            return None;
        }
        // Only when the limit comes before the regular path could speak.
        let to_limit = limit?.saturating_sub(last.rss) as f64 / rate;
        let span_left = secs(
            first
                .ts_ns
                .saturating_add(self.min_duration_ns)
                .saturating_sub(last.ts_ns),
        );
        (to_limit < span_left).then_some(growth)
    }
}

/// Whether RSS kept growing to the end of the window: its last half (in time) holds at least
/// a third of the window's growth (a steady grower's holds half, a burst then a plateau's
/// almost none, however many rising samples the burst sent).
fn grows_to_the_end(r: &std::collections::VecDeque<super::state::MemPoint>) -> bool {
    let (Some(first), Some(last)) = (r.front(), r.back()) else {
        return false;
    };
    let mid = first.ts_ns + last.ts_ns.saturating_sub(first.ts_ns) / 2;
    // RSS at the middle: the last sample at or before it.
    let at_mid = r
        .iter()
        .take_while(|p| p.ts_ns <= mid)
        .last()
        .map_or(first.rss, |p| p.rss);
    let total = last.rss.saturating_sub(first.rss);
    total > 0 && last.rss.saturating_sub(at_mid).saturating_mul(3) >= total
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

    fn kinds(&self) -> Kinds {
        Kinds::kernel(&[Kind::MemSample, Kind::Exit, Kind::Exec])
    }

    fn observe(&mut self, ev: &Event, cx: &Cx<'_>) -> bool {
        match ev.body {
            Body::MemSample(_) => {
                self.dirty.insert(ev.tgid, ());
                // A process that may reach its limit within seconds is evaluated now, not at
                // the next tick: it may be OOM-killed before then.
                !self.warned_early.contains(&ev.tgid)
                    && cx.state.mem.get(ev.tgid).is_some_and(|t| {
                        self.early_candidate(t, limit_of(cx, ev.tgid).map(|l| l.0))
                    })
            }
            Body::Exit(_) | Body::Exec(_) => {
                self.warned_early.remove(&ev.tgid);
                false
            }
            _ => false,
        }
    }

    fn findings(&mut self, _now_ns: u64, cx: &Cx<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        // Only processes that sent samples since the last evaluation can have changed; the
        // engine keeps findings raised earlier.
        for pid in std::mem::take(&mut self.dirty).into_keys() {
            let Some(track) = cx.state.mem.get(pid) else {
                continue;
            };
            let limit = limit_of(cx, pid);
            let Some(g) = self.runaway(track, limit.map(|l| l.0)) else {
                continue;
            };
            let (Some(first), Some(last)) = (track.recent.front(), track.recent.back()) else {
                continue;
            };
            if g.early {
                if self.warned_early.len() >= MAX_WARNED {
                    self.warned_early.clear();
                }
                self.warned_early.insert(pid);
            }
            let to_limit = limit.map(|(l, _)| {
                if last.rss >= l {
                    0.0
                } else {
                    (l - last.rss) as f64 / g.rate
                }
            });
            let severity = match to_limit {
                _ if g.early => Severity::Critical,
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
            let early = if g.early { "early warning: " } else { "" };
            out.push(Finding {
                workload: None,
                severity,
                summary: format!(
                    "{early}{pid} ({comm}) memory grows {}/s: RSS {} -> {} in {:.0} s{projection}",
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
                    early_warning: g.early,
                }),
                previous_names: Vec::new(),
                boot: None,
            });
        }
        out
    }
}

pub(crate) fn human_secs(s: f64) -> String {
    if s < 10.0 {
        // Early warnings speak in seconds.
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{engine::UpdateKind, testutil::*};
    use tracer_common::memory::sample_step;

    const MIB: u64 = 1 << 20;

    /// RSS following `rss_at(ms)` from `from_ms` to `to_ms`, sampled as the kernel does: a
    /// sample whenever RSS moved by its step since the last one (checked every 5 ms).
    fn sampled(
        s: &mut Stream,
        pid: u32,
        comm: &str,
        from_ms: u64,
        to_ms: u64,
        rss_at: impl Fn(u64) -> u64,
    ) -> u64 {
        let mut last = 0u64;
        let mut n = 0;
        for ms in (from_ms..=to_ms).step_by(5) {
            let rss = rss_at(ms);
            if rss.abs_diff(last) >= sample_step(rss, 16 * MIB) {
                s.at(ms).mem(pid, comm, rss);
                last = rss;
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_fast_grower_is_warned_early_before_its_oom_kill() {
        let mut s = Stream::with_host_mem(16 << 30);
        s.proc_info(1600, 1, "hog", |i| i.mem_limit = Some(240 * MIB));
        // 40 MiB/s from 4 MiB: the 240 MiB cgroup limit is reached after 5.9 s, long before
        // the 30 s the regular path waits for.
        let rss = |ms: u64| 4 * MIB + 40 * MIB * ms / 1000;
        let samples = sampled(&mut s, 1600, "hog", 0, 5900, rss);
        assert!(samples >= 20, "{samples} samples");
        let oom_ms = 5905;
        s.at(oom_ms).oom(1600, "hog", 1600, "hog", 240 * 1024);
        s.at(oom_ms + 1).exit(1600, "hog", 9);
        s.finish();
        let updates = s.engine.take_updates();
        let warned = updates
            .iter()
            .find(|u| u.kind == UpdateKind::New && u.finding.kind() == "runaway_alloc")
            .expect("a runaway_alloc finding");
        let oom = updates
            .iter()
            .find(|u| u.finding.kind() == "oom_kill")
            .expect("an oom_kill finding");
        let at_s = (warned.at_ns - BASE_NS) as f64 / 1e9;
        // Raised at the first sample that passes the early rules (1 s, a quarter of the
        // headroom eaten: 59 MiB, i.e. ~1.5 s), well before the kill.
        assert!(at_s <= 2.0, "raised at {at_s} s");
        assert!(warned.at_ns < oom.at_ns);
        assert_eq!(warned.finding.severity.name(), "critical");
        assert!(
            warned
                .finding
                .summary
                .starts_with("early warning: 1600 (hog)"),
            "{}",
            warned.finding.summary
        );
        let e = s.json_of("runaway_alloc");
        assert_eq!(e["early_warning"], true);
        assert_eq!(e["limit_source"], "cgroup");
        assert_eq!(e["severity"], "critical");
        let rate = e["growth_bytes_per_sec"].as_u64().unwrap() as f64;
        assert!((rate / (40 * MIB) as f64 - 1.0).abs() < 0.05, "{e}");
        // The projection made when it was raised: the limit within the remaining ~4.5 s.
        let j = warned.finding.to_json(&s.host);
        let left = j["seconds_to_limit"].as_f64().unwrap();
        let want = 5.9 - at_s;
        assert!(
            (left - want).abs() < 0.5,
            "{left} s to the limit, want {want}: {j}"
        );
    }

    #[test]
    fn the_early_path_waits_for_the_regular_window_when_the_limit_is_far() {
        // 100 MiB/s for 20 s on a 64 GiB host: the host is ~10 min away, more than the 10 s
        // left of the window, so nothing before the window has spanned 30 s.
        let mut s = Stream::with_host_mem(64 << 30);
        sampled(&mut s, 1700, "java", 0, 20_000, |ms| {
            (1 << 30) + 100 * MIB * ms / 1000
        });
        s.finish();
        assert!(s.findings_of("runaway_alloc").is_empty());
        // A slower grower toward a far cgroup limit likewise: 20 MiB/s for 20 s from 100 MiB
        // with 1 GiB of headroom has eaten more than a quarter of it, but the limit is still
        // ~30 s away when only 10 s of the window are left.
        let mut s = Stream::with_host_mem(16 << 30);
        s.proc_info(1701, 1, "ruby", |i| i.mem_limit = Some(1124 * MIB));
        sampled(&mut s, 1701, "ruby", 0, 20_000, |ms| {
            (100 * MIB) + 20 * MIB * ms / 1000
        });
        s.finish();
        assert!(s.findings_of("runaway_alloc").is_empty());
    }

    #[test]
    fn allocating_then_freeing_in_a_tight_cgroup_is_not_warned_early() {
        let mut s = Stream::with_host_mem(16 << 30);
        s.proc_info(1800, 1, "batch", |i| i.mem_limit = Some(512 * MIB));
        // Rounds of 3 s: allocate for 1 s (each round 40 MiB more than the last, up to
        // 100 + 220 MiB of the 512), free it over 0.5 s, idle. The first round eats less than a
        // quarter of the headroom (a single rise cannot be told from a runaway's start); the
        // later ones more, but with the frees between them they are not steady.
        let round_ms = 3000;
        let rss = move |ms: u64| {
            let (round, t) = (ms / round_ms, ms % round_ms);
            let peak = (100 + round * 40) * MIB;
            100 * MIB
                + match t {
                    0..1000 => peak * t / 1000,
                    1000..1500 => peak * (1500 - t) / 500,
                    _ => 0,
                }
        };
        sampled(&mut s, 1800, "batch", 0, 4 * round_ms - 1, rss);
        s.finish();
        assert!(s.findings_of("runaway_alloc").is_empty());
    }

    #[test]
    fn a_start_up_burst_then_a_plateau_is_not_warned_early() {
        let mut s = Stream::with_host_mem(16 << 30);
        s.proc_info(1900, 1, "node", |i| i.mem_limit = Some(64 * MIB));
        // 30 MiB loaded in 100 ms, then 3 MiB more over 5 s: samples rise, but not in time.
        sampled(&mut s, 1900, "node", 0, 5000, |ms| {
            2 * MIB + (30 * MIB).min(30 * MIB * ms / 100) + 3 * MIB * ms / 5000
        });
        s.finish();
        assert!(s.findings_of("runaway_alloc").is_empty());
    }

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
