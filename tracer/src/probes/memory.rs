//! The attach table of the memory family (RSS samples, mmap, munmap, brk): which programs of
//! `tracer-ebpf/src/memory.rs` attach where.
use super::{Attach::Tracepoint, ProbeSpec};
use tracer_common::Family::Memory;

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        program: "rss_stat",
        attach: Tracepoint("kmem", "rss_stat"),
        family: Memory,
        what: "RSS (aggregated in kernel)",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sys_enter_mmap",
        attach: Tracepoint("syscalls", "sys_enter_mmap"),
        family: Memory,
        what: "mmap()",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sys_exit_mmap",
        attach: Tracepoint("syscalls", "sys_exit_mmap"),
        family: Memory,
        what: "mmap() results",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sys_enter_munmap",
        attach: Tracepoint("syscalls", "sys_enter_munmap"),
        family: Memory,
        what: "munmap()",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sys_enter_brk",
        attach: Tracepoint("syscalls", "sys_enter_brk"),
        family: Memory,
        what: "brk()",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sys_exit_brk",
        attach: Tracepoint("syscalls", "sys_exit_brk"),
        family: Memory,
        what: "brk() results",
        fallback_for: None,
    },
];
