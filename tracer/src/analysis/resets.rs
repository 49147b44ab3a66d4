//! `reset_storm`: many TCP resets sent or received around one process or service port.
//!
//! Every reset is classified by its cause ([`cause`]); only the causes that mean trouble
//! (`no_socket`, `received`, `other`) count towards a storm. A reset sent by close() with
//! unread data or SO_LINGER 0 (`abort_on_close`) is the closing process's own doing: a load
//! generator closing its connections that way is no storm, and when the other end is on this
//! host (loopback: wrk and nginx), the reset it receives is not counted either. Two
//! exceptions make such resets trouble again: sent as a process died of a signal (its exit
//! closed its sockets holding unread data: a killed or crashed server, counted as
//! `abort_on_kill`; a process that exits normally, like wrk at the end of a run, is not), and
//! received from a peer elsewhere (nothing tells its close() from a crash there).
//!
//! Resets sent for a connection whose owner on this host had closed it moments before
//! (`conn_close`: the peer's late segments meet a socket in TIME_WAIT or already gone, as when
//! wrk closes its connections mid-response at the end of a run) are benign too, and so is the
//! reset the peer receives for them when it is on this host.
//!
//! Resets are grouped by (owning process, service port); a reset for a packet that has no
//! socket (a SYN to a port nobody listens on, e.g. while a service restarts) has no owner and
//! is grouped by port alone. Rates come from per-second buckets over a sliding window, so a
//! flood costs constant memory.
use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;
use tracer_common::{
    process::EXIT_CODE_KNOWN,
    tcp::{RESET_SENT, TcpReset, reset_reason_name, state},
};

use super::{
    Analysis, AnalysisConfig, Check, Cx, Evidence, Finding, Kinds, Severity, comm_of, round, secs,
    service_port,
};
use crate::{
    event::{Body, Event},
    proc_table::IdHash,
};
use tracer_common::Kind;

/// The evidence of a `reset_storm` finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResetStorm {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The service port (the lower of local and remote port).
    pub port: u16,
    pub sent: u64,
    pub received: u64,
    /// Highest rate seen over the sliding window.
    pub per_sec: f64,
    /// The most frequent cause (`no_socket`, `received`, `other` or `abort_on_kill`).
    pub cause: &'static str,
    /// Resets counted per cause (`sent` + `received` in all). Resets sent by close() with
    /// unread data or SO_LINGER 0 (`abort_on_close`) are not counted, nor the ones their other
    /// end receives on this host: they are the closing process's own doing. Those a process
    /// sends as it dies of a signal (killed or crashed, its exit closing sockets that hold
    /// unread data) are, as `abort_on_kill`.
    pub causes: std::collections::BTreeMap<&'static str, u64>,
}

impl Check for ResetStorm {
    fn key(&self, _first_seen_ns: u64) -> String {
        format!("{}:{}", self.pid.unwrap_or(0), self.port)
    }

    fn culprit(&self) -> Option<u32> {
        self.pid
    }

    fn magnitude(&self) -> f64 {
        (self.sent + self.received) as f64
    }
}

/// Why a reset was sent or received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The closing process's own doing: sent by its close() (or exit) with unread data,
    /// SO_LINGER 0 or a disconnect with data queued, or for the peer's data arriving after it
    /// closed (the socket orphaned or in TIME_WAIT): usually benign.
    AbortOnClose,
    /// Sent for a packet that has no socket: a connection refused by a closed port, or a
    /// segment of a connection that is gone.
    NoSocket,
    /// Received on a connection: the peer reset it.
    Received,
    /// Anything else: an invalid segment, a keepalive timeout, memory pressure, `ss -K`...
    Other,
}

impl Cause {
    pub const ALL: [Cause; 4] = [
        Cause::AbortOnClose,
        Cause::NoSocket,
        Cause::Received,
        Cause::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cause::AbortOnClose => "abort_on_close",
            Cause::NoSocket => "no_socket",
            Cause::Received => "received",
            Cause::Other => "other",
        }
    }

    /// Whether resets of this cause count towards a storm.
    pub fn is_trouble(self) -> bool {
        self != Cause::AbortOnClose
    }
}

/// The cause of a reset, from the kernel's reason (6.10+, in tracer's stable numbering, so a
/// dump classifies the same on any machine) or, where the kernel gave none (older kernels,
/// dumps of earlier versions, NOT_SPECIFIED), from the socket and its state: close() and
/// SO_LINGER 0 move the socket to CLOSE before sending their reset.
pub fn cause(r: &TcpReset) -> Cause {
    if r.direction != RESET_SENT {
        return Cause::Received;
    }
    let closed = r.state == state::CLOSE as u32;
    match reset_reason_name(r.reason) {
        Some("NO_SOCKET") => Cause::NoSocket,
        Some(
            "TCP_ABORT_ON_CLOSE"
            | "TCP_ABORT_ON_LINGER"
            | "TCP_DISCONNECT_WITH_DATA"
            // The peer's data after this end closed: wrk ending a run while nginx answers.
            | "TCP_ABORT_ON_DATA"
            | "TCP_TIMEWAIT_SOCKET",
        ) => Cause::AbortOnClose,
        // tcp_disconnect() (SO_LINGER 0 close, connect(AF_UNSPEC)) moves the socket to CLOSE
        // first; tcp_abort() (SOCK_DESTROY, `ss -K`) does not.
        Some("TCP_STATE") if closed => Cause::AbortOnClose,
        Some(_) => Cause::Other,
        None if r.sk == 0 => Cause::NoSocket,
        None if closed || after_close(r.state) => Cause::AbortOnClose,
        None => Cause::Other,
    }
}

/// States a socket is in once its process closed it (and the peer may still send).
fn after_close(st: u32) -> bool {
    [
        state::FIN_WAIT1,
        state::FIN_WAIT2,
        state::CLOSING,
        state::LAST_ACK,
        state::TIME_WAIT,
    ]
    .iter()
    .any(|&s| u32::from(s) == st)
}

/// Keys with no reset for this long are forgotten (their finding, if any, stays raised).
const IDLE_NS: u64 = 600 * super::NS;
/// When both ends of a connection are on this host, the reset one end's close() sends and the
/// other end receives are traced microseconds apart, in either order: a received reset waits
/// this long (event time) for its sender's, and a sent one is remembered as long.
const PAIR_NS: u64 = 100 * super::NS / 1000;
/// At most this many resets wait for their other end (a flood beyond it is counted at once).
const PAIR_MAX: usize = 65536;

/// A connection closed by its owner (conn_close) answers its peer's late segments with resets
/// for up to this long (TIME_WAIT, or no socket once it is gone): not trouble.
const CLOSED_GRACE_NS: u64 = 2 * super::NS;

/// A process that died of a signal resets its connections within this long of its exit event
/// (the exit closes its files right after).
const KILLED_NS: u64 = super::NS;

/// How the storm counts a reset, indexed as [`Cause::ALL`] with one difference: slot 0 holds
/// only the resets a process's sockets sent as it died of a signal holding unread data
/// (killed or crashed: not its own choice; the restarted service's clients get these).
const STORM_CAUSES: [&str; 4] = ["abort_on_kill", "no_socket", "received", "other"];

/// One end of a connection: family, local address and port, remote address and port.
type Ends = (u16, [u8; 16], u16, [u8; 16], u16);

/// A 64-bit digest of a connection's ends, for the closed-connection table: two connections
/// mixing to the same key (one chance in 2^64 per pair) would only let a reset pass as the
/// peer's late segment.
fn ends_key(e: &Ends) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    let mut mix = |v: u64| {
        let m = u128::from(h ^ v) * 0x9e37_79b9_7f4a_7c15_u128;
        h = (m as u64) ^ ((m >> 64) as u64);
    };
    let (fam, a, ap, b, bp) = e;
    mix(u64::from(*fam) | u64::from(*ap) << 16 | u64::from(*bp) << 32);
    for half in [&a[..8], &a[8..], &b[..8], &b[8..]] {
        mix(u64::from_le_bytes(half.try_into().expect("8 bytes")));
    }
    h
}

fn sender_ends(r: &TcpReset) -> Ends {
    if r.direction == RESET_SENT {
        (r.family, r.saddr, r.sport, r.daddr, r.dport)
    } else {
        (r.family, r.daddr, r.dport, r.saddr, r.sport)
    }
}

/// A trouble reset not yet counted (a received one waiting for a benign sender on this host).
struct Pending {
    ts_ns: u64,
    ends: Ends,
    owner: u32,
    port: u16,
    sent: bool,
    slot: usize,
}

#[derive(Default)]
struct Group {
    comm: Option<String>,
    sent: u64,
    received: u64,
    /// Per [`STORM_CAUSES`] slot.
    causes: [u64; 4],
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
    /// Received resets waiting up to [`PAIR_NS`] for their sender's abort_on_close.
    pending: VecDeque<Pending>,
    /// abort_on_close resets sent on this host in the last [`PAIR_NS`], by their sender's ends.
    aborts: HashMap<Ends, u64, IdHash>,
    aborts_by_time: VecDeque<(u64, Ends)>,
    /// Every port something on this host listened on (a bit per port): the service end of a
    /// connection, even when it is an ephemeral port lower than the client's, and even once
    /// the server is gone (resets for its port then have no socket).
    listened: Box<[u64; 1024]>,
    /// Processes that died of a signal in the last [`KILLED_NS`]: exit time by pid.
    killed: HashMap<u32, u64>,
    killed_by_time: VecDeque<(u64, u32)>,
    /// Connections closed by their owner in the last [`CLOSED_GRACE_NS`], by the closer's ends.
    /// Connections closed in the last [`CLOSED_GRACE_NS`] as (time, [`ends_key`]), oldest
    /// first: a busy server closes tens of thousands a second and resets are rare, so the
    /// table below is only filled when a reset needs it, from the first `closed_indexed`
    /// entries on.
    closed_by_time: VecDeque<(u64, u64)>,
    closed_indexed: usize,
    closed: HashMap<u64, u64, IdHash>,
}

impl ResetStorms {
    pub fn new(cfg: &AnalysisConfig) -> ResetStorms {
        ResetStorms {
            window_s: (cfg.reset_window_s.ceil() as u64).max(1),
            min_count: cfg.reset_min_count.max(1),
            groups: BTreeMap::new(),
            pending: VecDeque::new(),
            aborts: HashMap::default(),
            aborts_by_time: VecDeque::new(),
            listened: Box::new([0; 1024]),
            killed: HashMap::new(),
            killed_by_time: VecDeque::new(),
            closed: HashMap::default(),
            closed_by_time: VecDeque::new(),
            closed_indexed: 0,
        }
    }

    /// The service end of a reset's connection: a port that was listened on here; for a reset
    /// sent without a socket, the port that had none (a refused connection's), so the
    /// refusals of one port group together whichever ephemeral ports their clients drew;
    /// else the lower port.
    fn service_port(&self, r: &TcpReset) -> u16 {
        let listened = |p: u16| p != 0 && self.listened[p as usize / 64] & (1 << (p % 64)) != 0;
        match (listened(r.sport), listened(r.dport)) {
            (true, false) => r.sport,
            (false, true) => r.dport,
            (false, false) if r.direction == RESET_SENT && r.sk == 0 => r.sport,
            _ => service_port(r.sport, r.dport),
        }
    }

    /// Counts the pending resets older than `before_ns` (all with `u64::MAX`).
    fn commit_pending(&mut self, before_ns: u64, cx: &Cx<'_>) {
        while self
            .pending
            .front()
            .is_some_and(|p| p.ts_ns.saturating_add(PAIR_NS) <= before_ns || before_ns == u64::MAX)
        {
            let p = self.pending.pop_front().expect("front exists");
            self.count(&p, cx);
        }
    }

    fn forget_old_closes(&mut self, now_ns: u64) {
        while let Some(&(ts, ends)) = self.closed_by_time.front() {
            if ts.saturating_add(CLOSED_GRACE_NS) > now_ns && self.closed_by_time.len() <= PAIR_MAX
            {
                break;
            }
            self.closed_by_time.pop_front();
            if self.closed_indexed > 0 {
                self.closed_indexed -= 1;
                if self.closed.get(&ends) == Some(&ts) {
                    self.closed.remove(&ends);
                }
            }
        }
    }

    /// When the connection with these ends was last closed by its owner, if within the grace.
    fn closed_at(&mut self, ends: &Ends) -> Option<u64> {
        for &(ts, key) in self.closed_by_time.range(self.closed_indexed..) {
            self.closed.insert(key, ts);
        }
        self.closed_indexed = self.closed_by_time.len();
        self.closed.get(&ends_key(ends)).copied()
    }

    fn forget_old_aborts(&mut self, now_ns: u64) {
        while let Some(&(ts, ends)) = self.aborts_by_time.front() {
            if ts.saturating_add(PAIR_NS) > now_ns && self.aborts_by_time.len() <= PAIR_MAX {
                break;
            }
            self.aborts_by_time.pop_front();
            if self.aborts.get(&ends) == Some(&ts) {
                self.aborts.remove(&ends);
            }
        }
    }

    fn count(&mut self, p: &Pending, cx: &Cx<'_>) {
        let g = self.groups.entry((p.owner, p.port)).or_default();
        if g.first_ns == 0 {
            g.first_ns = p.ts_ns;
            if p.owner != 0 {
                g.comm = Some(comm_of(cx.procs, p.owner, "?"));
            }
        }
        g.last_ns = g.last_ns.max(p.ts_ns);
        if p.sent {
            g.sent += 1;
        } else {
            g.received += 1;
        }
        g.causes[p.slot] += 1;
        let sec = p.ts_ns / super::NS;
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
    }
}

impl Analysis for ResetStorms {
    fn name(&self) -> &'static str {
        "reset_storm"
    }

    fn kinds(&self) -> Kinds {
        Kinds::kernel(&[Kind::TcpReset, Kind::ConnClose, Kind::TcpState, Kind::Exit])
    }

    fn observe(&mut self, ev: &Event, cx: &Cx<'_>) -> bool {
        let r = match &ev.body {
            Body::TcpReset(r) => r,
            Body::ConnClose(c) => {
                self.forget_old_closes(ev.ts_ns);
                let ends = ends_key(&(c.family, c.saddr, c.sport, c.daddr, c.dport));
                self.closed_by_time.push_back((ev.ts_ns, ends));
                return false;
            }
            Body::TcpState(t) if t.new_state == state::LISTEN => {
                self.listened[t.sport as usize / 64] |= 1 << (t.sport % 64);
                return false;
            }
            Body::Exit(x)
                if x.flags & EXIT_CODE_KNOWN != 0 && x.exit_code & 0x7f != 0 && ev.tgid != 0 =>
            {
                while self.killed_by_time.front().is_some_and(|k| {
                    k.0 + KILLED_NS < ev.ts_ns || self.killed_by_time.len() > PAIR_MAX
                }) {
                    let (ts, pid) = self.killed_by_time.pop_front().expect("front exists");
                    if self.killed.get(&pid) == Some(&ts) {
                        self.killed.remove(&pid);
                    }
                }
                self.killed.insert(ev.tgid, ev.ts_ns);
                self.killed_by_time.push_back((ev.ts_ns, ev.tgid));
                return false;
            }
            _ => return false,
        };
        self.commit_pending(ev.ts_ns, cx);
        self.forget_old_aborts(ev.ts_ns);
        let cause = cause(r);
        let ends = sender_ends(r);
        let sent = r.direction == RESET_SENT;
        // Sent for a connection its owner had just closed: the peer's late segments.
        let after_close = sent
            && cause != Cause::AbortOnClose
            && self
                .closed_at(&ends)
                .is_some_and(|t| t <= ev.ts_ns && ev.ts_ns <= t.saturating_add(CLOSED_GRACE_NS));
        if after_close {
            if let Some(i) = self.pending.iter().rposition(|p| !p.sent && p.ends == ends) {
                self.pending.remove(i);
            } else {
                self.aborts.insert(ends, ev.ts_ns);
                self.aborts_by_time.push_back((ev.ts_ns, ends));
            }
            return false;
        }
        if cause == Cause::AbortOnClose {
            // Sent as its process died of a signal (killed or crashed: its exit event comes
            // just before the exit closes its files): trouble. Otherwise the process's own
            // close() or exit(): not counted, nor is the reset the other end, if on this host,
            // receives.
            let killed = ev.tgid != 0
                && self
                    .killed
                    .get(&ev.tgid)
                    .is_some_and(|&t| t <= ev.ts_ns && ev.ts_ns <= t + KILLED_NS);
            if !killed {
                if let Some(i) = self.pending.iter().rposition(|p| !p.sent && p.ends == ends) {
                    self.pending.remove(i);
                } else {
                    self.aborts.insert(ends, ev.ts_ns);
                    self.aborts_by_time.push_back((ev.ts_ns, ends));
                }
                return false;
            }
        }
        if !sent
            && self
                .aborts
                .get(&ends)
                .is_some_and(|&t| t.saturating_add(PAIR_NS) > ev.ts_ns)
        {
            // The other end, on this host, closed with unread data or SO_LINGER 0.
            self.aborts.remove(&ends);
            return false;
        }
        let owner = if r.sk != 0 {
            cx.state.owner(r.sk, r.owner_tgid)
        } else {
            None
        }
        .unwrap_or(0);
        let p = Pending {
            ts_ns: ev.ts_ns,
            ends,
            owner,
            port: self.service_port(r),
            sent,
            slot: cause as usize,
        };
        if sent || self.pending.len() >= PAIR_MAX {
            self.count(&p, cx);
        } else {
            self.pending.push_back(p);
        }
        false
    }

    fn findings(&mut self, now_ns: u64, cx: &Cx<'_>) -> Vec<Finding> {
        // Findings are evaluated between batches of events, not between the two ends' resets
        // of one connection (traced microseconds apart): what waits is counted now.
        self.commit_pending(u64::MAX, cx);
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
            let causes: BTreeMap<&'static str, u64> = (0..STORM_CAUSES.len())
                .filter(|&i| g.causes[i] > 0)
                .map(|i| (STORM_CAUSES[i], g.causes[i]))
                .collect();
            // The most frequent cause (the first of equals).
            let dominant = (0..STORM_CAUSES.len())
                .max_by_key(|&i| (g.causes[i], std::cmp::Reverse(i)))
                .unwrap_or(3);
            out.push(Finding {
workload: None,
                severity: if per_sec >= 100.0 { Severity::Critical } else { Severity::Warning },
                summary: format!(
                    "TCP reset storm around {who}: {} sent, {} received in {:.1} s (up to {per_sec:.1}/s over {} s), mostly {} ({} of {})",
                    g.sent,
                    g.received,
                    secs(g.last_ns.saturating_sub(g.first_ns)),
                    self.window_s,
                    STORM_CAUSES[dominant],
                    g.causes[dominant],
                    g.sent + g.received,
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
                    cause: STORM_CAUSES[dominant],
                    causes,
                }),
                previous_names: Vec::new(),
                boot: None,
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
    use super::{Cause, cause};
    use tracer_common::tcp::{
        RESET_REASON_UNRECOGNISED, RESET_RECEIVED, RESET_SENT, TcpReset, reset_reason_code,
        state::{CLOSE, ESTABLISHED, FIN_WAIT1, LISTEN},
    };

    fn rst(sk: u64, direction: u8, state: u16, reason: &str) -> TcpReset {
        TcpReset {
            sk,
            direction,
            reason: if reason.is_empty() {
                0
            } else {
                reset_reason_code(reason).unwrap()
            },
            family: 2,
            sport: 1,
            dport: 2,
            owner_tgid: 0,
            state: state as u32,
            saddr: [0; 16],
            daddr: [0; 16],
        }
    }

    fn code(name: &str) -> u8 {
        reset_reason_code(name).unwrap()
    }

    #[test]
    fn causes_from_the_kernels_reason() {
        let sent = |sk, state, reason| cause(&rst(sk, RESET_SENT, state, reason));
        assert_eq!(sent(0, 0, "NO_SOCKET"), Cause::NoSocket);
        assert_eq!(sent(7, CLOSE, "TCP_ABORT_ON_CLOSE"), Cause::AbortOnClose);
        assert_eq!(sent(7, CLOSE, "TCP_ABORT_ON_LINGER"), Cause::AbortOnClose);
        assert_eq!(
            sent(7, CLOSE, "TCP_DISCONNECT_WITH_DATA"),
            Cause::AbortOnClose
        );
        // SO_LINGER 0: tcp_disconnect() closes the socket, then resets (reason TCP_STATE);
        // tcp_abort() (`ss -K`) resets an established socket.
        assert_eq!(sent(7, CLOSE, "TCP_STATE"), Cause::AbortOnClose);
        assert_eq!(sent(7, ESTABLISHED, "TCP_STATE"), Cause::Other);
        // Data for a connection its process closed, a segment for a TIME_WAIT remnant: the
        // closer's own doing.
        assert_eq!(sent(7, FIN_WAIT1, "TCP_ABORT_ON_DATA"), Cause::AbortOnClose);
        assert_eq!(sent(7, 0, "TCP_TIMEWAIT_SOCKET"), Cause::AbortOnClose);
        // The reason wins over the socket's state.
        assert_eq!(sent(7, CLOSE, "TCP_KEEPALIVE_TIMEOUT"), Cause::Other);
        assert_eq!(sent(7, CLOSE, "TCP_ABORT_ON_MEMORY"), Cause::Other);
        assert_eq!(
            sent(7, ESTABLISHED, "TCP_INVALID_ACK_SEQUENCE"),
            Cause::Other
        );
        assert_eq!(sent(7, LISTEN, "INVALID_SYN"), Cause::Other);
        let mut unknown = rst(7, RESET_SENT, CLOSE, "");
        unknown.reason = RESET_REASON_UNRECOGNISED;
        assert_eq!(cause(&unknown), Cause::Other);
        assert_eq!(
            cause(&rst(7, RESET_RECEIVED, 0, "")),
            Cause::Received,
            "a received reset"
        );
    }

    #[test]
    fn causes_without_a_reason_old_kernels_and_old_dumps() {
        let sent = |sk, state| cause(&rst(sk, RESET_SENT, state, ""));
        assert_eq!(sent(0, 0), Cause::NoSocket);
        assert_eq!(sent(0, LISTEN), Cause::NoSocket);
        assert_eq!(sent(7, CLOSE), Cause::AbortOnClose);
        assert_eq!(sent(7, ESTABLISHED), Cause::Other);
        // Orphaned after its process closed it: the peer's late data.
        assert_eq!(sent(7, FIN_WAIT1), Cause::AbortOnClose);
        assert_eq!(
            sent(7, tracer_common::tcp::state::LAST_ACK),
            Cause::AbortOnClose
        );
        assert_eq!(sent(7, 0), Cause::Other);
        // NOT_SPECIFIED is no reason.
        assert_eq!(
            cause(&rst(7, RESET_SENT, CLOSE, "NOT_SPECIFIED")),
            Cause::AbortOnClose
        );
        assert_eq!(cause(&rst(7, RESET_RECEIVED, CLOSE, "")), Cause::Received);
        for c in Cause::ALL {
            assert_eq!(c.is_trouble(), c != Cause::AbortOnClose);
        }
    }

    /// wrk closes connections that still hold unread data: 100s of resets a second, all its
    /// own doing.
    #[test]
    fn a_flood_of_resets_on_close_is_no_storm() {
        let mut s = Stream::new();
        for k in 0..2000u64 {
            let sk = 0x5000 + k;
            s.at(k * 5).reset_why(
                700,
                "wrk",
                sk,
                RESET_SENT,
                700,
                40000 + (k % 20000) as u16,
                8080,
                CLOSE,
                code("TCP_ABORT_ON_CLOSE"),
            );
        }
        // The same from a kernel without reasons (or an old dump).
        for k in 0..2000u64 {
            let sk = 0x9000 + k;
            s.at(10_000 + k * 5)
                .reset_why(700, "wrk", sk, RESET_SENT, 700, 40000, 8080, CLOSE, 0);
        }
        s.finish();
        assert!(
            s.findings_of("reset_storm").is_empty(),
            "{:#?}",
            s.all_json()
        );
    }

    #[test]
    fn refused_connections_and_received_resets_are_a_storm_with_their_causes() {
        let mut s = Stream::new();
        // Nobody listens on 3000: every SYN gets a reset with no socket, and the connecting
        // client (pid 600) receives it.
        for k in 0..40u64 {
            s.at(k * 100).reset_why(
                600,
                "client",
                0,
                RESET_SENT,
                0,
                3000,
                50000 + k as u16,
                0,
                code("NO_SOCKET"),
            );
            s.at(k * 100 + 1).reset_why(
                600,
                "client",
                0x7000 + k,
                RESET_RECEIVED,
                600,
                50000 + k as u16,
                3000,
                0,
                0,
            );
        }
        // Abort-on-close resets in the same groups are not counted.
        for k in 0..30u64 {
            s.at(k * 100 + 2).reset_why(
                600,
                "client",
                0x8000 + k,
                RESET_SENT,
                600,
                51000,
                3000,
                CLOSE,
                code("TCP_ABORT_ON_CLOSE"),
            );
        }
        let all = s.all_json();
        let storms: Vec<_> = all.iter().filter(|f| f["kind"] == "reset_storm").collect();
        assert_eq!(storms.len(), 2, "{all:#?}");
        let refused = storms.iter().find(|f| f["pid"].is_null()).unwrap();
        assert_eq!(refused["port"], 3000);
        assert_eq!(refused["sent"], 40);
        assert_eq!(refused["received"], 0);
        assert_eq!(refused["cause"], "no_socket");
        assert_eq!(refused["causes"], serde_json::json!({"no_socket": 40}));
        let s_ = refused["summary"].as_str().unwrap();
        assert!(s_.contains("mostly no_socket (40 of 40)"), "{s_}");
        let client = storms.iter().find(|f| f["pid"] == 600).unwrap();
        assert_eq!(client["sent"], 0);
        assert_eq!(client["received"], 40);
        assert_eq!(client["cause"], "received");
        assert_eq!(client["causes"], serde_json::json!({"received": 40}));
    }

    /// Both ends on this host (loopback): `client` (pid 700, port `cport`) and `server` (pid
    /// 800, port 8080). Returns the reset `from` sends and the one the other end receives.
    fn pair(cport: u16, from_client: bool, reason: &str, state: u16) -> (TcpReset, TcpReset) {
        let lo = {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&[127, 0, 0, 1]);
            a
        };
        let (src, dst, sk_s, sk_r, own_s, own_r) = if from_client {
            (
                cport,
                8080,
                0x1000 + cport as u64,
                0x2000 + cport as u64,
                700,
                800,
            )
        } else {
            (
                8080,
                cport,
                0x2000 + cport as u64,
                0x1000 + cport as u64,
                800,
                700,
            )
        };
        let mut sent = rst(sk_s, RESET_SENT, state, reason);
        (sent.sport, sent.dport, sent.owner_tgid) = (src, dst, own_s);
        (sent.saddr, sent.daddr) = (lo, lo);
        let mut got = rst(sk_r, RESET_RECEIVED, 0, "");
        (got.sport, got.dport, got.owner_tgid) = (dst, src, own_r);
        (got.saddr, got.daddr) = (lo, lo);
        (sent, got)
    }

    /// wrk (700) closes its connections to nginx (800) holding unread responses: wrk sends
    /// the resets and nginx receives them, traced in either order. Neither end is a storm.
    #[test]
    fn a_local_peers_close_with_unread_data_is_no_storm_on_either_end() {
        let mut s = Stream::new();
        for k in 0..600u64 {
            let (sent, got) = pair(40000 + k as u16, true, "TCP_ABORT_ON_CLOSE", CLOSE);
            s.at(k * 2);
            if k % 2 == 0 {
                s.reset_record(700, "wrk", sent)
                    .reset_record(700, "wrk", got);
            } else {
                s.reset_record(700, "wrk", got)
                    .reset_record(700, "wrk", sent);
            }
        }
        // Old kernels: no reason, the socket was closed.
        for k in 0..600u64 {
            let (sent, got) = pair(41000 + k as u16, true, "", CLOSE);
            s.at(2000 + k * 2)
                .reset_record(700, "wrk", got)
                .reset_record(700, "wrk", sent);
        }
        s.finish();
        assert!(
            s.findings_of("reset_storm").is_empty(),
            "{:#?}",
            s.all_json()
        );
    }

    /// Received resets with no benign sender on this host are trouble even when this host
    /// aborted other connections at the same time.
    #[test]
    fn received_resets_from_elsewhere_still_count() {
        let mut s = Stream::new();
        for k in 0..30u64 {
            let (sent, _) = pair(40000 + k as u16, true, "TCP_ABORT_ON_CLOSE", CLOSE);
            // A remote peer resets another connection of nginx's.
            let (_, mut got) = pair(45000 + k as u16, true, "", 0);
            got.daddr[3] = 9;
            s.at(k * 10)
                .reset_record(700, "wrk", sent)
                .reset_record(800, "nginx", got);
        }
        let all = s.all_json();
        let f = all
            .iter()
            .find(|f| f["kind"] == "reset_storm")
            .expect("a storm");
        assert_eq!(f["pid"], 800);
        assert_eq!(f["causes"], serde_json::json!({"received": 30}));
    }

    /// The restarted service: its process dies holding its clients' unread data, its exit
    /// resets every connection; the clients (on this host) receive them. A storm on its port.
    #[test]
    fn resets_of_a_dying_process_are_a_storm() {
        let mut s = Stream::new();
        s.at(0)
            .exec(800, "node", "/usr/bin/node", &["node", "server.js"]);
        // Killed by SIGTERM (wait status: the signal in the low bits).
        s.at(900).exit(800, "node", 15);
        for k in 0..30u64 {
            let (sent, got) = pair(40000 + k as u16, false, "TCP_ABORT_ON_CLOSE", CLOSE);
            s.at(1000 + k)
                .reset_record(800, "node", got)
                .reset_record(800, "node", sent);
        }
        let all = s.all_json();
        let storms: Vec<_> = all.iter().filter(|f| f["kind"] == "reset_storm").collect();
        let server = storms.iter().find(|f| f["pid"] == 800);
        let server = server.unwrap_or_else(|| panic!("{all:#?}"));
        assert_eq!(server["causes"], serde_json::json!({"abort_on_kill": 30}));
        assert_eq!(server["port"], 8080);
        let clients = storms.iter().find(|f| f["pid"] == 700);
        let clients = clients.unwrap_or_else(|| panic!("{all:#?}"));
        assert_eq!(clients["causes"], serde_json::json!({"received": 30}));
        assert_eq!(clients["cause"], "received");
    }

    /// The service listens on an ephemeral port above its clients' ports: resets are still
    /// grouped on it, also once it is gone.
    #[test]
    fn resets_are_grouped_on_the_port_that_was_listened_on() {
        let mut s = Stream::new();
        s.at(0)
            .tcp_state(800, "node", 0x77, CLOSE, LISTEN, 800, 44873, 0);
        for k in 0..25u64 {
            let c = 33000 + k as u16;
            s.at(100 + k)
                .reset_why(
                    600,
                    "clients",
                    0x100 + k,
                    RESET_RECEIVED,
                    600,
                    c,
                    44873,
                    0,
                    0,
                )
                .reset_why(
                    600,
                    "clients",
                    0,
                    RESET_SENT,
                    0,
                    44873,
                    c + 100,
                    0,
                    code("NO_SOCKET"),
                );
        }
        let all = s.all_json();
        let storms: Vec<_> = all.iter().filter(|f| f["kind"] == "reset_storm").collect();
        assert_eq!(storms.len(), 2, "{all:#?}");
        assert!(storms.iter().all(|f| f["port"] == 44873), "{storms:#?}");
    }

    /// wrk at the end of its run exits (status 0) holding unread responses: its exit resets
    /// every connection, its own doing.
    #[test]
    fn resets_of_a_process_exiting_normally_are_no_storm() {
        let mut s = Stream::new();
        s.at(0).exec(700, "wrk", "/usr/bin/wrk", &["wrk", "-c200"]);
        s.at(900).exit(700, "wrk", 0);
        for k in 0..200u64 {
            let (sent, got) = pair(40000 + k as u16, true, "TCP_ABORT_ON_CLOSE", CLOSE);
            s.at(900 + k / 10)
                .reset_record(700, "wrk", got)
                .reset_record(700, "wrk", sent);
        }
        s.finish();
        assert!(
            s.findings_of("reset_storm").is_empty(),
            "{:#?}",
            s.all_json()
        );
    }

    #[test]
    fn evidence_counts_every_trouble_cause_and_names_the_dominant_one() {
        let mut s = Stream::new();
        for k in 0..30u64 {
            let sk = 0x100 + k;
            s.at(k * 100)
                .reset_why(0, "swapper/0", sk, RESET_RECEIVED, 900, 5432, 40000, 0, 0);
        }
        for k in 0..12u64 {
            let sk = 0x200 + k;
            s.at(k * 100).reset_why(
                900,
                "api",
                sk,
                RESET_SENT,
                900,
                40000,
                5432,
                ESTABLISHED,
                code("TCP_KEEPALIVE_TIMEOUT"),
            );
        }
        for k in 0..5u64 {
            s.at(k * 100).reset_why(
                900,
                "api",
                0x300 + k,
                RESET_SENT,
                900,
                40000,
                5432,
                CLOSE,
                code("NO_SOCKET"),
            );
        }
        let all = s.all_json();
        let f = all.iter().find(|f| f["kind"] == "reset_storm").unwrap();
        assert_eq!(f["pid"], 900);
        assert_eq!(f["port"], 5432);
        assert_eq!(f["sent"], 17);
        assert_eq!(f["received"], 30);
        assert_eq!(f["cause"], "received");
        assert_eq!(
            f["causes"],
            serde_json::json!({"received": 30, "other": 12, "no_socket": 5})
        );
        assert!(
            f["summary"]
                .as_str()
                .unwrap()
                .ends_with("mostly received (30 of 47)"),
            "{}",
            f["summary"]
        );
    }

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

    /// wrk (pid 900) closing its connection from client port `cport` to 8080 at `ms`.
    fn wrk_closes(s: &mut Stream, ms: u64, cport: u16) {
        s.at(ms).conn_close(
            900,
            "wrk",
            0x9000 + u64::from(cport),
            tracer_common::tcp::ROLE_ACTIVE,
            ESTABLISHED,
            cport,
            8080,
            10,
            900,
            100,
        );
    }

    /// The reset wrk's host sends at `ms` for nginx's late segment on that connection, and
    /// nginx receiving it.
    fn late_segment_resets(s: &mut Stream, ms: u64, cport: u16) {
        let mut sent = rst(0, RESET_SENT, 0, "NO_SOCKET");
        (sent.saddr, sent.daddr, sent.sport, sent.dport) = (addr(1), addr(2), cport, 8080);
        let mut got = rst(
            0x7000 + u64::from(cport),
            tracer_common::tcp::RESET_RECEIVED,
            0,
            "",
        );
        (got.saddr, got.daddr, got.sport, got.dport) = (sent.daddr, sent.saddr, 8080, cport);
        s.at(ms).reset_record(0, "swapper/0", sent);
        s.at(ms).reset_record(0, "swapper/0", got);
    }

    /// wrk at the end of a run: it closes its connections while nginx is still answering;
    /// nginx's late segments meet sockets in TIME_WAIT or gone, which answer with resets.
    #[test]
    fn resets_for_connections_their_owner_just_closed_are_no_storm() {
        let mut s = Stream::new();
        for k in 0..60u16 {
            let t = 1000 + u64::from(k);
            wrk_closes(&mut s, t, 42000 + k);
            late_segment_resets(&mut s, t + 1, 42000 + k);
        }
        assert!(s.findings_of("reset_storm").is_empty());
    }

    /// The closed-connection table is filled lazily, when a reset asks: closes seen before,
    /// between and after resets, some of them expiring in between, are all found.
    #[test]
    fn closes_are_found_however_they_interleave_with_resets_and_expiry() {
        let mut s = Stream::new();
        for k in 0..60u16 {
            wrk_closes(&mut s, 1000 + u64::from(k), 42000 + k);
        }
        late_segment_resets(&mut s, 1100, 42000);
        for k in 0..60u16 {
            wrk_closes(&mut s, 1200 + u64::from(k), 43000 + k);
        }
        // The first 60 expire here (2 s after their close), the last 60 not yet.
        wrk_closes(&mut s, 3100, 44000);
        for k in 0..60u16 {
            late_segment_resets(&mut s, 3101 + u64::from(k), 43000 + k);
        }
        assert!(s.findings_of("reset_storm").is_empty());
    }

    /// The same resets without the close are trouble (the sender's host had no such
    /// connection, or it died).
    #[test]
    fn the_same_resets_without_a_close_are_a_storm() {
        let mut s = Stream::new();
        for k in 0..60u16 {
            late_segment_resets(&mut s, 1001 + u64::from(k), 42000 + k);
        }
        assert!(!s.findings_of("reset_storm").is_empty());
    }

    /// Refused connections to an unlistened port above the clients' ephemeral ports: the
    /// refusals group on the refused port, not on each client's (it was flaky by port draw).
    #[test]
    fn refusals_group_on_the_refused_port_whatever_the_client_ports() {
        let mut s = Stream::new();
        for k in 0..40u16 {
            let mut sent = rst(0, RESET_SENT, 0, "NO_SOCKET");
            (sent.sport, sent.dport) = (48569, 45000 + k);
            s.at(1000 + u64::from(k)).reset_record(0, "swapper/0", sent);
        }
        let all = s.all_json();
        let storms: Vec<_> = all.iter().filter(|f| f["kind"] == "reset_storm").collect();
        assert_eq!(storms.len(), 1, "{storms:?}");
        assert_eq!(storms[0]["port"], 48569);
        assert_eq!(storms[0]["sent"], 40);
    }
}
