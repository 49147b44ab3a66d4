//! Metrics for fleets: a Prometheus / OpenMetrics endpoint (`--metrics ADDR`) and the figures
//! the OTLP exporter sends. The pipeline side ([`MetricsSink`]) updates a [`Model`] with every
//! event and, once a second (at the collector's tick) and at the end, takes a [`Snapshot`] and
//! hands it to its publishers: the endpoint keeps the encoded text for its own thread to serve,
//! so a slow or stuck scraper never holds up the pipeline; the exporter queues it.
//!
//! Names are stable (`tracer_` prefix) and documented in the README, section "Metrics".
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use clap::Args;

use crate::{
    analysis::{Engine, FindingUpdate},
    dump::RecordSummary,
    event::{Body, Event},
    pipeline::{Ctx, Pipeline, Sink},
};

pub mod model;
pub mod prometheus;
pub mod server;

pub use model::{Family, MetricKind, Model, Snapshot};

/// The metrics options of `live`, `record` (and `top`).
#[derive(Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Serve Prometheus / OpenMetrics metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Processes with series of their own in the per-process metrics (the rest are summed
    /// into pid="other").
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub metrics_top: usize,
}

/// Something that receives every snapshot (the endpoint, an exporter).
pub type Publisher = Box<dyn FnMut(&Snapshot) + Send>;
/// Families added by other components to each snapshot (an exporter's own counters).
pub type ExtraFamilies = Box<dyn Fn() -> Vec<Family> + Send>;

/// The pipeline sink that keeps the metrics.
pub struct MetricsSink {
    model: Model,
    updates: Arc<Mutex<Vec<FindingUpdate>>>,
    recorder: Option<Arc<Mutex<RecordSummary>>>,
    publishers: Vec<Publisher>,
    extra: Vec<ExtraFamilies>,
}

/// Findings queued between two events at most (the engine raises a handful per tick).
const MAX_PENDING_UPDATES: usize = 4096;

impl MetricsSink {
    pub fn new(top: usize, fatal_signals: Vec<i32>) -> MetricsSink {
        MetricsSink {
            model: Model::new(top, fatal_signals),
            updates: Arc::new(Mutex::new(Vec::new())),
            recorder: None,
            publishers: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Subscribes to the engine's findings (counted per kind and severity, and per culprit).
    pub fn subscribe(&mut self, engine: &mut Engine) {
        let q = self.updates.clone();
        engine.on_update(move |u, _| {
            let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() < MAX_PENDING_UPDATES {
                q.push(u.clone());
            }
        });
    }

    /// The flight recorder's live figures.
    pub fn set_recorder(&mut self, stats: Arc<Mutex<RecordSummary>>) {
        self.recorder = Some(stats);
    }

    pub fn add_publisher(&mut self, p: Publisher) {
        self.publishers.push(p);
    }

    pub fn add_extra(&mut self, f: ExtraFamilies) {
        self.extra.push(f);
    }

    fn take_updates(&mut self) {
        let ups = std::mem::take(&mut *self.updates.lock().unwrap_or_else(|e| e.into_inner()));
        for u in &ups {
            self.model.finding(u);
        }
    }

    fn publish(&mut self, ctx: &Ctx<'_>) {
        self.take_updates();
        let rec = self
            .recorder
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone());
        let extra = self.extra.iter().flat_map(|f| f()).collect();
        let snap = self.model.snapshot(ctx, rec.as_ref(), extra);
        for p in &mut self.publishers {
            p(&snap);
        }
    }
}

impl Sink for MetricsSink {
    fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        self.model.observe(ev, ctx);
        if matches!(ev.body, Body::Tick) {
            self.publish(ctx);
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &Ctx<'_>) -> anyhow::Result<()> {
        self.publish(ctx);
        Ok(())
    }
}

/// What [`attach`] started: the endpoint's address (the port, when 0 was asked for).
pub struct Attached {
    pub addr: Option<SocketAddr>,
    pub server: Option<server::Server>,
}

/// Adds the metrics to a pipeline: call after the engine and recorder exist, so findings and
/// recorder figures are included. `live`, `record` (and `top`) call this with their
/// [`MetricsArgs`]; `exporters` are more publishers (OTLP). Does nothing when neither the
/// endpoint nor an exporter is wanted.
pub fn attach(
    pipeline: &mut Pipeline,
    args: &MetricsArgs,
    engine: Option<&Arc<Mutex<Engine>>>,
    recorder: Option<Arc<Mutex<RecordSummary>>>,
    fatal_signals: Vec<i32>,
    exporters: Vec<(Publisher, Option<ExtraFamilies>)>,
) -> anyhow::Result<Attached> {
    if args.metrics.is_none() && exporters.is_empty() {
        return Ok(Attached {
            addr: None,
            server: None,
        });
    }
    let mut sink = MetricsSink::new(args.metrics_top, fatal_signals);
    if let Some(e) = engine {
        sink.subscribe(&mut e.lock().unwrap_or_else(|e| e.into_inner()));
    }
    if let Some(r) = recorder {
        sink.set_recorder(r);
    }
    let mut server = None;
    let mut addr = None;
    if let Some(a) = args.metrics {
        let s = server::Server::start(a)?;
        addr = Some(s.addr());
        let text = s.text();
        sink.add_publisher(Box::new(move |snap| {
            let encoded = prometheus::encode(snap);
            *text.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(encoded);
        }));
        server = Some(s);
    }
    for (p, extra) in exporters {
        sink.add_publisher(p);
        if let Some(x) = extra {
            sink.add_extra(x);
        }
    }
    // A first snapshot right away: a scrape before the first tick gets the names.
    {
        let ctx = Ctx {
            procs: &pipeline.procs,
            host: &pipeline.host,
        };
        sink.publish(&ctx);
    }
    pipeline.add_sink(Box::new(sink));
    Ok(Attached { addr, server })
}
