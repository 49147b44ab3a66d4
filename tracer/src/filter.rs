//! Event filters: `--events`, `--pid`, `--comm`, `--cgroup` (applied in the kernel when live,
//! and again here so replay of an unfiltered dump gives what live would have), plus `--since`
//! and `--until` for replay.
use std::collections::HashSet;

use thiserror::Error;
use tracer_common::{Family, Kind};

use crate::{
    event::{Body, Event},
    proc_table::ProcTable,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("unknown event family '{0}': expected tcp, signal, process, oom, memory or all")]
    UnknownFamily(String),
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

#[derive(Clone, Debug)]
pub struct Filter {
    pub families: u32,
    /// `--pid`: these processes and their descendants (followed through fork).
    pub pids: HashSet<u32>,
    pub comm: Option<String>,
    /// cgroup v2 id (the cgroup directory's inode).
    pub cgroup_id: Option<u64>,
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
            comm: None,
            cgroup_id: None,
            since_ns: None,
            until_ns: None,
            sigchld: false,
        }
    }
}

impl Filter {
    fn pid_ok(&self, pid: u32) -> bool {
        self.pids.is_empty() || self.pids.contains(&pid)
    }

    fn comm_ok(&self, comm: &str) -> bool {
        self.comm.as_deref().is_none_or(|c| c == comm)
    }

    fn task_ok(&self, pid: u32, comm: &str, cgroup: Option<u64>) -> bool {
        self.pid_ok(pid) && self.comm_ok(comm) && self.cgroup_id.is_none_or(|c| cgroup == Some(c))
    }

    /// Whether `ev` passes. Keeps the `--pid` set up to date (children of followed processes are
    /// followed), so it must see every event in order, as the pipeline does.
    pub fn pass(&mut self, ev: &Event, procs: &ProcTable) -> bool {
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
            Body::ProcInfo(_) | Body::Drops(_) | Body::Tick => return true,
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
        if self.pids.is_empty() && self.comm.is_none() && self.cgroup_id.is_none() {
            return true;
        }
        let cur = ev.comm.to_string();
        let cur_ok = self.task_ok(ev.tgid, &cur, Some(ev.cgroup_id));
        match &ev.body {
            Body::Signal(s) => {
                let tc = crate::event::Comm(s.target_comm).to_string();
                cur_ok || self.task_ok(s.target_pid as u32, &tc, None)
            }
            Body::OomKill(o) => {
                let vc = crate::event::Comm(o.victim_comm).to_string();
                cur_ok || self.task_ok(o.victim_pid, &vc, None)
            }
            Body::TcpState(t) if t.owner_tgid != 0 => self.owner_ok(t.owner_tgid, procs),
            Body::TcpReset(t) if t.owner_tgid != 0 => self.owner_ok(t.owner_tgid, procs),
            _ => cur_ok,
        }
    }

    fn owner_ok(&self, owner: u32, procs: &ProcTable) -> bool {
        let comm = procs.get(owner).map(|p| p.comm.as_str()).unwrap_or("");
        self.pid_ok(owner) && self.comm_ok(comm) && self.cgroup_id.is_none()
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
        let mut f = Filter {
            pids: [100].into(),
            ..Filter::default()
        };
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
        let mut f = Filter {
            comm: Some("victim".into()),
            ..Filter::default()
        };
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
