//! The attach table of the memory family (RSS samples, mmap, munmap, brk): which programs of
//! `tracer-ebpf/src/memory.rs` attach where.
use super::{
    Attach::{BtfTracepoint, Tracepoint},
    ProbeSpec,
};
use tracer_common::{Family::Memory, config::TaskOffsets};

/// `rss_stat` fires on every page fault: its BTF tracepoint skips the trace record the classic
/// one builds per hit, and reads the counter from the `mm_struct` instead.
pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        program: "rss_stat_btf",
        attach: BtfTracepoint("rss_stat"),
        family: Memory,
        what: "RSS (aggregated in kernel)",
        fallback_for: None,
    },
    ProbeSpec {
        program: "rss_stat",
        attach: Tracepoint("kmem", "rss_stat"),
        family: Memory,
        what: "RSS (aggregated in kernel; without BTF)",
        fallback_for: Some("rss_stat_btf"),
    },
    ProbeSpec {
        program: "sys_exit_mmap_regs",
        attach: Tracepoint("syscalls", "sys_exit_mmap"),
        family: Memory,
        what: "mmap() (its arguments from the task's saved registers)",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sys_enter_mmap",
        attach: Tracepoint("syscalls", "sys_enter_mmap"),
        family: Memory,
        what: "mmap() (its arguments saved at entry)",
        fallback_for: Some("sys_exit_mmap_regs"),
    },
    ProbeSpec {
        program: "sys_exit_mmap",
        attach: Tracepoint("syscalls", "sys_exit_mmap"),
        family: Memory,
        what: "mmap() results (with the arguments saved at entry)",
        fallback_for: Some("sys_exit_mmap_regs"),
    },
    ProbeSpec {
        program: "sys_enter_munmap",
        attach: Tracepoint("syscalls", "sys_enter_munmap"),
        family: Memory,
        what: "munmap()",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sys_exit_brk",
        attach: Tracepoint("syscalls", "sys_exit_brk"),
        family: Memory,
        what: "brk()",
        fallback_for: None,
    },
];

/// Why mmap()'s exit cannot read the call's arguments from the task's saved registers: it
/// needs where `struct pt_regs` keeps them, and plain loads through BTF pointers, which
/// verifiers before 6.2 reject the way tracer makes them (recognised by the RSS counter layout
/// 6.2 brought).
pub fn sys_exit_mmap_regs_unusable(o: &TaskOffsets) -> Option<String> {
    if !o.regs_args_known() {
        Some("where struct pt_regs keeps syscall arguments is not known for this kernel".into())
    } else if !TaskOffsets::plain_loads(o.mm_rss_stride) {
        Some("kernel before 6.2: mmap()'s arguments are saved at entry instead".into())
    } else {
        None
    }
}

/// Why the BTF `rss_stat` program cannot run on this kernel: it compares the hook's mm with
/// `task_struct.mm` and reads the counter at `mm_struct.rss_stat` (their layout from BTF).
pub fn rss_stat_btf_unusable(o: &TaskOffsets) -> Option<String> {
    if o.task_mm == TaskOffsets::UNKNOWN {
        Some("task_struct.mm not found in the kernel's BTF".into())
    } else if !o.rss_counters_known() {
        Some("mm_struct.rss_stat has no layout tracer knows in the kernel's BTF".into())
    } else {
        None
    }
}
