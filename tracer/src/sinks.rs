//! The one place the sinks of every command are built (`live`, `record`, `replay`, `export`,
//! `report`, `top`, `demo`): the recorder, the printer, the analyses (printing their findings
//! or not), a command's own sinks (top's screen model, replay's statistics), and the fleet
//! outputs (the metrics endpoint, the OTLP exporter), always in that order, so that every
//! command sees the same stream in the same order: a finding is printed after the event that
//! raised it, and the fleet outputs see the analyses' updates of the same event.
use std::sync::{Arc, Mutex};

use crate::{
    analysis::{AnalysisArgs, Engine},
    dump::{RecordSummary, Recorder},
    lockstep,
    metrics::{self, MetricsArgs},
    otlp::{self, OtlpArgs},
    output::{self, Format, Printer},
    pipeline::{Pipeline, Sink},
    report,
};

/// What becomes of the analyses' findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Findings {
    /// No analyses (`--no-findings`, `export`).
    Off,
    /// Analyses whose findings go to the report, the fleet outputs and subscribers only.
    Quiet,
    /// NEW/UPDATED findings printed as they are raised (as JSON lines with `json`).
    Print { json: bool },
}

/// The sinks a command wants.
pub struct Spec<'a> {
    pub analysis: &'a AnalysisArgs,
    pub recorder: Option<Recorder>,
    /// Events printed in this format.
    pub printer: Option<Format>,
    pub findings: Findings,
    /// The command's own sinks, after the analyses.
    pub own: Vec<Box<dyn Sink>>,
    pub metrics: Option<&'a MetricsArgs>,
    pub otlp: Option<&'a OtlpArgs>,
    /// The analyses may run on a thread of their own beside the printer ([`lockstep`]): for
    /// a dump read as fast as it goes, when nothing else needs the engine during the stream.
    pub concurrent: bool,
}

impl<'a> Spec<'a> {
    /// Nothing but the analyses' thresholds: add what the command needs.
    pub fn new(analysis: &'a AnalysisArgs) -> Spec<'a> {
        Spec {
            analysis,
            recorder: None,
            printer: None,
            findings: Findings::Off,
            own: Vec::new(),
            metrics: None,
            otlp: None,
            concurrent: false,
        }
    }

    fn fleet(&self) -> bool {
        self.metrics.is_some_and(|m| m.metrics.is_some())
            || self.otlp.is_some_and(|o| o.otlp.is_some())
    }
}

/// What the built sinks hand back: the analyses (for the report at the end), and the fleet
/// outputs, which must live as long as the session.
pub struct Sinks {
    pub engine: Option<Arc<Mutex<Engine>>>,
    pub fleet: FleetOutputs,
}

/// Adds the sinks of `spec` to `pipeline`.
pub fn build(pipeline: &mut Pipeline, spec: Spec<'_>) -> anyhow::Result<Sinks> {
    let fleet = spec.fleet();
    if spec.concurrent
        && spec.findings != Findings::Off
        && spec.recorder.is_none()
        && spec.own.is_empty()
        && !fleet
    {
        let engine = add_lockstep(pipeline, spec.analysis, spec.printer, spec.findings)?;
        return Ok(Sinks {
            engine: Some(engine),
            fleet: FleetOutputs::default(),
        });
    }
    let mut recorder_stats = None;
    if let Some(r) = spec.recorder {
        recorder_stats = Some(r.live_stats());
        pipeline.add_sink(Box::new(r));
    }
    if let Some(format) = spec.printer {
        pipeline.add_sink(Box::new(Printer::new(format, false)));
    }
    let engine = match spec.findings {
        Findings::Off => None,
        Findings::Quiet => Some(add_engine(pipeline, spec.analysis, None)?),
        Findings::Print { json } => Some(add_engine(pipeline, spec.analysis, Some(json))?),
    };
    for s in spec.own {
        pipeline.add_sink(s);
    }
    let fleet = if fleet {
        add_fleet_outputs(
            pipeline,
            spec.metrics.cloned().unwrap_or_default(),
            spec.otlp.cloned().unwrap_or_default(),
            spec.analysis,
            engine.as_ref(),
            recorder_stats,
        )?
    } else {
        FleetOutputs::default()
    };
    Ok(Sinks { engine, fleet })
}

/// Adds the analyses to a pipeline; `print`: NEW/UPDATED findings are printed (as JSON lines
/// with `Some(true)`), None: they only go to subscribers (metrics, exporters).
fn add_engine(
    pipeline: &mut Pipeline,
    args: &AnalysisArgs,
    print: Option<bool>,
) -> anyhow::Result<Arc<Mutex<Engine>>> {
    let mut engine = Engine::new(args.load()?)?;
    if let Some(json) = print {
        engine.on_update(move |u, host| report::print_update(u, host, json));
    }
    let (sink, handle) = engine.into_shared();
    pipeline.add_sink(Box::new(sink));
    Ok(handle)
}

/// The printer (if any) and the analyses as one sink, the analyses on a thread of their own.
fn add_lockstep(
    pipeline: &mut Pipeline,
    args: &AnalysisArgs,
    printer: Option<Format>,
    findings: Findings,
) -> anyhow::Result<Arc<Mutex<Engine>>> {
    let mut engine = Engine::new(args.load()?)?;
    let raised = Arc::new(lockstep::Raised::default());
    if let Findings::Print { json } = findings {
        let r = raised.clone();
        engine.on_update(move |u, host| r.push(report::update_text(u, host, json)));
    }
    let engine = Arc::new(Mutex::new(engine));
    let printer = printer.map(|f| Printer::new(f, false));
    let sink = lockstep::Lockstep::start(printer, engine.clone(), raised)?;
    pipeline.add_sink(Box::new(sink));
    Ok(engine)
}

/// What the fleet outputs started and must stay alive for the session: the metrics endpoint
/// and the OTLP exporter.
#[derive(Default)]
pub struct FleetOutputs {
    pub metrics: Option<metrics::Attached>,
    pub otlp: Option<otlp::Exporter>,
}

impl FleetOutputs {
    /// At the end of the session (after the pipeline finished): the exporter's last flush,
    /// bounded, and its summary on stderr.
    pub fn finish(&mut self) {
        if let Some(s) = self.otlp.as_mut().and_then(|e| e.shutdown()) {
            output::eprint(&s.render());
        }
    }
}

/// The metrics endpoint and the OTLP exporter, fed by the analyses' updates (`engine`) and
/// the recorder's counters.
fn add_fleet_outputs(
    pipeline: &mut Pipeline,
    metrics_args: MetricsArgs,
    otlp_args: OtlpArgs,
    analysis: &AnalysisArgs,
    engine: Option<&Arc<Mutex<Engine>>>,
    recorder: Option<Arc<Mutex<RecordSummary>>>,
) -> anyhow::Result<FleetOutputs> {
    let fatal = analysis.load()?.signal_numbers()?;
    let mut exporters = Vec::new();
    let mut exporter = None;
    if let Some(s) = otlp::start(pipeline, &otlp_args, engine)? {
        output::eprint(&format!("tracer: exporting OTLP to {}", s.endpoints));
        exporters.push(s.publisher);
        exporter = Some(s.exporter);
    }
    let attached = metrics::attach(pipeline, &metrics_args, engine, recorder, fatal, exporters)?;
    if let Some(a) = attached.addr {
        output::eprint(&format!("tracer: metrics at http://{a}/metrics"));
    }
    Ok(FleetOutputs {
        metrics: Some(attached),
        otlp: exporter,
    })
}
