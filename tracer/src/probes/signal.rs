use super::{Attach::Tracepoint, ProbeSpec};
use tracer_common::Family::Signal;

pub const PROBES: &[ProbeSpec] = &[ProbeSpec {
    program: "signal_generate",
    attach: Tracepoint("signal", "signal_generate"),
    family: Signal,
    what: "signals sent",
}];
