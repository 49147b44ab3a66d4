//! Program ids: one per eBPF program, indexing PROG_ERRORS, the per-program count of kernel or
//! user memory reads that failed (a fault, a record shorter than its format said). A failed
//! read is not "filtered out": a non-zero count means a program lost what it was reading.
//! Ids index an array: they are dense and below [`MAX_PROG`], checked at compile time.
//! Names are the programs' function names, which userspace also attaches by. Unlike kind ids,
//! program ids are never stored: they may be renumbered.

/// Size of the PROG_ERRORS array.
pub const MAX_PROG: u32 = 64;

macro_rules! programs {
    ($($variant:ident = $id:literal,)*) => {
        /// An eBPF program, by the index of its error counter. Variants are spelt as the
        /// programs' function names, so the name printed is the name attached.
        #[allow(non_camel_case_types)]
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Prog {
            $($variant = $id,)*
        }

        impl Prog {
            pub const ALL: &[Prog] = &[$(Prog::$variant,)*];

            /// The program's function name in the eBPF object.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Prog::$variant => stringify!($variant),)*
                }
            }
        }

        const _: () = {
            let ids = [$($id),*];
            let mut i = 0;
            while i < ids.len() {
                assert!(ids[i] == i as u32, "program ids must be dense, in order, from 0");
                assert!(ids[i] < MAX_PROG, "a program id must be below MAX_PROG");
                i += 1;
            }
        };
    };
}

programs! {
    // TCP: the connection model (tracer-ebpf/src/tcp.rs).
    inet_sock_set_state_btf = 0,
    inet_sock_set_state = 1,
    tcp_send_reset = 2,
    tcp_receive_reset = 3,
    sock_recv_length_btf = 4,
    sock_recv_length = 5,
    sock_send_length_btf = 6,
    sock_send_length = 7,
    // Socket syscalls (sockets.rs).
    sys_enter_accept = 8,
    sys_exit_accept = 9,
    sys_enter_accept4 = 10,
    sys_exit_accept4 = 11,
    sys_enter_socket = 12,
    sys_exit_socket = 13,
    sys_enter_close = 14,
    sys_enter_connect = 15,
    sys_exit_connect = 16,
    sys_enter_listen = 17,
    // Socket fds from dup() and socketpair() (fd.rs).
    sys_enter_dup = 18,
    sys_exit_dup = 19,
    sys_enter_dup2 = 20,
    sys_exit_dup2 = 21,
    sys_enter_dup3 = 22,
    sys_exit_dup3 = 23,
    sys_enter_fcntl = 24,
    sys_exit_fcntl = 25,
    sys_enter_socketpair = 26,
    sys_exit_socketpair = 27,
    // Signals.
    signal_generate_btf = 28,
    signal_generate = 29,
    // Processes.
    sched_process_fork = 30,
    sched_process_exec = 31,
    sched_process_exit = 32,
    sys_enter_prlimit64 = 33,
    sys_exit_prlimit64 = 34,
    sys_enter_setrlimit = 35,
    sys_exit_setrlimit = 36,
    task_rename = 37,
    // OOM kills.
    mark_victim = 38,
    // Memory.
    rss_stat_btf = 39,
    rss_stat = 40,
    sys_exit_mmap_regs = 41,
    sys_enter_mmap = 42,
    sys_exit_mmap = 43,
    sys_enter_munmap = 44,
    sys_exit_brk = 45,
    // Processes: moves between cgroups.
    cgroup_attach_task = 46,
}
