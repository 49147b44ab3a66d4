//! The engine: the sink that runs every analysis and tracks their findings, so that in `live`
//! a finding is raised once (NEW), then reported again only when it grew materially
//! (UPDATED), and the report gets every finding ever raised, with its latest evidence.
//!
//! Analyses are evaluated when event time crosses a multiple of the evaluation interval
//! (aligned to boot time, so live and replay evaluate at the same points), right away when an
//! analysis asks (a fatal signal, an OOM kill, the first EMFILE), and at the end of the stream.
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
};

use super::{
    Analysis, AnalysisConfig, ConfigError, Cx, Finding, Kinds, Severity,
    close_wait::CloseWaits,
    fds::FdLimits,
    memory::Runaways,
    ns,
    oom::OomKills,
    pileup::Pileups,
    resets::ResetStorms,
    restarts::RestartLoops,
    signals::SignalSources,
    sockets::SocketLeaks,
    state::State,
    stats::{Stats, Timeline},
};
use crate::{
    event::Event,
    host::HostInfo,
    pipeline::{Ctx, Sink},
};

/// Updates kept for [`Engine::take_updates`] when nobody takes them (replay, report).
const MAX_QUEUED: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    New,
    Updated,
}

impl UpdateKind {
    pub fn label(self) -> &'static str {
        match self {
            UpdateKind::New => "NEW",
            UpdateKind::Updated => "UPDATED",
        }
    }
}

/// A finding raised or materially changed, for `live` to print as it happens.
#[derive(Clone, Debug, PartialEq)]
pub struct FindingUpdate {
    pub kind: UpdateKind,
    /// Event time of the evaluation that produced it.
    pub at_ns: u64,
    pub finding: Finding,
}

struct Tracked {
    finding: Finding,
    raised_ns: u64,
    reported_magnitude: f64,
    reported_severity: Severity,
    reported_ns: u64,
}

type UpdateFn = Box<dyn FnMut(&FindingUpdate, &HostInfo) + Send>;

pub struct Engine {
    cfg: AnalysisConfig,
    analyses: Vec<Box<dyn Analysis>>,
    /// What each analysis asks for ([`Analysis::kinds`]), in the same order.
    kinds: Vec<Kinds>,
    state: State,
    stats: Stats,
    timeline: Timeline,
    tracked: BTreeMap<(&'static str, String), Tracked>,
    queue: VecDeque<FindingUpdate>,
    /// Called for each NEW/UPDATED finding: the printer, the metrics, the OTLP exporter.
    subscribers: Vec<UpdateFn>,
    interval_ns: u64,
    next_eval_ns: u64,
    update_growth: f64,
    update_interval_ns: u64,
    /// The traced host, as the pipeline last described it (for rendering times).
    host: HostInfo,
    /// Once the stream crossed a reboot: the boot its findings from then on belong to.
    boot: Option<HostInfo>,
}

/// Every analysis, with these thresholds and no state.
fn analyses(cfg: &AnalysisConfig) -> Vec<Box<dyn Analysis>> {
    vec![
        Box::new(SignalSources::new(cfg)),
        Box::new(RestartLoops::new(cfg)),
        Box::new(OomKills::new()),
        Box::new(FdLimits::new(cfg)),
        Box::new(SocketLeaks::new(cfg)),
        Box::new(CloseWaits::new(cfg)),
        Box::new(ResetStorms::new(cfg)),
        Box::new(Pileups::new(cfg)),
        Box::new(Runaways::new(cfg)),
    ]
}

impl Engine {
    /// An engine running every analysis with these thresholds.
    pub fn new(cfg: AnalysisConfig) -> Result<Engine, ConfigError> {
        cfg.validate()?;
        let analyses = analyses(&cfg);
        Ok(Engine {
            kinds: analyses.iter().map(|a| a.kinds()).collect(),
            state: State::new(cfg.mem_window_s, cfg.signal_numbers()?),
            stats: Stats::default(),
            timeline: Timeline::new(cfg.timeline_max, cfg.signal_numbers()?),
            tracked: BTreeMap::new(),
            queue: VecDeque::new(),
            subscribers: Vec::new(),
            interval_ns: cfg.eval_interval_ms.saturating_mul(1_000_000).max(1),
            next_eval_ns: 0,
            update_growth: cfg.update_growth,
            update_interval_ns: ns(cfg.update_min_interval_s),
            host: HostInfo::default(),
            boot: None,
            analyses,
            cfg,
        })
    }

    /// The stream crosses into another boot (`old` is the boot that ends, with its process
    /// table): every analysis is evaluated one last time on it, its findings are kept and say
    /// which boot they belong to, and all per-process state starts afresh, so that no finding
    /// mixes the pids of two boots.
    pub fn new_boot(&mut self, old: &Ctx<'_>, next: &HostInfo) {
        self.evaluate(old);
        let tracked = std::mem::take(&mut self.tracked);
        self.tracked = tracked
            .into_iter()
            .map(|((kind, key), mut t)| {
                if t.finding.boot.is_some() {
                    return ((kind, key), t);
                }
                t.finding.boot = Some(old.host.clone());
                // Apart from the next boot's finding about the same pid.
                ((kind, format!("{}/{key}", old.host.boot_id)), t)
            })
            .collect();
        self.analyses = analyses(&self.cfg);
        self.kinds = self.analyses.iter().map(|a| a.kinds()).collect();
        self.state.new_boot();
        self.timeline.new_boot();
        // Boot-time clocks start again from zero.
        self.next_eval_ns = 0;
        self.host = next.clone();
        self.boot = Some(next.clone());
    }

    /// Makes it shareable: the returned sink goes into the pipeline, the handle stays with the
    /// caller (for `take_updates` while live, and the report at the end).
    pub fn into_shared(self) -> (SharedEngine, Arc<Mutex<Engine>>) {
        let h = Arc::new(Mutex::new(self));
        (SharedEngine(h.clone()), h)
    }

    /// Calls `f` for each NEW/UPDATED finding as it happens, instead of queueing it. Several
    /// subscribers may be added (printer, metrics, exporters); each sees every update, in the
    /// order they were added.
    pub fn on_update(&mut self, f: impl FnMut(&FindingUpdate, &HostInfo) + Send + 'static) {
        self.subscribers.push(Box::new(f));
    }

    /// NEW/UPDATED findings since the last call (when no callback is set).
    pub fn take_updates(&mut self) -> Vec<FindingUpdate> {
        self.queue.drain(..).collect()
    }

    pub fn config(&self) -> &AnalysisConfig {
        &self.cfg
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The host the events came from (from the pipeline; a dump's own host on replay).
    pub fn host(&self) -> &HostInfo {
        &self.host
    }

    /// Event time: the latest event timestamp seen.
    pub fn now_ns(&self) -> u64 {
        self.state.now_ns
    }

    /// Every finding raised so far, with its latest evidence: most severe first, then by time.
    pub fn findings(&self) -> Vec<&Finding> {
        let mut v: Vec<&Tracked> = self.tracked.values().collect();
        v.sort_by(|a, b| {
            b.finding
                .severity
                .cmp(&a.finding.severity)
                .then(a.finding.first_seen_ns.cmp(&b.finding.first_seen_ns))
                .then(a.raised_ns.cmp(&b.raised_ns))
                .then(a.finding.kind().cmp(b.finding.kind()))
                .then(a.finding.key().cmp(&b.finding.key()))
        });
        v.into_iter().map(|t| &t.finding).collect()
    }

    /// One event (after the process table was updated with it).
    pub fn observe(&mut self, ev: &Event, ctx: &Ctx<'_>) {
        if self.next_eval_ns == 0 {
            self.next_eval_ns = next_multiple(ev.ts_ns, self.interval_ns);
            self.host = ctx.host.clone();
        } else if ev.ts_ns >= self.next_eval_ns {
            // As of just before this event: time has moved on (ages grew) even if nothing
            // happened in between.
            self.evaluate_at(ev.ts_ns.max(self.state.now_ns), ctx);
            self.next_eval_ns = next_multiple(ev.ts_ns, self.interval_ns);
        }
        self.state.apply(ev, ctx.procs);
        let cx = Cx {
            procs: ctx.procs,
            host: ctx.host,
            state: &self.state,
        };
        self.stats.observe(ev, &cx);
        self.timeline.observe(ev, &cx);
        let kind = Kinds::of(&ev.body);
        for i in 0..self.analyses.len() {
            if !self.kinds[i].meets(kind) {
                continue;
            }
            let cx = Cx {
                procs: ctx.procs,
                host: ctx.host,
                state: &self.state,
            };
            if self.analyses[i].observe(ev, &cx) {
                self.evaluate_one(i, ctx);
            }
        }
    }

    /// Evaluates every analysis now (at the latest event time).
    pub fn evaluate(&mut self, ctx: &Ctx<'_>) {
        if self.host != *ctx.host {
            self.host = ctx.host.clone();
        }
        self.evaluate_at(self.state.now_ns, ctx);
    }

    fn evaluate_at(&mut self, now: u64, ctx: &Ctx<'_>) {
        for i in 0..self.analyses.len() {
            self.evaluate_one_at(i, now, ctx);
        }
    }

    fn evaluate_one(&mut self, i: usize, ctx: &Ctx<'_>) {
        self.evaluate_one_at(i, self.state.now_ns, ctx);
    }

    fn evaluate_one_at(&mut self, i: usize, now: u64, ctx: &Ctx<'_>) {
        let cx = Cx {
            procs: ctx.procs,
            host: ctx.host,
            state: &self.state,
        };
        let found = self.analyses[i].findings(now, &cx);
        for mut f in found {
            f.workload = f
                .pid()
                .and_then(|p| ctx.procs.get(p))
                .and_then(|p| p.workload.clone());
            f.previous_names = previous_names(&f, ctx.procs);
            self.merge(f, now);
        }
    }

    fn merge(&mut self, mut f: Finding, now: u64) {
        let key = match &self.boot {
            Some(b) => {
                f.boot = Some(b.clone());
                (f.kind(), format!("{}/{}", b.boot_id, f.key()))
            }
            None => (f.kind(), f.key()),
        };
        let update = match self.tracked.get_mut(&key) {
            None => {
                self.timeline.finding(&f, now);
                self.tracked.insert(
                    key,
                    Tracked {
                        finding: f.clone(),
                        raised_ns: now,
                        reported_magnitude: f.magnitude(),
                        reported_severity: f.severity,
                        reported_ns: now,
                    },
                );
                Some(FindingUpdate {
                    kind: UpdateKind::New,
                    at_ns: now,
                    finding: f,
                })
            }
            Some(t) => {
                f.first_seen_ns = f.first_seen_ns.min(t.finding.first_seen_ns);
                f.last_seen_ns = f.last_seen_ns.max(t.finding.last_seen_ns);
                let m = f.magnitude();
                let grew = m > t.reported_magnitude
                    && m >= t.reported_magnitude * (1.0 + self.update_growth)
                    && now.saturating_sub(t.reported_ns) >= self.update_interval_ns;
                let worse = f.severity > t.reported_severity;
                // Compared only when it matters (findings are large; most evaluations report
                // nothing).
                let report = (grew || worse) && t.finding != f;
                t.finding = f;
                if report {
                    t.reported_magnitude = m;
                    t.reported_severity = t.reported_severity.max(t.finding.severity);
                    t.reported_ns = now;
                    if worse {
                        self.timeline.finding(&t.finding, now);
                    }
                    Some(FindingUpdate {
                        kind: UpdateKind::Updated,
                        at_ns: now,
                        finding: t.finding.clone(),
                    })
                } else {
                    None
                }
            }
        };
        if let Some(u) = update {
            if self.subscribers.is_empty() {
                if self.queue.len() >= MAX_QUEUED {
                    self.queue.pop_front();
                }
                self.queue.push_back(u);
            } else {
                for cb in &mut self.subscribers {
                    cb(&u, &self.host);
                }
            }
        }
    }
}

/// The earlier names of the processes a finding names, from the process table.
fn previous_names(
    f: &Finding,
    procs: &crate::proc_table::ProcTable,
) -> Vec<(&'static str, String)> {
    let culprit = f.pid().map(|p| ("previous_comm", p));
    culprit
        .into_iter()
        .chain(f.other_pids())
        .filter_map(|(field, pid)| {
            let old = procs.get(pid)?.previous_comm.clone()?;
            Some((field, old))
        })
        .collect()
}

fn next_multiple(ts: u64, interval: u64) -> u64 {
    (ts / interval).saturating_add(1).saturating_mul(interval)
}

impl Sink for Engine {
    fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        self.observe(ev, ctx);
        Ok(())
    }

    fn new_boot(&mut self, old: &Ctx<'_>, next: &HostInfo) -> anyhow::Result<()> {
        Engine::new_boot(self, old, next);
        Ok(())
    }

    fn finish(&mut self, ctx: &Ctx<'_>) -> anyhow::Result<()> {
        self.evaluate(ctx);
        Ok(())
    }
}

/// The engine as a pipeline sink, shared with whoever prints its updates or its report.
#[derive(Clone)]
pub struct SharedEngine(pub Arc<Mutex<Engine>>);

impl SharedEngine {
    fn lock(&self) -> std::sync::MutexGuard<'_, Engine> {
        // A panic elsewhere while holding the lock leaves the engine usable for the report.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sink for SharedEngine {
    fn event(&mut self, ev: &Event, raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        self.lock().event(ev, raw, ctx)
    }

    fn new_boot(&mut self, old: &Ctx<'_>, next: &HostInfo) -> anyhow::Result<()> {
        self.lock().new_boot(old, next);
        Ok(())
    }

    fn finish(&mut self, ctx: &Ctx<'_>) -> anyhow::Result<()> {
        self.lock().finish(ctx)
    }
}
