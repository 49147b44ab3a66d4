//! `conn_pileup`: outgoing connections from one process to one remote endpoint (a database,
//! an upstream) that pile up and stay open.
//!
//! A healthy pool holds many long-lived connections that carry traffic; a pile-up is
//! connections that wait for an answer. The collector reports an outgoing connection that has
//! been in SYN_SENT, or has sent and received nothing since, for a second (`conn_status`
//! unanswered, from the kernel's per-connection activity) and again when it gets its answer
//! (`cleared`) or is closed (`conn_close`). Only connections without an answer for
//! `pileup_min_age_s` count. Dumps of earlier versions have no activity: there a connection is
//! open from SYN_SENT until it is closed (FIN_WAIT1, LAST_ACK, CLOSE), as before.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
};

use serde::Serialize;
use tracer_common::tcp::{ROLE_ACTIVE, STATE_FLAG_MODEL, state as tcp, status};

use super::{
    Analysis, AnalysisConfig, Check, Cx, Evidence, Finding, Kinds, Severity, comm_of, comm_or, ns,
    round, secs,
};
use crate::{
    event::{Body, Event, socket_addr},
    proc_table::IdHash,
};
use tracer_common::Kind;

/// The evidence of a `conn_pileup` finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConnPileup {
    pub pid: u32,
    pub comm: String,
    pub remote: String,
    pub open: u64,
    pub oldest_age_s: f64,
    pub opened: u64,
    pub closed: u64,
}

impl Check for ConnPileup {
    fn key(&self, _first_seen_ns: u64) -> String {
        format!("{}>{}", self.pid, self.remote)
    }

    fn culprit(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn magnitude(&self) -> f64 {
        self.open as f64
    }
}

struct Conn {
    owner: u32,
    remote: SocketAddr,
    since_ns: u64,
    /// Known to be waiting for an answer (from the connection model), not merely open.
    unanswered: bool,
}

#[derive(Default)]
struct Totals {
    opened: u64,
    closed: u64,
}

pub struct Pileups {
    min_open: u64,
    min_age_ns: u64,
    conns: HashMap<u64, Conn, IdHash>,
    totals: BTreeMap<(u32, SocketAddr), Totals>,
    comms: HashMap<u32, String, IdHash>,
    /// Processes that exited since the last evaluation: their connections went with them
    /// (dropped at the next evaluation, in one pass, rather than a scan per exit).
    exited: HashSet<u32, IdHash>,
}

impl Pileups {
    pub fn new(cfg: &AnalysisConfig) -> Pileups {
        Pileups {
            min_open: cfg.pileup_min_open.max(1),
            min_age_ns: ns(cfg.pileup_min_age_s),
            conns: HashMap::default(),
            totals: BTreeMap::new(),
            comms: HashMap::default(),
            exited: HashSet::default(),
        }
    }

    fn close(&mut self, sk: u64) {
        if let Some(c) = self.conns.remove(&sk)
            && let Some(t) = self.totals.get_mut(&(c.owner, c.remote))
        {
            t.closed += 1;
        }
    }

    fn comm(&mut self, cx: &Cx<'_>, owner: u32, ev: &Event) {
        self.comms
            .entry(owner)
            .or_insert_with(|| comm_or(cx.procs, owner, ev.comm));
    }
}

impl Analysis for Pileups {
    fn name(&self) -> &'static str {
        "conn_pileup"
    }

    fn kinds(&self) -> Kinds {
        Kinds::kernel(&[
            Kind::TcpState,
            Kind::ConnOpen,
            Kind::ConnClose,
            Kind::ConnStatus,
            Kind::Exit,
        ])
    }

    fn observe(&mut self, ev: &Event, cx: &Cx<'_>) -> bool {
        match &ev.body {
            Body::TcpState(t) if t.flags & STATE_FLAG_MODEL != 0 => {}
            Body::ConnOpen(c) if c.role == ROLE_ACTIVE && ev.tgid != 0 => {
                let remote = socket_addr(c.family, &c.daddr, c.dport);
                self.totals.entry((ev.tgid, remote)).or_default().opened += 1;
                self.comm(cx, ev.tgid, ev);
            }
            Body::ConnClose(c) if c.role == ROLE_ACTIVE => {
                self.conns.remove(&c.sk);
                let remote = socket_addr(c.family, &c.daddr, c.dport);
                if let Some(t) = self.totals.get_mut(&(ev.tgid, remote)) {
                    t.closed += 1;
                }
            }
            Body::ConnStatus(c) if c.status == status::UNANSWERED && ev.tgid != 0 => {
                let remote = socket_addr(c.family, &c.daddr, c.dport);
                self.comm(cx, ev.tgid, ev);
                self.conns.insert(
                    c.sk,
                    Conn {
                        owner: ev.tgid,
                        remote,
                        since_ns: c.since_ns,
                        unanswered: true,
                    },
                );
            }
            Body::ConnStatus(c) if c.status == status::CLEARED => {
                self.conns.remove(&c.sk);
            }
            Body::TcpState(t) if t.new_state == tcp::SYN_SENT => {
                let owner = cx.state.owner(t.skaddr, t.owner_tgid).unwrap_or(ev.tgid);
                if owner == 0 {
                    return false;
                }
                self.close(t.skaddr);
                let remote = socket_addr(t.family, &t.daddr, t.dport);
                self.totals.entry((owner, remote)).or_default().opened += 1;
                self.comms
                    .entry(owner)
                    .or_insert_with(|| comm_or(cx.procs, owner, ev.comm));
                self.conns.insert(
                    t.skaddr,
                    Conn {
                        owner,
                        remote,
                        since_ns: ev.ts_ns,
                        unanswered: false,
                    },
                );
            }
            Body::TcpState(t)
                if matches!(t.new_state, tcp::FIN_WAIT1 | tcp::LAST_ACK | tcp::CLOSE) =>
            {
                self.close(t.skaddr);
            }
            Body::Exit(_) => {
                let gone: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.owner == ev.tgid)
                    .map(|(k, _)| *k)
                    .collect();
                for sk in gone {
                    self.close(sk);
                }
                self.comms.remove(&ev.tgid);
                self.totals.retain(|(pid, _), _| *pid != ev.tgid);
            }
            _ => {}
        }
        false
    }

    fn findings(&mut self, now_ns: u64, cx: &Cx<'_>) -> Vec<Finding> {
        if !self.exited.is_empty() {
            let gone = std::mem::take(&mut self.exited);
            self.conns.retain(|_, c| !gone.contains(&c.owner));
            self.totals.retain(|(pid, _), _| !gone.contains(pid));
            self.comms.retain(|pid, _| !gone.contains(pid));
        }
        let mut per: BTreeMap<(u32, SocketAddr), (u64, u64, bool)> = BTreeMap::new();
        for c in self.conns.values() {
            // A connection that waits for an answer counts once it has waited long enough.
            if c.unanswered && now_ns.saturating_sub(c.since_ns) < self.min_age_ns {
                continue;
            }
            let e = per
                .entry((c.owner, c.remote))
                .or_insert((0, u64::MAX, false));
            e.0 += 1;
            e.1 = e.1.min(c.since_ns);
            e.2 |= c.unanswered;
        }
        let mut out = Vec::new();
        for ((pid, remote), (open, oldest, unanswered)) in per {
            let age_ns = now_ns.saturating_sub(oldest);
            if open < self.min_open || age_ns < self.min_age_ns {
                continue;
            }
            let comm = self
                .comms
                .get(&pid)
                .cloned()
                .unwrap_or_else(|| comm_of(cx.procs, pid, "?"));
            let t = self.totals.get(&(pid, remote));
            let (opened, closed) = t.map(|t| (t.opened, t.closed)).unwrap_or((open, 0));
            out.push(Finding {
workload: None,
                severity: Severity::Warning,
                summary: format!(
                    "{pid} ({comm}) has {open} connections open to {remote}{}, oldest {:.0} s ({opened} opened, {closed} closed)",
                    if unanswered { " without an answer" } else { "" },
                    secs(age_ns)
                ),
                first_seen_ns: oldest,
                last_seen_ns: now_ns,
                evidence: Evidence::ConnPileup(ConnPileup {
                    pid,
                    comm,
                    remote: remote.to_string(),
                    open,
                    oldest_age_s: round(secs(age_ns), 1),
                    opened,
                    closed,
                }),
                previous_names: Vec::new(),
                boot: None,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use tracer_common::tcp::{
        ROLE_ACTIVE,
        state::*,
        status::{CLEARED, UNANSWERED},
    };

    #[test]
    fn database_connections_that_never_close_pile_up() {
        let mut s = Stream::new();
        // 20 connections to the database, one every 3 s, never closed.
        for k in 0..20u64 {
            let sk = 0x5000 + k;
            s.at(k * 3000)
                .tcp_state(900, "api", sk, CLOSE, SYN_SENT, 900, 41000 + k as u16, 5432);
            s.at(k * 3000 + 2).tcp_state(
                0,
                "swapper/1",
                sk,
                SYN_SENT,
                ESTABLISHED,
                900,
                41000 + k as u16,
                5432,
            );
        }
        s.at(90_000).tick();
        let e = s.json_of("conn_pileup");
        assert_eq!(e["pid"], 900);
        assert_eq!(e["comm"], "api");
        assert_eq!(e["remote"], "10.0.0.2:5432");
        assert_eq!(e["open"], 20);
        assert_eq!(e["oldest_age_s"], 90.0);
    }

    /// `n` pooled connections of `pid` to 10.0.0.2:5432, opened 50 ms apart from `t0_ms`.
    fn open_pool(s: &mut Stream, pid: u32, n: u64, sk0: u64, t0_ms: u64) {
        for k in 0..n {
            s.at(t0_ms + k * 50).conn_open(
                pid,
                "api",
                sk0 + k,
                10 + k as i32,
                ROLE_ACTIVE,
                43000 + k as u16,
                5432,
            );
        }
    }

    #[test]
    fn a_pool_that_gets_answers_is_not_a_pileup() {
        let mut s = Stream::new();
        // 40 connections to one database, held for two minutes. They carry traffic (counted
        // in the kernel, no records); now and then a slow query leaves one waiting for over a
        // second: reported unanswered, then cleared when the answer comes.
        open_pool(&mut s, 910, 40, 0x7000, 0);
        for t in (5_000..120_000u64).step_by(5_000) {
            let sk = 0x7000 + (t / 5_000) % 40;
            let port = 43000 + ((t / 5_000) % 40) as u16;
            s.at(t + 1_000).conn_status(
                910,
                "api",
                sk,
                UNANSWERED,
                t,
                ESTABLISHED,
                ROLE_ACTIVE,
                port,
                5432,
            );
            s.at(t + 2_500).conn_status(
                910,
                "api",
                sk,
                CLEARED,
                t,
                ESTABLISHED,
                ROLE_ACTIVE,
                port,
                5432,
            );
            s.at(t + 3_000).tick();
        }
        s.at(125_000).tick();
        assert!(s.findings_of("conn_pileup").is_empty());
    }

    #[test]
    fn connections_without_an_answer_for_pileup_min_age_pile_up() {
        let mut s = Stream::new();
        // The same pool, and 20 more connections that send their query and never hear back.
        open_pool(&mut s, 911, 40, 0x8000, 0);
        open_pool(&mut s, 911, 20, 0x9000, 10_000);
        for k in 0..20u64 {
            let since = 10_000 + k * 50 + 5;
            s.at(since + 1_000).conn_status(
                911,
                "api",
                0x9000 + k,
                UNANSWERED,
                since,
                ESTABLISHED,
                ROLE_ACTIVE,
                43000 + k as u16,
                5432,
            );
        }
        // Not before they have waited pileup_min_age_s (30 s).
        s.at(39_000).tick();
        assert!(s.findings_of("conn_pileup").is_empty());
        s.at(50_000).tick();
        let e = s.json_of("conn_pileup");
        assert_eq!(e["pid"], 911);
        assert_eq!(e["remote"], "10.0.0.2:5432");
        // Only the unanswered ones, not the pool's 40 healthy connections.
        assert_eq!(e["open"], 20);
        assert_eq!(e["oldest_age_s"], 40.0);
        assert_eq!(e["opened"], 60);
        assert_eq!(e["closed"], 0);
        assert!(
            e["summary"].as_str().unwrap().contains("without an answer"),
            "{e}"
        );
    }

    #[test]
    fn answered_connections_leave_the_pileup() {
        let mut s = Stream::new();
        open_pool(&mut s, 912, 20, 0xa000, 0);
        for k in 0..20u64 {
            let (sk, port) = (0xa000 + k, 43000 + k as u16);
            s.at(1_100).conn_status(
                912,
                "api",
                sk,
                UNANSWERED,
                100,
                ESTABLISHED,
                ROLE_ACTIVE,
                port,
                5432,
            );
            // Half get their answer at 20 s, the others are closed by the pool.
            if k % 2 == 0 {
                s.at(20_000).conn_status(
                    912,
                    "api",
                    sk,
                    CLEARED,
                    100,
                    ESTABLISHED,
                    ROLE_ACTIVE,
                    port,
                    5432,
                );
            } else {
                s.at(20_000).conn_close(
                    912,
                    "api",
                    sk,
                    ROLE_ACTIVE,
                    ESTABLISHED,
                    port,
                    5432,
                    0,
                    0,
                    100,
                );
            }
        }
        s.at(60_000).tick();
        assert!(s.findings_of("conn_pileup").is_empty());
    }

    #[test]
    fn a_pool_that_closes_its_connections_does_not_pile_up() {
        let mut s = Stream::new();
        for k in 0..500u64 {
            let sk = 0x6000 + k;
            let t = k * 200;
            s.at(t)
                .tcp_state(901, "web", sk, CLOSE, SYN_SENT, 901, 42000, 5432);
            s.at(t + 1)
                .tcp_state(0, "swapper/1", sk, SYN_SENT, ESTABLISHED, 901, 42000, 5432);
            s.at(t + 150)
                .tcp_state(901, "web", sk, ESTABLISHED, FIN_WAIT1, 901, 42000, 5432);
        }
        s.finish();
        assert!(s.findings_of("conn_pileup").is_empty());
    }
}
