//! The `tracer` binary: everything is in the library, from [`tracer::cli::main`] on.
fn main() -> std::process::ExitCode {
    tracer::cli::main()
}
