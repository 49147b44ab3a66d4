//! `signal_source`: who sent fatal signals to whom.
//!
//! The sender is the task that generated the signal (the event's header). A positive si_code
//! means the kernel generated it (SI_KERNEL for the OOM killer or a tty hangup, SEGV_* for a
//! fault): those are named as sent by the kernel, in the context of the task it ran in.
//! Signals a target ignores cannot kill it and are left out; SIGCHLD never counts.
//! Grouped by (sender, target program, signal), so a supervisor killing each new instance of
//! a program is one finding whose count grows.
use std::collections::BTreeMap;

use tracer_common::signal::{SI_KERNEL, SIGCHLD};

use super::{
    Analysis, AnalysisConfig, Cx, Evidence, Finding, Severity, SignalSource, ancestry, comm_of,
    on_behalf_of, push_capped,
};
use crate::{
    event::{Body, Comm, Event},
    vocab::{signal_from_kernel, signal_name},
};

/// `TRACE_SIGNAL_IGNORED`.
const RESULT_IGNORED: i32 = 1;
/// Distinct (sender, target, signal) groups kept; beyond, new ones are not tracked.
const MAX_GROUPS: usize = 4096;

struct Group {
    ev: SignalSource,
    first_ns: u64,
    last_ns: u64,
}

pub struct SignalSources {
    fatal: Vec<i32>,
    groups: BTreeMap<(u32, bool, String, i32), Group>,
}

impl SignalSources {
    pub fn new(cfg: &AnalysisConfig) -> SignalSources {
        SignalSources {
            fatal: cfg.signal_numbers().unwrap_or_default(),
            groups: BTreeMap::new(),
        }
    }

    /// Whether this signal event is one this analysis reports.
    pub fn is_reported(fatal: &[i32], sig: i32, result: i32) -> bool {
        sig != SIGCHLD && result != RESULT_IGNORED && fatal.contains(&sig)
    }
}

impl Analysis for SignalSources {
    fn name(&self) -> &'static str {
        "signal_source"
    }

    fn observe(&mut self, ev: &Event, cx: &Cx<'_>) -> bool {
        match &ev.body {
            Body::Signal(s) if Self::is_reported(&self.fatal, s.sig, s.result) => {
                let kernel = signal_from_kernel(s.code);
                let target_comm = Comm(s.target_comm).to_string();
                let target_pid = s.target_pid.max(0) as u32;
                let behalf = if kernel {
                    None
                } else {
                    on_behalf_of(cx.procs, ev.tgid, target_pid)
                };
                let key = (
                    if kernel { 0 } else { behalf.unwrap_or(ev.tgid) },
                    kernel,
                    target_comm.clone(),
                    s.sig,
                );
                if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
                    return false;
                }
                let g = self.groups.entry(key).or_insert_with(|| {
                    let sender = cx.procs.get(ev.tgid);
                    Group {
                        ev: SignalSource {
                            sender_pid: ev.tgid,
                            sender_comm: comm_of(cx.procs, ev.tgid, &ev.comm.to_string()),
                            sender_cmdline: sender
                                .map(|p| p.cmdline_string())
                                .unwrap_or_else(|| format!("[{}]", ev.comm)),
                            sender_ancestry: ancestry(cx.procs, ev.tgid),
                            sender_uid: ev.uid,
                            on_behalf_of_pid: behalf,
                            on_behalf_of_comm: behalf.map(|b| comm_of(cx.procs, b, "?")),
                            from_kernel: kernel,
                            reason: None,
                            target_pid,
                            target_comm,
                            target_pids: Vec::new(),
                            signal: signal_name(s.sig),
                            count: 0,
                        },
                        first_ns: ev.ts_ns,
                        last_ns: ev.ts_ns,
                    }
                });
                g.ev.count += 1;
                g.ev.target_pid = target_pid;
                if g.ev.target_pids.last() != Some(&target_pid) {
                    push_capped(&mut g.ev.target_pids, target_pid, 32);
                }
                if kernel {
                    // The kernel works in whatever task is current: keep the latest.
                    g.ev.sender_pid = ev.tgid;
                    g.ev.sender_comm = ev.comm.to_string();
                } else if behalf.is_some() && g.ev.sender_pid != ev.tgid {
                    // A new helper acting for the same process: name the latest.
                    let sender = cx.procs.get(ev.tgid);
                    g.ev.sender_pid = ev.tgid;
                    g.ev.sender_comm = comm_of(cx.procs, ev.tgid, &ev.comm.to_string());
                    g.ev.sender_cmdline = sender
                        .map(|p| p.cmdline_string())
                        .unwrap_or_else(|| format!("[{}]", ev.comm));
                    g.ev.sender_ancestry = ancestry(cx.procs, ev.tgid);
                }
                if kernel && g.ev.reason.as_deref() != Some("oom") {
                    let why = if s.code == SI_KERNEL {
                        "kernel"
                    } else {
                        "fault"
                    };
                    g.ev.reason = Some(why.into());
                }
                g.last_ns = g.last_ns.max(ev.ts_ns);
                true
            }
            Body::OomKill(o) => {
                // The OOM killer's SIGKILL comes just before mark_victim.
                let victim = o.victim_pid;
                for ((_, kernel, _, sig), g) in self.groups.iter_mut().rev() {
                    if *kernel && *sig == 9 && g.ev.target_pid == victim {
                        g.ev.reason = Some("oom".into());
                        return true;
                    }
                }
                false
            }
            _ => false,
        }
    }

    fn findings(&mut self, _now_ns: u64, _cx: &Cx<'_>) -> Vec<Finding> {
        let mut v: Vec<&Group> = self.groups.values().collect();
        v.sort_by_key(|g| (g.first_ns, g.ev.sender_pid, g.ev.target_pid));
        v.into_iter()
            .map(|g| {
                let e = &g.ev;
                let sig = e.signal.as_str();
                let severity = match sig {
                    "SIGKILL" | "SIGSEGV" | "SIGBUS" | "SIGILL" | "SIGFPE" | "SIGABRT"
                    | "SIGSYS" => Severity::Critical,
                    "SIGINT" | "SIGHUP" => Severity::Info,
                    _ => Severity::Warning,
                };
                let sender = if e.from_kernel {
                    let why = match e.reason.as_deref() {
                        Some("oom") => "the OOM killer",
                        Some("fault") => "the kernel (fault)",
                        _ => "the kernel",
                    };
                    format!("{why} (in {} {})", e.sender_pid, e.sender_comm)
                } else {
                    let parent = e
                        .sender_ancestry
                        .get(1)
                        .map(|p| format!(", child of {p}"))
                        .unwrap_or_default();
                    let behalf = match (e.on_behalf_of_pid, &e.on_behalf_of_comm) {
                        (Some(p), Some(c)) => format!(" on behalf of {p} ({c})"),
                        (Some(p), None) => format!(" on behalf of {p}"),
                        _ => String::new(),
                    };
                    format!(
                        "{} ({}: {}{parent}){behalf}",
                        e.sender_pid, e.sender_comm, e.sender_cmdline
                    )
                };
                let times = if e.count == 1 {
                    String::new()
                } else {
                    format!(" {} times", e.count)
                };
                let target = if e.target_pids.len() > 1 {
                    format!(
                        "{} ({} pids, latest {})",
                        e.target_comm,
                        e.target_pids.len(),
                        e.target_pid
                    )
                } else {
                    format!("{} ({})", e.target_pid, e.target_comm)
                };
                Finding {
                    workload: None,
                    severity,
                    summary: format!("{sig} sent{times} by {sender} to {target}"),
                    first_seen_ns: g.first_ns,
                    last_seen_ns: g.last_ns,
                    evidence: Evidence::SignalSource(e.clone()),
                    previous_names: Vec::new(),
                    boot: None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    /// A target that renamed itself (prctl) is named by its new name, the old one kept.
    #[test]
    fn a_renamed_target_keeps_its_earlier_name_in_the_evidence() {
        let mut s = Stream::new();
        s.proc_info(600, 1, "bash", |_| {});
        s.proc_info(610, 600, "python3", |_| {});
        s.at(5)
            .rename(610, "python3", 610, "python3", "worker-main");
        s.at(10).signal(600, "bash", 15, 0, 610, "worker-main");
        let e = s.json_of("signal_source");
        assert_eq!(e["target_comm"], "worker-main");
        assert_eq!(e["target_previous_comm"], "python3");
        assert!(
            e.get("previous_comm").is_none(),
            "the sender was not renamed"
        );
    }

    #[test]
    fn names_the_sender_with_its_command_line_and_ancestry() {
        let mut s = Stream::new();
        s.proc_info(1, 0, "systemd", |_| {});
        s.proc_info(4242, 1, "monit", |i| {
            i.cmdline = vec!["/usr/bin/monit".into(), "-I".into()]
        });
        s.proc_info(5000, 4242, "node", |_| {});
        s.at(1000).signal(4242, "monit", 15, 0, 5000, "node");
        let ups = s.engine.take_updates();
        assert_eq!(ups.len(), 1, "raised at once");
        let e = s.json_of("signal_source");
        assert_eq!(e["sender_pid"], 4242);
        assert_eq!(e["sender_comm"], "monit");
        assert_eq!(e["sender_cmdline"], "/usr/bin/monit -I");
        assert_eq!(
            e["sender_ancestry"],
            serde_json::json!(["4242 monit", "1 systemd"])
        );
        assert_eq!(e["target_pid"], 5000);
        assert_eq!(e["target_comm"], "node");
        assert_eq!(e["signal"], "SIGTERM");
        assert_eq!(e["count"], 1);
        assert_eq!(e["from_kernel"], false);
    }

    #[test]
    fn kernel_and_oom_signals_are_named_as_such() {
        let mut s = Stream::new();
        s.at(10).signal(777, "python3", 9, 0x80, 777, "python3");
        s.at(11).oom(777, "python3", 777, "python3", 60 << 10);
        s.at(12).signal(800, "crash", 11, 1, 800, "crash");
        let all = s.all_json();
        let kill = all
            .iter()
            .find(|f| f["kind"] == "signal_source" && f["signal"] == "SIGKILL")
            .unwrap();
        assert_eq!(kill["from_kernel"], true);
        assert_eq!(kill["reason"], "oom");
        assert!(kill["summary"].as_str().unwrap().contains("OOM killer"));
        let segv = all
            .iter()
            .find(|f| f["kind"] == "signal_source" && f["signal"] == "SIGSEGV")
            .unwrap();
        assert_eq!(segv["from_kernel"], true);
        assert_eq!(segv["target_pid"], 800);
    }

    #[test]
    fn sigchld_and_ignored_signals_never_count() {
        let mut s = Stream::new();
        for k in 0..100 {
            s.at(k).signal(900 + k as u32, "sh", 17, 1, 1, "systemd");
        }
        s.at(200).signal_result(5, "x", 15, 0, 1, 6, "y");
        s.finish();
        assert!(s.findings_of("signal_source").is_empty());
    }
}
