//! Command line: parsing, dispatch and the one place errors become a message and an exit code.
use std::{process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

use std::sync::{Arc, Mutex};

use crate::{
    analysis::{AnalysisArgs, Engine},
    dump::{RecordOptions, Recorder},
    live::{self, TraceArgs},
    metrics::{self, MetricsArgs},
    otlp::{self, OtlpArgs},
    output::{self, Format, Printer},
    pipeline::Pipeline,
    report, units,
};

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "eBPF connection and memory tracer: who leaks sockets, who sent the SIGTERM, who eats memory",
    propagate_version = true
)]
pub struct Cli {
    /// More diagnostics on stderr (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Stream kernel events as they happen (needs root).
    Live(LiveArgs),
    /// A full-screen table of processes (sockets, fds, CLOSE_WAIT, resets, RSS, signals,
    /// restarts) and findings, refreshed every second (needs root; --replay DUMP does not).
    Top(crate::top::TopArgs),
    /// Record everything to a bounded, rotating, crash-safe dump: a flight recorder (needs root).
    Record(RecordArgs),
    /// Findings ranked by severity with evidence, an incident timeline and distributions, from a
    /// dump (no privileges needed).
    Report(ReportCmd),
    /// Check privileges, BTF, tracefs and every tracepoint; exits non-zero if tracing is impossible.
    Doctor,
    /// Print the events of a dump as `tracer live` printed them (no privileges needed).
    Replay(crate::dump::cmd::ReplayArgs),
    /// Export the events of a dump (JSON lines).
    Export(crate::dump::cmd::ExportArgs),
    /// Reproduce the incidents tracer explains, in sandboxed processes, and report (needs root).
    Demo(crate::demo::DemoArgs),
    /// A workload of `tracer demo` (internal).
    #[command(hide = true)]
    Scenario(crate::scenario::ScenarioArgs),
    /// Writes shell completions and man pages into a directory (for packaging).
    #[command(hide = true)]
    GenerateAssets(crate::assets::GenerateArgs),
}

#[derive(Args, Debug)]
pub struct LiveArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Stop after this long (e.g. 30s, 10m); default: until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub duration: Option<Duration>,
    /// Events only: no findings as they appear, no report at exit.
    #[arg(long)]
    pub no_findings: bool,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub otlp: OtlpArgs,
}

#[derive(Args, Debug)]
pub struct ReportCmd {
    /// Dump segment files, or directories of them (as written by `tracer record -o DIR`).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub report: report::ReportArgs,
    #[command(flatten)]
    pub filter: crate::dump::cmd::DumpFilterArgs,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    #[command(flatten)]
    pub dump: RecordOptions,
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Also print events and findings as `tracer live` does.
    #[arg(long)]
    pub print: bool,
    /// With --print: JSON lines.
    #[arg(long, requires = "print")]
    pub json: bool,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub otlp: OtlpArgs,
}

/// Adds the analyses to a pipeline: NEW/UPDATED findings are printed as they appear; the
/// returned handle gives the report at the end.
pub fn add_findings(
    pipeline: &mut Pipeline,
    args: &AnalysisArgs,
    json: bool,
) -> anyhow::Result<Arc<Mutex<Engine>>> {
    add_engine(pipeline, args, Some(json))
}

/// Adds the analyses to a pipeline; `print`: NEW/UPDATED findings are printed (as JSON lines
/// with `Some(true)`), None: they only go to subscribers (metrics, exporters).
pub fn add_engine(
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

/// What the fleet outputs started and must stay alive for the session: the metrics endpoint
/// and the OTLP exporter.
pub struct FleetOutputs {
    pub metrics: metrics::Attached,
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

/// The fleet outputs of `live`, `record` (and `top`): the metrics endpoint and the OTLP
/// exporter.
pub fn add_fleet_outputs(
    pipeline: &mut Pipeline,
    metrics_args: &MetricsArgs,
    otlp_args: &OtlpArgs,
    analysis: &AnalysisArgs,
    engine: Option<&Arc<Mutex<Engine>>>,
    recorder: Option<Arc<Mutex<crate::dump::RecordSummary>>>,
) -> anyhow::Result<FleetOutputs> {
    let fatal = analysis.load()?.signal_numbers()?;
    let mut exporters = Vec::new();
    let mut exporter = None;
    if let Some(s) = otlp::start(pipeline, otlp_args, engine)? {
        output::eprint(&format!("tracer: exporting OTLP to {}", s.endpoints));
        exporters.push(s.publisher);
        exporter = Some(s.exporter);
    }
    let attached = metrics::attach(pipeline, metrics_args, engine, recorder, fatal, exporters)?;
    if let Some(a) = attached.addr {
        output::eprint(&format!("tracer: metrics at http://{a}/metrics"));
    }
    Ok(FleetOutputs {
        metrics: attached,
        otlp: exporter,
    })
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRACER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("tracer={default}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Live(args) => run_live(args),
        Command::Record(args) => run_record(args),
        Command::Top(a) => crate::top::run(a),
        Command::Report(args) => run_report(args),
        Command::Doctor => crate::doctor::run(),
        Command::Replay(a) => crate::dump::cmd::replay(&a).map(|()| ExitCode::SUCCESS),
        Command::Export(a) => crate::dump::cmd::export(&a).map(|()| ExitCode::SUCCESS),
        Command::Demo(a) => crate::demo::run(a),
        Command::Scenario(a) => crate::scenario::run(&a).map(|()| ExitCode::SUCCESS),
        Command::GenerateAssets(a) => crate::assets::generate(&a).map(|()| ExitCode::SUCCESS),
    };
    output::flush_stdout();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_live(args: LiveArgs) -> anyhow::Result<ExitCode> {
    let (mut session, host, filter) = live::start(&args.trace)?;
    let mut pipeline = Pipeline::new(host, filter);
    let format = if args.json {
        Format::Json
    } else {
        Format::Human
    };
    pipeline.add_sink(Box::new(Printer::new(format, false)));
    let engine = if args.no_findings {
        None
    } else {
        Some(add_findings(&mut pipeline, &args.analysis, args.json)?)
    };
    let mut fleet = add_fleet_outputs(
        &mut pipeline,
        &args.metrics,
        &args.otlp,
        &args.analysis,
        engine.as_ref(),
        None,
    )?;
    session.seed(&mut pipeline)?;
    let summary =
        runtime()?.block_on(session.run(&mut pipeline, args.duration, std::future::pending()))?;
    fleet.finish();
    // The summary for people: the findings report (JSON consumers have had every finding as a
    // line already).
    if let (Some(engine), false) = (engine, args.json)
        && let Ok(engine) = engine.lock()
    {
        output::print("");
        output::print(report::text(&engine, &pipeline.host).trim_end());
    }
    output::eprint(&summary.render());
    Ok(ExitCode::SUCCESS)
}

fn run_report(args: ReportCmd) -> anyhow::Result<ExitCode> {
    if let Some(out) = &args.report.html {
        crate::html::run(&args.paths, &args.filter, &args.report, out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let engine = Engine::new(args.report.analysis.load()?)?;
    let (sink, engine) = engine.into_shared();
    let outcome = crate::dump::cmd::run(&args.paths, &args.filter, vec![Box::new(sink)])?;
    let engine = engine
        .lock()
        .map_err(|_| anyhow::anyhow!("analysis engine poisoned"))?;
    report::print(&engine, &args.report);
    outcome.into_result()?;
    Ok(ExitCode::SUCCESS)
}

fn run_record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let (mut session, host, filter) = live::start(&args.trace)?;
    let mut pipeline = Pipeline::new(host, filter);
    let mut recorder = Recorder::new(&args.dump, pipeline.host.clone())?;
    recorder.set_print_summary(true);
    output::eprint(&format!(
        "tracer: recording to {}",
        args.dump.output.display()
    ));
    let recorder_stats = recorder.live_stats();
    pipeline.add_sink(Box::new(recorder));
    let fleet = args.metrics.metrics.is_some() || args.otlp.otlp.is_some();
    let mut engine = None;
    if args.print {
        let format = if args.json {
            Format::Json
        } else {
            Format::Human
        };
        pipeline.add_sink(Box::new(Printer::new(format, false)));
        engine = Some(add_findings(&mut pipeline, &args.analysis, args.json)?);
    } else if fleet {
        // Findings for the metrics and the exporter, not printed.
        engine = Some(add_engine(&mut pipeline, &args.analysis, None)?);
    }
    let mut fleet = add_fleet_outputs(
        &mut pipeline,
        &args.metrics,
        &args.otlp,
        &args.analysis,
        engine.as_ref(),
        Some(recorder_stats),
    )?;
    session.seed(&mut pipeline)?;
    let summary = runtime()?.block_on(session.run(
        &mut pipeline,
        args.dump.duration,
        std::future::pending(),
    ))?;
    fleet.finish();
    output::eprint(&summary.render());
    Ok(ExitCode::SUCCESS)
}
