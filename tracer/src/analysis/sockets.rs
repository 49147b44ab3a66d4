//! `socket_leak`: a process whose open sockets keep growing.
//!
//! Open sockets per process = the /proc baseline (ProcInfo.open_sockets) + successful socket()
//! and accept() − close() of those sockets; reset at exec and exit. A leak is growth over a
//! sliding window that is large, fast and steady (each third of the window higher than the
//! one before), sustained long enough that a burst of connections at start-up does not count.
use std::collections::{BTreeMap, VecDeque};

use super::{
    Analysis, AnalysisConfig, Cx, Evidence, Finding, Severity, SocketLeak, comm_of, ns, round,
    secs, slope,
};
use crate::event::{Body, Event};

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

    fn record(&mut self, pid: u32, comm: &str, ts: u64, delta: i64) {
        let window = self.window_ns;
        let p = self.procs.entry(pid).or_default();
        if p.exited {
            *p = Proc::default();
        }
        if p.comm.is_empty() {
            p.comm = comm.to_owned();
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
        let comm = ev.comm.to_string();
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
            Body::SocketOpen(s) if s.fd >= 0 => self.record(ev.tgid, &comm, ev.ts_ns, 1),
            Body::TcpAccept(a) if a.ret >= 0 => self.record(ev.tgid, &comm, ev.ts_ns, 1),
            Body::SocketClose(_) => self.record(ev.tgid, &comm, ev.ts_ns, -1),
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
            if per_min < self.min_per_min || !steady(&pts) {
                continue;
            }
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
                severity,
                summary: format!(
                    "{pid} ({comm}) leaks sockets: {open} open, +{} in {:.0} s ({:.0}/min){limit_note}",
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
                }),
            });
        }
        self.procs.retain(|_, p| !p.exited);
        out
    }
}

/// Growth that keeps on: the mean of each third of the window is above the previous third's.
fn steady(pts: &[(f64, f64)]) -> bool {
    let n = pts.len();
    let third = |a: usize, b: usize| {
        let s = &pts[a..b.max(a + 1).min(n)];
        s.iter().map(|p| p.1).sum::<f64>() / s.len() as f64
    };
    let (a, b) = (n / 3, 2 * n / 3);
    let (m1, m2, m3) = (
        third(0, a.max(1)),
        third(a.max(1), b.max(2)),
        third(b.max(2), n),
    );
    m1 < m2 && m2 < m3
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
}
