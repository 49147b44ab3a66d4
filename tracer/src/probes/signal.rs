//! The attach table of the signal family (signals generated and delivered): which programs of
//! `tracer-ebpf/src/signal.rs` attach where.
use super::{
    Attach::{BtfTracepoint, Tracepoint},
    ProbeSpec,
};
use tracer_common::Family::Signal;

pub const PROBES: &[ProbeSpec] = &[
    // The BTF tracepoint names the target process (not just the thread the kernel picked).
    ProbeSpec {
        program: "signal_generate_btf",
        attach: BtfTracepoint("signal_generate"),
        family: Signal,
        what: "signals sent",
        fallback_for: None,
    },
    ProbeSpec {
        program: "signal_generate",
        attach: Tracepoint("signal", "signal_generate"),
        family: Signal,
        what: "signals sent (without BTF: target thread id)",
        fallback_for: Some("signal_generate_btf"),
    },
];
