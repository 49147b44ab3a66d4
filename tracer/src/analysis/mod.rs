//! Diagnosis: analyses that turn the event stream into findings ("who leaks sockets", "who sent
//! that SIGTERM", "who eats memory").
//!
//! Layout, as in the pipeline: [`state`] keeps facts several analyses need, updated once per
//! event (memory history, open sockets and fds per process, who last signalled a pid, socket
//! owners and listeners); each analysis is its own module behind the [`Analysis`] trait and
//! testable with a synthetic event list; [`Engine`] is the sink that runs them all, decides when
//! a finding is new or updated, and keeps the statistics and timeline the report renders.
//! Everything is driven by event timestamps, never the wall clock: the same events give the
//! same findings in `live`, `replay` and `report`.
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{host::HostInfo, proc_table::ProcTable};

pub mod close_wait;
pub mod config;
pub mod engine;
pub mod fds;
pub mod memory;
pub mod oom;
pub mod pileup;
pub mod resets;
pub mod restarts;
pub mod signals;
pub mod sockets;
pub mod state;
pub mod stats;
#[cfg(test)]
pub(crate) mod tests_incidents;
#[cfg(test)]
pub(crate) mod testutil;

pub use config::{AnalysisArgs, AnalysisConfig, ConfigError};
pub use engine::{Engine, FindingUpdate, SharedEngine, UpdateKind};

/// What an analysis may consult besides the event: the process table, the host, and the
/// shared derived state (updated with the event before analyses see it).
pub struct Cx<'a> {
    pub procs: &'a ProcTable,
    pub host: &'a HostInfo,
    pub state: &'a state::State,
}

/// One analysis: sees every event, and tells its current findings when asked.
pub trait Analysis: Send {
    /// The finding kind it raises (`socket_leak`...).
    fn name(&self) -> &'static str;
    /// One event. Returns true when findings should be evaluated right away rather than at the
    /// next evaluation tick (a fatal signal, an OOM kill: things people wait for in `live`).
    fn observe(&mut self, ev: &crate::event::Event, cx: &Cx<'_>) -> bool;
    /// Findings that hold at event time `now_ns`, in a deterministic order. Called at every
    /// evaluation tick; an analysis may forget exited processes here, once they were evaluated
    /// one last time (so a process's final figures are never lost to its exit).
    fn findings(&mut self, now_ns: u64, cx: &Cx<'_>) -> Vec<Finding>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A diagnosis: kind and evidence, a severity, one line for people, and when it was seen.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    pub summary: String,
    /// Boot-time ns of the first and latest evidence.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub evidence: Evidence,
    /// The culprit's systemd unit, container or pod (set by the engine from the process
    /// table; analyses leave it None).
    pub workload: Option<crate::attribution::Workload>,
    /// Earlier names of the processes the evidence names, for those that renamed themselves
    /// without exec: (JSON field, name), e.g. `("previous_comm", "stress-ng")`. Filled in by
    /// the engine from the process table; analyses leave it empty.
    pub previous_names: Vec<(&'static str, String)>,
    /// The boot it belongs to, once the stream crossed a reboot (a dump that spans one; None:
    /// the stream's only boot). Set by the engine; its clock renders the finding's times.
    pub boot: Option<HostInfo>,
}

/// The evidence of each kind. Serialized with its fields at the top level of the finding, as
/// scripts read them (see BRIEF.md): these names are a stable interface.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    SocketLeak(SocketLeak),
    CloseWait(CloseWait),
    FdExhaustion(FdExhaustion),
    ResetStorm(ResetStorm),
    SignalSource(SignalSource),
    RestartLoop(RestartLoop),
    RunawayAlloc(RunawayAlloc),
    OomKill(OomKillEvidence),
    ConnPileup(ConnPileup),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SocketLeak {
    pub pid: u32,
    pub comm: String,
    pub open_sockets: u64,
    /// Fitted growth over the window.
    pub growth_per_min: f64,
    /// Net growth over the window, and the window.
    pub growth: u64,
    pub window_s: f64,
    pub opened: u64,
    pub closed: u64,
    pub fd_limit: Option<u64>,
    /// Why it is a leak and not a ramp: of `intervals` equal sub-intervals of the window, the
    /// number at whose end more sockets were open than at any earlier bound (a new high).
    pub rising_intervals: u64,
    pub intervals: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CloseWait {
    pub pid: u32,
    pub comm: String,
    pub count: u64,
    pub oldest_age_s: f64,
    /// The local port most of them are on.
    pub local_port: u16,
    /// The peer of the oldest.
    pub remote: String,
    /// Of `count`, those still in the listener's accept queue (the listener is `pid`).
    pub never_accepted: u64,
}

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

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResetStorm {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The service port (the lower of local and remote port).
    pub port: u16,
    pub sent: u64,
    pub received: u64,
    /// Highest rate seen over the sliding window.
    pub per_sec: f64,
    /// The most frequent cause (`no_socket`, `received`, `other` or `abort_on_kill`).
    pub cause: &'static str,
    /// Resets counted per cause (`sent` + `received` in all). Resets sent by close() with
    /// unread data or SO_LINGER 0 (`abort_on_close`) are not counted, nor the ones their other
    /// end receives on this host: they are the closing process's own doing. Those a process
    /// sends as it dies of a signal (killed or crashed, its exit closing sockets that hold
    /// unread data) are, as `abort_on_kill`.
    pub causes: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SignalSource {
    /// For a kernel-sent signal: the task the kernel ran in (the faulting or allocating one).
    pub sender_pid: u32,
    pub sender_comm: String,
    pub sender_cmdline: String,
    /// "pid comm" from the sender up to init.
    pub sender_ancestry: Vec<String>,
    pub sender_uid: u32,
    /// The process the sender acted for (a `kill` run by a shell run by monit: monit), when
    /// it is not the sender itself: see [`on_behalf_of`]. Signals sent for it by successive
    /// helpers are one finding.
    pub on_behalf_of_pid: Option<u32>,
    pub on_behalf_of_comm: Option<String>,
    /// The signal was generated by the kernel (si_code > 0: fault, OOM killer, tty hangup...).
    pub from_kernel: bool,
    /// Why the kernel sent it: "oom" (the OOM killer), "fault" (SEGV_*, BUS_*...), "kernel".
    pub reason: Option<String>,
    pub target_pid: u32,
    pub target_comm: String,
    /// Every target pid, in order (a restart loop changes it), at most 32.
    pub target_pids: Vec<u32>,
    pub signal: String,
    pub count: u64,
}

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

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunawayAlloc {
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: u64,
    pub mapped_bytes: u64,
    pub growth_bytes_per_sec: u64,
    pub window_s: f64,
    pub samples: u64,
    pub limit_bytes: Option<u64>,
    /// "cgroup" or "host".
    pub limit_source: Option<String>,
    pub seconds_to_limit: Option<f64>,
    /// Raised before the window spanned mem_min_duration_s, because the limit is projected
    /// to be hit sooner.
    pub early_warning: bool,
}

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

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConnPileup {
    pub pid: u32,
    pub comm: String,
    pub remote: String,
    pub open: u64,
    pub oldest_age_s: f64,
    pub opened: u64,
    pub closed: u64,
}

impl Evidence {
    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::SocketLeak(_) => "socket_leak",
            Evidence::CloseWait(_) => "close_wait",
            Evidence::FdExhaustion(_) => "fd_exhaustion",
            Evidence::ResetStorm(_) => "reset_storm",
            Evidence::SignalSource(_) => "signal_source",
            Evidence::RestartLoop(_) => "restart_loop",
            Evidence::RunawayAlloc(_) => "runaway_alloc",
            Evidence::OomKill(_) => "oom_kill",
            Evidence::ConnPileup(_) => "conn_pileup",
        }
    }
}

impl Finding {
    pub fn kind(&self) -> &'static str {
        self.evidence.kind()
    }

    /// Identity of the finding within its kind: what makes a later evaluation "the same
    /// finding, updated" rather than a new one.
    pub fn key(&self) -> String {
        match &self.evidence {
            Evidence::SocketLeak(e) => e.pid.to_string(),
            Evidence::CloseWait(e) => e.pid.to_string(),
            Evidence::FdExhaustion(e) => e.pid.to_string(),
            Evidence::ResetStorm(e) => format!("{}:{}", e.pid.unwrap_or(0), e.port),
            Evidence::SignalSource(e) => {
                let from = if e.from_kernel {
                    "kernel".to_owned()
                } else {
                    e.on_behalf_of_pid.unwrap_or(e.sender_pid).to_string()
                };
                format!("{from}>{}:{}", e.target_comm, e.signal)
            }
            Evidence::RestartLoop(e) => format!("{}:{}", e.supervisor_pid, e.program),
            Evidence::RunawayAlloc(e) => e.pid.to_string(),
            Evidence::OomKill(e) => format!("{}@{}", e.victim_pid, self.first_seen_ns),
            Evidence::ConnPileup(e) => format!("{}>{}", e.pid, e.remote),
        }
    }

    /// The culprit process, when there is one.
    pub fn pid(&self) -> Option<u32> {
        match &self.evidence {
            Evidence::SocketLeak(e) => Some(e.pid),
            Evidence::CloseWait(e) => Some(e.pid),
            Evidence::FdExhaustion(e) => Some(e.pid),
            Evidence::ResetStorm(e) => e.pid,
            Evidence::SignalSource(e) => Some(e.sender_pid),
            Evidence::RestartLoop(e) => Some(e.supervisor_pid),
            Evidence::RunawayAlloc(e) => Some(e.pid),
            Evidence::OomKill(e) => Some(e.victim_pid),
            Evidence::ConnPileup(e) => Some(e.pid),
        }
    }

    /// The culprit's workload, for people: `unit nginx.service`, `container 3f4e1c2b9a8d
    /// (docker)`, `pod 1d2c... container ...`; None when nothing is known.
    pub fn workload_text(&self) -> Option<String> {
        let w = self.workload.as_ref()?;
        let mut parts = Vec::new();
        if let Some(p) = &w.pod_uid {
            parts.push(format!("pod {p}"));
        }
        if let Some(c) = w.container_short() {
            match &w.container_runtime {
                Some(r) => parts.push(format!("container {c} ({r})")),
                None => parts.push(format!("container {c}")),
            }
        }
        if let Some(u) = &w.unit {
            parts.push(format!("unit {u}"));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// The processes the evidence names besides the culprit, with the JSON field their
    /// earlier name goes in.
    pub fn other_pids(&self) -> Vec<(&'static str, u32)> {
        match &self.evidence {
            Evidence::SignalSource(e) => vec![("target_previous_comm", e.target_pid)],
            Evidence::OomKill(e) => vec![("trigger_previous_comm", e.trigger_pid)],
            _ => Vec::new(),
        }
    }

    /// The main figure, whose growth makes an update worth reporting.
    pub fn magnitude(&self) -> f64 {
        match &self.evidence {
            Evidence::SocketLeak(e) => e.open_sockets as f64,
            Evidence::CloseWait(e) => e.count as f64,
            Evidence::FdExhaustion(e) => e.errors.max(1) as f64,
            Evidence::ResetStorm(e) => (e.sent + e.received) as f64,
            Evidence::SignalSource(e) => e.count as f64,
            Evidence::RestartLoop(e) => e.restarts as f64,
            Evidence::RunawayAlloc(e) => e.rss_bytes as f64,
            Evidence::OomKill(_) => 1.0,
            Evidence::ConnPileup(e) => e.open as f64,
        }
    }

    /// The JSON object of this finding: `kind`, `severity`, `summary`, the evidence fields,
    /// `first_seen`, `last_seen` (RFC 3339).
    pub fn to_json(&self, host: &HostInfo) -> Value {
        let host = self.boot.as_ref().unwrap_or(host);
        let mut m = match serde_json::to_value(&self.evidence) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        if let Some(w) = &self.workload {
            for (k, v) in w.fields() {
                m.insert(k.into(), json!(v));
            }
        }
        for (field, name) in &self.previous_names {
            m.insert((*field).into(), json!(name));
        }
        if self.boot.is_some() {
            m.insert("boot_id".into(), json!(host.boot_id));
        }
        m.insert("severity".into(), json!(self.severity));
        m.insert("summary".into(), json!(self.summary));
        m.insert("first_seen".into(), json!(host.rfc3339(self.first_seen_ns)));
        m.insert("last_seen".into(), json!(host.rfc3339(self.last_seen_ns)));
        Value::Object(m)
    }
}

// Helpers shared by the analyses.

pub(crate) const NS: u64 = 1_000_000_000;

pub(crate) fn secs(ns: u64) -> f64 {
    ns as f64 / NS as f64
}

pub(crate) fn ns(secs: f64) -> u64 {
    (secs.max(0.0) * NS as f64) as u64
}

/// Rounds for output: figures people compare, not bits (and stable across runs).
pub(crate) fn round(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

/// The name of a process: from the process table, else the event's comm.
pub(crate) fn comm_of(procs: &ProcTable, pid: u32, fallback: &str) -> String {
    match procs.get(pid) {
        Some(p) if !p.comm.is_empty() => p.comm.clone(),
        _ => fallback.to_owned(),
    }
}

/// The process a signal's sender acted for: the nearest process by fork that both the sender
/// and the target descend from (monit → sh → kill, sent to a service monit started through
/// sh). None when the sender acted for itself (the target descends from it), or the two share
/// only init (an operator's shell).
pub(crate) fn on_behalf_of(procs: &ProcTable, sender: u32, target: u32) -> Option<u32> {
    let x = procs.common_forebear(sender, target)?;
    (x != sender && x != target && x != 1).then_some(x)
}

/// "pid comm" from `pid` up to init.
pub(crate) fn ancestry(procs: &ProcTable, pid: u32) -> Vec<String> {
    procs
        .ancestry(pid)
        .iter()
        .map(|p| format!("{} {}", p.pid, p.comm))
        .collect()
}

/// The service side of a connection: the lower port (servers listen below the ephemeral range).
pub(crate) fn service_port(local: u16, remote: u16) -> u16 {
    match (local, remote) {
        (0, r) => r,
        (l, 0) => l,
        (l, r) => l.min(r),
    }
}

/// Least-squares slope of `(seconds, value)` points, in value per second.
pub(crate) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mv = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, v) in points {
        num += (t - mt) * (v - mv);
        den += (t - mt) * (t - mt);
    }
    (den > 0.0).then(|| num / den)
}

/// Pushes onto a list kept to its last `max` items.
pub(crate) fn push_capped<T>(v: &mut Vec<T>, item: T, max: usize) {
    v.push(item);
    if v.len() > max {
        v.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_fits_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 7.0)).collect();
        assert!((slope(&pts).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 5.0)]), None);
    }

    #[test]
    fn service_port_is_the_lower_one() {
        assert_eq!(service_port(8080, 51234), 8080);
        assert_eq!(service_port(51234, 5432), 5432);
        assert_eq!(service_port(0, 80), 80);
    }
}
