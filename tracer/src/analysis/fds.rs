//! `fd_exhaustion`: accept()/socket() failing with EMFILE (the process's RLIMIT_NOFILE) or
//! ENFILE (the system's file table), or a process's open fds close to its limit.
//!
//! Open fds are the shared state's ([`FdTable`](super::state::FdTable)): /proc's count, followed
//! by the socket fds opened, duplicated and closed after that; an EMFILE says the process is at
//! its limit, whatever the estimate says.
use std::collections::HashMap;

use serde::Serialize;

use super::{
    Analysis, AnalysisConfig, Check, Cx, Evidence, Finding, Kinds, Severity, comm_of,
    state::FD_CHANGES, state::FdChange,
};
use crate::{
    event::{Body, Event},
    proc_table::IdHash,
    vocab::errno_name,
};
use tracer_common::Kind;

/// The evidence of a `fd_exhaustion` finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FdExhaustion {
    pub pid: u32,
    pub comm: String,
    /// accept()/socket() failures with EMFILE or ENFILE.
    pub errors: u64,
    pub emfile: u64,
    pub enfile: u64,
    pub fd_limit: Option<u64>,
    /// Known or estimated open fds (at the limit when EMFILE was seen).
    pub open_fds: Option<u64>,
    /// The listening port accept() failed on, when known.
    pub local_port: Option<u16>,
}

impl Check for FdExhaustion {
    fn key(&self, _first_seen_ns: u64) -> String {
        self.pid.to_string()
    }

    fn culprit(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn magnitude(&self) -> f64 {
        self.errors.max(1) as f64
    }
}

const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

#[derive(Default)]
struct Proc {
    comm: String,
    emfile: u64,
    enfile: u64,
    first_error_ns: u64,
    last_error_ns: u64,
    /// Failures of accept() (the rest are socket()).
    accept_errors: u64,
    /// Open fds at the last EMFILE: the limit, by definition.
    pinned: bool,
    local_port: Option<u16>,
    last_ns: u64,
    /// When its open fds were first seen near the limit.
    near_since_ns: Option<u64>,
    exited: bool,
}

pub struct FdLimits {
    min_errors: u64,
    near_ratio: f64,
    /// Every process whose fds moved (process churn inserts one per short-lived process: a
    /// hash map, not an ordered one; `findings` orders by pid).
    procs: HashMap<u32, Proc, IdHash>,
}

impl FdLimits {
    pub fn new(cfg: &AnalysisConfig) -> FdLimits {
        FdLimits {
            min_errors: cfg.fd_min_errors.max(1),
            near_ratio: cfg.fd_near_limit_ratio,
            procs: HashMap::default(),
        }
    }

    fn proc(&mut self, ev: &Event) -> &mut Proc {
        let p = self.procs.entry(ev.tgid).or_default();
        if p.exited {
            *p = Proc::default();
        }
        if p.comm.is_empty() {
            p.comm = ev.comm.to_string();
        }
        p.last_ns = ev.ts_ns;
        p
    }

    /// Counts an fd-table failure; true when it makes a new finding.
    fn failure(&mut self, ev: &Event, errno: i32, port: Option<u16>) -> bool {
        let min = self.min_errors;
        let p = self.proc(ev);
        p.accept_errors += u64::from(port.is_some());
        let before = p.emfile + p.enfile;
        if before == 0 {
            p.first_error_ns = ev.ts_ns;
        }
        p.last_error_ns = ev.ts_ns;
        if errno == EMFILE {
            p.emfile += 1;
            p.pinned = true;
        } else {
            p.enfile += 1;
        }
        if port.is_some_and(|p| p != 0) {
            p.local_port = port;
        }
        before < min && before + 1 >= min
    }
}

impl Analysis for FdLimits {
    fn name(&self) -> &'static str {
        "fd_exhaustion"
    }

    fn kinds(&self) -> Kinds {
        FD_CHANGES.and(Kinds::kernel(&[
            Kind::TcpAccept,
            Kind::SocketOpen,
            Kind::Exit,
        ]))
    }

    fn observe(&mut self, ev: &Event, cx: &Cx<'_>) -> bool {
        match cx.state.fd_change {
            Some((pid, FdChange::Baseline)) => {
                let p = self.procs.entry(pid).or_default();
                p.last_ns = ev.ts_ns;
                if let Some(c) = cx.state.fds.get(pid)
                    && !c.comm.is_empty()
                {
                    p.comm = c.comm.clone();
                }
            }
            Some((_, FdChange::Delta(d))) => {
                let p = self.proc(ev);
                if d < 0 {
                    // A close frees a slot: no longer known to be at the limit.
                    p.pinned = false;
                }
            }
            Some((pid, FdChange::Exec)) => {
                // CLOEXEC fds are gone; the count is unknown until /proc says otherwise.
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.pinned = false;
                }
            }
            None => {}
        }
        match &ev.body {
            Body::TcpAccept(a) if a.ret == -EMFILE || a.ret == -ENFILE => {
                return self.failure(ev, -a.ret, Some(a.sport));
            }
            Body::SocketOpen(s) if s.fd == -EMFILE || s.fd == -ENFILE => {
                return self.failure(ev, -s.fd, None);
            }
            Body::Exit(_) => {
                if let Some(p) = self.procs.get_mut(&ev.tgid) {
                    p.exited = true;
                }
            }
            _ => {}
        }
        false
    }

    fn findings(&mut self, now_ns: u64, cx: &Cx<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut pids: Vec<u32> = self.procs.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let Some(p) = self.procs.get_mut(&pid) else {
                continue;
            };
            let errors = p.emfile + p.enfile;
            let fd_limit = cx.procs.get(pid).and_then(|e| e.nofile_limit);
            let estimate = cx
                .state
                .fds
                .get(pid)
                .and_then(|c| c.fds)
                .map(|n| n.max(0) as u64);
            // EMFILE means every fd below the limit is taken; and no estimate can exceed it
            // (an estimate drifts when fds close in ways the kernel side does not see).
            let open_fds = match (fd_limit, estimate) {
                (Some(l), _) if p.pinned => Some(l),
                (Some(l), Some(e)) => Some(e.min(l)),
                (_, e) => e,
            };
            let near = match (fd_limit, estimate) {
                (Some(l), Some(n)) if l > 0 => n as f64 >= l as f64 * self.near_ratio,
                _ => false,
            };
            if near {
                p.near_since_ns.get_or_insert(now_ns);
            }
            if errors < self.min_errors && !near {
                continue;
            }
            let comm = comm_of(cx.procs, pid, &p.comm);
            let limit = fd_limit
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into());
            let fds = open_fds
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into());
            let port = p
                .local_port
                .map(|p| format!(" on port {p}"))
                .unwrap_or_default();
            let (severity, summary, first, last) = if errors >= self.min_errors {
                let call = match (p.accept_errors, errors - p.accept_errors) {
                    (_, 0) => "accept()",
                    (0, _) => "socket()",
                    _ => "accept()/socket()",
                };
                let times = if errors == 1 {
                    "once".to_owned()
                } else {
                    format!("{errors} times")
                };
                let what = match (p.emfile, p.enfile) {
                    (_, 0) => errno_name(EMFILE),
                    (0, _) => errno_name(ENFILE),
                    _ => format!("{}/{}", errno_name(EMFILE), errno_name(ENFILE)),
                };
                (
                    Severity::Critical,
                    format!(
                        "{pid} ({comm}) is out of file descriptors: {call} failed {times} with {what}{port}, {fds} fds open, limit {limit}"
                    ),
                    p.first_error_ns,
                    p.last_error_ns,
                )
            } else {
                (
                    Severity::Warning,
                    format!(
                        "{pid} ({comm}) is near its file descriptor limit: {fds} of {limit} open"
                    ),
                    p.last_ns,
                    now_ns.max(p.last_ns),
                )
            };
            out.push(Finding {
                workload: None,
                severity,
                summary,
                first_seen_ns: first,
                last_seen_ns: last,
                evidence: Evidence::FdExhaustion(FdExhaustion {
                    pid,
                    comm,
                    errors,
                    emfile: p.emfile,
                    enfile: p.enfile,
                    fd_limit,
                    open_fds,
                    local_port: p.local_port,
                }),
                previous_names: Vec::new(),
                boot: None,
            });
        }
        self.procs.retain(|_, p| !p.exited);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn accept_failing_with_emfile_names_the_process_and_its_limit() {
        let mut s = Stream::new();
        s.proc_info(500, 1, "node", |i| {
            i.nofile_limit = Some(1024);
            i.open_fds = Some(1000);
        });
        for k in 0..24 {
            s.at(k * 10).accept(500, "node", 100 + k as i32, 3000);
        }
        for k in 0..50 {
            s.at(1000 + k * 10).accept_failed(500, "node", 24, 3000);
        }
        let e = s.json_of("fd_exhaustion");
        assert_eq!(e["pid"], 500);
        assert_eq!(e["comm"], "node");
        assert_eq!(e["errors"], 50);
        assert_eq!(e["fd_limit"], 1024);
        assert_eq!(e["open_fds"], 1024);
        assert_eq!(e["local_port"], 3000);
        assert_eq!(e["severity"], "critical");
    }

    /// The process lowered its own limit after exec: the limit is the new one, not /proc's
    /// at first sight.
    #[test]
    fn a_limit_set_at_run_time_is_the_limit() {
        let mut s = Stream::new();
        s.proc_info(510, 1, "svc", |i| {
            i.nofile_limit = Some(20000);
            i.open_fds = Some(3);
        });
        s.at(10).rlimit(510, "svc", 510, 64, 64);
        for k in 0..5 {
            s.at(1000 + k * 10).accept_failed(510, "svc", 24, 8080);
        }
        let e = s.json_of("fd_exhaustion");
        assert_eq!(e["fd_limit"], 64);
        assert_eq!(e["open_fds"], 64);
        assert!(e["summary"].as_str().unwrap().contains("limit 64"));
    }

    /// An operator's `prlimit --pid` changes another process's limit; its own is untouched.
    #[test]
    fn a_limit_set_by_another_process_is_the_targets() {
        let mut s = Stream::new();
        s.proc_info(520, 1, "svc", |i| i.nofile_limit = Some(1024));
        s.proc_info(530, 1, "prlimit", |i| i.nofile_limit = Some(1024));
        s.at(10).rlimit(530, "prlimit", 520, 32, 32);
        assert_eq!(s.procs.get(520).unwrap().nofile_limit, Some(32));
        assert_eq!(s.procs.get(530).unwrap().nofile_limit, Some(1024));
        s.at(20).accept_failed(520, "svc", 24, 80);
        assert_eq!(s.json_of("fd_exhaustion")["fd_limit"], 32);
    }

    /// A process that renamed itself is reported under its new name, the old one kept.
    #[test]
    fn a_renamed_process_has_one_name_and_keeps_the_old_one_in_the_evidence() {
        let mut s = Stream::new();
        s.proc_info(540, 1, "stress-ng", |_| {});
        s.at(5)
            .rename(540, "stress-ng", 540, "stress-ng", "stress-ng-vm");
        s.at(10).accept_failed(540, "stress-ng-vm", 24, 80);
        let e = s.json_of("fd_exhaustion");
        assert_eq!(e["comm"], "stress-ng-vm");
        assert_eq!(e["previous_comm"], "stress-ng");
        assert!(
            e["summary"]
                .as_str()
                .unwrap()
                .contains("540 (stress-ng-vm)")
        );
    }

    #[test]
    fn the_first_emfile_is_raised_at_once() {
        let mut s = Stream::new();
        s.at(5).accept_failed(501, "srv", 24, 80);
        let ups = s.engine.take_updates();
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].finding.kind(), "fd_exhaustion");
    }

    #[test]
    fn near_the_limit_is_a_warning() {
        let mut s = Stream::new();
        s.proc_info(502, 1, "java", |i| {
            i.nofile_limit = Some(100);
            i.open_fds = Some(80);
        });
        for k in 0..15 {
            s.at(k * 10).socket_open(502, "java", 80 + k as i32);
        }
        let e = s.json_of("fd_exhaustion");
        assert_eq!(e["severity"], "warning");
        assert_eq!(e["open_fds"], 95);
        assert_eq!(e["errors"], 0);
    }
}
