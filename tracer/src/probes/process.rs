//! The attach table of the process family (fork, exec, exit, rlimit, rename, cgroup moves):
//! which programs of `tracer-ebpf/src/process.rs` attach where.
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
    // Limits set at run time (setrlimit, prlimit, `prlimit --pid`): fd_exhaustion's limit.
    ProbeSpec {
        program: "sys_enter_prlimit64",
        attach: Tracepoint("syscalls", "sys_enter_prlimit64"),
        family: Process,
        what: "prlimit64() new RLIMIT_NOFILE",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sys_exit_prlimit64",
        attach: Tracepoint("syscalls", "sys_exit_prlimit64"),
        family: Process,
        what: "prlimit64() results",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sys_enter_setrlimit",
        attach: Tracepoint("syscalls", "sys_enter_setrlimit"),
        family: Process,
        what: "setrlimit() new RLIMIT_NOFILE",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sys_exit_setrlimit",
        attach: Tracepoint("syscalls", "sys_exit_setrlimit"),
        family: Process,
        what: "setrlimit() results",
        fallback_for: None,
    },
    // BTF: the renamed task (a writer of /proc/PID/comm is not the task renamed).
    ProbeSpec {
        program: "task_rename",
        attach: BtfTracepoint("task_rename"),
        family: Process,
        what: "renames without exec (prctl PR_SET_NAME)",
        fallback_for: None,
    },
    // Moves into another cgroup after start (runc, systemd scopes, a supervisor): the OOM
    // finding's cgroup and limit follow them. Without it they are read again from /proc at
    // the process's next memory sample, too late when it is killed first.
    ProbeSpec {
        program: "cgroup_attach_task",
        attach: Tracepoint("cgroup", "cgroup_attach_task"),
        family: Process,
        what: "cgroup moves (without it an OOM finding may name the cgroup a process left)",
        fallback_for: None,
    },
];
