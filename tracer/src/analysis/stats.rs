//! What the report shows besides findings: event counts and drops, connection lifetimes per
//! process (histograms with a fixed maximum that count outliers instead of failing), and the
//! incident timeline (notable events in time order, like a post-mortem). All bounded.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use hdrhistogram::Histogram;
use tracer_common::{process::EXIT_CODE_KNOWN, tcp::state as tcp};

use super::{Cx, Finding, comm_of, comm_or, signals, state::Signaled};
use crate::{
    event::{Body, Comm, Event, KindCounts},
    proc_table::IdHash,
    units::bytes_human,
    vocab::{errno_name, signal_name, wait_status},
};

/// Connection lifetimes are tracked in milliseconds up to a week; longer ones are outliers.
pub const LIFETIME_MAX_MS: u64 = 7 * 24 * 3600 * 1000;
/// Processes with their own lifetime histogram; the rest share pid 0.
const LIFETIME_PROCS: usize = 1024;
/// Connections followed at once (beyond, new ones are not timed).
const OPEN_CONNS: usize = 1 << 20;
/// accept()/socket() failures of one process within this long are one timeline entry.
const BURST_NS: u64 = super::NS;

pub struct Lifetimes {
    pub comm: String,
    /// Milliseconds, saturated at [`LIFETIME_MAX_MS`].
    pub hist: Histogram<u64>,
    /// Lifetimes above the histogram's maximum (counted in it at the maximum).
    pub outliers: u64,
}

impl Lifetimes {
    fn new(comm: String) -> Lifetimes {
        Lifetimes {
            comm,
            // Cannot fail: the bounds are constants within hdrhistogram's range.
            hist: Histogram::new_with_bounds(1, LIFETIME_MAX_MS, 2)
                .expect("valid histogram bounds"),
            outliers: 0,
        }
    }

    pub fn record(&mut self, ms: u64) {
        if ms > LIFETIME_MAX_MS {
            self.outliers += 1;
        }
        self.hist.saturating_record(ms.min(LIFETIME_MAX_MS));
    }
}

#[derive(Default)]
pub struct ConnLifetimes {
    open: HashMap<u64, u64, IdHash>,
    pub per_pid: BTreeMap<u32, Lifetimes>,
}

impl ConnLifetimes {
    fn observe(&mut self, ev: &Event, cx: &Cx<'_>) {
        match &ev.body {
            // The connection model: a close carries its open time.
            Body::ConnClose(c) if c.open_ns != 0 => {
                self.record(cx, ev.tgid, ev.ts_ns.saturating_sub(c.open_ns));
            }
            Body::TcpState(t) if t.flags & tracer_common::tcp::STATE_FLAG_MODEL != 0 => {}
            Body::TcpState(t) if t.new_state == tcp::ESTABLISHED => {
                if self.open.len() < OPEN_CONNS {
                    self.open.insert(t.skaddr, ev.ts_ns);
                }
            }
            Body::TcpState(t) if t.new_state == tcp::CLOSE => {
                if let Some(start) = self.open.remove(&t.skaddr) {
                    let owner = cx.state.owner(t.skaddr, t.owner_tgid).unwrap_or(0);
                    self.record(cx, owner, ev.ts_ns.saturating_sub(start));
                }
            }
            _ => {}
        }
    }

    fn record(&mut self, cx: &Cx<'_>, owner: u32, lifetime_ns: u64) {
        let pid = if self.per_pid.contains_key(&owner) || self.per_pid.len() < LIFETIME_PROCS {
            owner
        } else {
            0
        };
        let l = self.per_pid.entry(pid).or_insert_with(|| {
            Lifetimes::new(if pid == 0 {
                "(other)".into()
            } else {
                comm_of(cx.procs, pid, "?")
            })
        });
        l.record(lifetime_ns / 1_000_000);
    }
}

#[derive(Default)]
pub struct Stats {
    pub events: u64,
    pub per_kind: KindCounts,
    pub first_ns: Option<u64>,
    pub last_ns: u64,
    /// Records lost in the kernel, per kind (the latest cumulative counts).
    pub drops: BTreeMap<String, u64>,
    /// What the recorder could not store (its gap records): the records lost in the gaps this
    /// dump holds, the run's total as the newest gap says, and the boot-clock span of the gaps.
    pub recorder_lost: u64,
    pub recorder_lost_total: u64,
    pub recorder_gap_span: Option<(u64, u64)>,
    pids: PidSet,
    pub conns: ConnLifetimes,
}

impl Stats {
    pub fn observe(&mut self, ev: &Event, cx: &Cx<'_>) {
        if matches!(ev.body, Body::Tick) {
            return;
        }
        self.events += 1;
        self.per_kind.add(ev);
        self.first_ns = Some(self.first_ns.map_or(ev.ts_ns, |f| f.min(ev.ts_ns)));
        self.last_ns = self.last_ns.max(ev.ts_ns);
        if ev.tgid != 0 {
            self.pids.insert(ev.tgid);
        }
        if let Body::Drops(d) = &ev.body {
            for (k, n) in &d.per_kind {
                let e = self.drops.entry(k.clone()).or_default();
                *e = (*e).max(*n);
            }
        }
        if let Body::RecorderGap(g) = &ev.body {
            self.recorder_lost += g.lost;
            self.recorder_lost_total = self.recorder_lost_total.max(g.lost_total);
            let (a, b) = self.recorder_gap_span.unwrap_or((g.first_ns, g.last_ns));
            self.recorder_gap_span = Some((a.min(g.first_ns), b.max(g.last_ns)));
        }
        self.conns.observe(ev, cx);
    }

    pub fn processes(&self) -> usize {
        self.pids.len()
    }

    /// The kinds seen or lost, by name.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.per_kind.iter().map(|(k, _)| k).collect();
        for k in self.drops.keys() {
            if !kinds.contains(&k.as_str()) {
                kinds.push(k);
            }
        }
        kinds.sort_unstable();
        kinds
    }

    pub fn drops_total(&self) -> u64 {
        self.drops.values().sum()
    }

    pub fn span_ns(&self) -> u64 {
        self.first_ns.map_or(0, |f| self.last_ns - f)
    }
}

/// The distinct pids seen, as a bitmap over Linux's pid space (`PID_MAX_LIMIT`, 2^22 on 64-bit)
/// allocated 8 KiB at a time: at most 512 KiB however many processes a recorder running for
/// days sees (a set of a million pids held 10 MB and kept growing).
#[derive(Default)]
struct PidSet {
    chunks: Vec<Option<Box<[u64; PID_CHUNK_WORDS]>>>,
    len: usize,
    /// Pids beyond the pid space (not Linux's): counted, not told apart.
    beyond: usize,
}

const PID_SPACE: u32 = 1 << 22;
const PID_CHUNK_WORDS: usize = 1024;
const PIDS_PER_CHUNK: u32 = PID_CHUNK_WORDS as u32 * 64;

impl PidSet {
    fn insert(&mut self, pid: u32) {
        if pid >= PID_SPACE {
            self.beyond += 1;
            return;
        }
        let chunk = (pid / PIDS_PER_CHUNK) as usize;
        let bit = pid % PIDS_PER_CHUNK;
        if self.chunks.len() <= chunk {
            self.chunks.resize_with(chunk + 1, || None);
        }
        let words = self.chunks[chunk].get_or_insert_with(|| Box::new([0; PID_CHUNK_WORDS]));
        let (w, m) = ((bit / 64) as usize, 1u64 << (bit % 64));
        if words[w] & m == 0 {
            words[w] |= m;
            self.len += 1;
        }
    }

    fn len(&self) -> usize {
        self.len + self.beyond
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TimelineEntry {
    #[serde(skip)]
    pub ts_ns: u64,
    /// `signal`, `exit`, `oom_kill`, `fd_error`, `finding`.
    pub what: &'static str,
    pub pid: u32,
    pub comm: String,
    pub text: String,
    /// Events merged into this entry (bursts of accept failures).
    pub count: u64,
}

/// An entry as kept: its text is rendered only when the report asks for the entries, so the
/// many that a busy stream pushes out of the bounded timeline never are.
struct Kept {
    ts_ns: u64,
    what: &'static str,
    pid: u32,
    comm: String,
    text: Text,
    count: u64,
}

enum Text {
    Done(String),
    /// `SIGTERM from 4242 monit [monit -I] to 5123 svc`.
    Signal {
        sig: i32,
        from: Arc<Signaled>,
        target: u32,
        target_comm: Comm,
    },
    /// `5123 svc killed by ...`: the process is the entry's pid and comm.
    Exit {
        signaled: Option<Arc<Signaled>>,
        code: Option<i32>,
        sig: Option<i32>,
    },
}

impl Kept {
    fn render(&self) -> TimelineEntry {
        let text = match &self.text {
            Text::Done(t) => t.clone(),
            Text::Signal {
                sig,
                from,
                target,
                target_comm,
            } => {
                let name = signal_name(*sig);
                let from = from_text(from);
                format!("{name} from {from} to {target} {}", target_comm)
            }
            Text::Exit {
                signaled,
                code,
                sig,
            } => {
                let signaled = signaled.as_ref().map(|s| (s.sig, from_text(s)));
                let status = match (signaled, *sig, *code) {
                    // Killed by the very signal we saw sent: say who sent it.
                    (Some((n, from)), Some(s), _) if n == s => format!("killed by {from}"),
                    (Some((_, from)), Some(s), _) => {
                        format!("killed by {} after {from}", signal_name(s))
                    }
                    (Some((_, from)), None, Some(c)) => {
                        format!("exited with status {c} after {from}")
                    }
                    (Some((_, from)), None, None) => format!("exited after {from}"),
                    (None, Some(s), _) => format!("killed by {}", signal_name(s)),
                    // Not kept (see `observe`).
                    (None, None, _) => String::new(),
                };
                format!("{} {} {status}", self.pid, self.comm)
            }
        };
        TimelineEntry {
            ts_ns: self.ts_ns,
            what: self.what,
            pid: self.pid,
            comm: self.comm.clone(),
            text,
            count: self.count,
        }
    }
}

pub struct Timeline {
    entries: VecDeque<Kept>,
    /// Sequence number of `entries[0]`.
    first_seq: u64,
    max: usize,
    pub omitted: u64,
    fatal: Vec<i32>,
    /// (pid, errno) → the entry its latest burst of failures is counted in.
    bursts: HashMap<(u32, i32), Burst>,
}

impl Timeline {
    pub fn new(max: usize, fatal: Vec<i32>) -> Timeline {
        Timeline {
            entries: VecDeque::new(),
            first_seq: 0,
            max: max.max(1),
            omitted: 0,
            fatal,
            bursts: HashMap::new(),
        }
    }

    /// Another boot: its pids name other processes (the entries seen stay).
    pub fn new_boot(&mut self) {
        self.bursts.clear();
    }

    /// Entries in time order (stable for equal times).
    pub fn entries(&self) -> Vec<TimelineEntry> {
        let mut v: Vec<&Kept> = self.entries.iter().collect();
        v.sort_by_key(|e| e.ts_ns);
        v.into_iter().map(Kept::render).collect()
    }

    fn push(&mut self, e: Kept) -> u64 {
        self.entries.push_back(e);
        if self.entries.len() > self.max {
            self.entries.pop_front();
            self.first_seq += 1;
            self.omitted += 1;
        }
        self.first_seq + self.entries.len() as u64 - 1
    }

    pub fn finding(&mut self, f: &Finding, at_ns: u64) {
        self.push(Kept {
            ts_ns: at_ns,
            what: "finding",
            pid: f.pid().unwrap_or(0),
            comm: String::new(),
            text: Text::Done(format!("{} {}: {}", f.severity.name(), f.kind(), f.summary)),
            count: 1,
        });
    }

    pub fn observe(&mut self, ev: &Event, cx: &Cx<'_>) {
        let comm = || comm_or(cx.procs, ev.tgid, ev.comm);
        match &ev.body {
            Body::Signal(s)
                if signals::SignalSources::is_reported(&self.fatal, s.sig, s.result) =>
            {
                let target = s.target_pid.max(0) as u32;
                // The shared state has just taken down who sent it (for the target's exit).
                let from = match cx.state.signaled.get(&target) {
                    Some(x) if s.target_pid > 0 && x.ts_ns == ev.ts_ns && x.sig == s.sig => {
                        x.clone()
                    }
                    _ => Arc::new(Signaled::of(ev, s, cx.procs)),
                };
                self.push(Kept {
                    ts_ns: ev.ts_ns,
                    what: "signal",
                    pid: ev.tgid,
                    comm: comm(),
                    text: Text::Signal {
                        sig: s.sig,
                        from,
                        target,
                        target_comm: Comm(s.target_comm),
                    },
                    count: 1,
                });
            }
            Body::Exit(x) => {
                let signaled = cx.state.exit_signal.clone();
                let known = x.flags & EXIT_CODE_KNOWN != 0;
                let (code, sig) = if known {
                    wait_status(x.exit_code)
                } else {
                    (None, None)
                };
                if signaled.is_none() && sig.is_none() {
                    return;
                }
                self.push(Kept {
                    ts_ns: ev.ts_ns,
                    what: "exit",
                    pid: ev.tgid,
                    comm: comm(),
                    text: Text::Exit {
                        signaled,
                        code,
                        sig,
                    },
                    count: 1,
                });
            }
            Body::OomKill(o) => {
                let rss = super::oom::victim_rss_bytes(o);
                let victim_comm = if o.flags & tracer_common::oom::OOM_HAS_COMM != 0 {
                    Comm(o.victim_comm).to_string()
                } else {
                    comm_of(cx.procs, o.victim_pid, "?")
                };
                let rss = if o.flags & tracer_common::oom::OOM_HAS_MEMORY != 0 {
                    format!(" (RSS {})", bytes_human(rss))
                } else {
                    String::new()
                };
                self.push(Kept {
                    ts_ns: ev.ts_ns,
                    what: "oom_kill",
                    pid: o.victim_pid,
                    comm: victim_comm.clone(),
                    text: Text::Done(format!(
                        "OOM killer killed {} {victim_comm}{rss}, triggered by {} {}",
                        o.victim_pid,
                        ev.tgid,
                        comm()
                    )),
                    count: 1,
                });
            }
            Body::TcpAccept(a) if a.ret == -24 || a.ret == -23 => {
                self.fd_error(ev, "accept()", a.ret, Some(a.sport), cx)
            }
            Body::SocketOpen(s) if s.fd == -24 || s.fd == -23 => {
                self.fd_error(ev, "socket()", s.fd, None, cx)
            }
            _ => {}
        }
    }

    fn fd_error(
        &mut self,
        ev: &Event,
        call: &'static str,
        err: i32,
        port: Option<u16>,
        cx: &Cx<'_>,
    ) {
        let key = (ev.tgid, err);
        if let Some(b) = self.bursts.get(&key)
            && ev.ts_ns.saturating_sub(b.start_ns) < BURST_NS
            && b.seq >= self.first_seq
            && let Some(e) = self.entries.get_mut((b.seq - self.first_seq) as usize)
        {
            e.count += 1;
            e.text = Text::Done(format!(
                "{} failed {} times with {} in {}",
                b.call,
                e.count,
                errno_name(err),
                b.who
            ));
            return;
        }
        let comm = comm_or(cx.procs, ev.tgid, ev.comm);
        let port = port
            .filter(|p| *p != 0)
            .map(|p| format!(" on port {p}"))
            .unwrap_or_default();
        let who = format!("{} {comm}{port}", ev.tgid);
        let seq = self.push(Kept {
            ts_ns: ev.ts_ns,
            what: "fd_error",
            pid: ev.tgid,
            comm,
            text: Text::Done(format!("{call} failed with {} in {who}", errno_name(err))),
            count: 1,
        });
        if self.bursts.len() > 4096 {
            self.bursts.clear();
        }
        self.bursts.insert(
            key,
            Burst {
                seq,
                start_ns: ev.ts_ns,
                call,
                who,
            },
        );
    }
}

struct Burst {
    /// Sequence number of its timeline entry.
    seq: u64,
    start_ns: u64,
    call: &'static str,
    who: String,
}

/// Who sent a signal, for the timeline: "4242 monit [monit -I]", or the task the kernel ran in.
fn from_text(s: &Signaled) -> String {
    if s.from_kernel {
        format!("the kernel (in {} {})", s.sender_pid, s.task_comm)
    } else {
        format!("{} {} [{}]", s.sender_pid, s.sender_comm, s.sender_cmdline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_set_counts_distinct_pids_in_bounded_memory() {
        let mut s = PidSet::default();
        for pid in [1, 2, 2, 65535, 65536, 4_194_303, 1, 4_194_304] {
            s.insert(pid);
        }
        assert_eq!(
            s.len(),
            6,
            "1, 2, 65535, 65536, 4194303 and one beyond the pid space"
        );
        let mut s = PidSet::default();
        for pid in 0..1_000_000u32 {
            s.insert(300 + pid % 400_000);
        }
        assert_eq!(s.len(), 400_000);
        assert!(
            s.chunks.iter().flatten().count() <= 7,
            "400k pids: 7 chunks of 8 KiB"
        );
    }

    #[test]
    fn lifetimes_saturate_and_count_outliers() {
        let mut l = Lifetimes::new("x".into());
        l.record(5);
        l.record(u64::MAX);
        l.record(LIFETIME_MAX_MS * 10);
        assert_eq!(l.hist.len(), 3);
        assert_eq!(l.outliers, 2);
        assert!(l.hist.max() >= LIFETIME_MAX_MS / 2);
    }
}
