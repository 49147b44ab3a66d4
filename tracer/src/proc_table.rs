//! The process table: seeded from /proc at start (as ProcInfo records) and kept up to date by
//! fork, exec and exit events. It enriches events (ppid, command line, limits) in `live`,
//! `replay` and `report` alike, since it is fed only by the event stream.
//!
//! Memory stays bounded when processes come and go by the million: a process leaves the live
//! map when it exits and only the last [`GRAVEYARD`] exited processes are remembered (for
//! late events that name them, such as a signal or OOM report that follows the exit).
use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, Hasher},
};

use crate::{
    attribution::Workload,
    event::{Body, Event, ProcInfo},
};

pub const GRAVEYARD: usize = 8192;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: String,
    pub cmdline: Vec<String>,
    pub cgroup: String,
    pub mem_limit: Option<u64>,
    pub nofile_limit: Option<u64>,
    /// See [`ProcInfo::cgroup_v2_path`] and [`ProcInfo::cgroup_v2`] (root first).
    pub cgroup_v2_path: String,
    pub cgroup_v2: Vec<u64>,
    /// Systemd unit, container, pod (inherited through fork, read again after exec).
    pub workload: Option<Workload>,
    /// The name it had before it renamed itself without exec (prctl PR_SET_NAME...), for the
    /// evidence: reports use the current name.
    pub previous_comm: Option<String>,
    /// The process that forked it (0: not seen), kept when it is reparented to init or a
    /// subreaper: the fork lineage names the supervisor behind a detached service.
    pub forked_by: u32,
    /// Boot-time ns of the exit, once exited.
    pub exited_at: Option<u64>,
    /// Whether /proc-only facts (limits, cgroup) are known for the current program image.
    pub has_info: bool,
}

impl ProcEntry {
    /// Command line for people: argv joined, or the comm in brackets when unknown.
    pub fn cmdline_string(&self) -> String {
        if self.cmdline.is_empty() {
            format!("[{}]", self.comm)
        } else {
            self.cmdline.join(" ")
        }
    }

    /// What the table knows of it as a `ProcInfo` record; /proc-only counts (open fds,
    /// sockets) are not kept here and are left unknown.
    pub fn info(&self) -> ProcInfo {
        ProcInfo {
            pid: self.pid,
            ppid: self.ppid,
            uid: self.uid,
            comm: self.comm.clone(),
            exe: self.exe.clone(),
            cmdline: self.cmdline.clone(),
            cgroup: self.cgroup.clone(),
            mem_limit: self.mem_limit,
            nofile_limit: self.nofile_limit,
            cgroup_v2_path: self.cgroup_v2_path.clone(),
            cgroup_v2: self.cgroup_v2.clone(),
            previous_comm: self.previous_comm.clone(),
            forked_by: (self.forked_by != 0).then_some(self.forked_by),
            open_fds: None,
            open_sockets: None,
            fds_read_ns: None,
            workload: self.workload.clone(),
        }
    }

    /// The program this process runs: executable path, else argv[0], else comm.
    pub fn program(&self) -> &str {
        if !self.exe.is_empty() {
            &self.exe
        } else if let Some(a) = self.cmdline.first() {
            a
        } else {
            &self.comm
        }
    }
}

/// Hashing for maps keyed by pid (or socket address) that are looked up for every event: SipHash,
/// the default, costs more than the lookup. A multiply-and-fold of the key with a seed drawn
/// per map (from std's random keys) spreads small integers well and keeps a crafted dump from
/// choosing collisions.
#[derive(Clone)]
pub struct IdHash {
    seed: u64,
}

impl Default for IdHash {
    fn default() -> IdHash {
        IdHash {
            seed: std::hash::RandomState::new().hash_one(0x1d_u64) | 1,
        }
    }
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.seed)
    }
}

pub struct IdHasher(u64);

const FOLD: u64 = 0x9e37_79b9_7f4a_7c15;

impl IdHasher {
    fn mix(&mut self, v: u64) {
        let m = u128::from(self.0 ^ v) * u128::from(FOLD);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.mix(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.mix(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.mix(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.mix(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }
    fn write_u128(&mut self, v: u128) {
        self.mix(v as u64);
        self.mix((v >> 64) as u64);
    }
    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }
}

#[derive(Default)]
pub struct ProcTable {
    live: HashMap<u32, ProcEntry, IdHash>,
    dead: HashMap<u32, ProcEntry, IdHash>,
    dead_order: VecDeque<u32>,
}

impl ProcTable {
    pub fn new() -> ProcTable {
        ProcTable::default()
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// A live process, or a recently exited one.
    pub fn get(&self, pid: u32) -> Option<&ProcEntry> {
        self.live.get(&pid).or_else(|| self.dead.get(&pid))
    }

    pub fn is_live(&self, pid: u32) -> bool {
        self.live.contains_key(&pid)
    }

    pub fn live_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.live.keys().copied()
    }

    pub fn ppid(&self, pid: u32) -> Option<u32> {
        self.get(pid).map(|p| p.ppid).filter(|p| *p != 0)
    }

    /// `pid`, its parent, grandparent... up to init (at most 32 steps).
    pub fn ancestry(&self, pid: u32) -> Vec<&ProcEntry> {
        let mut out = Vec::new();
        let mut cur = pid;
        for _ in 0..32 {
            let Some(p) = self.get(cur) else { break };
            out.push(p);
            if p.ppid == 0 || p.ppid == cur {
                break;
            }
            cur = p.ppid;
        }
        out
    }

    /// Who forked `pid`, who forked that one... nearest first, at most 32: the fork lineage,
    /// which reparenting (to init or a subreaper) does not change. Where no fork was seen (a
    /// process older than the trace) the parent stands in.
    pub fn lineage(&self, pid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        self.lineage_into(pid, &mut out);
        out
    }

    /// [`ProcTable::lineage`] into `out` (cleared first), reusing its allocation.
    pub fn lineage_into(&self, pid: u32, out: &mut Vec<u32>) {
        out.clear();
        let mut cur = pid;
        for _ in 0..32 {
            let Some(p) = self.get(cur) else { break };
            let up = if p.forked_by != 0 {
                p.forked_by
            } else {
                p.ppid
            };
            if up == 0 || up == pid || out.contains(&up) {
                break;
            }
            out.push(up);
            cur = up;
        }
    }

    /// The nearest process that `a` and `b` both descend from by fork (`a` itself counts when
    /// `b` descends from it), or None. Init (pid 1) counts only when it forked both directly:
    /// every process descends from it.
    pub fn common_forebear(&self, a: u32, b: u32) -> Option<u32> {
        let la = self.lineage(a);
        self.common_forebear_with(a, &la, b, &mut Vec::new())
    }

    /// [`ProcTable::common_forebear`] with `a`'s lineage already known (`la`), `buf` holding
    /// `b`'s: for matching one process against many.
    pub fn common_forebear_with(
        &self,
        a: u32,
        la: &[u32],
        b: u32,
        buf: &mut Vec<u32>,
    ) -> Option<u32> {
        self.lineage_into(b, buf);
        let lb = &buf[..];
        let x = std::iter::once(a)
            .chain(la.iter().copied())
            .find(|x| *x == b || lb.contains(x))?;
        if x == 1 && x != a && x != b && (la.first() != Some(&1) || lb.first() != Some(&1)) {
            return None;
        }
        Some(x)
    }

    /// The live processes as `ProcInfo` records, in pid order: what a dump segment starts with,
    /// so each segment replays on its own. /proc-only counts (open fds, sockets) are not kept
    /// here and are left unknown.
    pub fn snapshot(&self) -> Vec<ProcInfo> {
        let mut out: Vec<ProcInfo> = self.live.values().map(ProcEntry::info).collect();
        out.sort_unstable_by_key(|p| p.pid);
        out
    }

    /// Updates the table from one event. Call before the event is shown to sinks.
    pub fn apply(&mut self, ev: &Event) {
        match &ev.body {
            Body::ProcInfo(info) => self.merge_info(info),
            Body::Fork(f) => {
                let parent = self.get(ev.tgid).cloned();
                let mut child = parent.unwrap_or_else(|| ProcEntry {
                    pid: ev.tgid,
                    comm: ev.comm.to_string(),
                    uid: ev.uid,
                    ..ProcEntry::default()
                });
                child.pid = f.child_pid;
                child.ppid = ev.tgid;
                child.previous_comm = None;
                child.forked_by = ev.tgid;
                child.exited_at = None;
                self.dead.remove(&f.child_pid);
                self.live.insert(f.child_pid, child);
                self.touch(ev);
            }
            Body::Exec(x) => {
                let e = self.entry(ev);
                e.comm = ev.comm.to_string();
                if x.ppid != 0 {
                    e.ppid = x.ppid;
                }
                e.exe = x.filename.clone();
                e.cmdline = x.args.clone();
                e.uid = ev.uid;
                e.has_info = false;
                e.previous_comm = None;
            }
            Body::Rlimit(r) if r.resource == tracer_common::process::RLIMIT_NOFILE => {
                self.touch(ev);
                if let Some(e) = self.live.get_mut(&r.target_pid) {
                    e.nofile_limit = Some(r.soft);
                }
            }
            Body::Rename(r) => {
                self.touch(ev);
                let new = crate::event::Comm(r.new_comm).to_string();
                let old = crate::event::Comm(r.old_comm).to_string();
                // The record's old name, not the table's: /proc may have been read after the
                // rename already.
                if let Some(e) = self.live.get_mut(&r.target_pid)
                    && old != new
                {
                    e.comm = new;
                    e.previous_comm = Some(old);
                }
            }
            // A move into another memory cgroup: the facts follow it now (their limit is read
            // again by the live collector, which feeds it as a ProcInfo right after; until then
            // the old cgroup's limit no longer applies). Only a process's pid counts: a thread
            // moved on its own (v1 `tasks`) is not what /proc/PID/cgroup names.
            Body::CgroupAttach(c) => {
                self.touch(ev);
                if c.memory
                    && !c.truncated
                    && let Some(e) = self.live.get_mut(&c.pid)
                    && e.cgroup != c.path
                {
                    e.cgroup = c.path.clone();
                    e.mem_limit = None;
                }
            }
            Body::Exit(_) => {
                if let Some(mut e) = self.live.remove(&ev.tgid) {
                    e.exited_at = Some(ev.ts_ns);
                    self.bury(e);
                }
            }
            _ => self.touch(ev),
        }
    }

    /// Records a process seen for the first time in an event (not in the snapshot).
    fn touch(&mut self, ev: &Event) {
        if ev.tgid != 0 && !self.live.contains_key(&ev.tgid) && !self.dead.contains_key(&ev.tgid) {
            self.entry(ev);
        }
    }

    fn entry(&mut self, ev: &Event) -> &mut ProcEntry {
        let dead = &mut self.dead;
        self.live.entry(ev.tgid).or_insert_with(|| {
            dead.remove(&ev.tgid).unwrap_or_else(|| ProcEntry {
                pid: ev.tgid,
                comm: ev.comm.to_string(),
                uid: ev.uid,
                ..ProcEntry::default()
            })
        })
    }

    fn merge_info(&mut self, info: &ProcInfo) {
        let e = self.live.entry(info.pid).or_default();
        e.pid = info.pid;
        if info.ppid != 0 || e.ppid == 0 {
            e.ppid = info.ppid;
        }
        e.uid = info.uid;
        if !info.comm.is_empty() {
            e.comm = info.comm.clone();
        }
        if !info.exe.is_empty() {
            e.exe = info.exe.clone();
        }
        if !info.cmdline.is_empty() {
            e.cmdline = info.cmdline.clone();
        }
        e.cgroup = info.cgroup.clone();
        e.mem_limit = info.mem_limit;
        e.nofile_limit = info.nofile_limit;
        if !info.cgroup_v2.is_empty() {
            e.cgroup_v2_path = info.cgroup_v2_path.clone();
            e.cgroup_v2 = info.cgroup_v2.clone();
        }
        // Dumps from before attribution: what the memory cgroup's path says.
        e.workload = info
            .workload
            .clone()
            .or_else(|| Workload::from_path(&info.cgroup));
        if info.previous_comm.is_some() {
            e.previous_comm = info.previous_comm.clone();
        }
        if let Some(f) = info.forked_by {
            e.forked_by = f;
        }
        e.has_info = true;
    }

    fn bury(&mut self, e: ProcEntry) {
        let pid = e.pid;
        if self.dead.insert(pid, e).is_none() {
            self.dead_order.push_back(pid);
        }
        while self.dead_order.len() > GRAVEYARD {
            if let Some(old) = self.dead_order.pop_front() {
                // A pid reused and exited again is still in `dead` under the newer entry only
                // if it was re-buried; remove only stale ones.
                if self.dead.get(&old).is_some_and(|d| d.exited_at.is_some()) {
                    self.dead.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Comm, Exec};
    use tracer_common::process::{Exit, Fork};

    fn ev(ts: u64, tgid: u32, comm: &str, body: Body) -> Event {
        Event {
            ts_ns: ts,
            cpu: 0,
            tgid,
            tid: tgid,
            uid: 1000,
            cgroup_id: 0,
            comm: Comm::new(comm),
            body,
        }
    }

    fn info(pid: u32, ppid: u32, comm: &str) -> Body {
        Body::ProcInfo(Box::new(ProcInfo {
            pid,
            ppid,
            uid: 0,
            comm: comm.into(),
            exe: format!("/bin/{comm}"),
            cmdline: vec![comm.into()],
            cgroup: "/".into(),
            mem_limit: None,
            nofile_limit: Some(1024),
            previous_comm: None,
            forked_by: None,
            open_fds: None,
            open_sockets: None,
            ..ProcInfo::default()
        }))
    }

    #[test]
    fn fork_exec_exit_keep_the_tree() {
        let mut t = ProcTable::new();
        t.apply(&ev(1, 1, "init", info(1, 0, "init")));
        t.apply(&ev(2, 100, "monit", info(100, 1, "monit")));
        t.apply(&ev(
            3,
            100,
            "monit",
            Body::Fork(Fork {
                child_pid: 200,
                _pad: 0,
            }),
        ));
        assert_eq!(t.ppid(200), Some(100));
        assert_eq!(
            t.get(200).unwrap().nofile_limit,
            Some(1024),
            "inherits limits"
        );
        t.apply(&ev(
            4,
            200,
            "node",
            Body::Exec(Box::new(Exec {
                old_pid: 200,
                ppid: 100,
                filename: "/usr/bin/node".into(),
                args: vec!["node".into(), "app.js".into()],
            })),
        ));
        let p = t.get(200).unwrap();
        assert_eq!(p.comm, "node");
        assert_eq!(p.cmdline_string(), "node app.js");
        assert_eq!(p.program(), "/usr/bin/node");
        let chain: Vec<u32> = t.ancestry(200).iter().map(|p| p.pid).collect();
        assert_eq!(chain, vec![200, 100, 1]);
        t.apply(&ev(
            5,
            200,
            "node",
            Body::Exit(Exit {
                exit_code: 15,
                flags: 1,
            }),
        ));
        assert!(!t.is_live(200));
        assert_eq!(
            t.get(200).unwrap().exited_at,
            Some(5),
            "recently exited stays queryable"
        );
    }

    #[test]
    fn memory_is_bounded_under_process_churn() {
        let mut t = ProcTable::new();
        for i in 0..100_000u32 {
            let pid = 1000 + i;
            t.apply(&ev(
                i as u64,
                1,
                "sh",
                Body::Fork(Fork {
                    child_pid: pid,
                    _pad: 0,
                }),
            ));
            t.apply(&ev(
                i as u64,
                pid,
                "sh",
                Body::Exit(Exit {
                    exit_code: 0,
                    flags: 1,
                }),
            ));
        }
        assert!(t.len() <= 2);
        assert!(t.dead.len() <= GRAVEYARD);
        assert!(t.dead_order.len() <= GRAVEYARD);
    }

    #[test]
    fn snapshot_lists_live_processes_in_pid_order_and_replays_to_the_same_table() {
        let mut t = ProcTable::new();
        t.apply(&ev(1, 300, "b", info(300, 1, "b")));
        t.apply(&ev(2, 100, "a", info(100, 1, "a")));
        t.apply(&ev(
            3,
            100,
            "a",
            Body::Fork(Fork {
                child_pid: 200,
                _pad: 0,
            }),
        ));
        t.apply(&ev(
            4,
            300,
            "b",
            Body::Exit(Exit {
                exit_code: 0,
                flags: 1,
            }),
        ));
        let snap = t.snapshot();
        assert_eq!(
            snap.iter().map(|p| p.pid).collect::<Vec<_>>(),
            vec![100, 200]
        );
        let mut again = ProcTable::new();
        for p in &snap {
            again.apply(&ev(5, p.pid, &p.comm, Body::ProcInfo(Box::new(p.clone()))));
        }
        assert_eq!(again.snapshot(), snap);
        assert_eq!(again.get(200).unwrap().cmdline, vec!["a"]);
    }

    /// The fork lineage survives reparenting (a ProcInfo or exec saying ppid 1), a rename
    /// keeps the old name until the next exec, and both go into the snapshot.
    #[test]
    fn lineage_and_renames_survive_reparenting_and_snapshots() {
        use tracer_common::process::Rename;
        let mut t = ProcTable::new();
        t.apply(&ev(1, 1, "init", info(1, 0, "init")));
        t.apply(&ev(2, 100, "monit", info(100, 1, "monit")));
        let fork = |child| {
            Body::Fork(Fork {
                child_pid: child,
                _pad: 0,
            })
        };
        t.apply(&ev(3, 100, "monit", fork(200)));
        t.apply(&ev(4, 200, "sh", fork(300)));
        t.apply(&ev(
            5,
            200,
            "sh",
            Body::Exit(Exit {
                exit_code: 0,
                flags: 1,
            }),
        ));
        t.apply(&ev(6, 300, "svc", info(300, 1, "svc")));
        assert_eq!(t.ppid(300), Some(1));
        assert_eq!(t.lineage(300), vec![200, 100, 1]);
        assert_eq!(t.common_forebear(300, 100), Some(100));
        assert_eq!(t.common_forebear(100, 1), Some(1));
        t.apply(&ev(7, 300, "svc", fork(301)));
        assert_eq!(t.common_forebear(301, 300), Some(300));
        let rename = Body::Rename(Rename {
            target_pid: 300,
            _pad: 0,
            old_comm: Comm::new("svc").0,
            new_comm: Comm::new("svc-worker").0,
        });
        t.apply(&ev(8, 300, "svc", rename));
        assert_eq!(t.get(300).unwrap().comm, "svc-worker");
        assert_eq!(t.get(300).unwrap().previous_comm.as_deref(), Some("svc"));
        let mut again = ProcTable::new();
        for p in t.snapshot() {
            again.apply(&ev(9, p.pid, &p.comm, Body::ProcInfo(Box::new(p.clone()))));
        }
        assert_eq!(
            again.lineage(300),
            vec![200],
            "sh exited: not in a snapshot"
        );
        assert_eq!(
            again.get(300).unwrap().previous_comm.as_deref(),
            Some("svc")
        );
        assert_eq!(again.get(301).unwrap().forked_by, 300);
        t.apply(&ev(
            10,
            300,
            "svc-worker",
            Body::Exec(Box::new(Exec {
                old_pid: 300,
                ppid: 1,
                filename: "/bin/other".into(),
                args: vec!["other".into()],
            })),
        ));
        assert_eq!(
            t.get(300).unwrap().previous_comm,
            None,
            "exec starts afresh"
        );
        assert_eq!(t.lineage(300), vec![200, 100, 1], "exec keeps the lineage");
    }

    #[test]
    fn unknown_processes_are_learnt_from_their_events() {
        let mut t = ProcTable::new();
        t.apply(&ev(
            1,
            77,
            "curl",
            Body::Fork(Fork {
                child_pid: 78,
                _pad: 0,
            }),
        ));
        assert_eq!(t.get(77).unwrap().comm, "curl");
        assert_eq!(t.ppid(78), Some(77));
    }

    #[test]
    fn a_move_into_a_memory_cgroup_updates_the_path_and_forgets_the_old_limit() {
        use tracer_common::process::{CGROUP_MEMORY, CGROUP_PATH_LEN, CgroupAttach};
        let mut t = ProcTable::new();
        let mut i = ProcInfo {
            pid: 10,
            ppid: 1,
            comm: "sh".into(),
            cgroup: "/user".into(),
            mem_limit: Some(1 << 30),
            ..ProcInfo::default()
        };
        t.apply(&ev(1, 10, "sh", Body::ProcInfo(Box::new(i.clone()))));
        let attach = |hierarchy: u32, memory: bool, pid: u32, path: &str| {
            let mut c = CgroupAttach {
                pid,
                hierarchy,
                cgroup_id: 5,
                level: 2,
                flags: if memory { CGROUP_MEMORY } else { 0 },
                path_len: path.len() as u16,
                _pad: [0; 6],
                comm: Comm::new("sh").0,
                path: [0; CGROUP_PATH_LEN],
            };
            c.path[..path.len()].copy_from_slice(path.as_bytes());
            crate::event::CustomPayload::decoded(c)
        };
        let moved = |c| Body::CgroupAttach(Box::new(c));
        t.apply(&ev(2, 10, "sh", moved(attach(3, false, 10, "/cpu/x"))));
        assert_eq!(
            t.get(10).unwrap().cgroup,
            "/user",
            "not the memory hierarchy"
        );
        t.apply(&ev(3, 10, "sh", moved(attach(4, true, 11, "/user/job"))));
        assert_eq!(
            t.get(10).unwrap().cgroup,
            "/user",
            "a thread, or another pid"
        );
        t.apply(&ev(4, 10, "sh", moved(attach(4, true, 10, "/user/job"))));
        let e = t.get(10).unwrap();
        assert_eq!((e.cgroup.as_str(), e.mem_limit), ("/user/job", None));
        // The live collector's facts that follow it bring the new limit.
        i.cgroup = "/user/job".into();
        i.mem_limit = Some(64 << 20);
        t.apply(&ev(4, 10, "sh", Body::ProcInfo(Box::new(i))));
        assert_eq!(t.get(10).unwrap().mem_limit, Some(64 << 20));
        // Moving again into the same cgroup keeps the limit.
        t.apply(&ev(5, 10, "sh", moved(attach(4, true, 10, "/user/job"))));
        assert_eq!(t.get(10).unwrap().mem_limit, Some(64 << 20));
    }
}
