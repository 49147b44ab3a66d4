use super::{Attach::Tracepoint, ProbeSpec};
use tracer_common::Family::Memory;

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        program: "rss_stat",
        attach: Tracepoint("kmem", "rss_stat"),
        family: Memory,
        what: "RSS (aggregated in kernel)",
    },
    ProbeSpec {
        program: "sys_enter_mmap",
        attach: Tracepoint("syscalls", "sys_enter_mmap"),
        family: Memory,
        what: "mmap()",
    },
    ProbeSpec {
        program: "sys_exit_mmap",
        attach: Tracepoint("syscalls", "sys_exit_mmap"),
        family: Memory,
        what: "mmap() results",
    },
    ProbeSpec {
        program: "sys_enter_munmap",
        attach: Tracepoint("syscalls", "sys_enter_munmap"),
        family: Memory,
        what: "munmap()",
    },
    ProbeSpec {
        program: "sys_enter_brk",
        attach: Tracepoint("syscalls", "sys_enter_brk"),
        family: Memory,
        what: "brk()",
    },
    ProbeSpec {
        program: "sys_exit_brk",
        attach: Tracepoint("syscalls", "sys_exit_brk"),
        family: Memory,
        what: "brk() results",
    },
];
