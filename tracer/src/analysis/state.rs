//! Facts derived from the event stream that several analyses and the report need: each
//! process's memory over time, its open sockets and fds, and the owner of each TCP socket.
//! Updated by the engine with every event before the analyses see it. Bounded: exited
//! processes are forgotten after a while, closed sockets at once.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    sync::Arc,
};

use tracer_common::{CollectorKind, Kind, tcp::state as tcp_state};

use super::Kinds;
use crate::{
    event::{Body, Event},
    proc_table::IdHash,
};

/// Processes whose memory history is kept after they exit (OOM victims, the report's top
/// growers).
const MEM_GRAVEYARD: usize = 512;
/// Points of a process's whole-life memory history (decimated as it grows).
const HISTORY_POINTS: usize = 128;
/// Samples kept in the recent window at most (a process growing by GiB/s sends many).
const RECENT_MAX: usize = 2048;
/// Socket owners remembered at most.
const MAX_OWNERS: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemPoint {
    pub ts_ns: u64,
    pub rss: u64,
    pub mapped: u64,
}

#[derive(Clone, Debug, Default)]
pub struct MemTrack {
    pub comm: String,
    /// Samples within the analysis window (since the last exec).
    pub recent: VecDeque<MemPoint>,
    /// The whole life, at most [`HISTORY_POINTS`] points, evenly thinned.
    pub history: Vec<MemPoint>,
    stride_ns: u64,
    pub first: Option<MemPoint>,
    pub last: Option<MemPoint>,
    pub peak_rss: u64,
    pub samples: u64,
    pub exited_ns: Option<u64>,
}

impl MemTrack {
    fn push(&mut self, p: MemPoint, window_ns: u64) {
        self.samples += 1;
        self.peak_rss = self.peak_rss.max(p.rss);
        self.first.get_or_insert(p);
        self.last = Some(p);
        self.recent.push_back(p);
        while self.recent.len() > RECENT_MAX
            || self
                .recent
                .front()
                .is_some_and(|f| f.ts_ns.saturating_add(window_ns) < p.ts_ns)
        {
            self.recent.pop_front();
        }
        if self.stride_ns == 0 {
            self.stride_ns = super::NS;
        }
        match self.history.last() {
            Some(l) if p.ts_ns < l.ts_ns.saturating_add(self.stride_ns) => {}
            _ => self.history.push(p),
        }
        if self.history.len() > HISTORY_POINTS {
            // Keep every other point and space new ones twice as far apart.
            let mut i = 0;
            self.history.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride_ns = self.stride_ns.saturating_mul(2);
        }
    }

    /// RSS growth fitted over the recent window: (bytes per second, window seconds).
    pub fn recent_growth(&self) -> Option<(f64, f64)> {
        let (f, l) = (self.recent.front()?, self.recent.back()?);
        let pts: Vec<(f64, f64)> = self
            .recent
            .iter()
            .map(|p| {
                (
                    (p.ts_ns as f64 - f.ts_ns as f64) / super::NS as f64,
                    p.rss as f64,
                )
            })
            .collect();
        Some((
            super::slope(&pts)?,
            super::secs(l.ts_ns.saturating_sub(f.ts_ns)),
        ))
    }
}

#[derive(Default)]
pub struct MemHistory {
    pub procs: HashMap<u32, MemTrack, IdHash>,
    exited: VecDeque<u32>,
}

impl MemHistory {
    pub fn get(&self, pid: u32) -> Option<&MemTrack> {
        self.procs.get(&pid)
    }

    /// Processes by pid (deterministic order), for the report.
    pub fn sorted(&self) -> BTreeMap<u32, &MemTrack> {
        self.procs.iter().map(|(k, v)| (*k, v)).collect()
    }
}

/// Processes whose fd counts are kept at most (the busiest ones stay: a full table drops
/// the exited, then those without sockets).
const MAX_FD_PROCS: usize = 1 << 16;

/// One process's open sockets and fds as the event stream tells them: /proc's counts when it
/// was read (ProcInfo), plus every socket fd opened (socket(), socketpair(), accept(),
/// connect's conn_open, a dup of a socket fd) minus every one closed since. A fork copies the
/// parent's counts (the child starts with the parent's fd table; threads share it and are no
/// process of their own); an exec makes them unknown until /proc is read again (it closes the
/// CLOEXEC fds, and the kernel does not say which).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FdCount {
    pub comm: String,
    pub sockets: i64,
    /// None until /proc was read (for this program image).
    pub fds: Option<i64>,
    /// Socket fds opened and closed since first seen (the baseline excluded).
    pub opened: u64,
    pub closed: u64,
    pub exited: bool,
    /// The time of the last /proc read: the process's own opens and closes recorded before
    /// it are in the counts already.
    counted_until_ns: u64,
}

/// The events that may change a process's socket count ([`State::fd_change`]): what the
/// analyses that follow those counts ask for.
pub const FD_CHANGES: Kinds = Kinds::kernel(&[
    Kind::SocketOpen,
    Kind::TcpAccept,
    Kind::ConnOpen,
    Kind::SocketClose,
    Kind::ConnClose,
    Kind::FdDup,
    Kind::Fork,
    Kind::Exec,
])
.and(Kinds::collector(&[CollectorKind::ProcInfo]));

/// How the last event changed a process's socket count (see [`State::fd_change`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdChange {
    /// Socket fds opened (> 0) or closed (< 0) by the process itself.
    Delta(i64),
    /// A fact replaced the count (a /proc read, the parent's table at fork): not growth.
    Baseline,
    /// A new program image: the count starts over.
    Exec,
}

/// The open sockets and fds of every process (see [`FdCount`]).
#[derive(Default)]
pub struct FdTable {
    procs: HashMap<u32, FdCount, IdHash>,
}

impl FdTable {
    pub fn get(&self, pid: u32) -> Option<&FdCount> {
        self.procs.get(&pid)
    }

    /// Processes with open sockets, by pid, for the report.
    pub fn with_sockets(&self) -> BTreeMap<u32, &FdCount> {
        self.procs
            .iter()
            .filter(|(_, c)| !c.exited && c.sockets > 0)
            .map(|(k, v)| (*k, v))
            .collect()
    }

    fn entry(&mut self, pid: u32, comm: impl fmt::Display) -> &mut FdCount {
        if self.procs.len() >= MAX_FD_PROCS && !self.procs.contains_key(&pid) {
            self.procs.retain(|_, c| !c.exited);
            if self.procs.len() >= MAX_FD_PROCS {
                self.procs.retain(|_, c| c.sockets > 0);
            }
        }
        let c = self.procs.entry(pid).or_default();
        if c.exited {
            // pid reused: a new process
            *c = FdCount::default();
        }
        if c.comm.is_empty() {
            c.comm = comm.to_string();
        }
        c
    }

    fn delta(&mut self, ev: &Event, d: i64) -> Option<(u32, FdChange)> {
        let pid = ev.tgid;
        if pid == 0 {
            return None;
        }
        let c = self.entry(pid, ev.comm);
        if ev.ts_ns <= c.counted_until_ns {
            return None;
        }
        c.sockets += d;
        if let Some(n) = c.fds.as_mut() {
            *n = (*n + d).max(0);
        }
        if d > 0 {
            c.opened += d as u64;
        } else {
            c.closed += d.unsigned_abs();
        }
        Some((pid, FdChange::Delta(d)))
    }

    fn apply(&mut self, ev: &Event) -> Option<(u32, FdChange)> {
        match &ev.body {
            Body::ProcInfo(info) => {
                if info.open_sockets.is_none() && info.open_fds.is_none() {
                    return None;
                }
                let c = self.entry(info.pid, &info.comm);
                if !info.comm.is_empty() {
                    c.comm = info.comm.clone();
                }
                if let Some(n) = info.open_sockets {
                    c.sockets = n as i64;
                }
                if let Some(n) = info.open_fds {
                    c.fds = Some(n as i64);
                }
                if let Some(t) = info.fds_read_ns {
                    c.counted_until_ns = t;
                }
                Some((info.pid, FdChange::Baseline))
            }
            Body::SocketOpen(s) if s.fd >= 0 => self.delta(ev, 1),
            Body::TcpAccept(a) if a.ret >= 0 => self.delta(ev, 1),
            Body::ConnOpen(_) => self.delta(ev, 1),
            Body::SocketClose(_) | Body::ConnClose(_) => self.delta(ev, -1),
            // One more fd for a socket, one fewer when it replaced another socket fd.
            Body::FdDup(d) if d.flags & tracer_common::tcp::DUP_REPLACED == 0 => self.delta(ev, 1),
            Body::Fork(f) => {
                let parent = self.procs.get(&ev.tgid).filter(|c| !c.exited)?;
                let child = FdCount {
                    comm: parent.comm.clone(),
                    sockets: parent.sockets,
                    fds: parent.fds,
                    ..FdCount::default()
                };
                if child.sockets == 0 && child.fds.is_none() {
                    return None;
                }
                self.procs.insert(f.child_pid, child);
                Some((f.child_pid, FdChange::Baseline))
            }
            Body::Exec(_) => {
                let c = self.procs.get_mut(&ev.tgid)?;
                *c = FdCount {
                    comm: ev.comm.to_string(),
                    ..FdCount::default()
                };
                Some((ev.tgid, FdChange::Exec))
            }
            Body::Exit(_) => {
                let c = self.procs.get_mut(&ev.tgid)?;
                c.exited = true;
                None
            }
            _ => None,
        }
    }
}

/// Fatal signals remembered per target at most, until the target exits.
const MAX_SIGNALED: usize = 65536;

/// The last fatal signal a process received, as it was when sent: the sender's names are taken
/// then (a `kill` helper is gone by the time its target exits).
#[derive(Clone, Debug, PartialEq)]
pub struct Signaled {
    pub ts_ns: u64,
    pub sig: i32,
    pub sender_pid: u32,
    pub sender_comm: String,
    pub sender_cmdline: String,
    /// The record's own comm: for a kernel-sent signal, the task the kernel ran in.
    pub task_comm: String,
    pub from_kernel: bool,
    /// The process the sender acted for (see [`super::on_behalf_of`]), with its name.
    pub on_behalf_of: Option<(u32, String)>,
}

impl Signaled {
    /// Signal `s`, sent in event `ev`.
    pub fn of(
        ev: &Event,
        s: &tracer_common::signal::Signal,
        procs: &crate::proc_table::ProcTable,
    ) -> Signaled {
        let target = s.target_pid.max(0) as u32;
        Signaled {
            ts_ns: ev.ts_ns,
            sig: s.sig,
            sender_pid: ev.tgid,
            sender_comm: super::comm_or(procs, ev.tgid, ev.comm),
            sender_cmdline: procs
                .get(ev.tgid)
                .map(|p| p.cmdline_string())
                .unwrap_or_default(),
            task_comm: ev.comm.to_string(),
            from_kernel: crate::vocab::signal_from_kernel(s.code),
            on_behalf_of: super::on_behalf_of(procs, ev.tgid, target)
                .map(|b| (b, super::comm_of(procs, b, "?"))),
        }
    }
}

/// The state shared by analyses.
#[derive(Default)]
pub struct State {
    /// The latest event time seen (events from two ring buffers may arrive slightly out of order).
    pub now_ns: u64,
    pub mem: MemHistory,
    /// TCP socket (`struct sock` address) → owning process, learnt from process-context events.
    pub owners: HashMap<u64, u32, IdHash>,
    /// Local port → the process listening on it (connections not yet accepted are its).
    pub listeners: HashMap<u16, u32, IdHash>,
    pub fds: FdTable,
    /// The process whose socket count the latest event changed, and how.
    pub fd_change: Option<(u32, FdChange)>,
    /// Target pid → the last fatal signal it received, until it exits.
    /// Shared: the timeline keeps the one a timeline entry names, to render it only if kept.
    pub signaled: HashMap<u32, Arc<Signaled>, IdHash>,
    /// At an exit: the last fatal signal the exiting process had received (taken out of
    /// `signaled`), for the analyses that see the exit.
    pub exit_signal: Option<Arc<Signaled>>,
    /// At a reported signal recorded in `signaled`: the process its sender acted for (see
    /// [`super::on_behalf_of`]), as computed for that record, so analyses need not walk the
    /// lineages again.
    pub signal_behalf: Option<Option<u32>>,
    fatal: Vec<i32>,
    window_ns: u64,
}

impl State {
    /// `fatal`: the signals that count as fatal (`signal_source`'s list).
    pub fn new(mem_window_s: f64, fatal: Vec<i32>) -> State {
        State {
            window_ns: super::ns(mem_window_s),
            fatal,
            ..State::default()
        }
    }

    /// Another boot: its pids name other processes, so everything learnt about them goes.
    pub fn new_boot(&mut self) {
        *self = State {
            window_ns: self.window_ns,
            fatal: std::mem::take(&mut self.fatal),
            ..State::default()
        };
    }

    fn signals(&mut self, ev: &Event, procs: &crate::proc_table::ProcTable) {
        self.exit_signal = None;
        self.signal_behalf = None;
        match &ev.body {
            Body::Signal(s)
                if s.target_pid > 0
                    && super::signals::SignalSources::is_reported(&self.fatal, s.sig, s.result) =>
            {
                let target = s.target_pid as u32;
                if self.signaled.len() >= MAX_SIGNALED && !self.signaled.contains_key(&target) {
                    // Targets whose exit was never seen (lost records): the old ones go.
                    let horizon = self.now_ns.saturating_sub(600 * super::NS);
                    self.signaled.retain(|_, x| x.ts_ns >= horizon);
                    if self.signaled.len() >= MAX_SIGNALED {
                        return;
                    }
                }
                let x = Signaled::of(ev, s, procs);
                self.signal_behalf = Some(x.on_behalf_of.as_ref().map(|b| b.0));
                self.signaled.insert(target, Arc::new(x));
            }
            Body::Exit(_) => self.exit_signal = self.signaled.remove(&ev.tgid),
            _ => {}
        }
    }

    /// The owner of a socket: the one the kernel attributed, else the one learnt here.
    pub fn owner(&self, sk: u64, attributed: u32) -> Option<u32> {
        if attributed != 0 {
            return Some(attributed);
        }
        self.owners.get(&sk).copied()
    }

    /// One event, after the process table was updated with it.
    pub fn apply(&mut self, ev: &Event, procs: &crate::proc_table::ProcTable) {
        self.now_ns = self.now_ns.max(ev.ts_ns);
        self.fd_change = self.fds.apply(ev);
        debug_assert!(self.fd_change.is_none() || FD_CHANGES.has(&ev.body));
        self.signals(ev, procs);
        if self.owners.len() >= MAX_OWNERS {
            // Sockets whose close was never seen (lost records): start over rather than grow.
            self.owners.clear();
        }
        match &ev.body {
            Body::MemSample(s) => {
                let t = self.mem.procs.entry(ev.tgid).or_default();
                if t.exited_ns.is_some() {
                    // pid reused: a new process
                    *t = MemTrack::default();
                }
                t.comm = ev.comm.to_string();
                t.push(
                    MemPoint {
                        ts_ns: ev.ts_ns,
                        rss: s.rss_bytes,
                        mapped: s.mapped_bytes,
                    },
                    self.window_ns,
                );
            }
            Body::Exec(_) => {
                // A new program image: its memory starts over (before exec it was a copy of
                // its parent's).
                if let Some(t) = self.mem.procs.get_mut(&ev.tgid)
                    && t.exited_ns.is_none()
                {
                    *t = MemTrack {
                        comm: ev.comm.to_string(),
                        ..MemTrack::default()
                    };
                }
            }
            Body::Exit(_) => {
                if let Some(t) = self.mem.procs.get_mut(&ev.tgid)
                    && t.exited_ns.is_none()
                {
                    t.exited_ns = Some(ev.ts_ns);
                    self.mem.exited.push_back(ev.tgid);
                    while self.mem.exited.len() > MEM_GRAVEYARD {
                        if let Some(old) = self.mem.exited.pop_front()
                            && self
                                .mem
                                .procs
                                .get(&old)
                                .is_some_and(|t| t.exited_ns.is_some())
                        {
                            self.mem.procs.remove(&old);
                        }
                    }
                }
            }
            Body::TcpAccept(a) if a.ret >= 0 && a.sk != 0 => {
                self.owners.insert(a.sk, ev.tgid);
            }
            Body::SockOwner(o) => {
                self.owners.insert(o.sk, ev.tgid);
            }
            Body::ConnOpen(c) if c.sk != 0 => {
                self.owners.insert(c.sk, ev.tgid);
            }
            Body::ConnClose(c) => {
                self.owners.remove(&c.sk);
            }
            Body::ConnStatus(c) if ev.tgid != 0 => {
                self.owners.insert(c.sk, ev.tgid);
            }
            Body::TcpState(t) => {
                if t.new_state == tcp_state::LISTEN {
                    // listen() runs in the owner's context.
                    let owner = if t.owner_tgid != 0 {
                        t.owner_tgid
                    } else {
                        ev.tgid
                    };
                    self.listeners.insert(t.sport, owner);
                } else if t.old_state == tcp_state::LISTEN {
                    self.listeners.remove(&t.sport);
                }
                if t.new_state == tcp_state::CLOSE {
                    self.owners.remove(&t.skaddr);
                } else if t.owner_tgid != 0 {
                    self.owners.insert(t.skaddr, t.owner_tgid);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Stream;

    fn sockets(s: &Stream, pid: u32) -> Option<(i64, Option<i64>)> {
        s.engine.state().fds.get(pid).map(|c| (c.sockets, c.fds))
    }

    /// An nginx master with two listening sockets forks a worker: the worker holds them too,
    /// and what the worker opens or duplicates is its own.
    #[test]
    fn a_fork_inherits_the_parents_sockets_and_fds() {
        let mut s = Stream::new();
        s.proc_info(100, 1, "nginx", |i| {
            i.open_sockets = Some(2);
            i.open_fds = Some(9);
        });
        s.at(10).socket_open(100, "nginx", 9);
        s.at(20).fork(100, "nginx", 101);
        assert_eq!(sockets(&s, 101), Some((3, Some(10))));
        s.at(30).accept(101, "nginx", 11, 80);
        s.at(40).dup(101, "nginx", 11, 12, false);
        assert_eq!(sockets(&s, 101), Some((5, Some(12))));
        assert_eq!(
            sockets(&s, 100),
            Some((3, Some(10))),
            "the parent's are its own"
        );
        let c = s.engine.state().fds.get(101).unwrap();
        assert_eq!(
            (c.opened, c.closed),
            (2, 0),
            "inherited fds are no openings"
        );
    }

    /// dup2() onto another socket fd closes that one: the count stays; closing a duplicate
    /// is one socket fd fewer.
    #[test]
    fn dups_add_an_fd_and_a_replacing_dup_adds_none() {
        let mut s = Stream::new();
        s.proc_info(200, 1, "svc", |i| {
            i.open_sockets = Some(0);
            i.open_fds = Some(3);
        });
        s.at(10).socket_open(200, "svc", 3);
        s.at(11).socket_open(200, "svc", 4);
        s.at(12).dup(200, "svc", 3, 4, true);
        assert_eq!(sockets(&s, 200), Some((2, Some(5))));
        s.at(13).dup(200, "svc", 3, 5, false);
        assert_eq!(sockets(&s, 200), Some((3, Some(6))));
        s.at(14).socket_close(200, "svc", 5);
        assert_eq!(sockets(&s, 200), Some((2, Some(5))));
    }

    /// exec closes the CLOEXEC fds without saying which: unknown until /proc is read again.
    #[test]
    fn exec_forgets_the_counts_until_proc_is_read() {
        let mut s = Stream::new();
        s.proc_info(300, 1, "sh", |i| {
            i.open_sockets = Some(4);
            i.open_fds = Some(7);
        });
        s.at(10).exec(300, "srv", "/usr/bin/srv", &["srv"]);
        assert_eq!(sockets(&s, 300), Some((0, None)));
        s.proc_info(300, 1, "srv", |i| {
            i.open_sockets = Some(1);
            i.open_fds = Some(4);
        });
        assert_eq!(sockets(&s, 300), Some((1, Some(4))));
    }
}
