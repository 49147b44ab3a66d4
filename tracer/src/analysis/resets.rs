//! `reset_storm`: many TCP resets sent or received around one process or service port.
//!
//! Resets are grouped by (owning process, service port); a reset for a packet that has no
//! socket (a SYN to a port nobody listens on, e.g. while a service restarts) has no owner and
//! is grouped by port alone. Rates come from per-second buckets over a sliding window, so a
//! flood costs constant memory.
use std::collections::{BTreeMap, VecDeque};

use tracer_common::tcp::RESET_SENT;

use super::{
    Analysis, AnalysisConfig, Cx, Evidence, Finding, ResetStorm, Severity, comm_of, round, secs,
    service_port,
};
use crate::event::{Body, Event};

/// Keys with no reset for this long are forgotten (their finding, if any, stays raised).
const IDLE_NS: u64 = 600 * super::NS;

#[derive(Default)]
struct Group {
    comm: Option<String>,
    sent: u64,
    received: u64,
    /// (second, resets in it), within the window.
    buckets: VecDeque<(u64, u64)>,
    peak_in_window: u64,
    first_ns: u64,
    last_ns: u64,
}

pub struct ResetStorms {
    window_s: u64,
    min_count: u64,
    groups: BTreeMap<(u32, u16), Group>,
}

impl ResetStorms {
    pub fn new(cfg: &AnalysisConfig) -> ResetStorms {
        ResetStorms {
            window_s: (cfg.reset_window_s.ceil() as u64).max(1),
            min_count: cfg.reset_min_count.max(1),
            groups: BTreeMap::new(),
        }
    }
}

impl Analysis for ResetStorms {
    fn name(&self) -> &'static str {
        "reset_storm"
    }

    fn observe(&mut self, ev: &Event, cx: &Cx<'_>) -> bool {
        let Body::TcpReset(r) = &ev.body else {
            return false;
        };
        let owner = if r.sk != 0 {
            cx.state.owner(r.sk, r.owner_tgid)
        } else {
            None
        }
        .unwrap_or(0);
        let port = service_port(r.sport, r.dport);
        let g = self.groups.entry((owner, port)).or_default();
        if g.first_ns == 0 {
            g.first_ns = ev.ts_ns;
            if owner != 0 {
                g.comm = Some(comm_of(cx.procs, owner, "?"));
            }
        }
        g.last_ns = g.last_ns.max(ev.ts_ns);
        if r.direction == RESET_SENT {
            g.sent += 1;
        } else {
            g.received += 1;
        }
        let sec = ev.ts_ns / super::NS;
        match g.buckets.back_mut() {
            Some(b) if b.0 >= sec => b.1 += 1,
            _ => g.buckets.push_back((sec, 1)),
        }
        while g
            .buckets
            .front()
            .is_some_and(|b| b.0 + self.window_s <= sec)
        {
            g.buckets.pop_front();
        }
        let in_window: u64 = g.buckets.iter().map(|b| b.1).sum();
        g.peak_in_window = g.peak_in_window.max(in_window);
        false
    }

    fn findings(&mut self, now_ns: u64, cx: &Cx<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        for (&(pid, port), g) in &self.groups {
            if g.peak_in_window < self.min_count {
                continue;
            }
            let per_sec = g.peak_in_window as f64 / self.window_s as f64;
            let comm = if pid == 0 {
                None
            } else {
                g.comm.clone().or_else(|| Some(comm_of(cx.procs, pid, "?")))
            };
            let who = match &comm {
                Some(c) => format!("{pid} ({c}), port {port}"),
                None => format!("port {port} (no owning process)"),
            };
            out.push(Finding {
                severity: if per_sec >= 100.0 { Severity::Critical } else { Severity::Warning },
                summary: format!(
                    "TCP reset storm around {who}: {} sent, {} received in {:.1} s (up to {per_sec:.1}/s over {} s)",
                    g.sent,
                    g.received,
                    secs(g.last_ns.saturating_sub(g.first_ns)),
                    self.window_s
                ),
                first_seen_ns: g.first_ns,
                last_seen_ns: g.last_ns,
                evidence: Evidence::ResetStorm(ResetStorm {
                    pid: (pid != 0).then_some(pid),
                    comm,
                    port,
                    sent: g.sent,
                    received: g.received,
                    per_sec: round(per_sec, 2),
                }),
            });
        }
        self.groups
            .retain(|_, g| g.last_ns.saturating_add(IDLE_NS) >= now_ns);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use tracer_common::tcp::{RESET_RECEIVED, RESET_SENT};

    #[test]
    fn resets_around_a_restarting_service_port() {
        let mut s = Stream::new();
        // The service is down: SYNs to port 3000 get resets with no socket, 10 a second.
        for k in 0..50u64 {
            s.at(k * 100)
                .reset(0, "swapper/0", 0, RESET_SENT, 0, 3000, 50000 + k as u16);
        }
        // Its clients' long-lived connections get reset too.
        for k in 0..30u64 {
            s.at(k * 100)
                .reset(0, "swapper/0", 0x9000 + k, RESET_RECEIVED, 600, 3000, 51000);
        }
        let f = s.findings_of("reset_storm");
        assert_eq!(f.len(), 2, "{f:#?}");
        let all = s.all_json();
        let no_owner = all
            .iter()
            .find(|f| f["kind"] == "reset_storm" && f["pid"].is_null())
            .unwrap();
        assert_eq!(no_owner["port"], 3000);
        assert_eq!(no_owner["sent"], 50);
        assert_eq!(no_owner["per_sec"], 5.0);
        let owned = all
            .iter()
            .find(|f| f["kind"] == "reset_storm" && f["pid"] == 600)
            .unwrap();
        assert_eq!(owned["received"], 30);
    }

    #[test]
    fn a_few_resets_are_not_a_storm() {
        let mut s = Stream::new();
        for k in 0..100u64 {
            s.at(k * 2000)
                .reset(0, "swapper/0", 0, RESET_SENT, 0, 22, 50000);
        }
        s.finish();
        assert!(s.findings_of("reset_storm").is_empty());
    }
}
