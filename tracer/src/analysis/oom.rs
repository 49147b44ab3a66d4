//! `oom_kill`: the kernel's OOM killer killed a process. The record's header is the task whose
//! allocation triggered it; the victim and its memory are in the record (older kernels give
//! only the pid: the rest then comes from the process table and the memory samples). The
//! victim's growth before it died comes from its memory history.
use serde::Serialize;
use tracer_common::oom::{OOM_HAS_COMM, OOM_HAS_MEMORY};

use super::{Analysis, Check, Cx, Evidence, Finding, Kinds, Severity, comm_of, comm_or, round};
use crate::{
    event::{Body, Comm, Event},
    units::bytes_human,
};
use tracer_common::Kind;

/// The evidence of a `oom_kill` finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomKillEvidence {
    pub victim_pid: u32,
    pub victim_comm: String,
    pub trigger_pid: u32,
    pub trigger_comm: String,
    pub victim_rss_bytes: Option<u64>,
    pub victim_total_vm_bytes: Option<u64>,
    pub cgroup: String,
    pub cgroup_limit_bytes: Option<u64>,
    /// How the victim grew before it died, from its memory samples.
    pub victim_growth_bytes_per_sec: Option<i64>,
    pub victim_growth_window_s: Option<f64>,
    pub victim_peak_rss_bytes: Option<u64>,
}

impl Check for OomKillEvidence {
    fn key(&self, first_seen_ns: u64) -> String {
        format!("{}@{first_seen_ns}", self.victim_pid)
    }

    fn culprit(&self) -> Option<u32> {
        Some(self.victim_pid)
    }

    fn magnitude(&self) -> f64 {
        1.0
    }

    fn others(&self) -> Vec<(&'static str, u32)> {
        vec![("trigger_previous_comm", self.trigger_pid)]
    }
}

/// OOM kills kept (each is its own finding).
const MAX_KILLS: usize = 1024;

#[derive(Default)]
pub struct OomKills {
    kills: Vec<Finding>,
}

impl OomKills {
    pub fn new() -> OomKills {
        OomKills::default()
    }
}

impl Analysis for OomKills {
    fn name(&self) -> &'static str {
        "oom_kill"
    }

    fn kinds(&self) -> Kinds {
        Kinds::kernel(&[Kind::OomKill])
    }

    fn observe(&mut self, ev: &Event, cx: &Cx<'_>) -> bool {
        let Body::OomKill(o) = &ev.body else {
            return false;
        };
        if self.kills.len() >= MAX_KILLS {
            self.kills.remove(0);
        }
        let victim = o.victim_pid;
        let victim_comm = if o.flags & OOM_HAS_COMM != 0 {
            Comm(o.victim_comm).to_string()
        } else {
            comm_of(cx.procs, victim, "?")
        };
        let track = cx.state.mem.get(victim);
        let has_mem = o.flags & OOM_HAS_MEMORY != 0;
        let rss = if has_mem {
            Some(victim_rss_bytes(o))
        } else {
            track.and_then(|t| t.last).map(|p| p.rss)
        };
        let growth = track.and_then(|t| t.recent_growth());
        let entry = cx.procs.get(victim);
        let cgroup = entry.map(|p| p.cgroup.clone()).unwrap_or_default();
        let cgroup_limit = entry.and_then(|p| p.mem_limit);
        let trigger_comm = comm_or(cx.procs, ev.tgid, ev.comm);
        let by = if ev.tgid == victim {
            "its own allocation".to_owned()
        } else {
            format!("an allocation by {} ({trigger_comm})", ev.tgid)
        };
        let grew = match growth {
            Some((rate, window)) if window > 0.0 => format!(
                "; it grew {}/s over its last {window:.0} s",
                signed_bytes(rate)
            ),
            _ => String::new(),
        };
        let within = match (&cgroup_limit, cgroup.is_empty()) {
            (Some(l), false) => format!(" in cgroup {cgroup} (limit {})", bytes_human(*l)),
            (_, false) => format!(" in cgroup {cgroup}"),
            _ => String::new(),
        };
        self.kills.push(Finding {
workload: None,
            severity: Severity::Critical,
            summary: format!(
                "OOM killer killed {victim} ({victim_comm}), RSS {}{within}, triggered by {by}{grew}",
                rss.map(bytes_human).unwrap_or_else(|| "unknown".into()),
            ),
            first_seen_ns: ev.ts_ns,
            last_seen_ns: ev.ts_ns,
            evidence: Evidence::OomKill(OomKillEvidence {
                victim_pid: victim,
                victim_comm,
                trigger_pid: ev.tgid,
                trigger_comm,
                victim_rss_bytes: rss,
                victim_total_vm_bytes: has_mem.then_some(o.total_vm_kb.saturating_mul(1024)),
                cgroup,
                cgroup_limit_bytes: cgroup_limit,
                victim_growth_bytes_per_sec: growth.map(|g| g.0.round() as i64),
                victim_growth_window_s: growth.map(|g| round(g.1, 1)),
                victim_peak_rss_bytes: track.map(|t| t.peak_rss),
            }),
            previous_names: Vec::new(),
            boot: None,
        });
        true
    }

    fn findings(&mut self, _now_ns: u64, _cx: &Cx<'_>) -> Vec<Finding> {
        self.kills.clone()
    }
}

/// The victim's RSS from the record's kB figures (saturating: the record is not trusted).
pub fn victim_rss_bytes(o: &tracer_common::oom::OomKill) -> u64 {
    o.anon_rss_kb
        .saturating_add(o.file_rss_kb)
        .saturating_add(o.shmem_rss_kb)
        .saturating_mul(1024)
}

fn signed_bytes(v: f64) -> String {
    if v < 0.0 {
        format!("-{}", bytes_human((-v) as u64))
    } else {
        format!("+{}", bytes_human(v as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn names_victim_trigger_cgroup_and_growth() {
        let mut s = Stream::with_host_mem(16 << 30);
        s.proc_info(2000, 1, "node", |i| {
            i.cgroup = "/system.slice/proxy.service".into();
            i.mem_limit = Some(2560 * MIB);
        });
        for k in 0..20u64 {
            s.at(k * 1000).mem(2000, "node", 800 * MIB + k * 80 * MIB);
        }
        s.at(20_000).signal(2001, "node", 9, 0x80, 2000, "node");
        s.at(20_001).oom(2001, "node", 2000, "node", 2400 * 1024);
        s.at(20_002).exit(2000, "node", 9);
        let e = s.json_of("oom_kill");
        assert_eq!(e["victim_pid"], 2000);
        assert_eq!(e["victim_comm"], "node");
        assert_eq!(e["trigger_pid"], 2001);
        assert_eq!(e["victim_rss_bytes"], 2400 * MIB);
        assert_eq!(e["cgroup"], "/system.slice/proxy.service");
        assert_eq!(e["victim_growth_bytes_per_sec"], 80 * MIB);
        assert_eq!(e["severity"], "critical");
    }

    /// A process moved into a memory cgroup after it started and killed there before its facts
    /// were read again: the move's record names the cgroup (the limit comes with the ProcInfo
    /// the live collector feeds after it, not in the stream here: unknown, not the old one).
    #[test]
    fn names_the_cgroup_a_process_moved_into() {
        let mut s = Stream::with_host_mem(16 << 30);
        s.proc_info(3000, 1, "sh", |i| {
            i.cgroup = "/user.slice".into();
            i.mem_limit = Some(8 << 30);
        });
        s.at(0).fork(3000, "sh", 3001);
        // Another v1 hierarchy, and cgroup v2 without the memory controller: not the memory
        // cgroup.
        s.at(1)
            .cgroup_attach(3001, "hog", 3001, 3, false, "/elsewhere");
        s.at(2)
            .cgroup_attach(3001, "hog", 3001, 0, false, "/v2/scope");
        s.at(3)
            .cgroup_attach(3001, "hog", 3001, 4, true, "/user.slice/job");
        s.at(400).signal(3001, "hog", 9, 0x80, 3001, "hog");
        s.at(401).oom(3001, "hog", 3001, "hog", 64 * 1024);
        s.at(402).exit(3001, "hog", 9);
        let e = s.json_of("oom_kill");
        assert_eq!(e["cgroup"], "/user.slice/job");
        assert_eq!(e["cgroup_limit_bytes"], serde_json::Value::Null);
    }
}
