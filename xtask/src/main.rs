//! Project tasks: `cargo xtask bench` (overhead and throughput benchmarks, as root) and
//! `cargo xtask vm-test` (the kernel matrix: Debian's kernels booted under qemu).
use clap::{Parser, Subcommand};

mod apt;
mod bench;
mod vm;
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
    /// The kernel matrix: boots Debian's 6.1 and 6.12 kernels under qemu and checks that
    /// doctor passes and every event kind and the OOM finding arrive on each.
    VmTest(vm::VmArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Bench(a) => bench::run(a),
        Cmd::BenchWorker(a) => worker::run(a),
        Cmd::VmTest(a) => vm::run(a),
    }
}
