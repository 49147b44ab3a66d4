//! Command line: parsing, dispatch and the one place errors become a message and an exit code.
use std::{process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

use anyhow::Context as _;

use crate::{
    analysis::AnalysisArgs,
    driver::Driver,
    dump::{RecordOptions, Recorder, cmd::DumpSource},
    live::{self, TraceArgs},
    metrics::MetricsArgs,
    otlp::OtlpArgs,
    output::{self, Format},
    pipeline::Pipeline,
    report,
    sinks::{self, Findings, Spec},
    units,
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
    // Replay and report wait for their reader; live modes gave up on it already.
    output::finish_stdout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn format(json: bool) -> Format {
    if json { Format::Json } else { Format::Human }
}

fn run_live(args: LiveArgs) -> anyhow::Result<ExitCode> {
    let (mut session, host, filter) = live::start(&args.trace)?;
    let mut pipeline = Pipeline::new(host, filter);
    let mut spec = Spec::new(&args.analysis);
    spec.printer = Some(format(args.json));
    if !args.no_findings {
        spec.findings = Findings::Print { json: args.json };
    }
    spec.metrics = Some(&args.metrics);
    spec.otlp = Some(&args.otlp);
    let mut sinks = sinks::build(&mut pipeline, spec)?;
    let mut drv = Driver::new(pipeline, "from the kernel");
    session.seed(&mut drv)?;
    let summary = session.run(&mut drv, args.duration, std::future::pending())?;
    sinks.fleet.finish();
    // The summary for people: the findings report (JSON consumers have had every finding as a
    // line already).
    if let (Some(engine), false) = (sinks.engine, args.json)
        && let Ok(engine) = engine.lock()
    {
        output::print("");
        output::print(report::text(&engine, &drv.pipeline.host).trim_end());
    }
    output::eprint(&summary.render());
    Ok(ExitCode::SUCCESS)
}

fn run_report(args: ReportCmd) -> anyhow::Result<ExitCode> {
    if let Some(out) = &args.report.html {
        crate::html::run(&args.paths, &args.filter, &args.report, out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (source, mut pipeline) = DumpSource::open(&args.paths, &args.filter)?;
    let mut spec = Spec::new(&args.report.analysis);
    spec.findings = Findings::Quiet;
    let sinks = sinks::build(&mut pipeline, spec)?;
    let outcome = source.run(pipeline)?;
    let engine = sinks.engine.context("the report needs the analyses")?;
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
    let mut spec = Spec::new(&args.analysis);
    spec.recorder = Some(recorder);
    spec.metrics = Some(&args.metrics);
    spec.otlp = Some(&args.otlp);
    if args.print {
        spec.printer = Some(format(args.json));
        spec.findings = Findings::Print { json: args.json };
    } else if args.metrics.metrics.is_some() || args.otlp.otlp.is_some() {
        // Findings for the metrics and the exporter, not printed.
        spec.findings = Findings::Quiet;
    }
    let mut sinks = sinks::build(&mut pipeline, spec)?;
    let mut drv = Driver::new(pipeline, "from the kernel");
    session.seed(&mut drv)?;
    let summary = session.run(&mut drv, args.dump.duration, std::future::pending())?;
    sinks.fleet.finish();
    output::eprint(&summary.render());
    Ok(ExitCode::SUCCESS)
}
