//! `socket_leak`: a process whose open sockets keep growing.
//!
//! Open sockets per process = the /proc baseline (ProcInfo.open_sockets) + successful socket()
//! and accept() − close() of those sockets; reset at exec and exit. A leak is growth over a
//! sliding window that is large and fast (net growth and fitted rate above their thresholds)
//! and a trend, not a step: the window is split into [`INTERVALS`] equal sub-intervals, and
//! the count must have reached a new high in at least [`MIN_RISING`] of them, one of them at
//! least in the last third of the window (still growing now). A burst of connections that
//! then stays connected makes a new high in one or two sub-intervals only; a pool that swings
//! up and down makes few, and its fitted rate stays low.
use std::collections::{BTreeMap, VecDeque};

use super::{
    Analysis, AnalysisConfig, Cx, Evidence, Finding, Severity, SocketLeak, comm_of, ns, round,
    secs, slope,
};
use crate::event::{Body, Event};

/// Sub-intervals the window is split into for the trend test.
const INTERVALS: usize = 6;
/// Sub-intervals that must end at a new high: two thirds.
const MIN_RISING: usize = (2 * INTERVALS).div_ceil(3);

#[derive(Default)]
struct Proc {
    comm: String,
    open: i64,
    opened: u64,
    closed: u64,
    /// (second bucket start, open sockets at its end): at most one point per second.
    series: VecDeque<(u64, i64)>,
    last_change_ns: u64,
    first_ns: u64,
    /// Exited: evaluated one last time, then forgotten.
    exited: bool,
}

pub struct SocketLeaks {
    window_ns: u64,
    min_growth: u64,
    min_per_min: f64,
    min_span_ns: u64,
    procs: BTreeMap<u32, Proc>,
}

impl SocketLeaks {
    pub fn new(cfg: &AnalysisConfig) -> SocketLeaks {
        SocketLeaks {
            window_ns: ns(cfg.socket_leak_window_s),
            min_growth: cfg.socket_leak_min_growth,
            min_per_min: cfg.socket_leak_min_per_min,
            min_span_ns: ns(cfg.socket_leak_min_span_s),
            procs: BTreeMap::new(),
        }
    }

    fn record(&mut self, pid: u32, comm: &crate::event::Comm, ts: u64, delta: i64) {
        let window = self.window_ns;
        let p = self.procs.entry(pid).or_default();
        if p.exited {
            *p = Proc::default();
        }
        if p.comm.is_empty() {
            p.comm = comm.to_string();
        }
        p.open += delta;
        if delta > 0 {
            p.opened += delta as u64;
        } else {
            p.closed += (-delta) as u64;
        }
        p.last_change_ns = ts;
        if p.first_ns == 0 {
            p.first_ns = ts;
        }
        let bucket = ts - ts % super::NS;
        match p.series.back_mut() {
            Some(last) if last.0 >= bucket => last.1 = p.open,
            _ => p.series.push_back((bucket, p.open)),
        }
        // Keep one point older than the window: the level the window starts from.
        while p.series.len() > 2 && p.series[1].0.saturating_add(window) < ts {
            p.series.pop_front();
        }
    }

    /// The open-socket count of `pid` as this analysis sees it (for tests and the fd analysis).
    pub fn open(&self, pid: u32) -> Option<i64> {
        self.procs.get(&pid).map(|p| p.open)
    }
}

impl Analysis for SocketLeaks {
    fn name(&self) -> &'static str {
        "socket_leak"
    }

    fn observe(&mut self, ev: &Event, _cx: &Cx<'_>) -> bool {
        let comm = &ev.comm;
        match &ev.body {
            Body::ProcInfo(info) => {
                if let Some(n) = info.open_sockets {
                    let p = self.procs.entry(info.pid).or_default();
                    // /proc is the truth at this moment: shift the whole series so the baseline
                    // does not look like growth.
                    let shift = n as i64 - p.open;
                    p.open = n as i64;
                    for pt in p.series.iter_mut() {
                        pt.1 += shift;
                    }
                    if !info.comm.is_empty() {
                        p.comm = info.comm.clone();
                    }
                }
            }
            Body::SocketOpen(s) if s.fd >= 0 => self.record(ev.tgid, comm, ev.ts_ns, 1),
            Body::TcpAccept(a) if a.ret >= 0 => self.record(ev.tgid, comm, ev.ts_ns, 1),
            Body::SocketClose(_) => self.record(ev.tgid, comm, ev.ts_ns, -1),
            Body::ConnOpen(_) => self.record(ev.tgid, comm, ev.ts_ns, 1),
            Body::ConnClose(_) => self.record(ev.tgid, comm, ev.ts_ns, -1),
            Body::Exec(_) => {
                self.procs.remove(&ev.tgid);
            }
            Body::Exit(_) => {
                if let Some(p) = self.procs.get_mut(&ev.tgid) {
                    p.exited = true;
                }
            }
            _ => {}
        }
        false
    }

    fn findings(&mut self, now_ns: u64, cx: &Cx<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        for (&pid, p) in &self.procs {
            let Some(&(t0, _)) = p.series.front() else {
                continue;
            };
            let start = now_ns.saturating_sub(self.window_ns).max(t0);
            // The level at the window's start (the last point at or before it), then every
            // point inside it.
            let from = p.series.iter().rposition(|&(t, _)| t <= start).unwrap_or(0);
            let pts: Vec<(f64, f64)> = p
                .series
                .iter()
                .skip(from)
                .map(|&(t, v)| (secs(t.max(start) - start), v as f64))
                .collect();
            let span_ns = p.last_change_ns.saturating_sub(start);
            if pts.len() < 3 || span_ns < self.min_span_ns {
                continue;
            }
            let first = pts[0].1;
            let low = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let growth = (p.open as f64 - low.min(first)).max(0.0);
            if growth < self.min_growth as f64 {
                continue;
            }
            let Some(rate) = slope(&pts) else { continue };
            let per_min = rate * 60.0;
            if per_min < self.min_per_min {
                continue;
            }
            let rises = rising(&p.series, start, now_ns.max(start));
            if !is_trend(&rises) {
                continue;
            }
            let rising_n = rises.iter().filter(|&&r| r).count();
            let comm = comm_of(cx.procs, pid, &p.comm);
            let fd_limit = cx.procs.get(pid).and_then(|e| e.nofile_limit);
            let open = p.open.max(0) as u64;
            let severity = match fd_limit {
                Some(l) if open * 10 >= l * 8 => Severity::Critical,
                _ => Severity::Warning,
            };
            let limit_note = fd_limit
                .map(|l| format!(" (fd limit {l})"))
                .unwrap_or_default();
            out.push(Finding {
workload: None,
                severity,
                summary: format!(
                    "{pid} ({comm}) leaks sockets: {open} open, +{} in {:.0} s ({:.0}/min, grew in {rising_n} of {INTERVALS} intervals){limit_note}",
                    growth as u64,
                    secs(now_ns.saturating_sub(start)),
                    per_min
                ),
                first_seen_ns: start.max(p.first_ns),
                last_seen_ns: p.last_change_ns,
                evidence: Evidence::SocketLeak(SocketLeak {
                    pid,
                    comm,
                    open_sockets: open,
                    growth_per_min: round(per_min, 1),
                    growth: growth as u64,
                    window_s: round(secs(now_ns.saturating_sub(start)), 1),
                    opened: p.opened,
                    closed: p.closed,
                    fd_limit,
                    rising_intervals: rising_n as u64,
                    intervals: INTERVALS as u64,
                }),
                previous_names: Vec::new(),
            });
        }
        self.procs.retain(|_, p| !p.exited);
        out
    }
}

/// For each of [`INTERVALS`] equal sub-intervals of `[start, end]`: whether more sockets were
/// open at its end than ever before at the sub-intervals' bounds (a new high: a pool that
/// swings down and back up does not count twice). The level at a time is that of the last point at or
/// before it (the first point when there is none).
fn rising(series: &VecDeque<(u64, i64)>, start: u64, end: u64) -> [bool; INTERVALS] {
    let level = |t: u64| {
        let i = series.partition_point(|&(pt, _)| pt <= t);
        series[i.saturating_sub(1)].1
    };
    let span = end - start;
    let at = |k: usize| start + (span as u128 * k as u128 / INTERVALS as u128) as u64;
    let mut out = [false; INTERVALS];
    if series.is_empty() {
        return out;
    }
    let mut high = level(start);
    for (k, r) in out.iter_mut().enumerate() {
        let v = level(at(k + 1));
        *r = v > high;
        high = high.max(v);
    }
    out
}

/// A trend, not a step: risen across most sub-intervals, and still rising in the last third.
fn is_trend(rises: &[bool; INTERVALS]) -> bool {
    let n = rises.iter().filter(|&&r| r).count();
    let last_third = &rises[INTERVALS - INTERVALS / 3..];
    n >= MIN_RISING && last_third.iter().any(|&r| r)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn a_proxy_that_never_closes_leaks() {
        let mut s = Stream::new();
        s.proc_info(300, 1, "node", |i| {
            i.open_sockets = Some(40);
            i.nofile_limit = Some(1024);
        });
        // 5 accepted connections a second, 1 closed: +4/s for 60 s.
        for sec in 0..60u64 {
            for k in 0..5 {
                s.at(sec * 1000 + k * 100)
                    .accept(300, "node", 10 + k as i32, 8080);
            }
            s.at(sec * 1000 + 600).socket_close(300, "node", 10);
        }
        let f = s.findings_of("socket_leak");
        assert_eq!(f.len(), 1, "{f:#?}");
        let e = s.json_of("socket_leak");
        assert_eq!(e["pid"], 300);
        assert_eq!(e["comm"], "node");
        assert_eq!(e["open_sockets"], 40 + 60 * 4);
        let rate = e["growth_per_min"].as_f64().unwrap();
        assert!((200.0..280.0).contains(&rate), "{rate}");
    }

    #[test]
    fn a_healthy_server_with_steady_closing_connections_does_not_leak() {
        let mut s = Stream::new();
        s.proc_info(300, 1, "nginx", |i| i.open_sockets = Some(5));
        for sec in 0..300u64 {
            for k in 0..20 {
                s.at(sec * 1000 + k * 40)
                    .accept(300, "nginx", 10 + k as i32, 80);
                s.at(sec * 1000 + k * 40 + 30)
                    .socket_close(300, "nginx", 10 + k as i32);
            }
        }
        s.finish();
        assert!(s.findings_of("socket_leak").is_empty());
    }

    #[test]
    fn a_startup_burst_that_plateaus_is_not_a_leak() {
        let mut s = Stream::new();
        for k in 0..200 {
            s.at(k).socket_open(400, "pool", 10 + k as i32);
        }
        for sec in 1..120u64 {
            s.at(sec * 1000).socket_open(400, "pool", 500);
            s.at(sec * 1000 + 10).socket_close(400, "pool", 500);
        }
        s.finish();
        assert!(s.findings_of("socket_leak").is_empty());
    }

    /// The redis false alarm: 100 clients connect in a 2 s burst and stay connected; a health
    /// check opens and closes a socket every second. Never a leak, wherever the window is.
    #[test]
    fn a_burst_of_clients_that_stays_connected_is_not_a_leak() {
        let mut s = Stream::new();
        s.proc_info(500, 1, "redis-server", |i| i.open_sockets = Some(2));
        for k in 0..100u64 {
            s.at(1_000 + k * 20)
                .accept(500, "redis-server", 10 + k as i32, 6379);
        }
        for sec in 2..200u64 {
            s.at(sec * 1000).socket_open(500, "redis-server", 900);
            s.at(sec * 1000 + 10).socket_close(500, "redis-server", 900);
            // Findings stay once raised: checking at each position checks every window.
            if [10, 22, 30, 45, 61, 75, 120, 199].contains(&sec) {
                let f = s.findings_of("socket_leak");
                assert!(f.is_empty(), "at {sec} s: {f:#?}");
            }
        }
    }

    #[test]
    fn a_steady_leak_of_two_sockets_a_second_is_a_leak_that_grew_in_every_interval() {
        let mut s = Stream::new();
        s.proc_info(510, 1, "node", |i| i.open_sockets = Some(10));
        for sec in 0..90u64 {
            s.at(sec * 1000 + 100).accept(510, "node", 20, 8080);
            s.at(sec * 1000 + 600).accept(510, "node", 21, 8080);
        }
        let e = s.json_of("socket_leak");
        assert_eq!(e["pid"], 510);
        assert_eq!(e["comm"], "node");
        assert_eq!(e["open_sockets"], 10 + 180);
        let rate = e["growth_per_min"].as_f64().unwrap();
        assert!((100.0..140.0).contains(&rate), "{rate}");
        assert_eq!(e["rising_intervals"], 6);
        assert_eq!(e["intervals"], 6);
        let summary = e["summary"].as_str().unwrap();
        assert!(summary.contains("grew in 6 of 6 intervals"), "{summary}");
    }

    /// Leaks in batches: +25 at once every 12 s, nothing in between.
    #[test]
    fn a_staircase_leak_with_pauses_is_a_leak() {
        let mut s = Stream::new();
        s.proc_info(520, 1, "java", |i| i.open_sockets = Some(30));
        for step in 0..10u64 {
            for k in 0..25u64 {
                s.at(step * 12_000 + k * 10)
                    .socket_open(520, "java", 100 + k as i32);
            }
            s.at(step * 12_000 + 11_000).tick();
        }
        let e = s.json_of("socket_leak");
        assert_eq!(e["pid"], 520);
        let rising = e["rising_intervals"].as_u64().unwrap();
        assert!((4..=6).contains(&rising), "{e:#}");
        assert_eq!(e["intervals"], 6);
    }

    /// A pool that grows by 60 over 10 s, then shrinks back over 10 s, again and again: flat on
    /// average, though each swing alone is as large as the minimum growth.
    #[test]
    fn a_churning_pool_that_is_flat_on_average_is_not_a_leak() {
        let mut s = Stream::new();
        s.proc_info(530, 1, "pgbouncer", |i| i.open_sockets = Some(20));
        for sec in 0..300u64 {
            let up = sec % 20 < 10;
            for k in 0..10u64 {
                let t = sec * 1000 + k * 50;
                s.at(t).socket_open(530, "pgbouncer", 100);
                s.at(t + 20).socket_close(530, "pgbouncer", 100);
            }
            for k in 0..6u64 {
                let t = sec * 1000 + 600 + k * 50;
                if up {
                    s.at(t).socket_open(530, "pgbouncer", 200 + k as i32);
                } else {
                    s.at(t).socket_close(530, "pgbouncer", 200 + k as i32);
                }
            }
        }
        let f = s.findings_of("socket_leak");
        assert!(f.is_empty(), "{f:#?}");
    }

    #[test]
    fn the_trend_rule_needs_most_intervals_and_recent_growth() {
        use super::{INTERVALS, MIN_RISING, is_trend};
        assert_eq!((INTERVALS, MIN_RISING), (6, 4));
        assert!(is_trend(&[true; 6]));
        assert!(is_trend(&[false, true, false, true, true, true]));
        assert!(is_trend(&[true, true, true, false, true, false]));
        // A step then a plateau.
        assert!(!is_trend(&[true, false, false, false, false, false]));
        // A ramp that stopped a third of a window ago.
        assert!(!is_trend(&[true, true, true, true, false, false]));
        assert!(!is_trend(&[true, false, true, false, true, false]));
    }
}
