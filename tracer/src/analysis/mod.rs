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

/// A set of event kinds (kernel and collector): what an analysis reacts to, so that the
/// engine hands each event only to the analyses that may do something with it (most events
/// are connections, which most analyses ignore).
///
/// One bit per kind id modulo 64, kernel and collector kinds apart: kinds that share a bit
/// (none today) are delivered together, which costs a call and changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds(u128);

impl Kinds {
    /// Every event.
    pub const ALL: Kinds = Kinds(u128::MAX);

    /// These kernel kinds.
    pub const fn kernel(kinds: &[tracer_common::Kind]) -> Kinds {
        let mut bits = 0;
        let mut i = 0;
        while i < kinds.len() {
            bits |= kernel_bit(kinds[i] as u16);
            i += 1;
        }
        Kinds(bits)
    }

    /// These collector kinds.
    pub const fn collector(kinds: &[tracer_common::CollectorKind]) -> Kinds {
        let mut bits = 0;
        let mut i = 0;
        while i < kinds.len() {
            bits |= collector_bit(kinds[i] as u16);
            i += 1;
        }
        Kinds(bits)
    }

    pub const fn and(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    /// The kind of an event with this body, as a set of one.
    pub fn of(body: &crate::event::Body) -> Kinds {
        Kinds(body_bit(body))
    }

    /// Whether the two sets share a kind.
    pub fn meets(self, other: Kinds) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether an event with this body is in the set.
    pub fn has(self, body: &crate::event::Body) -> bool {
        self.meets(Kinds::of(body))
    }
}

const fn kernel_bit(id: u16) -> u128 {
    1 << (id % 64)
}

const fn collector_bit(id: u16) -> u128 {
    1 << (64 + id % 64)
}

fn body_bit(body: &crate::event::Body) -> u128 {
    match (body.kind(), body.collector_kind()) {
        (Some(k), _) => kernel_bit(k as u16),
        (None, Some(c)) => collector_bit(c as u16),
        (None, None) => u128::MAX,
    }
}

/// One analysis: sees every event of the kinds it asks for, and tells its current findings
/// when asked.
pub trait Analysis: Send {
    /// The finding kind it raises (`socket_leak`...).
    fn name(&self) -> &'static str;
    /// The events [`Analysis::observe`] may act on or answer true for: the engine does not
    /// pass it the others.
    fn kinds(&self) -> Kinds {
        Kinds::ALL
    }
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

/// What the engine, the report and the fleet outputs need of a finding's evidence. Each
/// analysis implements it beside its evidence type, so adding an analysis adds no match arm
/// here: one line in `evidence!` (its kind's name and type) and its module.
pub trait Check {
    /// Identity within the kind: what makes a later evaluation "the same finding, updated"
    /// rather than a new one (`first_seen_ns`: when it was first seen).
    fn key(&self, first_seen_ns: u64) -> String;
    /// The culprit process, when there is one.
    fn culprit(&self) -> Option<u32>;
    /// The main figure, whose growth makes an update worth reporting.
    fn magnitude(&self) -> f64;
    /// The processes the evidence names besides the culprit, with the JSON field their
    /// earlier name goes in.
    fn others(&self) -> Vec<(&'static str, u32)> {
        Vec::new()
    }
}

/// The evidence enum and its dispatch to each kind's [`Check`], from one list.
macro_rules! evidence {
    ($($name:literal => $variant:ident($ty:ty)),* $(,)?) => {
        /// The evidence of each kind. Serialized with its fields at the top level of the
        /// finding, as scripts read them (see BRIEF.md): these names are a stable interface.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(tag = "kind")]
        pub enum Evidence {
            $( #[serde(rename = $name)] $variant($ty), )*
        }

        impl Evidence {
            /// The finding kind, as in JSON (`socket_leak`...).
            pub fn kind(&self) -> &'static str {
                match self { $( Evidence::$variant(_) => $name, )* }
            }
            fn check(&self) -> &dyn Check {
                match self { $( Evidence::$variant(e) => e, )* }
            }
        }

        $( impl From<$ty> for Evidence {
            fn from(e: $ty) -> Evidence { Evidence::$variant(e) }
        } )*
    };
}

evidence! {
    "socket_leak" => SocketLeak(SocketLeak),
    "close_wait" => CloseWait(CloseWait),
    "fd_exhaustion" => FdExhaustion(FdExhaustion),
    "reset_storm" => ResetStorm(ResetStorm),
    "signal_source" => SignalSource(SignalSource),
    "restart_loop" => RestartLoop(RestartLoop),
    "runaway_alloc" => RunawayAlloc(RunawayAlloc),
    "oom_kill" => OomKill(OomKillEvidence),
    "conn_pileup" => ConnPileup(ConnPileup),
}

pub use self::{
    close_wait::CloseWait, fds::FdExhaustion, memory::RunawayAlloc, oom::OomKillEvidence,
    pileup::ConnPileup, resets::ResetStorm, restarts::RestartLoop, signals::SignalSource,
    sockets::SocketLeak,
};

impl Finding {
    pub fn kind(&self) -> &'static str {
        self.evidence.kind()
    }

    /// Identity of the finding within its kind: what makes a later evaluation "the same
    /// finding, updated" rather than a new one.
    pub fn key(&self) -> String {
        self.evidence.check().key(self.first_seen_ns)
    }

    /// The culprit process, when there is one.
    pub fn pid(&self) -> Option<u32> {
        self.evidence.check().culprit()
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
        self.evidence.check().others()
    }

    /// The main figure, whose growth makes an update worth reporting.
    pub fn magnitude(&self) -> f64 {
        self.evidence.check().magnitude()
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

/// [`comm_of`] with a fallback rendered only when needed (an event's `Comm`, without
/// allocating a String per event for the usual case of a known process).
pub(crate) fn comm_or(procs: &ProcTable, pid: u32, fallback: impl std::fmt::Display) -> String {
    match procs.get(pid) {
        Some(p) if !p.comm.is_empty() => p.comm.clone(),
        _ => fallback.to_string(),
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
