//! What the metrics say, computed from the event stream (and the engine's findings) in the
//! pipeline thread, independent of how they are exposed: [`Model`] keeps counters and a small
//! per-process table; [`Model::snapshot`] turns them into [`Snapshot`] families that the
//! Prometheus endpoint and the OTLP exporter both encode.
//!
//! Cardinality is bounded: per-process series exist only for the `top` processes by score
//! (culprits of findings first, then OOM kills, fatal signals, CLOSE_WAIT, fd errors, open
//! sockets, RSS), the rest summed into one series with `pid="other"`. The table itself holds
//! at most [`MAX_PROCS`] processes, and an exited one is forgotten [`LINGER_NS`] after its exit.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use tracer_common::{Kind, tcp::status as conn_status};

use crate::{
    analysis::{Evidence, FindingUpdate, UpdateKind},
    dump::RecordSummary,
    event::{Body, Event},
    pipeline::Ctx,
};

/// Processes tracked at most.
pub const MAX_PROCS: usize = 16_384;
/// How long an exited process keeps its series (event time), so a scrape still sees the OOM
/// victim or the killed server.
pub const LINGER_NS: u64 = 120 * 1_000_000_000;
/// RSS growth is fitted over this much of the latest samples.
const GROWTH_WINDOW_NS: u64 = 30 * 1_000_000_000;
const GROWTH_POINTS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// One metric and its series. `name` is the full name; a counter's ends in `_total`.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub samples: Vec<(Labels, f64)>,
}

pub type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub families: Vec<Family>,
    /// Boot-time ns of the latest event when taken.
    pub at_ns: u64,
}

impl Snapshot {
    /// The family named `name`, for tests and exporters.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The value of the series of `name` whose labels include all of `want`.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.family(name)?
            .samples
            .iter()
            .find(|(l, _)| {
                want.iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, v)| *v)
    }
}

#[derive(Default, Clone, Debug)]
struct Proc {
    comm: String,
    open_sockets: i64,
    baseline_sockets: i64,
    baseline_fds: Option<i64>,
    fd_limit: Option<u64>,
    fd_errors: u64,
    at_limit: bool,
    rss: Option<u64>,
    rss_points: VecDeque<(u64, u64)>,
    oom_kills: u64,
    fatal_signals: u64,
    findings: u64,
    exited_ns: Option<u64>,
    /// Something traced happened to it (not only the /proc snapshot): only such processes
    /// have series, so `--pid`/`--comm` filters apply to the metrics too.
    active: bool,
}

impl Proc {
    fn close_wait(&self, pid: u32, cw: &HashMap<u64, u32>) -> u64 {
        // Counted from the socket map at snapshot time (a few entries at most).
        cw.values().filter(|p| **p == pid).count() as u64
    }

    fn open_fds(&self) -> Option<i64> {
        let fds = self.baseline_fds? + (self.open_sockets - self.baseline_sockets);
        Some(match (self.at_limit, self.fd_limit) {
            (true, Some(l)) if l < i64::MAX as u64 => fds.max(l as i64),
            _ => fds,
        })
    }

    fn growth(&self) -> Option<f64> {
        let (t0, _) = *self.rss_points.front()?;
        let pts: Vec<(f64, f64)> = self
            .rss_points
            .iter()
            .map(|&(t, v)| ((t - t0) as f64 / 1e9, v as f64))
            .collect();
        crate::analysis::slope(&pts)
    }
}

/// Counters and per-process figures, updated with every event.
pub struct Model {
    top: usize,
    fatal: Vec<i32>,
    now_ns: u64,
    events: BTreeMap<&'static str, u64>,
    lost: BTreeMap<String, u64>,
    procs: HashMap<u32, Proc>,
    /// Sockets in CLOSE_WAIT → owner.
    close_wait: HashMap<u64, u32>,
    /// Restart loops: (supervisor, program) → restarts, from restart_loop findings.
    restarts: HashMap<(u32, String), u64>,
    findings: BTreeMap<(&'static str, &'static str), u64>,
    oom_kills: u64,
    fatal_signals: BTreeMap<i32, u64>,
    untracked: HashSet<u32>,
}

impl Model {
    /// `top`: processes with series of their own; `fatal`: the signal numbers counted as fatal
    /// (the analyses' `fatal_signals`).
    pub fn new(top: usize, fatal: Vec<i32>) -> Model {
        Model {
            top,
            fatal,
            now_ns: 0,
            events: BTreeMap::new(),
            lost: BTreeMap::new(),
            procs: HashMap::new(),
            close_wait: HashMap::new(),
            restarts: HashMap::new(),
            findings: BTreeMap::new(),
            oom_kills: 0,
            fatal_signals: BTreeMap::new(),
            untracked: HashSet::new(),
        }
    }

    fn proc(&mut self, pid: u32, comm: &str) -> Option<&mut Proc> {
        if pid == 0 {
            return None;
        }
        if !self.procs.contains_key(&pid) && self.procs.len() >= MAX_PROCS {
            if self.untracked.len() < MAX_PROCS {
                self.untracked.insert(pid);
            }
            return None;
        }
        let p = self.procs.entry(pid).or_default();
        if p.comm.is_empty() {
            p.comm = comm.to_owned();
        }
        Some(p)
    }

    pub fn observe(&mut self, ev: &Event, ctx: &Ctx<'_>) {
        self.now_ns = self.now_ns.max(ev.ts_ns);
        if !matches!(
            ev.body,
            Body::ProcInfo(_) | Body::Drops(_) | Body::RecorderGap(_) | Body::Tick
        ) {
            *self.events.entry(ev.kind_name()).or_default() += 1;
        }
        let comm = ev.comm.to_string();
        let delta = |m: &mut Model, d: i64| {
            if let Some(p) = m.proc(ev.tgid, &comm) {
                p.active = true;
                if p.exited_ns.is_none() {
                    p.open_sockets += d;
                }
            }
        };
        match &ev.body {
            Body::Drops(d) => {
                for (k, n) in &d.per_kind {
                    self.lost.insert(k.clone(), *n);
                }
            }
            Body::ProcInfo(info) => {
                let keep =
                    info.open_sockets.is_some_and(|n| n > 0) || self.procs.contains_key(&info.pid);
                if keep && let Some(p) = self.proc(info.pid, &info.comm) {
                    if !info.comm.is_empty() {
                        p.comm = info.comm.clone();
                    }
                    if let Some(n) = info.open_sockets {
                        p.open_sockets = n as i64;
                        p.baseline_sockets = n as i64;
                    }
                    p.baseline_fds = info.open_fds.map(i64::from);
                    p.fd_limit = info.nofile_limit;
                    p.at_limit = false;
                }
            }
            Body::SocketOpen(s) if s.fd >= 0 => delta(self, 1),
            Body::SocketOpen(s) if is_fd_error(s.fd) => self.fd_error(ev, &comm, ctx),
            Body::TcpAccept(a) if a.ret >= 0 => delta(self, 1),
            Body::TcpAccept(a) if is_fd_error(a.ret) => self.fd_error(ev, &comm, ctx),
            Body::SocketClose(_) | Body::ConnClose(_) => {
                delta(self, -1);
                if let Body::ConnClose(c) = &ev.body {
                    self.close_wait.remove(&c.sk);
                }
            }
            Body::ConnOpen(_) => delta(self, 1),
            Body::ConnStatus(c) => match c.status {
                conn_status::CLOSE_WAIT if ev.tgid != 0 => {
                    if let Some(p) = self.proc(ev.tgid, &comm) {
                        p.active = true;
                    }
                    if self.procs.contains_key(&ev.tgid) && self.close_wait.len() < 1 << 20 {
                        self.close_wait.insert(c.sk, ev.tgid);
                    }
                }
                conn_status::CLEARED => {
                    self.close_wait.remove(&c.sk);
                }
                _ => {}
            },
            Body::MemSample(s) => {
                let now = ev.ts_ns;
                // Samples of a process that has exited (its memory torn down after its exit
                // event) change nothing.
                if let Some(p) = self.proc(ev.tgid, &comm)
                    && p.exited_ns.is_none()
                {
                    p.active = true;
                    p.rss = Some(s.rss_bytes);
                    p.rss_points.push_back((now, s.rss_bytes));
                    while p.rss_points.len() > GROWTH_POINTS
                        || p.rss_points
                            .front()
                            .is_some_and(|(t, _)| t + GROWTH_WINDOW_NS < now)
                    {
                        p.rss_points.pop_front();
                    }
                }
            }
            Body::OomKill(o) => {
                self.oom_kills += 1;
                let victim = crate::event::Comm(o.victim_comm).to_string();
                if let Some(p) = self.proc(o.victim_pid, &victim) {
                    p.active = true;
                    p.oom_kills += 1;
                }
            }
            Body::Signal(s) if self.fatal.contains(&s.sig) && s.target_pid > 0 => {
                *self.fatal_signals.entry(s.sig).or_default() += 1;
                let target = crate::event::Comm(s.target_comm).to_string();
                if let Some(p) = self.proc(s.target_pid as u32, &target) {
                    p.active = true;
                    p.fatal_signals += 1;
                }
            }
            Body::Fork(f) => {
                // A pid reused: the old process's figures go.
                if self
                    .procs
                    .get(&f.child_pid)
                    .is_some_and(|p| p.exited_ns.is_some())
                {
                    self.procs.remove(&f.child_pid);
                    self.close_wait.retain(|_, o| *o != f.child_pid);
                }
            }
            Body::Exec(_) => {
                if let Some(p) = self.procs.get_mut(&ev.tgid) {
                    // A new program: its sockets are counted again from /proc, its memory
                    // starts over (the ProcInfo read after exec follows).
                    p.comm = comm;
                    p.rss_points.clear();
                    p.rss = None;
                }
            }
            Body::Exit(_) => {
                if let Some(p) = self.procs.get_mut(&ev.tgid) {
                    p.exited_ns = Some(ev.ts_ns);
                    p.open_sockets = 0;
                    p.baseline_sockets = 0;
                    p.baseline_fds = Some(0);
                    p.rss = None;
                    self.close_wait.retain(|_, o| *o != ev.tgid);
                }
            }
            _ => {}
        }
    }

    fn fd_error(&mut self, ev: &Event, comm: &str, _ctx: &Ctx<'_>) {
        if let Some(p) = self.proc(ev.tgid, comm) {
            p.active = true;
            p.fd_errors += 1;
            p.at_limit = true;
        }
    }

    /// A NEW or UPDATED finding from the engine.
    pub fn finding(&mut self, u: &FindingUpdate) {
        let f = &u.finding;
        if u.kind == UpdateKind::New {
            *self
                .findings
                .entry((f.kind(), f.severity.name()))
                .or_default() += 1;
            if let Some(pid) = f.pid()
                && let Some(p) = self.proc(pid, "")
            {
                p.active = true;
                p.findings += 1;
            }
        }
        if let Evidence::RestartLoop(r) = &f.evidence {
            if let Some(p) = self.proc(r.supervisor_pid, &r.supervisor_comm) {
                p.active = true;
            }
            self.restarts
                .insert((r.supervisor_pid, r.program.clone()), r.restarts);
        }
    }

    /// Forgets processes that exited more than [`LINGER_NS`] ago.
    fn expire(&mut self) {
        let now = self.now_ns;
        self.procs
            .retain(|_, p| p.exited_ns.is_none_or(|t| t + LINGER_NS >= now));
        let procs = &self.procs;
        self.restarts.retain(|(pid, _), _| procs.contains_key(pid));
        if self.procs.len() < MAX_PROCS {
            self.untracked.clear();
        }
    }

    /// The metrics as of now. `recorder`: the flight recorder's figures, when recording;
    /// `extra`: families of other components (the OTLP exporter's own counters).
    pub fn snapshot(
        &mut self,
        ctx: &Ctx<'_>,
        recorder: Option<&RecordSummary>,
        extra: Vec<Family>,
    ) -> Snapshot {
        self.expire();
        let mut fams = Vec::new();
        fams.push(Family {
            name: "tracer_build_info",
            help: "Always 1; the labels say which tracer this is.",
            kind: MetricKind::Gauge,
            samples: vec![(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1.0)],
        });
        fams.push(Family {
            name: "tracer_events_total",
            help: "Events received from the kernel (and the collector's connection statuses), per kind.",
            kind: MetricKind::Counter,
            samples: self
                .events
                .iter()
                .map(|(k, n)| (vec![("kind", (*k).to_owned())], *n as f64))
                .collect(),
        });
        fams.push(Family {
            name: "tracer_records_lost_total",
            help: "Records the kernel could not write because a ring buffer was full, per kind and ring (critical: signal, process, oom; bulk: tcp, memory).",
            kind: MetricKind::Counter,
            samples: Kind::ALL
                .iter()
                .map(|k| {
                    let n = self.lost.get(k.name()).copied().unwrap_or(0);
                    let ring = if k.is_critical() { "critical" } else { "bulk" };
                    (
                        vec![("kind", k.name().to_owned()), ("ring", ring.to_owned())],
                        n as f64,
                    )
                })
                .collect(),
        });
        let mut finding_samples: Vec<(Labels, f64)> = self
            .findings
            .iter()
            .map(|((k, s), n)| {
                (
                    vec![("kind", (*k).to_owned()), ("severity", (*s).to_owned())],
                    *n as f64,
                )
            })
            .collect();
        finding_samples.sort_by(|a, b| a.0.cmp(&b.0));
        fams.push(Family {
            name: "tracer_findings_total",
            help: "Findings raised, per kind and severity (each counted once, when first raised).",
            kind: MetricKind::Counter,
            samples: finding_samples,
        });
        fams.push(Family {
            name: "tracer_oom_kills_total",
            help: "Processes killed by the kernel's OOM killer.",
            kind: MetricKind::Counter,
            samples: vec![(vec![], self.oom_kills as f64)],
        });
        fams.push(Family {
            name: "tracer_fatal_signals_total",
            help: "Fatal signals (the analyses' fatal_signals) generated, per signal.",
            kind: MetricKind::Counter,
            samples: self
                .fatal_signals
                .iter()
                .map(|(s, n)| {
                    (
                        vec![("signal", crate::vocab::signal_name(*s).to_string())],
                        *n as f64,
                    )
                })
                .collect(),
        });
        if let Some(r) = recorder {
            let c = |name, help, v: u64| Family {
                name,
                help,
                kind: MetricKind::Counter,
                samples: vec![(vec![], v as f64)],
            };
            let g = |name, help, v: u64| Family {
                name,
                help,
                kind: MetricKind::Gauge,
                samples: vec![(vec![], v as f64)],
            };
            fams.push(c(
                "tracer_recorder_bytes_written_total",
                "Bytes the flight recorder wrote to its segment files.",
                r.bytes_written,
            ));
            fams.push(c(
                "tracer_recorder_events_written_total",
                "Records the flight recorder wrote.",
                r.events_written,
            ));
            fams.push(Family {
                name: "tracer_recorder_events_not_recorded_total",
                help: "Records the flight recorder could not store, per reason (write_error: the disk failed; queue_full: the writer fell behind).",
                kind: MetricKind::Counter,
                samples: vec![
                    (
                        vec![("reason", "write_error".to_owned())],
                        r.events_unwritten as f64,
                    ),
                    (
                        vec![("reason", "queue_full".to_owned())],
                        r.events_dropped_queue_full as f64,
                    ),
                ],
            });
            fams.push(c(
                "tracer_recorder_write_errors_total",
                "Failed writes or segment creations (the recorder retries; see the log).",
                r.write_errors,
            ));
            fams.push(c(
                "tracer_recorder_segments_created_total",
                "Segment files created by this run.",
                r.segments_created,
            ));
            fams.push(c(
                "tracer_recorder_segments_deleted_total",
                "Old segment files deleted to keep within --max-size / --max-age.",
                r.segments_deleted,
            ));
            fams.push(g(
                "tracer_recorder_segments",
                "Segment files in the output directory (closed ones; the open one is not counted).",
                r.segments_on_disk as u64,
            ));
            fams.push(g(
                "tracer_recorder_disk_bytes",
                "Bytes of the closed segment files in the output directory.",
                r.bytes_on_disk,
            ));
        }
        fams.extend(self.process_families(ctx));
        fams.extend(extra);
        Snapshot {
            families: fams,
            at_ns: self.now_ns,
        }
    }

    fn process_families(&self, ctx: &Ctx<'_>) -> Vec<Family> {
        let mut restarts: HashMap<u32, u64> = HashMap::new();
        for ((pid, _), n) in &self.restarts {
            *restarts.entry(*pid).or_default() += n;
        }
        struct Row {
            pid: u32,
            score: f64,
            values: [Option<f64>; 10],
        }
        let mut rows: Vec<Row> = self
            .procs
            .iter()
            .map(|(&pid, p)| {
                let cw = p.close_wait(pid, &self.close_wait);
                let r = restarts.get(&pid).copied().unwrap_or(0);
                let values = [
                    Some(p.open_sockets.max(0) as f64),
                    Some(cw as f64),
                    p.open_fds().map(|v| v.max(0) as f64),
                    p.fd_limit.filter(|l| *l < u64::MAX).map(|l| l as f64),
                    Some(p.fd_errors as f64),
                    p.rss.map(|v| v as f64),
                    p.growth().map(|g| g.round()),
                    Some(p.oom_kills as f64),
                    Some(p.fatal_signals as f64),
                    Some(r as f64),
                ];
                let score = p.findings as f64 * 1e12
                    + p.oom_kills as f64 * 1e10
                    + (p.fatal_signals + r) as f64 * 1e9
                    + (cw + p.fd_errors) as f64 * 1e6
                    + p.open_sockets.max(0) as f64 * 1e3
                    + p.rss.unwrap_or(0) as f64 / (1u64 << 20) as f64;
                Row { pid, score, values }
            })
            .filter(|r| r.score > 0.0)
            .filter(|r| self.procs.get(&r.pid).is_some_and(|p| p.active))
            .collect();
        rows.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.pid.cmp(&b.pid)));
        let rest = rows.split_off(rows.len().min(self.top));
        let mut other = [None::<f64>; 10];
        for r in &rest {
            for (o, v) in other.iter_mut().zip(r.values) {
                // The fd limit does not add up: the other processes' largest is shown.
                if let Some(v) = v {
                    *o = Some(o.unwrap_or(0.0) + v);
                }
            }
        }
        if let Some(l) = rest.iter().filter_map(|r| r.values[3]).reduce(f64::max) {
            other[3] = Some(l);
        }
        const SPECS: [(&str, &str, MetricKind); 10] = [
            (
                "tracer_process_open_sockets",
                "Open sockets of the process (its /proc count when first seen, then the kernel's opens and closes).",
                MetricKind::Gauge,
            ),
            (
                "tracer_process_close_wait_sockets",
                "Sockets of the process that the peer closed and it did not (CLOSE_WAIT for a second or more).",
                MetricKind::Gauge,
            ),
            (
                "tracer_process_open_fds",
                "Open file descriptors: the /proc count when first seen plus sockets opened minus closed since (at the limit after EMFILE).",
                MetricKind::Gauge,
            ),
            (
                "tracer_process_fd_limit",
                "The process's soft RLIMIT_NOFILE.",
                MetricKind::Gauge,
            ),
            (
                "tracer_process_fd_errors_total",
                "accept()/socket() calls of the process that failed with EMFILE or ENFILE.",
                MetricKind::Counter,
            ),
            (
                "tracer_process_rss_bytes",
                "Resident memory of the process, from its latest memory sample.",
                MetricKind::Gauge,
            ),
            (
                "tracer_process_rss_growth_bytes_per_second",
                "RSS growth fitted over the process's samples of the last 30 s.",
                MetricKind::Gauge,
            ),
            (
                "tracer_process_oom_kills_total",
                "Times the process was killed by the OOM killer.",
                MetricKind::Counter,
            ),
            (
                "tracer_process_fatal_signals_received_total",
                "Fatal signals sent to the process.",
                MetricKind::Counter,
            ),
            (
                "tracer_process_restarts_total",
                "Restarts of programs this process supervises (from restart_loop findings).",
                MetricKind::Counter,
            ),
        ];
        let mut fams: Vec<Family> = SPECS
            .iter()
            .map(|(name, help, kind)| Family {
                name,
                help,
                kind: *kind,
                samples: Vec::new(),
            })
            .collect();
        for r in &rows {
            let labels = self.labels(r.pid, ctx);
            for (f, v) in fams.iter_mut().zip(r.values) {
                if let Some(v) = v {
                    f.samples.push((labels.clone(), v));
                }
            }
        }
        if !rest.is_empty() {
            let labels: Labels = vec![
                ("pid", "other".to_owned()),
                ("comm", "other".to_owned()),
                ("unit", String::new()),
                ("container", String::new()),
                ("pod_uid", String::new()),
            ];
            for (f, v) in fams.iter_mut().zip(other) {
                if let Some(v) = v {
                    f.samples.push((labels.clone(), v));
                }
            }
        }
        fams.push(Family {
            name: "tracer_process_series_aggregated",
            help: "Processes folded into the pid=\"other\" series (beyond --metrics-top).",
            kind: MetricKind::Gauge,
            samples: vec![(vec![], rest.len() as f64)],
        });
        fams.push(Family {
            name: "tracer_processes_tracked",
            help: "Processes the metrics follow (live, or exited less than 2 minutes ago).",
            kind: MetricKind::Gauge,
            samples: vec![(vec![], self.procs.len() as f64)],
        });
        fams
    }

    fn labels(&self, pid: u32, ctx: &Ctx<'_>) -> Labels {
        let entry = ctx.procs.get(pid);
        let comm = match entry {
            Some(e) if !e.comm.is_empty() => e.comm.clone(),
            _ => self
                .procs
                .get(&pid)
                .map(|p| p.comm.clone())
                .unwrap_or_default(),
        };
        let w = entry.and_then(|e| e.workload.as_ref());
        vec![
            ("pid", pid.to_string()),
            ("comm", comm),
            ("unit", w.and_then(|w| w.unit.clone()).unwrap_or_default()),
            (
                "container",
                w.and_then(|w| w.container_short().map(str::to_owned))
                    .unwrap_or_default(),
            ),
            (
                "pod_uid",
                w.and_then(|w| w.pod_uid.clone()).unwrap_or_default(),
            ),
        ]
    }
}

fn is_fd_error(ret: i32) -> bool {
    ret == -libc::EMFILE || ret == -libc::ENFILE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::testutil::Stream,
        attribution::Workload,
        event::{Comm, Drops},
    };
    use tracer_common::tcp::state;

    fn run(s: &mut Stream, top: usize) -> Snapshot {
        let mut m = Model::new(top, vec![1, 2, 3, 6, 9, 15]);
        let ctx = Ctx {
            procs: &s.procs,
            host: &s.host,
        };
        for ev in &s.events {
            m.observe(ev, &ctx);
        }
        for u in s.engine.take_updates() {
            m.finding(&u);
        }
        m.snapshot(&ctx, None, Vec::new())
    }

    #[test]
    fn per_process_figures_labels_and_counters() {
        let mut s = Stream::new();
        s.at(0).proc_info(100, 1, "proxy", |i| {
            i.open_sockets = Some(2);
            i.open_fds = Some(5);
            i.nofile_limit = Some(64);
            i.workload = Some(Workload {
                unit: Some("proxy.service".into()),
                ..Workload::default()
            });
        });
        for fd in 10..20 {
            s.accept(100, "proxy", fd, 8080);
        }
        s.socket_close(100, "proxy", 10);
        s.conn_status(
            100,
            "proxy",
            1,
            conn_status::CLOSE_WAIT,
            0,
            state::CLOSE_WAIT,
            1,
            8080,
            5000,
        );
        s.conn_status(
            100,
            "proxy",
            2,
            conn_status::CLOSE_WAIT,
            0,
            state::CLOSE_WAIT,
            1,
            8080,
            5001,
        );
        s.at(500).conn_status(
            100,
            "proxy",
            2,
            conn_status::CLEARED,
            0,
            state::CLOSE_WAIT,
            1,
            8080,
            5001,
        );
        s.at(0).mem(100, "proxy", 10 << 20);
        s.at(1000).mem(100, "proxy", 20 << 20);
        s.at(2000).mem(100, "proxy", 30 << 20);
        s.accept_failed(100, "proxy", libc::EMFILE, 8080);
        s.signal(50, "monit", 15, 0, 100, "proxy");
        s.signal(50, "monit", 17, 0, 100, "proxy"); // SIGCHLD: not fatal
        s.oom(200, "ruby", 200, "ruby", 1 << 17);
        s.feed(Event {
            ts_ns: s.events.last().unwrap().ts_ns,
            cpu: 0,
            tgid: 1,
            tid: 1,
            uid: 0,
            cgroup_id: 0,
            comm: Comm::new("tracer"),
            body: Body::Drops(Box::new(Drops {
                per_kind: vec![("mem_sample".into(), 7), ("signal".into(), 0)],
            })),
        });
        let snap = run(&mut s, 20);
        let p = [("pid", "100"), ("comm", "proxy"), ("unit", "proxy.service")];
        assert_eq!(snap.value("tracer_process_open_sockets", &p), Some(11.0));
        assert_eq!(
            snap.value("tracer_process_close_wait_sockets", &p),
            Some(1.0)
        );
        // At the limit after EMFILE, whatever the estimate.
        assert_eq!(snap.value("tracer_process_open_fds", &p), Some(64.0));
        assert_eq!(snap.value("tracer_process_fd_limit", &p), Some(64.0));
        assert_eq!(snap.value("tracer_process_fd_errors_total", &p), Some(1.0));
        assert_eq!(
            snap.value("tracer_process_rss_bytes", &p),
            Some((30 << 20) as f64)
        );
        assert_eq!(
            snap.value("tracer_process_rss_growth_bytes_per_second", &p),
            Some((10 << 20) as f64)
        );
        assert_eq!(
            snap.value("tracer_process_fatal_signals_received_total", &p),
            Some(1.0)
        );
        assert_eq!(
            snap.value("tracer_process_oom_kills_total", &[("pid", "200")]),
            Some(1.0)
        );
        assert_eq!(snap.value("tracer_oom_kills_total", &[]), Some(1.0));
        assert_eq!(
            snap.value("tracer_fatal_signals_total", &[("signal", "SIGTERM")]),
            Some(1.0)
        );
        assert_eq!(
            snap.value(
                "tracer_records_lost_total",
                &[("kind", "mem_sample"), ("ring", "bulk")]
            ),
            Some(7.0)
        );
        assert_eq!(
            snap.value(
                "tracer_records_lost_total",
                &[("kind", "signal"), ("ring", "critical")]
            ),
            Some(0.0),
            "every kind has its loss counter, zero included"
        );
        assert_eq!(
            snap.value("tracer_events_total", &[("kind", "tcp_accept")]),
            Some(11.0)
        );
        // Finding counters: the fd_exhaustion raised by the EMFILE.
        assert!(
            snap.value(
                "tracer_findings_total",
                &[("kind", "fd_exhaustion"), ("severity", "critical")]
            )
            .is_some_and(|v| v >= 1.0),
            "{:?}",
            snap.family("tracer_findings_total")
        );
        // The encoded text carries it all.
        let text = crate::metrics::prometheus::encode(&snap);
        assert!(text.contains("tracer_process_open_sockets{pid=\"100\",comm=\"proxy\",unit=\"proxy.service\",container=\"\",pod_uid=\"\"} 11"), "{text}");
    }

    #[test]
    fn cardinality_is_bounded_top_n_and_the_rest_summed() {
        let mut s = Stream::new();
        for pid in 1000..1030u32 {
            s.proc_info(pid, 1, "worker", |i| i.open_sockets = Some(pid - 1000));
            s.accept(pid, "worker", 9, 80);
        }
        // Seen in the /proc snapshot only (outside the filters, or idle): no series.
        s.proc_info(5000, 1, "idle", |i| i.open_sockets = Some(1000));
        let snap = run(&mut s, 5);
        let f = snap.family("tracer_process_open_sockets").unwrap();
        assert_eq!(f.samples.len(), 6, "5 processes and one 'other'");
        // The five with the most sockets, highest first.
        let pids: Vec<&str> = f
            .samples
            .iter()
            .map(|(l, _)| l.iter().find(|(k, _)| *k == "pid").unwrap().1.as_str())
            .collect();
        assert_eq!(pids, ["1029", "1028", "1027", "1026", "1025", "other"]);
        // 1..=25 summed in "other".
        assert_eq!(
            snap.value("tracer_process_open_sockets", &[("pid", "other")]),
            Some(325.0)
        );
        assert_eq!(
            snap.value("tracer_process_series_aggregated", &[]),
            Some(25.0)
        );
    }

    #[test]
    fn exited_processes_linger_then_go_and_the_table_is_bounded() {
        let mut s = Stream::new();
        s.at(0).oom(7, "hog", 7, "hog", 1024);
        s.signal(1, "init", 15, 0, 7, "hog").exit(7, "hog", 9);
        // The kernel tears its memory down after the exit event: a late sample.
        s.mem(7, "hog", 1 << 20);
        s.at(60_000).tick();
        let snap = run(&mut s, 20);
        assert_eq!(
            snap.value("tracer_process_oom_kills_total", &[("pid", "7")]),
            Some(1.0)
        );
        assert_eq!(
            snap.value(
                "tracer_process_fatal_signals_received_total",
                &[("pid", "7")]
            ),
            Some(1.0)
        );
        assert_eq!(
            snap.value("tracer_process_rss_bytes", &[("pid", "7")]),
            None
        );
        let mut s = Stream::new();
        s.at(0).oom(7, "hog", 7, "hog", 1024).exit(7, "hog", 9);
        s.at(LINGER_NS / 1_000_000 + 1000).tick();
        let snap = run(&mut s, 20);
        assert_eq!(
            snap.value("tracer_process_oom_kills_total", &[("pid", "7")]),
            None
        );
        assert_eq!(
            snap.value("tracer_oom_kills_total", &[]),
            Some(1.0),
            "host total stays"
        );

        let mut m = Model::new(20, vec![]);
        let s = Stream::new();
        let ctx = Ctx {
            procs: &s.procs,
            host: &s.host,
        };
        for pid in 1..(MAX_PROCS as u32 + 5000) {
            m.proc(pid, "x");
        }
        assert_eq!(m.procs.len(), MAX_PROCS);
        assert!(m.untracked.len() <= MAX_PROCS);
        let _ = m.snapshot(&ctx, None, Vec::new());
    }
}
