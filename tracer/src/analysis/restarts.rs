//! `restart_loop`: a process dies (killed, or exiting with an error) and its parent starts a
//! new process of the same program shortly after, again and again: a supervisor (monit,
//! systemd, pm2, a process manager) restarting a failing service.
//!
//! The supervisor is the nearest process that both the dead instance and the new one descend
//! from by fork (the process table's lineage, kept through reparenting): monit running
//! `sh -c 'svc &'` is named although each svc is a child of init by the time it dies, and so is
//! a service that daemonizes itself (fork, setsid, fork).
//!
//! A death counts when the process received a fatal signal, was killed by one, or exited with
//! a non-zero status: a shell loop running short commands that succeed is not a restart loop.
//! The new instance is recognised at exec (a supervisor forks, then execs the program) or, for
//! pre-fork servers whose workers never exec, at fork. Programs are compared by the base name
//! of argv[0] plus their arguments, so `/usr/bin/node app.js` and `node app.js` match while two
//! different apps run by one `node` binary do not.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use serde::Serialize;
use tracer_common::process::EXIT_CODE_KNOWN;

use super::{
    Analysis, AnalysisConfig, Check, Cx, Evidence, Finding, Kinds, Severity, comm_of, ns,
    push_capped, secs, state::Signaled,
};
use crate::{
    event::{Body, Event},
    proc_table::{IdHash, ProcEntry},
    vocab::{signal_name, wait_status},
};
use tracer_common::Kind;

/// The evidence of a `restart_loop` finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RestartLoop {
    pub supervisor_pid: u32,
    pub supervisor_comm: String,
    pub program: String,
    pub restarts: u64,
    /// The successive pids of the program, oldest first (at most 32).
    pub pids: Vec<u32>,
    /// How the previous instances died, e.g. "SIGTERM from 4242 monit", "exit 1".
    pub deaths: Vec<String>,
    /// How the latest instance descends from the supervisor, by fork, "pid comm" from the
    /// instance up, e.g. `["5123 svc", "5120 sh", "4242 monit"]`: kept when the service
    /// detached (reparented to init or a subreaper).
    pub lineage: Vec<String>,
}

impl Check for RestartLoop {
    fn key(&self, _first_seen_ns: u64) -> String {
        format!("{}:{}", self.supervisor_pid, self.program)
    }

    fn culprit(&self) -> Option<u32> {
        Some(self.supervisor_pid)
    }

    fn magnitude(&self) -> f64 {
        self.restarts as f64
    }
}

const MAX_LIST: usize = 32;

/// The identity of a program for restart matching.
pub fn program_key(p: &ProcEntry) -> String {
    let argv0 = p
        .cmdline
        .first()
        .map(String::as_str)
        .filter(|a| !a.is_empty())
        .unwrap_or(p.program());
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    let mut key = base.to_owned();
    for a in p.cmdline.iter().skip(1) {
        key.push(' ');
        key.push_str(a);
    }
    if key.is_empty() {
        key = p.comm.clone();
    }
    // Exec records carry at most 256 bytes of argv; /proc has it all: compare what both have.
    let mut end = key.len().min(200);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key.truncate(end);
    key
}

struct Death {
    pid: u32,
    ts_ns: u64,
    how: How,
}

/// How a process died: what a finding's `deaths` say, rendered only for the deaths a finding
/// shows (most are matched and pushed out of the capped list without ever being shown).
#[derive(Clone)]
enum How {
    /// The fatal signal it received (as it was when sent).
    Signaled(Arc<Signaled>),
    KilledBy(i32),
    Exit(i32),
}

impl How {
    fn render(&self) -> String {
        match self {
            How::Signaled(s) => {
                let from = if s.from_kernel {
                    "the kernel".to_owned()
                } else {
                    let behalf = s
                        .on_behalf_of
                        .as_ref()
                        .map(|(b, c)| format!(" on behalf of {b} {c}"))
                        .unwrap_or_default();
                    format!("{} {}{behalf}", s.sender_pid, s.sender_comm)
                };
                format!("{} from {from}", signal_name(s.sig))
            }
            How::KilledBy(sig) => format!("killed by {}", signal_name(*sig)),
            How::Exit(code) => format!("exit {code}"),
        }
    }
}

struct Loop {
    supervisor_comm: String,
    /// The latest instance up to the supervisor, by fork.
    lineage: Vec<String>,
    program: String,
    /// Restart times within the window.
    recent: VecDeque<u64>,
    peak: u64,
    total: u64,
    pids: Vec<u32>,
    deaths: Vec<How>,
    first_ns: u64,
    last_ns: u64,
}

pub struct RestartLoops {
    within_ns: u64,
    window_ns: u64,
    min_count: u64,
    /// program → recent abnormal deaths of its processes.
    deaths: HashMap<String, Vec<Death>, IdHash>,
    loops: BTreeMap<(u32, String), Loop>,
}

impl RestartLoops {
    pub fn new(cfg: &AnalysisConfig) -> RestartLoops {
        RestartLoops {
            within_ns: ns(cfg.restart_within_s),
            window_ns: ns(cfg.restart_window_s),
            min_count: cfg.restart_min_count.max(1),
            deaths: HashMap::default(),
            loops: BTreeMap::new(),
        }
    }

    /// A new process `pid` of `entry`'s program at `ts`: a restart if a process of the same
    /// program that shares a forebear with it (its supervisor) died shortly before.
    fn started(&mut self, pid: u32, entry: &ProcEntry, ts: u64, cx: &Cx<'_>) -> bool {
        let program = program_key(entry);
        let Some(list) = self.deaths.get_mut(&program) else {
            return false;
        };
        let within = self.within_ns;
        // The new process's lineage, computed once for all the deaths it is matched against.
        let mut la: Option<Vec<u32>> = None;
        let mut buf = Vec::new();
        let Some((i, sup)) = list.iter().enumerate().rev().find_map(|(i, d)| {
            if d.ts_ns > ts || ts - d.ts_ns > within {
                return None;
            }
            let la = la.get_or_insert_with(|| cx.procs.lineage(pid));
            let sup = cx.procs.common_forebear_with(pid, la, d.pid, &mut buf)?;
            (sup != pid && sup != d.pid).then_some((i, sup))
        }) else {
            return false;
        };
        let death = list.remove(i);
        if list.is_empty() {
            self.deaths.remove(&program);
        }
        let key = (sup, program);
        let lineage = std::iter::once(pid)
            .chain(
                la.unwrap_or_else(|| cx.procs.lineage(pid))
                    .into_iter()
                    .take_while(|p| *p != sup),
            )
            .chain([sup])
            .map(|p| format!("{p} {}", comm_of(cx.procs, p, "?")))
            .collect();
        let l = self.loops.entry(key).or_insert_with(|| Loop {
            supervisor_comm: comm_of(cx.procs, sup, "?"),
            lineage: Vec::new(),
            // Set just below.
            program: String::new(),
            recent: VecDeque::new(),
            peak: 0,
            total: 0,
            pids: Vec::new(),
            deaths: Vec::new(),
            first_ns: death.ts_ns,
            last_ns: ts,
        });
        l.program = entry.cmdline_string();
        l.lineage = lineage;
        l.total += 1;
        l.last_ns = l.last_ns.max(ts);
        l.recent.push_back(ts);
        while l
            .recent
            .front()
            .is_some_and(|&t| t.saturating_add(self.window_ns) < ts)
        {
            l.recent.pop_front();
        }
        l.peak = l.peak.max(l.recent.len() as u64);
        if l.pids.last() != Some(&death.pid) {
            push_capped(&mut l.pids, death.pid, MAX_LIST);
        }
        push_capped(&mut l.pids, pid, MAX_LIST);
        push_capped(&mut l.deaths, death.how, MAX_LIST);
        l.peak == self.min_count
    }
}

impl Analysis for RestartLoops {
    fn name(&self) -> &'static str {
        "restart_loop"
    }

    fn kinds(&self) -> Kinds {
        Kinds::kernel(&[Kind::Exit, Kind::Exec, Kind::Fork])
    }

    fn observe(&mut self, ev: &Event, cx: &Cx<'_>) -> bool {
        match &ev.body {
            Body::Exit(x) => {
                // The last fatal signal it received, unless older than the window.
                let signaled = cx
                    .state
                    .exit_signal
                    .as_ref()
                    .filter(|s| s.ts_ns.saturating_add(self.window_ns) >= ev.ts_ns);
                let known = x.flags & EXIT_CODE_KNOWN != 0;
                let status = if known {
                    wait_status(x.exit_code)
                } else {
                    (None, None)
                };
                let how = match (signaled, status) {
                    (Some(s), _) => How::Signaled(s.clone()),
                    (None, (_, Some(sig))) => How::KilledBy(sig),
                    (None, (Some(code), _)) if code != 0 => How::Exit(code),
                    _ => return false,
                };
                let Some(p) = cx.procs.get(ev.tgid) else {
                    return false;
                };
                if p.ppid == 0 {
                    return false;
                }
                let list = self.deaths.entry(program_key(p)).or_default();
                let within = self.within_ns;
                list.retain(|d| d.ts_ns.saturating_add(within) >= ev.ts_ns);
                list.push(Death {
                    pid: ev.tgid,
                    ts_ns: ev.ts_ns,
                    how,
                });
                false
            }
            Body::Exec(_) => {
                let Some(p) = cx.procs.get(ev.tgid) else {
                    return false;
                };
                self.started(ev.tgid, p, ev.ts_ns, cx)
            }
            Body::Fork(f) => {
                // Pre-fork servers: the new worker runs its parent's program without exec.
                if self.deaths.is_empty() {
                    return false;
                }
                let Some(child) = cx.procs.get(f.child_pid) else {
                    return false;
                };
                self.started(f.child_pid, child, ev.ts_ns, cx)
            }
            _ => false,
        }
    }

    fn findings(&mut self, now_ns: u64, _cx: &Cx<'_>) -> Vec<Finding> {
        let (within, window) = (self.within_ns, self.window_ns);
        self.deaths.retain(|_, l| {
            l.retain(|d| d.ts_ns.saturating_add(within) >= now_ns);
            !l.is_empty()
        });
        let min = self.min_count;
        // Loops that never reached the threshold are forgotten once quiet for a window.
        self.loops
            .retain(|_, l| l.peak >= min || l.last_ns.saturating_add(window) >= now_ns);
        let mut out = Vec::new();
        for ((sup, _), l) in &self.loops {
            if l.peak < min {
                continue;
            }
            let pids = l
                .pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let last = l
                .deaths
                .last()
                .map(|d| format!("; last death: {}", d.render()))
                .unwrap_or_default();
            out.push(Finding {
                workload: None,
                severity: Severity::Critical,
                summary: format!(
                    "{sup} ({}) keeps restarting `{}`: {} restarts in {:.0} s (pids {pids}){last}",
                    l.supervisor_comm,
                    l.program,
                    l.total,
                    secs(l.last_ns.saturating_sub(l.first_ns))
                ),
                first_seen_ns: l.first_ns,
                last_seen_ns: l.last_ns,
                evidence: Evidence::RestartLoop(RestartLoop {
                    supervisor_pid: *sup,
                    supervisor_comm: l.supervisor_comm.clone(),
                    program: l.program.clone(),
                    restarts: l.total,
                    pids: l.pids.clone(),
                    deaths: l.deaths.iter().map(How::render).collect(),
                    lineage: l.lineage.clone(),
                }),
                previous_names: Vec::new(),
                boot: None,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    /// monit (4242) starts node; each instance is sent SIGTERM and exits, then a new one is
    /// forked and exec'd 2 s later.
    fn monit_loop(s: &mut Stream, cycles: u32) -> Vec<u32> {
        s.proc_info(1, 0, "systemd", |_| {});
        s.proc_info(4242, 1, "monit", |i| {
            i.cmdline = vec!["/usr/bin/monit".into(), "-I".into()]
        });
        s.proc_info(5000, 4242, "node", |i| {
            i.exe = "/usr/bin/node".into();
            i.cmdline = vec!["/usr/bin/node".into(), "server.js".into()];
        });
        let mut pid = 5000;
        let mut pids = vec![pid];
        for c in 0..cycles {
            let t = 10_000 + c as u64 * 30_000;
            s.at(t).signal(4242, "monit", 15, 0, pid, "node");
            s.at(t + 100).exit(pid, "node", 143 << 8);
            let new = pid + 1;
            s.at(t + 2000).fork(4242, "monit", new);
            s.at(t + 2001)
                .exec(new, "node", "/usr/bin/node", &["node", "server.js"]);
            pid = new;
            pids.push(pid);
        }
        pids
    }

    #[test]
    fn a_supervisor_killing_and_respawning_is_a_loop() {
        let mut s = Stream::new();
        let pids = monit_loop(&mut s, 4);
        let e = s.json_of("restart_loop");
        assert_eq!(e["supervisor_pid"], 4242);
        assert_eq!(e["supervisor_comm"], "monit");
        assert_eq!(e["program"], "node server.js");
        assert_eq!(e["restarts"], 4);
        assert_eq!(e["pids"], serde_json::json!(pids));
        assert_eq!(e["deaths"][0], "SIGTERM from 4242 monit");
        // The SIGTERMs are one signal_source finding, counted across the changing pids.
        let sig = s.json_of("signal_source");
        assert_eq!(sig["count"], 4);
        assert_eq!(sig["sender_comm"], "monit");
    }

    /// monit as Debian runs it: the start program `sh -c 'svc &'` forks the service and exits
    /// (the service is then init's child), the stop program `sh -c '/bin/kill -TERM PID'`.
    fn detached_loop(s: &mut Stream, cycles: u32) -> Vec<u32> {
        s.proc_info(1, 0, "systemd", |_| {});
        s.proc_info(4242, 1, "monit", |i| {
            i.cmdline = vec!["/usr/bin/monit".into(), "-I".into()]
        });
        let start = |s: &mut Stream, t: u64, base: u32| {
            s.at(t).fork(4242, "monit", base);
            s.at(t + 1)
                .exec(base, "sh", "/bin/sh", &["sh", "-c", "svc &"]);
            s.at(t + 2).fork(base, "sh", base + 1);
            s.at(t + 3).exit(base, "sh", 0);
            s.at(t + 4)
                .exec(base + 1, "svc", "/usr/bin/svc", &["/usr/bin/svc"]);
            // Reparented to init, as /proc then says.
            s.proc_info(base + 1, 1, "svc", |i| {
                i.cmdline = vec!["/usr/bin/svc".into()]
            });
            base + 1
        };
        let stop = |s: &mut Stream, t: u64, base: u32, svc: u32| {
            s.at(t).fork(4242, "monit", base);
            s.at(t + 1)
                .exec(base, "sh", "/bin/sh", &["sh", "-c", "/bin/kill -TERM"]);
            s.at(t + 2).fork(base, "sh", base + 1);
            s.at(t + 3)
                .exec(base + 1, "kill", "/bin/kill", &["/bin/kill", "-TERM"]);
            s.at(t + 4).signal(base + 1, "kill", 15, 0, svc, "svc");
            s.at(t + 5).exit(svc, "svc", 15);
            s.at(t + 6).exit(base + 1, "kill", 0);
            s.at(t + 7).exit(base, "sh", 0);
        };
        let mut svc = start(s, 1000, 5000);
        let mut pids = vec![svc];
        for c in 0..cycles {
            let t = 10_000 + c as u64 * 10_000;
            let base = 6000 + c * 10;
            stop(s, t, base, svc);
            svc = start(s, t + 1000, base + 2);
            pids.push(svc);
        }
        pids
    }

    #[test]
    fn a_supervisor_whose_service_detaches_is_named_through_the_fork_lineage() {
        let mut s = Stream::new();
        let pids = detached_loop(&mut s, 4);
        let e = s.json_of("restart_loop");
        assert_eq!(e["supervisor_pid"], 4242, "{e}");
        assert_eq!(e["supervisor_comm"], "monit");
        assert_eq!(e["restarts"], 4);
        assert_eq!(e["pids"], serde_json::json!(pids));
        let last = pids.last().unwrap();
        assert_eq!(
            e["lineage"],
            serde_json::json!([
                format!("{last} svc"),
                format!("{} sh", last - 1),
                "4242 monit"
            ])
        );
        assert_eq!(
            e["deaths"][0],
            "SIGTERM from 6001 kill on behalf of 4242 monit"
        );
        assert!(
            s.findings_of("restart_loop")
                .iter()
                .all(|f| f.pid() != Some(1)),
            "init is not the supervisor"
        );
        // The kill helpers acted for monit: one signal_source finding for all of them.
        let sigs = s.findings_of("signal_source");
        assert_eq!(sigs.len(), 1, "{sigs:?}");
        let sig = s.json_of("signal_source");
        assert_eq!(sig["on_behalf_of_pid"], 4242);
        assert_eq!(sig["on_behalf_of_comm"], "monit");
        assert_eq!(sig["count"], 4);
        assert_eq!(sig["sender_comm"], "kill");
        assert_eq!(sig["sender_pid"], 6031, "the latest helper");
        assert!(
            sig["summary"]
                .as_str()
                .unwrap()
                .contains("on behalf of 4242 (monit)"),
            "{sig}"
        );
    }

    /// A service that daemonizes itself (fork, setsid, fork; the first two exit): the daemon
    /// never execs, and its supervisor is still found.
    #[test]
    fn a_self_daemonizing_service_is_restarted_by_its_supervisor() {
        let mut s = Stream::new();
        s.proc_info(1, 0, "systemd", |_| {});
        s.proc_info(4242, 1, "monit", |_| {});
        let mut daemon = 0;
        for c in 0..5u32 {
            let t = c as u64 * 10_000;
            let b = 7000 + c * 10;
            if daemon != 0 {
                s.at(t).fork(4242, "monit", b + 5);
                s.at(t + 1)
                    .exec(b + 5, "kill", "/bin/kill", &["/bin/kill", "-TERM"]);
                s.at(t + 2).signal(b + 5, "kill", 15, 0, daemon, "svcd");
                s.at(t + 3).exit(daemon, "svcd", 15);
                s.at(t + 4).exit(b + 5, "kill", 0);
            }
            s.at(t + 100).fork(4242, "monit", b);
            s.at(t + 101)
                .exec(b, "svcd", "/usr/sbin/svcd", &["/usr/sbin/svcd"]);
            s.at(t + 102).fork(b, "svcd", b + 1);
            s.at(t + 103).exit(b, "svcd", 0);
            s.at(t + 104).fork(b + 1, "svcd", b + 2);
            s.at(t + 105).exit(b + 1, "svcd", 0);
            daemon = b + 2;
        }
        let e = s.json_of("restart_loop");
        assert_eq!(e["supervisor_pid"], 4242, "{e}");
        assert_eq!(e["restarts"], 4);
    }

    /// A signal between two processes that only share init (an operator's shell killing a
    /// daemon) is not sent on anyone's behalf.
    #[test]
    fn an_operator_kill_is_on_nobodys_behalf() {
        let mut s = Stream::new();
        s.proc_info(1, 0, "systemd", |_| {});
        s.proc_info(400, 1, "sshd", |_| {});
        s.proc_info(401, 400, "bash", |_| {});
        s.proc_info(900, 1, "svcd", |_| {});
        s.at(10).fork(401, "bash", 402);
        s.at(11).exec(402, "kill", "/bin/kill", &["kill", "900"]);
        s.at(12).signal(402, "kill", 15, 0, 900, "svcd");
        let sig = s.json_of("signal_source");
        assert_eq!(sig["on_behalf_of_pid"], serde_json::Value::Null, "{sig}");
        assert_eq!(sig["sender_pid"], 402);
    }

    #[test]
    fn a_single_restart_is_not_a_loop() {
        let mut s = Stream::new();
        monit_loop(&mut s, 1);
        s.finish();
        assert!(s.findings_of("restart_loop").is_empty());
    }

    #[test]
    fn a_shell_loop_of_successful_commands_is_not_a_loop() {
        let mut s = Stream::new();
        s.proc_info(300, 1, "bash", |_| {});
        for k in 0..50u32 {
            let pid = 1000 + k;
            let t = k as u64 * 500;
            s.at(t).fork(300, "bash", pid);
            s.at(t + 1)
                .exec(pid, "curl", "/usr/bin/curl", &["curl", "-s", "http://x"]);
            s.at(t + 200).exit(pid, "curl", 0);
        }
        s.finish();
        assert!(s.findings_of("restart_loop").is_empty());
    }

    #[test]
    fn crashing_prefork_workers_are_a_loop() {
        let mut s = Stream::new();
        s.proc_info(700, 1, "gunicorn", |i| {
            i.cmdline = vec!["gunicorn".into(), "app:wsgi".into()]
        });
        s.at(0).fork(700, "gunicorn", 701);
        for k in 0..3u32 {
            let t = 1000 + k as u64 * 5000;
            s.at(t).exit(701 + k, "gunicorn", 9); // killed by SIGKILL
            s.at(t + 50).fork(700, "gunicorn", 702 + k);
        }
        let e = s.json_of("restart_loop");
        assert_eq!(e["supervisor_pid"], 700);
        assert_eq!(e["restarts"], 3);
        assert_eq!(e["deaths"][0], "killed by SIGKILL");
    }
}
