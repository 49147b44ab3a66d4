use super::{
    Attach::{BtfTracepoint, Tracepoint},
    ProbeSpec,
};
use tracer_common::Family::Process;

pub const PROBES: &[ProbeSpec] = &[
    // BTF tracepoint: its arguments are the task structs, which tell a new process from a new
    // thread (the classic tracepoint only has the child's thread id).
    ProbeSpec {
        program: "sched_process_fork",
        attach: BtfTracepoint("sched_process_fork"),
        family: Process,
        what: "fork",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sched_process_exec",
        attach: Tracepoint("sched", "sched_process_exec"),
        family: Process,
        what: "exec",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sched_process_exit",
        attach: Tracepoint("sched", "sched_process_exit"),
        family: Process,
        what: "exit",
        fallback_for: None,
    },
];
