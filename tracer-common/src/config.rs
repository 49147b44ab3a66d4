//! Load-time configuration handed to the eBPF programs as read-only globals.

pub use crate::filter::{FILTER_CGROUP, FILTER_COMM, FILTER_PID, FilterRule};

/// Option flags in [`Config::options`].
pub const OPT_SIGCHLD: u32 = 1;
/// Emit every TCP state change (`--events tcp-states`), besides the connection model.
pub const OPT_TCP_STATES: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The collector's own process: never traced.
    pub self_tgid: u32,
    /// Bit set of [`crate::Family`] values to trace.
    pub families: u32,
    /// `--pid`, `--comm`, `--cgroup`, decided by [`crate::filter::allows`].
    pub filter: FilterRule,
    /// The largest memory sample step ([`crate::memory::sample_step`]).
    pub mem_sample_bytes: u64,
    /// mmap/munmap/brk moves at least this large are single events.
    pub large_mapping_bytes: u64,
    pub options: u32,
    /// Bulk records are written without waking the collector (it drains on a short timer)
    /// until this many bytes wait in the bulk ring: a wakeup per record costs more than the
    /// record.
    pub bulk_wakeup_bytes: u32,
    /// The same for the critical ring: its records are rare, but a wakeup is an interrupt (a
    /// VM exit on virtual machines), measured at 10-20 us per fork or exec record.
    pub critical_wakeup_bytes: u32,
    /// The host's page size (`sysconf(_SC_PAGESIZE)`): `mm_struct` counts pages.
    pub page_size: u32,
    /// The cgroup hierarchy holding the memory controller (the `hierarchy` column of
    /// /proc/cgroups: a v1 hierarchy id, or 0 for cgroup v2): `cgroup_attach_task` reports
    /// moves in it and in cgroup v2 only.
    pub memory_hierarchy: u32,
    pub _pad: u32,
}

impl Config {
    pub const fn zeroed() -> Config {
        Config {
            self_tgid: 0,
            families: 0,
            filter: FilterRule::none(),
            mem_sample_bytes: 0,
            large_mapping_bytes: 0,
            options: 0,
            bulk_wakeup_bytes: 0,
            critical_wakeup_bytes: 0,
            page_size: 0,
            memory_hierarchy: 0,
            _pad: 0,
        }
    }
}

/// Where a field sits in a tracepoint record, from `/sys/kernel/tracing/events/*/*/format`.
/// `size == 0` means this kernel does not have the field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldOffset {
    pub offset: u16,
    pub size: u16,
}

impl FieldOffset {
    pub const ABSENT: FieldOffset = FieldOffset { offset: 0, size: 0 };
    pub const fn present(self) -> bool {
        self.size != 0
    }
}

/// Field offsets of every classic tracepoint the programs read. Grouped per tracepoint; the
/// collector fills them from tracefs at start-up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    // sock/inet_sock_set_state
    pub iss_skaddr: FieldOffset,
    pub iss_oldstate: FieldOffset,
    pub iss_newstate: FieldOffset,
    pub iss_sport: FieldOffset,
    pub iss_dport: FieldOffset,
    pub iss_family: FieldOffset,
    pub iss_protocol: FieldOffset,
    pub iss_saddr: FieldOffset,
    pub iss_daddr: FieldOffset,
    pub iss_saddr_v6: FieldOffset,
    pub iss_daddr_v6: FieldOffset,
    // tcp/tcp_send_reset (6.10+: saddr/daddr are 28-byte sockaddrs, no family/ports)
    pub tsr_skaddr: FieldOffset,
    pub tsr_state: FieldOffset,
    pub tsr_sport: FieldOffset,
    pub tsr_dport: FieldOffset,
    pub tsr_family: FieldOffset,
    pub tsr_saddr: FieldOffset,
    pub tsr_daddr: FieldOffset,
    pub tsr_saddr_v6: FieldOffset,
    pub tsr_daddr_v6: FieldOffset,
    /// `enum sk_rst_reason` (6.10+).
    pub tsr_reason: FieldOffset,
    // tcp/tcp_receive_reset
    pub trr_skaddr: FieldOffset,
    pub trr_sport: FieldOffset,
    pub trr_dport: FieldOffset,
    pub trr_family: FieldOffset,
    pub trr_saddr: FieldOffset,
    pub trr_daddr: FieldOffset,
    pub trr_saddr_v6: FieldOffset,
    pub trr_daddr_v6: FieldOffset,
    // sock/sock_{recv,send}_length (same layout)
    pub sl_sk: FieldOffset,
    pub sl_family: FieldOffset,
    pub sl_protocol: FieldOffset,
    pub sl_ret: FieldOffset,
    // signal/signal_generate
    pub sg_sig: FieldOffset,
    pub sg_errno: FieldOffset,
    pub sg_code: FieldOffset,
    pub sg_comm: FieldOffset,
    pub sg_pid: FieldOffset,
    pub sg_group: FieldOffset,
    pub sg_result: FieldOffset,
    // sched/sched_process_exec
    pub exec_filename: FieldOffset,
    pub exec_old_pid: FieldOffset,
    // sched/sched_process_exit
    pub exit_pid: FieldOffset,
    pub exit_group_dead: FieldOffset,
    // oom/mark_victim
    pub mv_pid: FieldOffset,
    pub mv_comm: FieldOffset,
    pub mv_total_vm: FieldOffset,
    pub mv_anon_rss: FieldOffset,
    pub mv_file_rss: FieldOffset,
    pub mv_shmem_rss: FieldOffset,
    pub mv_uid: FieldOffset,
    pub mv_pgtables: FieldOffset,
    pub mv_oom_score_adj: FieldOffset,
    // cgroup/cgroup_attach_task
    pub cat_dst_root: FieldOffset,
    pub cat_dst_id: FieldOffset,
    pub cat_dst_level: FieldOffset,
    pub cat_pid: FieldOffset,
    pub cat_dst_path: FieldOffset,
    pub cat_comm: FieldOffset,
    // kmem/rss_stat
    pub rss_curr: FieldOffset,
    pub rss_member: FieldOffset,
    pub rss_size: FieldOffset,
    // syscalls/sys_enter_*: the first syscall argument and sys_exit_*: ret. Every syscall
    // tracepoint puts args[i] at args0 + 8*i; this is checked per syscall by the collector.
    pub sys_args0: FieldOffset,
    pub sys_ret: FieldOffset,
    /// The kernel's `tcp_send_reset` reason numbers in tracer's stable numbering.
    pub tsr_reason_map: ReasonMap,
}

/// Maps the kernel's `enum sk_rst_reason` value (the index) to tracer's code
/// ([`crate::tcp::RESET_REASONS`]), built by the collector from the names in the tracepoint's
/// `print fmt` (`__print_symbolic(REC->reason, { 1, "NO_SOCKET" }, ...)`), so the record says
/// the same on every kernel and a dump replays the same anywhere. All zero (every reason
/// unknown) when the kernel has no reason field or its names could not be read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReasonMap(pub [u8; ReasonMap::LEN]);

impl ReasonMap {
    pub const LEN: usize = 64;
    /// Tracer's code for kernel value `v` (values past the table are unrecognised).
    pub fn get(&self, v: u32) -> u8 {
        match self.0.get(v as usize) {
            Some(c) => *c,
            None if v == 0 => 0,
            None => crate::tcp::RESET_REASON_UNRECOGNISED,
        }
    }
}

impl Default for ReasonMap {
    fn default() -> Self {
        ReasonMap([0; ReasonMap::LEN])
    }
}

/// Offsets inside kernel structures, from the kernel's BTF (`/sys/kernel/btf/vmlinux`), for
/// what no tracepoint carries: a process's exit code, thread-group id, memory totals and
/// arguments, and the socket behind an fd. `u32::MAX` = unknown on this kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_exit_code: u32,
    pub task_mm: u32,
    pub task_files: u32,
    pub task_real_parent: u32,
    pub task_comm: u32,
    pub mm_total_vm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_family: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub sk_protocol: u32,
    /// `inet_sock.inet_sport` (network order): the local port, still set when the socket
    /// reaches CLOSE (`skc_num` is cleared when the port is released, before that).
    pub inet_sport: u32,
    /// `mm_struct.rss_stat`: where the RSS counters start. Counter `member` (MM_FILEPAGES,
    /// MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES) is the `i64` page count at
    /// `mm_rss_stat + member * mm_rss_stride + mm_rss_count`: on 6.2+ an array of
    /// `struct percpu_counter` (the count is its approximate value, what `get_mm_counter`
    /// reads), before that `struct mm_rss_stat { atomic_long_t count[]; }` (stride 8, offset
    /// 0). All three known, or the BTF `rss_stat` program is not attached.
    pub mm_rss_stat: u32,
    pub mm_rss_stride: u32,
    pub mm_rss_count: u32,
    /// `struct pt_regs` members holding a syscall's arguments 0-5 as the task entered it,
    /// which the syscall leaves as they were: a `sys_exit` program reads its call's arguments
    /// there (`bpf_task_pt_regs`) instead of saving them at `sys_enter` (x86_64: di, si, dx,
    /// r10, r8, r9; aarch64: orig_x0, regs[1..6]).
    pub regs_arg: [u32; 6],
    /// `task_struct.cred`, `cred.uid`: a record header's uid read with plain loads.
    pub task_cred: u32,
    pub cred_uid: u32,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`: a record
    /// header's cgroup id (what `bpf_get_current_cgroup_id` returns) read with plain loads.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
}

impl TaskOffsets {
    pub const UNKNOWN: u32 = u32::MAX;
    pub const fn unknown() -> TaskOffsets {
        let u = Self::UNKNOWN;
        TaskOffsets {
            task_pid: u,
            task_tgid: u,
            task_exit_code: u,
            task_mm: u,
            task_files: u,
            task_real_parent: u,
            task_comm: u,
            mm_total_vm: u,
            mm_arg_start: u,
            mm_arg_end: u,
            files_fdt: u,
            fdtable_max_fds: u,
            fdtable_fd: u,
            file_private_data: u,
            socket_sk: u,
            skc_daddr: u,
            skc_rcv_saddr: u,
            skc_dport: u,
            skc_num: u,
            skc_family: u,
            skc_v6_daddr: u,
            skc_v6_rcv_saddr: u,
            sk_protocol: u,
            inet_sport: u,
            mm_rss_stat: u,
            mm_rss_stride: u,
            mm_rss_count: u,
            regs_arg: [u; 6],
            task_cred: u,
            cred_uid: u,
            task_cgroups: u,
            css_set_dfl_cgrp: u,
            cgroup_kn: u,
            kernfs_node_id: u,
        }
    }

    /// Whether a `sys_exit` program can read its call's arguments 1-4 from the task's saved
    /// registers.
    pub const fn regs_args_known(&self) -> bool {
        let mut i = 1;
        while i < 5 {
            if self.regs_arg[i] == Self::UNKNOWN {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Whether this kernel's verifier takes plain loads through BTF pointers the way tracer
    /// makes them (6.2 and later), told by the RSS counter stride 6.2 brought (`struct
    /// percpu_counter rss_stat[4]`, above 8 bytes): 6.1 rejects a `task_struct` member load
    /// from `bpf_get_current_task_btf` and a walk into `atomic_long_t count[4]`. The eBPF
    /// programs apply the same rule to the stride they were loaded with.
    pub const fn plain_loads(rss_stride: u32) -> bool {
        rss_stride != Self::UNKNOWN && rss_stride > 8
    }

    /// Whether the current task's ids, comm, uid and cgroup id can be read with plain loads
    /// (with [`TaskOffsets::plain_loads`]).
    pub const fn header_known(&self) -> bool {
        self.task_pid != Self::UNKNOWN
            && self.task_tgid != Self::UNKNOWN
            && self.task_comm != Self::UNKNOWN
            && self.task_cred != Self::UNKNOWN
            && self.cred_uid != Self::UNKNOWN
            && self.task_cgroups != Self::UNKNOWN
            && self.css_set_dfl_cgrp != Self::UNKNOWN
            && self.cgroup_kn != Self::UNKNOWN
            && self.kernfs_node_id != Self::UNKNOWN
    }

    /// Whether the RSS counters can be read from an `mm_struct` (see [`TaskOffsets::mm_rss_stat`]).
    pub const fn rss_counters_known(&self) -> bool {
        self.mm_rss_stat != Self::UNKNOWN
            && self.mm_rss_stride != Self::UNKNOWN
            && self.mm_rss_count != Self::UNKNOWN
    }
}

impl Default for TaskOffsets {
    fn default() -> Self {
        Self::unknown()
    }
}
