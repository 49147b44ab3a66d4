//! The attach table of the OOM family (the OOM killer's victims): which programs of
//! `tracer-ebpf/src/oom.rs` attach where.
use super::{Attach::Tracepoint, ProbeSpec};
use tracer_common::Family::Oom;

pub const PROBES: &[ProbeSpec] = &[ProbeSpec {
    program: "mark_victim",
    attach: Tracepoint("oom", "mark_victim"),
    family: Oom,
    what: "OOM kills",
    fallback_for: None,
}];
