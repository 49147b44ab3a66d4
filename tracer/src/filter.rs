//! Event filters: `--events`, `--pid`, `--comm`, `--cgroup`, `--sigchld`, parsed once into a
//! [`FilterSpec`] and compiled both to the kernel's configuration ([`FilterSpec::rule`], which
//! the programs apply while tracing) and to the userspace [`Filter`] (which applies the same
//! rule, through the same [`tracer_common::filter::allows`], to a dump's events in replay,
//! report and export), plus `--since` and `--until` for replay.
//!
//! `--cgroup X` passes X and its descendants. The kernel asks for a task's cgroup ancestor at
//! X's level; userspace answers the same question from the cgroup v2 ancestry that the
//! collector stores in each process's facts ([`crate::event::ProcInfo::cgroup_v2`]), read from
//! the cgroupfs when the process is first seen in a cgroup, so a dump decides the same on
//! another machine.
use std::collections::HashSet;

use thiserror::Error;
use tracer_common::{
    Family, Kind,
    filter::{self as rule, FILTER_CGROUP, FILTER_COMM, FILTER_PID, FilterRule, Subject},
};

use crate::{
    event::{Body, Comm, Event},
    proc_table::{ProcEntry, ProcTable},
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("unknown event family '{0}': expected tcp, signal, process, oom, memory or all")]
    UnknownFamily(String),
    #[error("--comm '{0}' is longer than the kernel's 15-character process names")]
    CommTooLong(String),
}

/// Parses `--events tcp,signal,...` into a family bit set.
pub fn parse_families(s: &str) -> Result<u32, FilterError> {
    let mut bits = 0;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "all" {
            bits |= Family::ALL.iter().map(|f| f.bit()).sum::<u32>();
            continue;
        }
        let f = Family::ALL
            .iter()
            .find(|f| f.name() == part)
            .ok_or_else(|| FilterError::UnknownFamily(part.to_owned()))?;
        bits |= f.bit();
    }
    Ok(bits)
}

pub const ALL_FAMILIES: u32 = 0b11111;

/// A `--cgroup` selection: the cgroup v2 id and its depth below the root (the root is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupSel {
    pub id: u64,
    pub level: u32,
}

impl CgroupSel {
    /// The level of a cgroup given by id that no stored ancestry names: only the cgroup itself
    /// then matches, in records whose writer's ancestry is unknown.
    pub const UNKNOWN_LEVEL: u32 = u32::MAX;
}

/// `--cgroup` of `replay`, `report`, `export`: a path below the cgroup2 mount, or an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupArg {
    Path(String),
    Id(u64),
}

impl CgroupArg {
    /// The selection, if this process's stored cgroup v2 ancestry names the cgroup (as its own
    /// cgroup or an ancestor).
    pub fn find(&self, p: &ProcEntry) -> Option<CgroupSel> {
        let ids = &p.cgroup_v2;
        match self {
            CgroupArg::Id(id) => ids.iter().position(|i| i == id).map(|level| CgroupSel {
                id: *id,
                level: level as u32,
            }),
            CgroupArg::Path(want) => {
                let have = normalize_cgroup_path(&p.cgroup_v2_path);
                let depth = want.split('/').filter(|s| !s.is_empty()).count();
                let below = have == *want
                    || want == "/"
                    || have
                        .strip_prefix(want.as_str())
                        .is_some_and(|r| r.starts_with('/'));
                if !below {
                    return None;
                }
                // The ancestry has one id per path component plus the root.
                (ids.len() == have.split('/').filter(|s| !s.is_empty()).count() + 1)
                    .then(|| ids.get(depth))
                    .flatten()
                    .map(|id| CgroupSel {
                        id: *id,
                        level: depth as u32,
                    })
            }
        }
    }
}

/// A cgroup path as `/a/b`: below the cgroup2 mount (a leading `/sys/fs/cgroup` or
/// `/sys/fs/cgroup/unified` is dropped), no trailing slash.
pub fn normalize_cgroup_path(p: &str) -> String {
    let p = p
        .strip_prefix("/sys/fs/cgroup/unified")
        .or_else(|| p.strip_prefix("/sys/fs/cgroup"))
        .unwrap_or(p)
        .trim_end_matches('/');
    let p = p.trim_start_matches('/');
    format!("/{p}")
}

/// The filters as given on the command line, parsed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterSpec {
    pub families: u32,
    /// `--pid`: these processes and their descendants.
    pub pids: Vec<u32>,
    pub comm: Option<String>,
    pub cgroup: Option<CgroupSel>,
    pub sigchld: bool,
}

impl Default for FilterSpec {
    fn default() -> Self {
        FilterSpec {
            families: ALL_FAMILIES,
            pids: Vec::new(),
            comm: None,
            cgroup: None,
            sigchld: false,
        }
    }
}

impl FilterSpec {
    pub fn new(
        events: &str,
        pids: &[u32],
        comm: Option<&str>,
        cgroup: Option<CgroupSel>,
        sigchld: bool,
    ) -> Result<FilterSpec, FilterError> {
        if let Some(c) = comm
            && c.len() > 15
        {
            return Err(FilterError::CommTooLong(c.to_owned()));
        }
        Ok(FilterSpec {
            families: parse_families(events)?,
            pids: pids.to_vec(),
            comm: comm.map(str::to_owned),
            cgroup,
            sigchld,
        })
    }

    /// `--pid`, `--comm` and `--cgroup` as the kernel's [`FilterRule`] (the userspace filter
    /// holds the same value).
    pub fn rule(&self) -> FilterRule {
        let mut r = FilterRule::none();
        if !self.pids.is_empty() {
            r.flags |= FILTER_PID;
        }
        if let Some(comm) = &self.comm {
            r.flags |= FILTER_COMM;
            r.comm = Comm::new(comm).0;
        }
        if let Some(c) = self.cgroup {
            r.flags |= FILTER_CGROUP;
            r.cgroup = c.id;
            r.cgroup_level = c.level;
        }
        r
    }

    /// The userspace filter deciding as the kernel does.
    pub fn userspace(&self) -> Filter {
        Filter {
            families: self.families,
            pids: self.pids.iter().copied().collect(),
            rule: self.rule(),
            sigchld: self.sigchld,
            ..Filter::default()
        }
    }

    /// What is left to do in userspace when the kernel applied this spec already (live): the
    /// families only. The kernel's own knowledge (descendants followed through fork, a
    /// socket's owner) is better than ours there; filtering again could only lose events,
    /// e.g. of a child that exited before userspace heard of it.
    pub fn after_kernel(&self) -> Filter {
        Filter {
            families: self.families,
            sigchld: self.sigchld,
            ..Filter::default()
        }
    }
}

#[derive(Clone, Debug)]
pub struct Filter {
    pub families: u32,
    /// `--pid`: these processes and their descendants (followed through fork).
    pub pids: HashSet<u32>,
    /// `--pid`, `--comm`, `--cgroup` as the kernel has them.
    pub rule: FilterRule,
    /// Boot-time ns bounds (`--since`/`--until`, converted by the caller).
    pub since_ns: Option<u64>,
    pub until_ns: Option<u64>,
    pub sigchld: bool,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            families: ALL_FAMILIES,
            pids: HashSet::new(),
            rule: FilterRule::none(),
            since_ns: None,
            until_ns: None,
            sigchld: false,
        }
    }
}

/// The task that wrote a record (its header).
struct Writer<'a> {
    pids: &'a HashSet<u32>,
    ev: &'a Event,
    procs: &'a ProcTable,
}

impl Subject for Writer<'_> {
    fn tracked(&self) -> bool {
        self.pids.contains(&self.ev.tgid)
    }
    fn comm(&self) -> [u8; 16] {
        self.ev.comm.0
    }
    fn cgroup_ancestor(&self, level: u32) -> u64 {
        match self.procs.get(self.ev.tgid) {
            // The facts describe the cgroup the record was written in.
            Some(p) if p.cgroup_v2.last() == Some(&self.ev.cgroup_id) => {
                rule::ancestor_at(&p.cgroup_v2, level)
            }
            // Ancestry unknown (a dump from before it was stored): the cgroup itself still
            // matches exactly.
            _ => self.ev.cgroup_id,
        }
    }
}

/// Another task named by a record: a signal's target, an OOM victim (cgroup unknown, as in the
/// kernel), or a socket's owner (its cgroup from its facts, as the kernel has it from the
/// owner's last socket call).
struct Named<'a> {
    pids: &'a HashSet<u32>,
    pid: u32,
    comm: [u8; 16],
    cgroup: Option<&'a [u64]>,
}

impl Subject for Named<'_> {
    fn tracked(&self) -> bool {
        self.pids.contains(&self.pid)
    }
    fn comm(&self) -> [u8; 16] {
        self.comm
    }
    fn cgroup_ancestor(&self, level: u32) -> u64 {
        self.cgroup.map_or(0, |a| rule::ancestor_at(a, level))
    }
}

impl Filter {
    /// Whether nothing but the SIGCHLD switch selects events: every family, no pids, no time
    /// bounds, no rule.
    fn passes_all_but_sigchld(&self) -> bool {
        self.families & ALL_FAMILIES == ALL_FAMILIES
            && self.pids.is_empty()
            && self.since_ns.is_none()
            && self.until_ns.is_none()
            && self.rule.flags == 0
    }

    fn named<'a>(&'a self, pid: u32, comm: [u8; 16]) -> Named<'a> {
        Named {
            pids: &self.pids,
            pid,
            comm,
            cgroup: None,
        }
    }

    fn owner<'a>(&'a self, owner: u32, procs: &'a ProcTable) -> Named<'a> {
        let p = procs.get(owner);
        Named {
            pids: &self.pids,
            pid: owner,
            comm: p.map(|p| Comm::new(&p.comm).0).unwrap_or_default(),
            cgroup: p.map(|p| p.cgroup_v2.as_slice()),
        }
    }

    /// Whether `ev` passes. Keeps the `--pid` set up to date (children of followed processes are
    /// followed), so it must see every event in order, as the pipeline does.
    pub fn pass(&mut self, ev: &Event, procs: &ProcTable) -> bool {
        if self.passes_all_but_sigchld() {
            // No selection (a plain `report` or `replay`): only SIGCHLD may be left out.
            return self.sigchld
                || !matches!(&ev.body, Body::Signal(s) if s.sig == tracer_common::signal::SIGCHLD);
        }
        if let Body::Fork(f) = &ev.body
            && !self.pids.is_empty()
            && self.pids.contains(&ev.tgid)
        {
            self.pids.insert(f.child_pid);
        }
        // A descendant whose fork was not seen (the parent was the collector itself, or it
        // forked before the dump began) is followed through the process table's ancestry.
        if !self.pids.is_empty()
            && !self.pids.contains(&ev.tgid)
            && procs
                .ancestry(ev.tgid)
                .iter()
                .skip(1)
                .any(|p| self.pids.contains(&p.pid))
        {
            self.pids.insert(ev.tgid);
        }
        if let Some(s) = self.since_ns
            && ev.ts_ns < s
        {
            return false;
        }
        if let Some(u) = self.until_ns
            && ev.ts_ns > u
        {
            return false;
        }
        let kind = match &ev.body {
            // Collector records always pass: they describe processes and losses.
            Body::ProcInfo(_) | Body::Drops(_) | Body::RecorderGap(_) | Body::Tick => return true,
            b => b.kind().unwrap_or(Kind::TcpState),
        };
        if kind == Kind::Signal
            && let Body::Signal(s) = &ev.body
            && s.sig == tracer_common::signal::SIGCHLD
            && !self.sigchld
        {
            return false;
        }
        if self.families & kind.family().bit() == 0 {
            return false;
        }
        if self.rule.flags == 0 {
            return true;
        }
        let writer = || {
            rule::allows(
                &self.rule,
                &Writer {
                    pids: &self.pids,
                    ev,
                    procs,
                },
            )
        };
        // Which task decides, as in the kernel's programs: the writer, or either end of a
        // signal, OOM kill or cgroup move, or a socket's owner when the record names one
        // (tcp_state and tcp_reset fire in softirq, where the writer is whoever was running;
        // conn_status is written with the owner in its header).
        match &ev.body {
            Body::Signal(s) => {
                writer()
                    || rule::allows(&self.rule, &self.named(s.target_pid as u32, s.target_comm))
            }
            Body::OomKill(o) => {
                writer() || rule::allows(&self.rule, &self.named(o.victim_pid, o.victim_comm))
            }
            Body::CgroupAttach(c) => {
                writer() || rule::allows(&self.rule, &self.named(c.pid, c.comm.0))
            }
            Body::TcpState(t) if t.owner_tgid != 0 => {
                rule::allows(&self.rule, &self.owner(t.owner_tgid, procs))
            }
            Body::TcpReset(t) if t.owner_tgid != 0 => {
                rule::allows(&self.rule, &self.owner(t.owner_tgid, procs))
            }
            _ => writer(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Comm;
    use tracer_common::{process::Fork, signal::Signal, tcp::SocketOpen};

    fn ev(tgid: u32, comm: &str, body: Body) -> Event {
        Event {
            ts_ns: 10,
            cpu: 0,
            tgid,
            tid: tgid,
            uid: 0,
            cgroup_id: 5,
            comm: Comm::new(comm),
            body,
        }
    }

    fn sock() -> Body {
        Body::SocketOpen(SocketOpen {
            fd: 3,
            family: 2,
            sock_type: 1,
            protocol: 0,
            _pad: 0,
        })
    }

    #[test]
    fn families_parse_and_reject_unknown() {
        assert_eq!(
            parse_families("tcp,oom"),
            Ok(Family::Tcp.bit() | Family::Oom.bit())
        );
        assert_eq!(parse_families("all"), Ok(ALL_FAMILIES));
        assert_eq!(
            parse_families("tcp,disk"),
            Err(FilterError::UnknownFamily("disk".into()))
        );
    }

    #[test]
    fn pid_filter_follows_children() {
        let procs = ProcTable::new();
        let mut f = FilterSpec {
            pids: vec![100],
            ..FilterSpec::default()
        }
        .userspace();
        assert!(f.pass(&ev(100, "a", sock()), &procs));
        assert!(!f.pass(&ev(300, "b", sock()), &procs));
        assert!(f.pass(
            &ev(
                100,
                "a",
                Body::Fork(Fork {
                    child_pid: 200,
                    _pad: 0
                })
            ),
            &procs
        ));
        assert!(f.pass(&ev(200, "a", sock()), &procs), "child followed");
    }

    #[test]
    fn signal_passes_if_either_end_matches() {
        let procs = ProcTable::new();
        let mut f = FilterSpec {
            comm: Some("victim".into()),
            ..FilterSpec::default()
        }
        .userspace();
        let s = Signal {
            sig: 15,
            code: 0,
            result: 0,
            target_pid: 9,
            group: 1,
            errno: 0,
            target_comm: Comm::new("victim").0,
        };
        assert!(f.pass(&ev(1, "monit", Body::Signal(s)), &procs));
        let other = Signal {
            target_comm: Comm::new("other").0,
            ..s
        };
        assert!(!f.pass(&ev(1, "monit", Body::Signal(other)), &procs));
    }

    #[test]
    fn sigchld_and_families_and_time() {
        let procs = ProcTable::new();
        let mut f = Filter {
            families: Family::Process.bit(),
            ..Filter::default()
        };
        assert!(!f.pass(&ev(1, "a", sock()), &procs));
        let mut f = Filter::default();
        let s = Signal {
            sig: 17,
            code: 0,
            result: 0,
            target_pid: 9,
            group: 1,
            errno: 0,
            target_comm: [0; 16],
        };
        assert!(!f.pass(&ev(1, "a", Body::Signal(s)), &procs));
        assert!(f.pass(&ev(1, "a", Body::Signal(Signal { sig: 15, ..s })), &procs));
        assert!(f.pass(&ev(1, "a", sock()), &procs));
        assert!(f.pass(&ev(1, "a", Body::Tick), &procs));
        f.sigchld = true;
        assert!(f.pass(&ev(1, "a", Body::Signal(s)), &procs));
        let mut f = Filter {
            since_ns: Some(11),
            ..Filter::default()
        };
        assert!(!f.pass(&ev(1, "a", sock()), &procs));
        let mut f = Filter {
            until_ns: Some(10),
            ..Filter::default()
        };
        assert!(f.pass(&ev(1, "a", sock()), &procs));
    }
}

/// The same cases decided by the kernel's decision (tracer_common's `allows`, with subjects
/// that answer as the eBPF programs' helpers and maps do) and by the userspace filter (fed the
/// facts a dump stores): they must agree on every one.
#[cfg(test)]
mod kernel_agreement {
    use std::{
        cell::RefCell,
        collections::{HashMap, HashSet},
    };

    use super::*;
    use crate::event::{Comm, ProcInfo};
    use tracer_common::{
        signal::Signal,
        tcp::{ConnStatus, SocketOpen, TcpReset, TcpState},
    };

    /// root 1 -> a 10 -> b 11 -> c 12; a -> b2 13; root -> other 20.
    fn parent(id: u64) -> Option<u64> {
        match id {
            10 | 20 => Some(1),
            11 | 13 => Some(10),
            12 => Some(11),
            _ => None,
        }
    }

    fn ancestry(mut id: u64) -> Vec<u64> {
        let mut v = vec![id];
        while let Some(p) = parent(id) {
            v.push(p);
            id = p;
        }
        v.reverse();
        v
    }

    fn path(id: u64) -> String {
        let name = |i: u64| match i {
            10 => "a",
            11 => "b",
            12 => "c",
            13 => "b2",
            20 => "other",
            _ => "",
        };
        let parts: Vec<&str> = ancestry(id).into_iter().skip(1).map(name).collect();
        format!("/{}", parts.join("/"))
    }

    /// (pid, comm, cgroup)
    const PROCS: [(u32, &str, u64); 5] = [
        (100, "api", 12),
        (200, "nginx", 20),
        (300, "api", 10),
        (400, "init", 1),
        (500, "worker", 13),
    ];

    fn proc(pid: u32) -> (u32, &'static str, u64) {
        PROCS.into_iter().find(|p| p.0 == pid).unwrap()
    }

    /// The kernel as the programs see it: the TRACKED map, the helpers, and CGROUP_SCOPE.
    struct Kernel {
        tracked: HashSet<u32>,
        scope: RefCell<HashMap<u64, u64>>,
    }

    struct Current<'a>(&'a Kernel, u32);
    impl Subject for Current<'_> {
        fn tracked(&self) -> bool {
            self.0.tracked.contains(&self.1)
        }
        fn comm(&self) -> [u8; 16] {
            Comm::new(proc(self.1).1).0
        }
        fn cgroup_ancestor(&self, level: u32) -> u64 {
            // bpf_get_current_ancestor_cgroup_id, and the cache the programs keep.
            let cg = proc(self.1).2;
            let a = rule::ancestor_at(&ancestry(cg), level);
            self.0.scope.borrow_mut().insert(cg, a);
            a
        }
    }

    struct Other<'a>(&'a Kernel, u32, u64);
    impl Subject for Other<'_> {
        fn tracked(&self) -> bool {
            self.0.tracked.contains(&self.1)
        }
        fn comm(&self) -> [u8; 16] {
            Comm::new(proc(self.1).1).0
        }
        fn cgroup_ancestor(&self, _level: u32) -> u64 {
            if self.2 == 0 {
                return 0;
            }
            self.0.scope.borrow().get(&self.2).copied().unwrap_or(0)
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Rec {
        /// A record written by the process itself (socket_open, exec, ...).
        Own(u32),
        /// A signal from the first to the second.
        Signal(u32, u32),
        /// tcp_state / tcp_reset in softirq (written by whoever ran: pid 200) for a socket
        /// owned by the pid, whose owner made a socket call before.
        State(u32),
        Reset(u32),
        /// conn_status: the owner in the header.
        Status(u32),
    }

    fn kernel_decides(rule: &FilterRule, pids: &[u32], rec: Rec) -> bool {
        let k = Kernel {
            tracked: pids.iter().copied().collect(),
            scope: RefCell::new(HashMap::new()),
        };
        let cur = |pid| tracer_common::filter::allows(rule, &Current(&k, pid));
        let other = |pid, cg| tracer_common::filter::allows(rule, &Other(&k, pid, cg));
        match rec {
            Rec::Own(p) | Rec::Status(p) => cur(p),
            Rec::Signal(from, to) => cur(from) || other(to, 0),
            Rec::State(owner) | Rec::Reset(owner) => {
                // set_owner: the owner's socket call, in process context.
                cur(owner);
                other(owner, proc(owner).2)
            }
        }
    }

    fn event(pid: u32, body: Body) -> Event {
        let (_, comm, cg) = proc(pid);
        Event {
            ts_ns: 10,
            cpu: 0,
            tgid: pid,
            tid: pid,
            uid: 0,
            cgroup_id: cg,
            comm: Comm::new(comm),
            body,
        }
    }

    fn zero<T: Copy>() -> T {
        // SAFETY: only used for record payloads, made of integers and byte arrays only (all
        // zero is a valid value).
        unsafe { std::mem::zeroed() }
    }

    fn userspace_decides(spec: &FilterSpec, rec: Rec) -> bool {
        let mut f = spec.userspace();
        let mut procs = ProcTable::new();
        // The facts the collector stores (procfs::read_proc), as a dump replays them.
        for (pid, comm, cg) in PROCS {
            let info = Body::ProcInfo(Box::new(ProcInfo {
                pid,
                ppid: 1,
                comm: comm.into(),
                cgroup_v2_path: path(cg),
                cgroup_v2: ancestry(cg),
                ..ProcInfo::default()
            }));
            let ev = event(pid, info);
            procs.apply(&ev);
            assert!(f.pass(&ev, &procs), "facts always pass");
        }
        let ev = match rec {
            Rec::Own(p) => event(
                p,
                Body::SocketOpen(SocketOpen {
                    fd: 3,
                    family: 2,
                    sock_type: 1,
                    protocol: 0,
                    _pad: 0,
                }),
            ),
            Rec::Signal(from, to) => event(
                from,
                Body::Signal(Signal {
                    sig: 15,
                    code: 0,
                    result: 0,
                    target_pid: to as i32,
                    group: 1,
                    errno: 0,
                    target_comm: Comm::new(proc(to).1).0,
                }),
            ),
            Rec::State(owner) => event(
                200,
                Body::TcpState(TcpState {
                    owner_tgid: owner,
                    ..zero()
                }),
            ),
            Rec::Reset(owner) => event(
                200,
                Body::TcpReset(TcpReset {
                    owner_tgid: owner,
                    ..zero()
                }),
            ),
            Rec::Status(owner) => event(owner, Body::ConnStatus(Box::new(zero::<ConnStatus>()))),
        };
        procs.apply(&ev);
        f.pass(&ev, &procs)
    }

    fn cg(id: u64) -> Option<CgroupSel> {
        Some(CgroupSel {
            id,
            level: ancestry(id).len() as u32 - 1,
        })
    }

    #[test]
    fn kernel_and_userspace_decide_alike() {
        let specs: Vec<FilterSpec> = vec![
            FilterSpec::default(),
            FilterSpec::new("all", &[], None, cg(10), false).unwrap(),
            FilterSpec::new("all", &[], None, cg(11), false).unwrap(),
            FilterSpec::new("all", &[], None, cg(12), false).unwrap(),
            FilterSpec::new("all", &[], None, cg(20), false).unwrap(),
            FilterSpec::new("all", &[], None, cg(1), false).unwrap(),
            FilterSpec::new("all", &[], Some("api"), None, false).unwrap(),
            FilterSpec::new("all", &[], Some("api"), cg(11), false).unwrap(),
            FilterSpec::new("all", &[100], None, None, false).unwrap(),
            FilterSpec::new("all", &[300], None, cg(10), false).unwrap(),
        ];
        let mut recs = Vec::new();
        for (p, _, _) in PROCS {
            recs.extend([Rec::Own(p), Rec::State(p), Rec::Reset(p), Rec::Status(p)]);
            for (q, _, _) in PROCS {
                recs.push(Rec::Signal(p, q));
            }
        }
        let mut passed = 0;
        let mut disagree = Vec::new();
        for spec in &specs {
            for &rec in &recs {
                let k = kernel_decides(&spec.rule(), &spec.pids, rec);
                let u = userspace_decides(spec, rec);
                passed += k as u32;
                if k != u {
                    disagree.push(format!("{spec:?} {rec:?}: kernel {k}, userspace {u}"));
                }
            }
        }
        assert!(disagree.is_empty(), "{}", disagree.join("\n"));
        // Not vacuous: descendants pass, others do not.
        let a = FilterSpec::new("all", &[], None, cg(10), false).unwrap();
        assert!(userspace_decides(&a, Rec::Own(100)), "grandchild c of a");
        assert!(userspace_decides(&a, Rec::Own(500)), "b2, child of a");
        assert!(userspace_decides(&a, Rec::Reset(100)), "owner in c");
        assert!(userspace_decides(&a, Rec::Status(100)));
        assert!(!userspace_decides(&a, Rec::Own(200)));
        assert!(!userspace_decides(&a, Rec::Own(400)), "the root is above a");
        assert!(!userspace_decides(&a, Rec::State(200)));
        assert!(passed > 100 && passed < (specs.len() * recs.len()) as u32);
    }

    #[test]
    fn old_dumps_without_ancestry_match_the_cgroup_exactly() {
        let spec = FilterSpec::new("all", &[], None, cg(12), false).unwrap();
        let mut f = spec.userspace();
        let procs = ProcTable::new();
        let ev = |pid| {
            event(
                pid,
                Body::SocketOpen(SocketOpen {
                    fd: 3,
                    family: 2,
                    sock_type: 1,
                    protocol: 0,
                    _pad: 0,
                }),
            )
        };
        assert!(f.pass(&ev(100), &procs));
        assert!(!f.pass(&ev(300), &procs));
    }

    #[test]
    fn replay_resolves_the_selection_from_stored_facts() {
        let entry = crate::proc_table::ProcEntry {
            cgroup_v2_path: path(12),
            cgroup_v2: ancestry(12),
            ..Default::default()
        };
        let find = |a: CgroupArg| a.find(&entry);
        assert_eq!(find(CgroupArg::Path("/a".into())), cg(10));
        assert_eq!(find(CgroupArg::Path("/a/b/c".into())), cg(12));
        assert_eq!(find(CgroupArg::Path("/".into())), cg(1));
        assert_eq!(find(CgroupArg::Path("/a/b2".into())), None);
        assert_eq!(find(CgroupArg::Path("/a/b/c/d".into())), None);
        assert_eq!(find(CgroupArg::Id(11)), cg(11));
        assert_eq!(find(CgroupArg::Id(20)), None);
        assert_eq!(normalize_cgroup_path("/sys/fs/cgroup/unified/a/b/"), "/a/b");
        assert_eq!(normalize_cgroup_path("a"), "/a");
    }
}
