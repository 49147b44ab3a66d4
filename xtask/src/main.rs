//! Project tasks: `cargo xtask bench` (overhead and throughput benchmarks, as root).
use clap::{Parser, Subcommand};

mod bench;
mod worker;

#[derive(Parser, Debug)]
#[command(name = "xtask", about = "tracer's project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Overhead and throughput benchmarks (root): tracer against the untraced workloads and
    /// against bpftrace doing the same hooks, capacity, memory, dump size and replay speed.
    Bench(bench::BenchArgs),
    /// A bench workload process (internal: started by `bench` from the release build).
    #[command(hide = true)]
    BenchWorker(worker::WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Bench(a) => bench::run(a),
        Cmd::BenchWorker(a) => worker::run(a),
    }
}
