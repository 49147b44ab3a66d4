//! `close_wait`: sockets that entered CLOSE_WAIT (the peer closed) and stayed there (the
//! application never called close()), per owning process.
//!
//! The collector reports a socket that sat in CLOSE_WAIT for a second (`conn_status`, from the
//! kernel's connection map) and again when it leaves; its `conn_close` ends it too. Dumps of
//! earlier versions carry every state change instead, which are read the same way. A state
//! change runs in softirq, so the owner comes from the kernel's attribution (`owner_tgid`) or
//! from the owners learnt in process context ([`super::state::State::owner`]).
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use tracer_common::tcp::{STATE_FLAG_MODEL, state as tcp, status};

use super::{
    Analysis, AnalysisConfig, Check, Cx, Evidence, Finding, Kinds, Severity, comm_of, ns, round,
    secs,
};
use crate::{
    event::{Body, Event, socket_addr},
    proc_table::IdHash,
};
use tracer_common::Kind;

/// The evidence of a `close_wait` finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CloseWait {
    pub pid: u32,
    pub comm: String,
    pub count: u64,
    pub oldest_age_s: f64,
    /// The local port most of them are on.
    pub local_port: u16,
    /// The peer of the oldest.
    pub remote: String,
    /// Of `count`, those still in the listener's accept queue (the listener is `pid`).
    pub never_accepted: u64,
}

impl Check for CloseWait {
    fn key(&self, _first_seen_ns: u64) -> String {
        self.pid.to_string()
    }

    fn culprit(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn magnitude(&self) -> f64 {
        self.count as f64
    }
}

struct Stuck {
    owner: u32,
    /// Still in its listener's accept queue: the owner is the listening process, which never
    /// accept()ed it (a server out of fds, or too slow).
    unaccepted: bool,
    since_ns: u64,
    local_port: u16,
    remote: String,
}

/// The stuck sockets of one owner.
#[derive(Default)]
struct Group {
    count: u64,
    oldest: u64,
    /// Local port → sockets.
    ports: BTreeMap<u16, u64>,
    /// The peer of the oldest.
    remote: String,
    unaccepted: u64,
}

pub struct CloseWaits {
    min_age_ns: u64,
    min_count: u64,
    socks: HashMap<u64, Stuck, IdHash>,
    comms: HashMap<u32, String, IdHash>,
    /// Owners that exited since the last evaluation (their sockets closed with them).
    exited: HashSet<u32, IdHash>,
}

impl CloseWaits {
    pub fn new(cfg: &AnalysisConfig) -> CloseWaits {
        CloseWaits {
            min_age_ns: ns(cfg.close_wait_min_age_s),
            min_count: cfg.close_wait_min_count.max(1),
            socks: HashMap::default(),
            comms: HashMap::default(),
            exited: HashSet::default(),
        }
    }
}

/// Whether the process table knows `pid` has exited (an owner the kernel remembers for a
/// socket address that was freed and reused).
fn exited(cx: &Cx<'_>, pid: u32) -> bool {
    cx.procs.get(pid).is_some_and(|p| p.exited_at.is_some())
}

impl CloseWaits {
    /// Socket `sk` entered CLOSE_WAIT at `since_ns`.
    #[allow(clippy::too_many_arguments)]
    fn stuck(
        &mut self,
        cx: &Cx<'_>,
        sk: u64,
        owner_hint: u32,
        since_ns: u64,
        family: u16,
        sport: u16,
        daddr: &[u8; 16],
        dport: u16,
    ) {
        let known = cx.state.owner(sk, owner_hint).filter(|&p| !exited(cx, p));
        let listener = cx
            .state
            .listeners
            .get(&sport)
            .copied()
            .filter(|&p| !exited(cx, p));
        let unaccepted = known.is_none() && listener.is_some();
        let owner = known.or(listener).unwrap_or(0);
        if owner != 0 && !self.comms.contains_key(&owner) {
            let c = comm_of(cx.procs, owner, "?");
            self.comms.insert(owner, c);
        }
        self.socks.insert(
            sk,
            Stuck {
                owner,
                unaccepted,
                since_ns,
                local_port: sport,
                remote: socket_addr(family, daddr, dport).to_string(),
            },
        );
    }

    /// Learnt the owner after the fact (it accepted the socket, or read from it).
    fn owned(&mut self, sk: u64, pid: u32) {
        if let Some(s) = self.socks.get_mut(&sk)
            && (s.owner == 0 || s.unaccepted)
        {
            s.owner = pid;
            s.unaccepted = false;
        }
    }
}

impl Analysis for CloseWaits {
    fn name(&self) -> &'static str {
        "close_wait"
    }

    fn kinds(&self) -> Kinds {
        Kinds::kernel(&[
            Kind::TcpState,
            Kind::ConnStatus,
            Kind::ConnClose,
            Kind::ConnOpen,
            Kind::SockOwner,
            Kind::TcpAccept,
            Kind::Exit,
        ])
    }

    fn observe(&mut self, ev: &Event, cx: &Cx<'_>) -> bool {
        match &ev.body {
            // The connection model (conn_status, conn_close) says it; state changes are
            // then only informational.
            Body::TcpState(t) if t.flags & STATE_FLAG_MODEL != 0 => {}
            Body::TcpState(t) if t.new_state == tcp::CLOSE_WAIT => {
                self.stuck(
                    cx,
                    t.skaddr,
                    t.owner_tgid,
                    ev.ts_ns,
                    t.family,
                    t.sport,
                    &t.daddr,
                    t.dport,
                );
            }
            Body::TcpState(t) if t.old_state == tcp::CLOSE_WAIT || t.new_state == tcp::CLOSE => {
                self.socks.remove(&t.skaddr);
            }
            Body::ConnStatus(c) if c.status == status::CLOSE_WAIT => {
                self.stuck(
                    cx, c.sk, ev.tgid, c.since_ns, c.family, c.sport, &c.daddr, c.dport,
                );
            }
            Body::ConnStatus(c) if c.status == status::CLEARED => {
                self.socks.remove(&c.sk);
            }
            Body::ConnClose(c) => {
                self.socks.remove(&c.sk);
            }
            Body::ConnOpen(c) if c.sk != 0 => self.owned(c.sk, ev.tgid),
            Body::SockOwner(o) => self.owned(o.sk, ev.tgid),
            Body::TcpAccept(a) if a.ret >= 0 && a.sk != 0 => self.owned(a.sk, ev.tgid),
            // Its sockets are closed with it (each close would show as LAST_ACK too).
            Body::Exit(_) if !self.socks.is_empty() => {
                self.exited.insert(ev.tgid);
            }
            _ => {}
        }
        false
    }

    fn findings(&mut self, now_ns: u64, cx: &Cx<'_>) -> Vec<Finding> {
        if !self.exited.is_empty() {
            let gone = std::mem::take(&mut self.exited);
            self.socks.retain(|_, s| !gone.contains(&s.owner));
            self.comms.retain(|pid, _| !gone.contains(pid));
        }
        let mut per: BTreeMap<u32, Group> = BTreeMap::new();
        for s in self.socks.values() {
            if now_ns.saturating_sub(s.since_ns) < self.min_age_ns {
                continue;
            }
            let e = per.entry(s.owner).or_insert_with(|| Group {
                oldest: u64::MAX,
                ..Group::default()
            });
            e.count += 1;
            e.unaccepted += u64::from(s.unaccepted);
            if s.since_ns < e.oldest || (s.since_ns == e.oldest && s.remote < e.remote) {
                e.oldest = s.since_ns;
                e.remote = s.remote.clone();
            }
            *e.ports.entry(s.local_port).or_default() += 1;
        }
        let mut out = Vec::new();
        for (owner, g) in per {
            let Group {
                count,
                oldest,
                ports,
                remote,
                unaccepted,
            } = g;
            if count < self.min_count {
                continue;
            }
            let local_port = ports
                .iter()
                .max_by_key(|(p, n)| (**n, std::cmp::Reverse(**p)))
                .map(|(p, _)| *p)
                .unwrap_or(0);
            let comm = match self.comms.get(&owner) {
                Some(c) => c.clone(),
                None if owner == 0 => "?".into(),
                None => comm_of(cx.procs, owner, "?"),
            };
            let age = secs(now_ns.saturating_sub(oldest));
            let who = if owner == 0 {
                "an unknown process".to_owned()
            } else {
                format!("{owner} ({comm})")
            };
            let backlog = match unaccepted {
                0 => String::new(),
                n if n == count => ", never accept()ed".to_owned(),
                n => format!(", {n} never accept()ed"),
            };
            out.push(Finding {
workload: None,
                severity: if count >= 100 { Severity::Critical } else { Severity::Warning },
                summary: format!(
                    "{who} leaves {count} socket{} in CLOSE_WAIT on port {local_port} (peer closed, never closed here{backlog}), oldest {age:.0} s",
                    if count == 1 { "" } else { "s" }
                ),
                first_seen_ns: oldest,
                last_seen_ns: now_ns,
                evidence: Evidence::CloseWait(CloseWait {
                    pid: owner,
                    comm,
                    count,
                    oldest_age_s: round(age, 1),
                    local_port,
                    remote,
                    never_accepted: unaccepted,
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

    /// On a quiet host the collector's ticks alone age a reported CLOSE_WAIT into a finding
    /// (live, and replay of the dump that stored the ticks); without them nothing would
    /// evaluate it until the next event.
    #[test]
    fn ticks_age_a_reported_close_wait_on_a_quiet_host() {
        use tracer_common::tcp::{ROLE_PASSIVE, status};
        let raised = |ticks: bool| {
            let mut s = Stream::new();
            s.at(0).proc_info(700, 1, "proxy", |_| {});
            s.at(1000).conn_status(
                700,
                "proxy",
                0x77,
                status::CLOSE_WAIT,
                0,
                tracer_common::tcp::state::CLOSE_WAIT,
                ROLE_PASSIVE,
                8080,
                40000,
            );
            if ticks {
                for sec in 2..=12u64 {
                    s.at(sec * 1000).tick();
                }
            }
            s.engine
                .findings()
                .iter()
                .filter(|f| f.kind() == "close_wait")
                .count()
        };
        assert_eq!(
            raised(true),
            1,
            "raised by the ticks, before the stream ends"
        );
        assert_eq!(raised(false), 0, "nothing evaluates a silent stream");
    }

    #[test]
    fn a_cleared_close_wait_is_not_reported() {
        use tracer_common::tcp::{ROLE_PASSIVE, status};
        let mut s = Stream::new();
        s.at(0).proc_info(700, 1, "proxy", |_| {});
        s.at(1000).conn_status(
            700,
            "proxy",
            0x77,
            status::CLOSE_WAIT,
            0,
            tracer_common::tcp::state::CLOSE_WAIT,
            ROLE_PASSIVE,
            8080,
            40000,
        );
        s.at(3000).conn_status(
            700,
            "proxy",
            0x77,
            status::CLEARED,
            0,
            tracer_common::tcp::state::CLOSE_WAIT,
            ROLE_PASSIVE,
            8080,
            40000,
        );
        s.at(30_000).tick();
        assert!(s.findings_of("close_wait").is_empty());
    }
    use tracer_common::tcp::state::*;

    #[test]
    fn sockets_left_in_close_wait_are_attributed_to_their_owner() {
        let mut s = Stream::new();
        for k in 0..5u64 {
            let sk = 0x1000 + k;
            s.at(k * 100).tcp_state(
                0,
                "swapper/0",
                sk,
                SYN_RECV,
                ESTABLISHED,
                0,
                8080,
                40000 + k as u16,
            );
            s.at(k * 100 + 1)
                .accept_sk(700, "proxy", 10 + k as i32, 8080, sk);
            s.at(k * 100 + 50).tcp_state(
                0,
                "swapper/0",
                sk,
                ESTABLISHED,
                CLOSE_WAIT,
                0,
                8080,
                40000 + k as u16,
            );
        }
        // One is closed properly.
        s.at(600)
            .tcp_state(700, "proxy", 0x1000, CLOSE_WAIT, LAST_ACK, 700, 8080, 40000);
        s.at(30_000).tick();
        let e = s.json_of("close_wait");
        assert_eq!(e["pid"], 700);
        assert_eq!(e["comm"], "proxy");
        assert_eq!(e["count"], 4);
        assert_eq!(e["local_port"], 8080);
        let age = e["oldest_age_s"].as_f64().unwrap();
        assert!((29.8..=30.0).contains(&age), "{age}");
    }

    #[test]
    fn brief_close_wait_is_normal() {
        let mut s = Stream::new();
        for k in 0..200u64 {
            let sk = 0x2000 + k;
            let t = k * 500;
            s.at(t)
                .tcp_state(0, "swapper/0", sk, ESTABLISHED, CLOSE_WAIT, 800, 80, 50000);
            s.at(t + 5)
                .tcp_state(800, "nginx", sk, CLOSE_WAIT, LAST_ACK, 800, 80, 50000);
            s.at(t + 10)
                .tcp_state(0, "swapper/0", sk, LAST_ACK, CLOSE, 800, 80, 50000);
        }
        s.finish();
        assert!(s.findings_of("close_wait").is_empty());
    }

    #[test]
    fn connections_never_accepted_belong_to_the_listener() {
        let mut s = Stream::new();
        s.at(0)
            .tcp_state(1500, "node", 0xaaaa, CLOSE, LISTEN, 1500, 3000, 0);
        for k in 0..3u64 {
            let sk = 0xb000 + k;
            s.at(10 + k)
                .tcp_state(0, "swapper/0", sk, SYN_RECV, ESTABLISHED, 0, 3000, 50000);
            s.at(100 + k)
                .tcp_state(0, "swapper/0", sk, ESTABLISHED, CLOSE_WAIT, 0, 3000, 50000);
        }
        // The last one is accepted after all.
        s.at(200).accept_sk(1500, "node", 9, 3000, 0xb002);
        s.at(20_000).tick();
        let e = s.json_of("close_wait");
        assert_eq!(e["pid"], 1500);
        assert_eq!(e["count"], 3);
        assert_eq!(e["never_accepted"], 2);
        assert!(
            e["summary"]
                .as_str()
                .unwrap()
                .contains("2 never accept()ed"),
            "{e}"
        );
    }

    #[test]
    fn an_owner_that_already_exited_is_not_blamed() {
        let mut s = Stream::new();
        s.proc_info(1600, 1, "old", |_| {});
        s.at(0).exit(1600, "old", 0);
        // The kernel still remembers 1600 for a reused socket address.
        s.at(100).tcp_state(
            0,
            "swapper/0",
            0xcccc,
            ESTABLISHED,
            CLOSE_WAIT,
            1600,
            4000,
            50000,
        );
        s.at(20_000).tick();
        let e = s.json_of("close_wait");
        assert_eq!(e["pid"], 0);
    }
}
