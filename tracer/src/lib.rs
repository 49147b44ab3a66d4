//! tracer: an eBPF connection and memory tracer (library part, shared by the `tracer` binary,
//! the privileged tests, the benchmarks and the fuzz targets).
//!
//! The pipeline is visible in the layout: `probes` (load, attach, ring buffers) → `event`
//! (decode) → `proc_table` (enrich) → sinks: `output` (printer), `dump` (recorder),
//! `analysis` (findings).
pub mod analysis;
pub mod assets;
pub mod attribution;
pub mod cli;
pub mod conns;
pub mod demo;
pub mod doctor;
pub mod driver;
pub mod dump;
pub mod event;
pub mod filter;
pub mod host;
pub mod html;
pub mod kernel;
pub mod live;
pub mod lockstep;
pub mod metrics;
pub mod otlp;
pub mod output;
pub mod pipeline;
pub mod privilege;
pub mod probes;
pub mod proc_table;
pub mod procfs;
pub mod report;
pub mod sandbox;
pub mod scenario;
pub mod sinks;
pub mod stdout;
pub mod top;
pub mod units;
pub mod vocab;
