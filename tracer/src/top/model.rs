//! The state `tracer top` shows (and the HTML report charts): one entry per process with its
//! open sockets and their growth, fds against the limit, connections by state and remote
//! endpoint, resets, RSS and its growth with the time left to the limit, the fatal signals it
//! received and from whom, and restarts. Fed by the event stream alone (event time, never the
//! wall clock), so a replay shows what live showed; no drawing here, so it is unit-tested.
//!
//! Open sockets are counted as the analyses count them (socket()/listen(), connect()/accept()
//! minus close()), from /proc's count for processes that were running when tracing started.
//! For a process whose exec was seen, the count starts at 0 at exec: /proc is read when the
//! process is first seen after exec, which may be after its first sockets were opened (and
//! their events are still to come), so /proc's figure would count them twice.
use std::collections::{BTreeMap, HashMap, VecDeque};

use tracer_common::{
    process::EXIT_CODE_KNOWN,
    tcp::{self, status},
};

use super::series::{Merge, Series};
use crate::analysis::slope;
use crate::{
    analysis::{FindingUpdate, restarts::program_key, signals::SignalSources},
    event::{Body, Comm, Event, socket_addr},
    host::HostInfo,
    proc_table::ProcTable,
    vocab::{signal_from_kernel, signal_name, wait_status},
};

pub const NS: u64 = 1_000_000_000;
/// Growth rates are fitted over the last minute.
pub const WINDOW_NS: u64 = 60 * NS;
/// Resets per second are counted over this long.
const RESET_WINDOW_NS: u64 = 10 * NS;
/// An exited process stays on screen this long (event time), dimmed, so its end is seen.
const EXITED_KEEP_NS: u64 = 30 * NS;
/// Exited processes kept with their history for the report.
const HISTORY_GRAVEYARD: usize = 1024;
/// A new instance within this long of a death of the same program (same parent) is a restart.
const RESTART_WITHIN_NS: u64 = 60 * NS;
const MAX_SIGNALS: usize = 32;
const MAX_MARKS: usize = 256;
/// Remote endpoints charted per process; the rest are summed as "other".
const MAX_ENDPOINT_SERIES: usize = 6;
const MAX_FINDINGS: usize = 200;
const MAX_DEATHS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnState {
    Open,
    /// The peer closed; this process has not (seen once it sat there a second).
    CloseWait,
    /// Sent, or still connecting, with no answer for a second or more.
    Unanswered,
}

impl ConnState {
    pub fn name(self) -> &'static str {
        match self {
            ConnState::Open => "open",
            ConnState::CloseWait => "CLOSE_WAIT",
            ConnState::Unanswered => "unanswered",
        }
    }
}

#[derive(Clone, Debug)]
struct Conn {
    endpoint: String,
    state: ConnState,
}

/// A fatal signal a process received.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalRec {
    pub ts_ns: u64,
    pub signal: String,
    pub from_pid: u32,
    pub from_comm: String,
    pub from_kernel: bool,
}

impl SignalRec {
    /// `SIGTERM from 4242 monit`, `SIGKILL from the kernel`.
    pub fn describe(&self) -> String {
        if self.from_kernel {
            format!(
                "{} from the kernel (in {} {})",
                self.signal, self.from_pid, self.from_comm
            )
        } else {
            format!("{} from {} {}", self.signal, self.from_pid, self.from_comm)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkKind {
    Signal,
    Restart,
    Exit,
    Oom,
}

/// Something that happened to a process at one moment: drawn as a mark on its charts.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    pub ts_ns: u64,
    pub kind: MarkKind,
    pub text: String,
}

/// A process's figures over time.
#[derive(Clone, Debug)]
pub struct History {
    pub rss: Series,
    pub sockets: Series,
    pub close_wait: Series,
    pub resets: Series,
    pub endpoints: BTreeMap<String, Series>,
    pub marks: Vec<Mark>,
}

impl Default for History {
    fn default() -> Self {
        History {
            rss: Series::new(Merge::Max),
            sockets: Series::new(Merge::Max),
            close_wait: Series::new(Merge::Max),
            resets: Series::new(Merge::Sum),
            endpoints: BTreeMap::new(),
            marks: Vec::new(),
        }
    }
}

impl History {
    fn mark(&mut self, ts_ns: u64, kind: MarkKind, text: String) {
        if self.marks.len() < MAX_MARKS {
            self.marks.push(Mark { ts_ns, kind, text });
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Proc {
    pub pid: u32,
    pub comm: String,
    pub ppid: u32,
    pub cmdline: String,
    pub fd_limit: Option<u64>,
    /// The memory cgroup's limit.
    pub mem_limit: Option<u64>,
    pub cgroup: String,
    /// Had a kernel event (not only a /proc fact).
    pub active: bool,
    pub exited_ns: Option<u64>,
    /// How it ended: `exit 0`, `killed by SIGTERM`.
    pub death: Option<String>,
    pub oom_killed: bool,
    seen_exec: bool,
    open: i64,
    /// Whether `open` started from a known count (/proc, or 0 at exec).
    open_known: bool,
    /// Open fds that are not sockets, from /proc.
    other_fds: Option<i64>,
    /// (second, open sockets at its end, the lowest count during it) over the last
    /// [`WINDOW_NS`].
    sock_pts: VecDeque<(u64, i64, i64)>,
    conns: HashMap<u64, Conn>,
    pub resets_sent: u64,
    pub resets_received: u64,
    reset_times: VecDeque<u64>,
    pub rss: Option<u64>,
    rss_pts: VecDeque<(u64, u64)>,
    pub signals: Vec<SignalRec>,
    pub fatal_signals: u64,
    pub restarts: u64,
    pub history: History,
}

impl Proc {
    fn new(pid: u32, comm: &str) -> Proc {
        Proc {
            pid,
            comm: comm.to_owned(),
            ..Proc::default()
        }
    }

    /// What the process table knows (limits, command line), copied so the screen can be drawn
    /// without it.
    fn facts(&mut self, procs: &ProcTable) {
        if let Some(e) = procs.get(self.pid) {
            self.ppid = e.ppid;
            self.cmdline = e.cmdline_string();
            self.fd_limit = e.nofile_limit;
            self.mem_limit = e.mem_limit;
            self.cgroup = e.cgroup.clone();
            if !e.comm.is_empty() && self.exited_ns.is_none() {
                self.comm = e.comm.clone();
            }
        }
    }

    fn sockets_delta(&mut self, ts: u64, d: i64) {
        self.open += d;
        self.sock_point(ts);
    }

    fn sock_point(&mut self, ts: u64) {
        let sec = ts - ts % NS;
        let open = self.open;
        match self.sock_pts.back_mut() {
            Some(last) if last.0 >= sec => {
                last.1 = open;
                last.2 = last.2.min(open);
            }
            Some(&mut (_, before, _)) => self.sock_pts.push_back((sec, open, before.min(open))),
            None => self.sock_pts.push_back((sec, open, open)),
        }
        // Keep one point older than the window: the level the window starts from.
        while self.sock_pts.len() > 2 && self.sock_pts[1].0.saturating_add(WINDOW_NS) < ts {
            self.sock_pts.pop_front();
        }
        self.history.sockets.add(ts, self.open.max(0) as f64);
    }

    fn conn_counts(&self) -> (u64, u64) {
        let cw = self
            .conns
            .values()
            .filter(|c| c.state == ConnState::CloseWait)
            .count() as u64;
        let un = self
            .conns
            .values()
            .filter(|c| c.state == ConnState::Unanswered)
            .count() as u64;
        (cw, un)
    }

    fn conn_changed(&mut self, ts: u64, endpoint: Option<&str>) {
        let (cw, _) = self.conn_counts();
        self.history.close_wait.add(ts, cw as f64);
        if let Some(ep) = endpoint {
            let n = self.conns.values().filter(|c| c.endpoint == ep).count() as f64;
            let key = if self.history.endpoints.contains_key(ep)
                || self.history.endpoints.len() < MAX_ENDPOINT_SERIES
            {
                ep.to_owned()
            } else {
                "other".to_owned()
            };
            let n = if key == "other" {
                let charted: Vec<&String> = self.history.endpoints.keys().collect();
                self.conns
                    .values()
                    .filter(|c| !charted.contains(&&c.endpoint))
                    .count() as f64
            } else {
                n
            };
            self.history
                .endpoints
                .entry(key)
                .or_insert_with(|| Series::new(Merge::Max))
                .add(ts, n);
        }
    }

    /// Open sockets as counted (negative only if closes of sockets opened before tracing
    /// were seen without a baseline).
    pub fn open_sockets(&self) -> i64 {
        self.open
    }

    pub fn open_fds(&self) -> Option<i64> {
        self.other_fds.map(|o| (o + self.open).max(0))
    }

    /// Open sockets per minute, fitted over the last minute (at least 3 s of points).
    pub fn socket_growth_per_min(&self, now_ns: u64) -> Option<f64> {
        let start = now_ns.saturating_sub(WINDOW_NS);
        let from = self
            .sock_pts
            .iter()
            .rposition(|&(t, ..)| t <= start)
            .unwrap_or(0);
        let pts: Vec<(f64, f64)> = self
            .sock_pts
            .iter()
            .skip(from)
            .map(|&(t, v, _)| ((t.max(start) - start) as f64 / NS as f64, v as f64))
            .chain(std::iter::once((
                (now_ns.max(start) - start) as f64 / NS as f64,
                self.open as f64,
            )))
            .collect();
        let span = pts.last()?.0 - pts.first()?.0;
        if span < 3.0 {
            return None;
        }
        slope(&pts).map(|s| s * 60.0)
    }

    /// The lowest open-socket count over the last minute.
    pub fn sockets_min(&self, now_ns: u64) -> i64 {
        let start = now_ns.saturating_sub(WINDOW_NS);
        let from = self.sock_pts.iter().rposition(|&(t, ..)| t <= start);
        let before = from.map(|i| self.sock_pts[i].1);
        self.sock_pts
            .iter()
            .skip(from.map_or(0, |i| i + 1))
            .map(|p| p.2)
            .chain(before)
            .min()
            .unwrap_or(self.open)
            .min(self.open)
    }

    /// RSS growth in bytes per second, fitted over the last minute (at least 2 s of samples).
    pub fn rss_growth(&self) -> Option<f64> {
        let (f, l) = (self.rss_pts.front()?, self.rss_pts.back()?);
        if l.0.saturating_sub(f.0) < 2 * NS {
            return None;
        }
        let pts: Vec<(f64, f64)> = self
            .rss_pts
            .iter()
            .map(|&(t, v)| ((t - f.0) as f64 / NS as f64, v as f64))
            .collect();
        slope(&pts)
    }

    /// Resets sent and received per second over the last [`RESET_WINDOW_NS`].
    pub fn resets_per_sec(&self, now_ns: u64) -> f64 {
        let from = now_ns.saturating_sub(RESET_WINDOW_NS);
        self.reset_times.iter().filter(|&&t| t >= from).count() as f64
            / (RESET_WINDOW_NS / NS) as f64
    }

    /// Open connections by state.
    pub fn conns_by_state(&self) -> BTreeMap<ConnState, u64> {
        let mut m = BTreeMap::new();
        for c in self.conns.values() {
            *m.entry(c.state).or_default() += 1;
        }
        m
    }

    /// Open connections per remote endpoint, most first, with their states.
    pub fn endpoints(&self) -> Vec<(String, BTreeMap<ConnState, u64>)> {
        let mut m: BTreeMap<&str, BTreeMap<ConnState, u64>> = BTreeMap::new();
        for c in self.conns.values() {
            *m.entry(&c.endpoint)
                .or_default()
                .entry(c.state)
                .or_default() += 1;
        }
        let mut v: Vec<(String, BTreeMap<ConnState, u64>)> =
            m.into_iter().map(|(k, s)| (k.to_owned(), s)).collect();
        v.sort_by(|a, b| {
            let n = |s: &BTreeMap<ConnState, u64>| s.values().sum::<u64>();
            n(&b.1).cmp(&n(&a.1)).then(a.0.cmp(&b.0))
        });
        v
    }
}

/// One line of the process table, computed from a [`Proc`] at a moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub pid: u32,
    pub comm: String,
    pub exited: bool,
    pub sockets: i64,
    pub sockets_min: i64,
    pub sockets_per_min: Option<f64>,
    pub fds: Option<i64>,
    pub fd_limit: Option<u64>,
    pub close_wait: u64,
    pub unanswered: u64,
    pub conns: u64,
    /// The remote endpoint with the most connections, and how many.
    pub top_endpoint: Option<(String, u64)>,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub rss: Option<u64>,
    pub rss_per_sec: Option<f64>,
    pub mem_limit: Option<u64>,
    pub secs_to_limit: Option<f64>,
    pub fatal_signals: u64,
    pub last_signal: Option<SignalRec>,
    pub restarts: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Pid,
    Comm,
    Sockets,
    SocketGrowth,
    Fds,
    CloseWait,
    Conns,
    Resets,
    Rss,
    RssGrowth,
    Signals,
    Restarts,
}

impl SortKey {
    pub const ALL: [SortKey; 12] = [
        SortKey::Pid,
        SortKey::Comm,
        SortKey::Sockets,
        SortKey::SocketGrowth,
        SortKey::Fds,
        SortKey::CloseWait,
        SortKey::Conns,
        SortKey::Resets,
        SortKey::Rss,
        SortKey::RssGrowth,
        SortKey::Signals,
        SortKey::Restarts,
    ];

    /// The key that selects it on the screen.
    pub fn key(self) -> char {
        match self {
            SortKey::Pid => 'p',
            SortKey::Comm => 'n',
            SortKey::Sockets => 's',
            SortKey::SocketGrowth => 'g',
            SortKey::Fds => 'f',
            SortKey::CloseWait => 'w',
            SortKey::Conns => 'c',
            SortKey::Resets => 'x',
            SortKey::Rss => 'm',
            SortKey::RssGrowth => 'a',
            SortKey::Signals => 'k',
            SortKey::Restarts => 'r',
        }
    }

    pub fn from_key(c: char) -> Option<SortKey> {
        SortKey::ALL.into_iter().find(|k| k.key() == c)
    }

    /// Biggest first, except for pid and name.
    pub fn descending_by_default(self) -> bool {
        !matches!(self, SortKey::Pid | SortKey::Comm)
    }

    fn value(self, r: &Row) -> f64 {
        let opt = |v: Option<f64>| v.unwrap_or(f64::NEG_INFINITY);
        match self {
            SortKey::Pid | SortKey::Comm => 0.0,
            SortKey::Sockets => r.sockets as f64,
            SortKey::SocketGrowth => opt(r.sockets_per_min),
            SortKey::Fds => opt(r.fds.map(|f| f as f64)),
            SortKey::CloseWait => r.close_wait as f64,
            SortKey::Conns => r.conns as f64,
            SortKey::Resets => (r.resets_sent + r.resets_received) as f64,
            SortKey::Rss => opt(r.rss.map(|v| v as f64)),
            SortKey::RssGrowth => opt(r.rss_per_sec),
            SortKey::Signals => r.fatal_signals as f64,
            SortKey::Restarts => r.restarts as f64,
        }
    }
}

/// Sorts rows by `key` (`desc`: biggest first); ties, and unknown values, by pid.
pub fn sort_rows(rows: &mut [Row], key: SortKey, desc: bool) {
    rows.sort_by(|a, b| {
        let ord = match key {
            SortKey::Pid => a.pid.cmp(&b.pid),
            SortKey::Comm => a.comm.cmp(&b.comm),
            k => k
                .value(a)
                .partial_cmp(&k.value(b))
                .unwrap_or(std::cmp::Ordering::Equal),
        };
        let ord = if desc { ord.reverse() } else { ord };
        ord.then(a.pid.cmp(&b.pid))
    });
}

/// What the model shows and keeps.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// Signals that count as fatal (the analyses' `fatal_signals`).
    pub fatal_signals: Vec<i32>,
    /// Show processes known only from /proc (no kernel event): the whole host when nothing
    /// is filtered, as htop does; with a filter only what passed it.
    pub show_idle: bool,
    /// Keep exited processes and their history (the report), instead of dropping them from
    /// the screen after a while.
    pub keep_exited: bool,
}

#[derive(Default)]
pub struct Model {
    opts: Option<ModelOptions>,
    procs: BTreeMap<u32, Proc>,
    exited: VecDeque<u32>,
    /// Connection (`struct sock` address) → owner.
    sk_owner: HashMap<u64, u32>,
    /// (parent, program) → (deaths, time of the last one).
    deaths: HashMap<(u32, String), (u64, u64)>,
    /// Event time: the latest timestamp seen.
    pub now_ns: u64,
    pub first_ns: Option<u64>,
    /// Events seen (ticks excluded).
    pub events: u64,
    /// Records lost in the kernel, per kind (the latest cumulative counts).
    pub lost: BTreeMap<String, u64>,
    /// Findings, newest first.
    pub findings: VecDeque<FindingUpdate>,
    /// Resets whose process is unknown (a packet for no socket).
    pub unattributed_resets: u64,
    pub mem_total: u64,
}

impl Model {
    pub fn new(opts: ModelOptions) -> Model {
        Model {
            opts: Some(opts),
            ..Model::default()
        }
    }

    /// Another boot begins (a replayed dump that spans a reboot): its pids and sockets name
    /// other processes, and its clock starts again. The findings and counters stay.
    pub fn new_boot(&mut self) {
        self.procs.clear();
        self.exited.clear();
        self.sk_owner.clear();
        self.deaths.clear();
        self.now_ns = 0;
    }

    fn opts(&self) -> &ModelOptions {
        static DEFAULT: std::sync::OnceLock<ModelOptions> = std::sync::OnceLock::new();
        self.opts.as_ref().unwrap_or_else(|| {
            DEFAULT.get_or_init(|| ModelOptions {
                fatal_signals: vec![1, 2, 3, 4, 6, 7, 8, 9, 11, 15, 31],
                show_idle: true,
                keep_exited: false,
            })
        })
    }

    pub fn get(&self, pid: u32) -> Option<&Proc> {
        self.procs.get(&pid)
    }

    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    /// A finding raised or updated (newest first; an update replaces the older line).
    pub fn finding(&mut self, u: FindingUpdate) {
        let key = (u.finding.kind(), u.finding.key());
        self.findings
            .retain(|f| (f.finding.kind(), f.finding.key()) != key);
        self.findings.push_front(u);
        self.findings.truncate(MAX_FINDINGS);
    }

    fn proc_mut(&mut self, pid: u32, comm: &str, procs: &ProcTable) -> &mut Proc {
        let p = self.procs.entry(pid).or_insert_with(|| {
            let mut p = Proc::new(pid, comm);
            p.facts(procs);
            p
        });
        if p.exited_ns.is_some() && procs.is_live(pid) {
            // The pid was reused.
            *p = Proc::new(pid, comm);
            p.facts(procs);
        }
        p
    }

    /// The process an event is about, marked active.
    fn active(&mut self, ev: &Event, procs: &ProcTable) -> &mut Proc {
        let comm = ev.comm.to_string();
        let p = self.proc_mut(ev.tgid, &comm, procs);
        p.active = true;
        p
    }

    /// One event, after the process table was updated with it.
    pub fn observe(&mut self, ev: &Event, procs: &ProcTable, host: &HostInfo) {
        self.mem_total = host.mem_total_bytes;
        if !matches!(ev.body, Body::Tick) {
            self.events += 1;
        }
        if ev.ts_ns > 0
            && !matches!(
                ev.body,
                Body::ProcInfo(_) | Body::Drops(_) | Body::RecorderGap(_)
            )
        {
            self.now_ns = self.now_ns.max(ev.ts_ns);
            self.first_ns.get_or_insert(ev.ts_ns);
        }
        let ts = ev.ts_ns;
        match &ev.body {
            Body::Tick => self.expire(),
            Body::Drops(d) => {
                for (k, n) in &d.per_kind {
                    let e = self.lost.entry(k.clone()).or_default();
                    *e = (*e).max(*n);
                }
            }
            Body::ProcInfo(info) => {
                let p = self.proc_mut(info.pid, &info.comm, procs);
                p.facts(procs);
                if let (Some(fds), Some(socks)) = (info.open_fds, info.open_sockets) {
                    p.other_fds = Some(i64::from(fds) - i64::from(socks));
                }
                if !p.seen_exec
                    && let Some(n) = info.open_sockets
                {
                    p.open = i64::from(n);
                    p.open_known = true;
                    // /proc is the truth at this moment: not growth.
                    for pt in p.sock_pts.iter_mut() {
                        pt.1 = p.open;
                        pt.2 = p.open;
                    }
                    p.sock_point(ts.max(1));
                }
            }
            Body::SocketOpen(s) if s.fd >= 0 => self.active(ev, procs).sockets_delta(ts, 1),
            Body::TcpAccept(a) if a.ret >= 0 => self.active(ev, procs).sockets_delta(ts, 1),
            Body::SocketClose(_) => self.active(ev, procs).sockets_delta(ts, -1),
            Body::ConnOpen(c) => {
                let endpoint = endpoint_of(c.role, c.family, c.sport, &c.daddr, c.dport);
                let pid = ev.tgid;
                if c.sk != 0 {
                    self.sk_owner.insert(c.sk, pid);
                }
                let p = self.active(ev, procs);
                p.sockets_delta(ts, 1);
                if c.sk != 0 {
                    p.conns.insert(
                        c.sk,
                        Conn {
                            endpoint: endpoint.clone(),
                            state: ConnState::Open,
                        },
                    );
                    p.conn_changed(ts, Some(&endpoint));
                }
            }
            Body::ConnClose(c) => {
                self.sk_owner.remove(&c.sk);
                let p = self.active(ev, procs);
                p.sockets_delta(ts, -1);
                if let Some(conn) = p.conns.remove(&c.sk) {
                    p.conn_changed(ts, Some(&conn.endpoint));
                }
            }
            Body::ConnStatus(c) => {
                let owner = if ev.tgid != 0 {
                    Some(ev.tgid)
                } else {
                    self.sk_owner.get(&c.sk).copied()
                };
                if let Some(pid) = owner
                    && let Some(p) = self.procs.get_mut(&pid)
                {
                    let state = match c.status {
                        status::CLOSE_WAIT => Some(ConnState::CloseWait),
                        status::UNANSWERED => Some(ConnState::Unanswered),
                        _ => None,
                    };
                    let endpoint = endpoint_of(c.role, c.family, c.sport, &c.daddr, c.dport);
                    match state {
                        Some(s) => {
                            p.conns
                                .entry(c.sk)
                                .or_insert_with(|| Conn {
                                    endpoint: endpoint.clone(),
                                    state: s,
                                })
                                .state = s;
                        }
                        None => {
                            if let Some(conn) = p.conns.get_mut(&c.sk) {
                                conn.state = ConnState::Open;
                            }
                        }
                    }
                    p.conn_changed(ts, Some(&endpoint));
                }
            }
            Body::TcpReset(r) => {
                let owner = if r.owner_tgid != 0 {
                    Some(r.owner_tgid)
                } else {
                    self.sk_owner.get(&r.sk).copied()
                };
                match owner.and_then(|pid| self.procs.get_mut(&pid)) {
                    Some(p) => {
                        if r.direction == tcp::RESET_SENT {
                            p.resets_sent += 1;
                        } else {
                            p.resets_received += 1;
                        }
                        p.reset_times.push_back(ts);
                        while p
                            .reset_times
                            .front()
                            .is_some_and(|&t| t + RESET_WINDOW_NS < ts)
                        {
                            p.reset_times.pop_front();
                        }
                        p.history.resets.add(ts, 1.0);
                    }
                    None => self.unattributed_resets += 1,
                }
            }
            Body::MemSample(m) => {
                let p = self.active(ev, procs);
                p.rss = Some(m.rss_bytes);
                p.rss_pts.push_back((ts, m.rss_bytes));
                while p.rss_pts.front().is_some_and(|f| f.0 + WINDOW_NS < ts) {
                    p.rss_pts.pop_front();
                }
                p.history.rss.add(ts, m.rss_bytes as f64);
            }
            Body::Signal(s) => {
                let fatal = SignalSources::is_reported(&self.opts().fatal_signals, s.sig, s.result);
                self.active(ev, procs);
                if fatal && s.target_pid > 0 {
                    let target = s.target_pid as u32;
                    let rec = SignalRec {
                        ts_ns: ts,
                        signal: signal_name(s.sig),
                        from_pid: ev.tgid,
                        from_comm: comm_of(procs, ev.tgid, &ev.comm),
                        from_kernel: signal_from_kernel(s.code),
                    };
                    let tcomm = Comm(s.target_comm).to_string();
                    let p = self.proc_mut(target, &tcomm, procs);
                    p.active = true;
                    p.fatal_signals += 1;
                    p.history.mark(ts, MarkKind::Signal, rec.describe());
                    if p.signals.len() >= MAX_SIGNALS {
                        p.signals.remove(0);
                    }
                    p.signals.push(rec);
                }
            }
            Body::OomKill(o) => {
                let comm = Comm(o.victim_comm).to_string();
                let trigger = format!("{} {}", ev.tgid, ev.comm);
                let p = self.proc_mut(o.victim_pid, &comm, procs);
                p.active = true;
                p.oom_killed = true;
                p.history.mark(
                    ts,
                    MarkKind::Oom,
                    format!("OOM kill (triggered by {trigger})"),
                );
            }
            Body::Fork(f) => {
                self.active(ev, procs);
                let comm = ev.comm.to_string();
                let c = self.proc_mut(f.child_pid, &comm, procs);
                c.active = true;
                c.facts(procs);
                // Its own sockets are counted from here (closes of inherited ones are not
                // reported, so neither are they).
                c.open_known = true;
                c.sock_point(ts);
            }
            Body::Exec(_) => {
                let key = procs.get(ev.tgid).map(|e| (e.ppid, program_key(e)));
                let restarts = key
                    .and_then(|k| self.deaths.get(&k).copied())
                    .filter(|&(_, last)| ts.saturating_sub(last) <= RESTART_WITHIN_NS)
                    .map(|(n, _)| n);
                let parent = procs
                    .get(ev.tgid)
                    .map(|e| crate::analysis::comm_of(procs, e.ppid, "?"))
                    .unwrap_or_default();
                let p = self.active(ev, procs);
                p.comm = ev.comm.to_string();
                p.facts(procs);
                p.seen_exec = true;
                // CLOEXEC sockets are gone; the new program's are counted from here.
                p.open = 0;
                p.open_known = true;
                p.other_fds = None;
                p.conns.clear();
                p.sock_pts.clear();
                p.sock_point(ts);
                p.rss_pts.clear();
                // Before exec its memory was a copy of its parent's.
                p.rss = None;
                p.history.rss = Series::new(Merge::Max);
                if let Some(n) = restarts {
                    p.restarts = n;
                    p.history.mark(
                        ts,
                        MarkKind::Restart,
                        format!("restart #{n} (started by {parent})"),
                    );
                }
            }
            Body::Exit(x) => {
                let how = if x.flags & EXIT_CODE_KNOWN == 0 {
                    "exited".to_owned()
                } else {
                    match wait_status(x.exit_code) {
                        (_, Some(sig)) => format!("killed by {}", signal_name(sig)),
                        (Some(code), None) => format!("exit {code}"),
                        (None, None) => "exited".to_owned(),
                    }
                };
                let died = x.flags & EXIT_CODE_KNOWN != 0 && x.exit_code != 0;
                let key = procs.get(ev.tgid).map(|e| (e.ppid, program_key(e)));
                let keep = self.opts().keep_exited;
                let p = self.active(ev, procs);
                let failed = died || p.fatal_signals > 0;
                p.exited_ns = Some(ts);
                p.history.mark(ts, MarkKind::Exit, how.clone());
                p.death = Some(how);
                let restarts = p.restarts;
                if failed && let Some(k) = key {
                    if self.deaths.len() >= MAX_DEATHS {
                        self.deaths.clear();
                    }
                    let d = self.deaths.entry(k).or_insert((restarts, 0));
                    d.0 = d.0.max(restarts) + 1;
                    d.1 = ts;
                }
                let pid = ev.tgid;
                for sk in self
                    .procs
                    .get(&pid)
                    .map(|p| p.conns.keys().copied().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    self.sk_owner.remove(&sk);
                }
                if keep {
                    self.exited.push_back(pid);
                    while self.exited.len() > HISTORY_GRAVEYARD {
                        if let Some(old) = self.exited.pop_front()
                            && self.procs.get(&old).is_some_and(|p| p.exited_ns.is_some())
                        {
                            self.procs.remove(&old);
                        }
                    }
                }
            }
            _ => {
                if ev.body.kind().is_some() && ev.tgid != 0 {
                    self.active(ev, procs);
                }
            }
        }
    }

    /// Forgets processes that exited a while ago (unless kept for the report).
    fn expire(&mut self) {
        if self.opts().keep_exited {
            return;
        }
        let now = self.now_ns;
        self.procs
            .retain(|_, p| p.exited_ns.is_none_or(|e| e + EXITED_KEEP_NS >= now));
    }

    /// The row of one process now.
    pub fn row(&self, p: &Proc) -> Row {
        let mem_limit = p
            .mem_limit
            .or((self.mem_total > 0).then_some(self.mem_total));
        let rss_per_sec = p.rss_growth();
        let secs_to_limit = match (p.rss, rss_per_sec, mem_limit) {
            (Some(rss), Some(rate), Some(limit)) if rate > 0.0 && p.exited_ns.is_none() => {
                Some(limit.saturating_sub(rss) as f64 / rate)
            }
            _ => None,
        };
        let (close_wait, unanswered) = p.conn_counts();
        let top_endpoint = p
            .endpoints()
            .into_iter()
            .next()
            .map(|(e, s)| (e, s.values().sum()));
        Row {
            pid: p.pid,
            comm: p.comm.clone(),
            exited: p.exited_ns.is_some(),
            sockets: p.open,
            sockets_min: p.sockets_min(self.now_ns),
            sockets_per_min: p.socket_growth_per_min(self.now_ns),
            fds: p.open_fds(),
            fd_limit: p.fd_limit,
            close_wait,
            unanswered,
            conns: p.conns.len() as u64,
            top_endpoint,
            resets_sent: p.resets_sent,
            resets_received: p.resets_received,
            rss: p.rss,
            rss_per_sec,
            mem_limit,
            secs_to_limit,
            fatal_signals: p.fatal_signals,
            last_signal: p.signals.last().cloned(),
            restarts: p.restarts,
        }
    }

    /// The table: processes to show, filtered by a name fragment, sorted.
    pub fn rows(&self, filter: &str, key: SortKey, desc: bool) -> Vec<Row> {
        let show_idle = self.opts().show_idle;
        let needle = filter.to_lowercase();
        let mut rows: Vec<Row> = self
            .procs
            .values()
            // Kernel threads (children of kthreadd) only when something happened in them.
            .filter(|p| p.pid != 0 && (p.active || (show_idle && p.pid != 2 && p.ppid != 2)))
            .filter(|p| needle.is_empty() || p.comm.to_lowercase().contains(&needle))
            .map(|p| self.row(p))
            .collect();
        sort_rows(&mut rows, key, desc);
        rows
    }

    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.procs.values()
    }
}

fn comm_of(procs: &ProcTable, pid: u32, fallback: &Comm) -> String {
    crate::analysis::comm_of(procs, pid, &fallback.to_string())
}

/// Where a connection goes: the peer's address and port for one this process opened; for one
/// it accepted, the peer's address and the local (service) port, since clients' ports differ
/// for every connection.
fn endpoint_of(role: u8, family: u16, sport: u16, daddr: &[u8; 16], dport: u16) -> String {
    let remote = socket_addr(family, daddr, dport);
    if role == tcp::ROLE_PASSIVE {
        format!("{}>:{sport}", remote.ip())
    } else {
        remote.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::testutil::Stream;
    use tracer_common::tcp::{ROLE_ACTIVE, ROLE_PASSIVE, state};

    fn model_of(s: &Stream) -> Model {
        let mut m = Model::new(ModelOptions {
            fatal_signals: vec![1, 2, 9, 15],
            show_idle: true,
            keep_exited: true,
        });
        let mut procs = ProcTable::new();
        for ev in &s.events {
            procs.apply(ev);
            m.observe(ev, &procs, &s.host);
        }
        m
    }

    fn rows(s: &Stream, key: SortKey) -> Vec<Row> {
        model_of(s).rows("", key, key.descending_by_default())
    }

    fn row(s: &Stream, pid: u32) -> Row {
        rows(s, SortKey::Pid)
            .into_iter()
            .find(|r| r.pid == pid)
            .unwrap_or_else(|| panic!("no row for {pid}"))
    }

    #[test]
    fn counts_sockets_from_proc_then_events_and_fds_against_the_limit() {
        let mut s = Stream::new();
        s.proc_info(10, 1, "proxy", |i| {
            i.open_sockets = Some(3);
            i.open_fds = Some(8);
            i.nofile_limit = Some(64);
        });
        for k in 0..5u64 {
            s.at(100 + k).conn_open(
                10,
                "proxy",
                0x100 + k,
                10 + k as i32,
                ROLE_PASSIVE,
                8080,
                40000 + k as u16,
            );
        }
        s.at(200).socket_open(10, "proxy", 20);
        s.at(300).conn_close(
            10,
            "proxy",
            0x100,
            ROLE_PASSIVE,
            state::ESTABLISHED,
            8080,
            40000,
            100,
            0,
            10,
        );
        let r = row(&s, 10);
        assert_eq!(r.sockets, 3 + 5 + 1 - 1);
        assert_eq!(
            r.fds,
            Some(8 - 3 + 8),
            "non-socket fds from /proc plus the sockets"
        );
        assert_eq!(r.fd_limit, Some(64));
        assert_eq!(r.conns, 4);
        assert_eq!(r.top_endpoint, Some(("10.0.0.2>:8080".to_owned(), 4)));
    }

    #[test]
    fn after_exec_sockets_count_from_zero_not_from_a_late_proc_read() {
        let mut s = Stream::new();
        s.proc_info(1, 0, "sh", |_| {});
        s.at(0).fork(1, "sh", 20);
        s.at(1).exec(20, "proxy", "/usr/bin/proxy", &["proxy"]);
        // /proc was read after listen(): it counts the listener its event then adds again.
        s.at(5).proc_info(20, 1, "proxy", |i| {
            i.open_sockets = Some(1);
            i.open_fds = Some(4);
        });
        s.at(5).socket_open(20, "proxy", 3);
        let r = row(&s, 20);
        assert_eq!(r.sockets, 1);
        assert_eq!(r.fds, Some(4));
    }

    #[test]
    fn growth_per_minute_and_minimum_over_the_window() {
        let mut s = Stream::new();
        s.proc_info(10, 1, "leaky", |i| i.open_sockets = Some(0));
        // 2 sockets a second for 30 s: 120/min.
        for k in 0..60u64 {
            s.at(k * 500).conn_open(
                10,
                "leaky",
                0x1000 + k,
                3,
                ROLE_PASSIVE,
                80,
                1000 + k as u16,
            );
        }
        s.at(30_000).tick();
        let r = row(&s, 10);
        assert_eq!(r.sockets, 60);
        let g = r.sockets_per_min.unwrap();
        assert!((g - 120.0).abs() < 12.0, "{g}");
        assert_eq!(r.sockets_min, 0);
        // A steady process has no growth.
        let mut s = Stream::new();
        s.proc_info(11, 1, "steady", |i| i.open_sockets = Some(50));
        s.at(30_000).tick();
        assert_eq!(row(&s, 11).sockets_per_min.unwrap_or(0.0), 0.0);
    }

    #[test]
    fn close_wait_and_unanswered_from_status_records_until_cleared_or_closed() {
        let mut s = Stream::new();
        s.proc_info(10, 1, "api", |_| {});
        for k in 0..3u64 {
            s.at(k)
                .conn_open(10, "api", 0x10 + k, 3, ROLE_PASSIVE, 80, 5000 + k as u16);
        }
        s.at(10)
            .conn_open(10, "api", 0x20, 4, ROLE_ACTIVE, 40000, 5432);
        for k in 0..3u64 {
            s.at(2000).conn_status(
                10,
                "api",
                0x10 + k,
                status::CLOSE_WAIT,
                1000,
                state::CLOSE_WAIT,
                ROLE_PASSIVE,
                80,
                5000 + k as u16,
            );
        }
        s.at(2000).conn_status(
            10,
            "api",
            0x20,
            status::UNANSWERED,
            10,
            state::ESTABLISHED,
            ROLE_ACTIVE,
            40000,
            5432,
        );
        let r = row(&s, 10);
        assert_eq!((r.close_wait, r.unanswered, r.conns), (3, 1, 4));
        s.at(3000).conn_close(
            10,
            "api",
            0x10,
            ROLE_PASSIVE,
            state::CLOSE_WAIT,
            80,
            5000,
            0,
            0,
            1,
        );
        s.at(3000).conn_status(
            10,
            "api",
            0x11,
            status::CLEARED,
            1000,
            state::CLOSE_WAIT,
            ROLE_PASSIVE,
            80,
            5001,
        );
        let r = row(&s, 10);
        assert_eq!((r.close_wait, r.unanswered, r.conns), (1, 1, 3));
        let m = model_of(&s);
        let eps = m.get(10).unwrap().endpoints();
        assert_eq!(eps[0].0, "10.0.0.2>:80");
        assert_eq!(eps[1].0, "10.0.0.2:5432");
    }

    #[test]
    fn resets_by_owner_and_rate() {
        let mut s = Stream::new();
        s.proc_info(10, 1, "node", |_| {});
        for k in 0..20u64 {
            // Sent from softirq (pid 0) for a socket whose owner the kernel knew.
            s.at(1000 + k * 100)
                .reset(0, "swapper/0", 0x99, tcp::RESET_SENT, 10, 80, 5000);
        }
        s.at(2000)
            .reset(0, "swapper/0", 0, tcp::RESET_RECEIVED, 0, 80, 5000);
        let m = model_of(&s);
        let p = m.get(10).unwrap();
        assert_eq!((p.resets_sent, p.resets_received), (20, 0));
        assert_eq!(m.unattributed_resets, 1);
        assert!((p.resets_per_sec(m.now_ns) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn rss_growth_and_time_to_the_cgroup_limit() {
        let mut s = Stream::new();
        s.proc_info(30, 1, "ruby", |i| i.mem_limit = Some(128 << 20));
        for k in 0..11u64 {
            s.at(k * 1000).mem(30, "ruby", (10 << 20) + k * (8 << 20));
        }
        let r = row(&s, 30);
        assert_eq!(r.rss, Some(90 << 20));
        let g = r.rss_per_sec.unwrap();
        assert!((g - (8 << 20) as f64).abs() < 1.0, "{g}");
        let t = r.secs_to_limit.unwrap();
        assert!((t - 38.0 / 8.0).abs() < 0.01, "{t}");
        // Without a cgroup limit, the host's memory is the limit.
        let mut s = Stream::with_host_mem(1 << 30);
        for k in 0..3u64 {
            s.at(k * 1000).mem(31, "java", (100 << 20) * (k + 1));
        }
        assert_eq!(row(&s, 31).mem_limit, Some(1 << 30));
    }

    #[test]
    fn fatal_signals_received_from_whom_and_restarts() {
        let mut s = Stream::new();
        s.proc_info(1, 0, "systemd", |_| {});
        s.proc_info(4242, 1, "monit", |i| i.cmdline = vec!["monit".into()]);
        s.proc_info(5000, 4242, "node", |i| {
            i.cmdline = vec!["node".into(), "app.js".into()]
        });
        for c in 0..3u64 {
            let pid = 5000 + c as u32;
            let t = c * 10_000;
            s.at(t + 5000).signal(4242, "monit", 15, 0, pid, "node");
            s.at(t + 5001).exit(pid, "node", 15);
            s.at(t + 6000).fork(4242, "monit", pid + 1);
            s.at(t + 6001)
                .exec(pid + 1, "node", "/usr/bin/node", &["node", "app.js"]);
        }
        let dead = row(&s, 5000);
        assert_eq!(dead.fatal_signals, 1);
        assert!(dead.exited);
        let sig = dead.last_signal.unwrap();
        assert_eq!(
            (sig.signal.as_str(), sig.from_pid, sig.from_comm.as_str()),
            ("SIGTERM", 4242, "monit")
        );
        assert_eq!(row(&s, 5003).restarts, 3);
        assert_eq!(row(&s, 5001).restarts, 1);
        // SIGCHLD and other non-fatal signals are not counted.
        let m = model_of(&s);
        assert_eq!(m.get(4242).unwrap().fatal_signals, 0);
        let marks: Vec<MarkKind> = m
            .get(5003)
            .unwrap()
            .history
            .marks
            .iter()
            .map(|m| m.kind)
            .collect();
        assert_eq!(marks, vec![MarkKind::Restart]);
    }

    #[test]
    fn a_clean_exit_then_a_new_instance_is_no_restart() {
        let mut s = Stream::new();
        s.proc_info(1, 0, "bash", |i| i.cmdline = vec!["bash".into()]);
        s.at(0).fork(1, "bash", 10);
        s.at(1).exec(10, "ls", "/bin/ls", &["ls"]);
        s.at(2).exit(10, "ls", 0);
        s.at(3).fork(1, "bash", 11);
        s.at(4).exec(11, "ls", "/bin/ls", &["ls"]);
        assert_eq!(row(&s, 11).restarts, 0);
    }

    #[test]
    fn sorting_by_each_column_puts_the_biggest_first_and_unknowns_last() {
        let mut s = Stream::new();
        s.proc_info(100, 2, "kworker/0:1", |_| {});
        s.proc_info(11, 0, "a", |i| i.open_sockets = Some(5));
        s.proc_info(12, 0, "b", |i| i.open_sockets = Some(50));
        s.proc_info(13, 0, "c", |i| i.open_sockets = Some(7));
        s.at(0).mem(13, "c", 1 << 30);
        s.at(0).mem(11, "a", 1 << 20);
        let pids = |k: SortKey| rows(&s, k).iter().map(|r| r.pid).collect::<Vec<_>>();
        assert_eq!(pids(SortKey::Sockets), vec![12, 13, 11]);
        assert_eq!(
            pids(SortKey::Rss),
            vec![13, 11, 12],
            "unknown RSS sorts last"
        );
        assert_eq!(pids(SortKey::Pid), vec![11, 12, 13]);
        assert_eq!(pids(SortKey::Comm), vec![11, 12, 13]);
        // Idle kernel threads (pid 100, a child of kthreadd) are left out.
        let m = model_of(&s);
        let f: Vec<u32> = m
            .rows("B", SortKey::Pid, false)
            .iter()
            .map(|r| r.pid)
            .collect();
        assert_eq!(f, vec![12], "the name filter ignores case");
        for k in SortKey::ALL {
            assert_eq!(SortKey::from_key(k.key()), Some(k));
        }
    }

    #[test]
    fn a_new_boot_forgets_the_processes_of_the_last() {
        let mut s = Stream::new();
        s.proc_info(10, 1, "job", |i| i.open_sockets = Some(3));
        s.at(10).socket_open(10, "job", 7);
        let mut m = Model::default();
        let mut procs = ProcTable::new();
        for ev in &s.events {
            procs.apply(ev);
            m.observe(ev, &procs, &s.host);
        }
        assert_eq!(m.get(10).map(|p| p.open_sockets()), Some(4));
        m.new_boot();
        assert!(m.get(10).is_none());
    }

    #[test]
    fn exited_processes_leave_the_screen_after_a_while() {
        let mut s = Stream::new();
        s.proc_info(10, 1, "job", |_| {});
        s.at(0).exit(10, "job", 0);
        s.at(60_000).tick();
        let mut m = Model::new(ModelOptions {
            fatal_signals: vec![15],
            show_idle: true,
            keep_exited: false,
        });
        let mut procs = ProcTable::new();
        for ev in &s.events {
            procs.apply(ev);
            m.observe(ev, &procs, &s.host);
        }
        assert!(m.get(10).is_none());
    }

    #[test]
    fn findings_newest_first_an_update_replaces_its_line() {
        let mut s = Stream::new();
        s.at(0).signal(4242, "monit", 15, 0, 5000, "node");
        s.at(100).signal(4242, "monit", 9, 0, 5001, "node");
        let mut m = Model::default();
        for u in s.engine.take_updates() {
            m.finding(u);
        }
        let kinds: Vec<String> = m
            .findings
            .iter()
            .map(|f| f.finding.summary.clone())
            .collect();
        assert_eq!(kinds.len(), 2);
        assert!(kinds[0].contains("SIGKILL"), "{kinds:?}");
        let again = m.findings[1].clone();
        m.finding(again);
        assert_eq!(m.findings.len(), 2);
        assert!(m.findings[0].finding.summary.contains("SIGTERM"));
    }
}
