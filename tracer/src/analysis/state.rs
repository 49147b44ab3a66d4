//! Facts derived from the event stream that several analyses and the report need: each
//! process's memory over time and the owner of each TCP socket. Updated by the engine with
//! every event before the analyses see it. Bounded: exited processes are forgotten after a
//! while, closed sockets at once.
use std::collections::{BTreeMap, HashMap, VecDeque};

use tracer_common::tcp::state as tcp_state;

use crate::event::{Body, Event};

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
    pub procs: HashMap<u32, MemTrack>,
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

/// The state shared by analyses.
#[derive(Default)]
pub struct State {
    /// The latest event time seen (events from two ring buffers may arrive slightly out of order).
    pub now_ns: u64,
    pub mem: MemHistory,
    /// TCP socket (`struct sock` address) → owning process, learnt from process-context events.
    pub owners: HashMap<u64, u32>,
    /// Local port → the process listening on it (connections not yet accepted are its).
    pub listeners: HashMap<u16, u32>,
    window_ns: u64,
}

impl State {
    pub fn new(mem_window_s: f64) -> State {
        State {
            window_ns: super::ns(mem_window_s),
            ..State::default()
        }
    }

    /// The owner of a socket: the one the kernel attributed, else the one learnt here.
    pub fn owner(&self, sk: u64, attributed: u32) -> Option<u32> {
        if attributed != 0 {
            return Some(attributed);
        }
        self.owners.get(&sk).copied()
    }

    pub fn apply(&mut self, ev: &Event) {
        self.now_ns = self.now_ns.max(ev.ts_ns);
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
