//! Command line: parsing, dispatch and the one place errors become a message and an exit code.
use std::{process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    live::{self, TraceArgs},
    output::{self, Format, Printer},
    pipeline::Pipeline,
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
        Command::Doctor => crate::doctor::run(),
        Command::Replay(a) => crate::dump::cmd::replay(&a).map(|()| ExitCode::SUCCESS),
        Command::Export(a) => crate::dump::cmd::export(&a).map(|()| ExitCode::SUCCESS),
        Command::Demo(a) => crate::demo::run(a),
        Command::Scenario(a) => crate::scenario::run(&a).map(|()| ExitCode::SUCCESS),
    };
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
    pipeline.add_sink(Box::new(Printer::new(format, true)));
    session.seed(&mut pipeline)?;
    let summary =
        runtime()?.block_on(session.run(&mut pipeline, args.duration, std::future::pending()))?;
    output::eprint(&summary.render());
    Ok(ExitCode::SUCCESS)
}
