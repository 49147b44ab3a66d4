//! Maps, load-time globals, filters, record emission and memory reads shared by every program.
//! Every read of kernel or user memory goes through a helper here (`kread`, `field`, `sys_arg`,
//! `uread`, ...) that counts a failure in PROG_ERRORS under the calling program's id (the one
//! raw read, exec's argv, calls `read_failed` itself).
use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm,
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
        bpf_get_smp_processor_id, bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, bpf_probe_read_user, generated::bpf_get_current_task_btf,
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use tracer_common::{
    Family, Header, MAX_KIND, Payload, Record,
    config::{Config, Offsets, TaskOffsets},
    filter::{self, Rule, Subject},
    prog::{MAX_PROG, Prog},
    tcp::ConnInfo,
};

// Set by the collector at load time (EbpfLoader::set_global). Read field by field through
// `read_volatile` so the compiler neither folds the zero defaults nor copies whole structs onto
// the 512-byte stack.
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config::zeroed();
#[unsafe(no_mangle)]
// SAFETY: Offsets is plain integers; all-zero is a valid value (every field absent).
pub static OFFSETS: Offsets = unsafe { core::mem::zeroed() };
#[unsafe(no_mangle)]
pub static TASK_OFFSETS: TaskOffsets = TaskOffsets::unknown();

macro_rules! conf {
    ($($field:ident).+) => {
        // SAFETY: CONFIG is an initialised global that nothing writes after load; a
        // volatile read of one of its fields through a raw pointer is always valid.
        unsafe { core::ptr::read_volatile(&raw const $crate::common::CONFIG.$($field).+) }
    };
}
macro_rules! off {
    ($field:ident) => {
        // SAFETY: as for `conf!`: OFFSETS is an initialised, read-only global.
        unsafe { core::ptr::read_volatile(&raw const $crate::common::OFFSETS.$field) }
    };
}
macro_rules! task_off {
    ($field:ident) => {
        // SAFETY: as for `conf!`: TASK_OFFSETS is an initialised, read-only global.
        unsafe { core::ptr::read_volatile(&raw const $crate::common::TASK_OFFSETS.$field) }
    };
}
pub(crate) use {conf, off, task_off};

/// Where `struct pt_regs` keeps syscall argument `i` (0-5; [`TaskOffsets::regs_arg`]).
#[inline(always)]
pub fn regs_arg(i: usize) -> u32 {
    // SAFETY: as for `conf!`: TASK_OFFSETS is an initialised, read-only global; `i` is a
    // constant below 6 wherever this is inlined.
    unsafe { core::ptr::read_volatile(&raw const TASK_OFFSETS.regs_arg[i]) }
}

/// Per-CPU LRU lists: no global lock on the hot paths (socket(), close(), every syscall pair).
const NO_COMMON_LRU: u32 = aya_ebpf::bindings::BPF_F_NO_COMMON_LRU;

/// Signals, process tree and OOM kills: never shares space with the bulk families.
#[map]
pub static CRITICAL: RingBuf = RingBuf::with_byte_size(4 << 20, 0);
/// TCP and memory.
#[map]
pub static BULK: RingBuf = RingBuf::with_byte_size(8 << 20, 0);
/// Records lost because a ring buffer was full, per kind id.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_KIND, 0);
/// Reads that failed (a fault, or a tracepoint record shorter than its format), per program
/// ([`Prog`]): told apart from "filtered out", which is not counted.
#[map]
pub static PROG_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PROG, 0);
/// `--pid`: the processes followed, and their descendants as they fork. Entries outlive the
/// process (its sockets close, and reset, after its exit event); a pid reused by a process
/// that is not a descendant is removed when that process forks into existence.
#[map]
pub static TRACKED: LruHashMap<u32, u8> = LruHashMap::with_max_entries(65536, 0);

/// Every TCP connection the programs know of, keyed by its `struct sock`: owner (learnt in
/// process context: connect, accept, close, send/recv), open time, state, bytes and the last
/// receive. State changes update it in place and emit nothing (the connection model: a short
/// connection costs a ConnOpen and a ConnClose on each end). The collector reads it once a
/// second for connections stuck in CLOSE_WAIT or waiting for an answer. Once its socket is in
/// CLOSE and its fd closed, an entry is that socket's tombstone (CONN_CLOSED: the collector
/// skips it; a late reset still finds its owner), written over when the kernel reuses the
/// address for a new socket, which it does at once (slab objects): most connections cost no
/// insert and no delete. LRU eviction bounds the rest.
#[map]
pub static CONNS: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(65536, NO_COMMON_LRU);

/// A socket's owner, as the filters need it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Owner {
    pub tgid: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
}

/// [`SockFd::flags`]: the collector was told of this fd (a socket_open, conn_open or
/// listen), so its close is reported too. TCP stream sockets are announced only once they are
/// connected, accepted or listened on.
pub const FD_ANNOUNCED: u16 = 1;

/// Socket fds opened by socket()/accept(), keyed by (tgid << 32 | fd): close() of one of these
/// is a socket close. A closed one is left as a tombstone (`fd.rs`), written over by the next
/// socket at that number; the collector sweeps the entries of processes that are gone.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockFd {
    pub family: u16,
    pub sock_type: u16,
    pub flags: u16,
    pub _pad: u16,
    /// The connection's `struct sock` (0: not a connection).
    pub sk: u64,
}
#[map]
pub static SOCK_FDS: LruHashMap<u64, SockFd> = LruHashMap::with_max_entries(262144, NO_COMMON_LRU);

/// Arguments saved at sys_enter for the matching sys_exit, per thread (one syscall at a time).
#[map]
pub static ARGS: LruHashMap<u32, [u64; 4]> = LruHashMap::with_max_entries(16384, NO_COMMON_LRU);

/// The current task, by ids (and, on kernels where plain loads through it pass the verifier,
/// its BTF pointer): uid, cgroup and comm are read when a record is written (most hook hits
/// write nothing, e.g. rss_stat on every page fault).
#[derive(Clone, Copy)]
pub struct Task {
    pub tgid: u32,
    pub pid: u32,
    /// The task as `bpf_get_current_task_btf` returned it ([`task_loads`]), or 0: then comm,
    /// cgroup and uid come from helper calls.
    pub task: u64,
}

impl Task {
    #[inline(always)]
    pub fn comm(&self) -> [u8; 16] {
        if self.task != 0 {
            // Two plain loads; the kernel keeps `comm` NUL-padded (a rename racing this read
            // could tear it, as it could the helper's copy).
            let at = task_off!(task_comm);
            let lo = btf_read::<u64>(self.task, at).unwrap_or(0);
            let hi = btf_read::<u64>(self.task, at.wrapping_add(8)).unwrap_or(0);
            let mut comm = [0u8; 16];
            comm[..8].copy_from_slice(&lo.to_ne_bytes());
            comm[8..].copy_from_slice(&hi.to_ne_bytes());
            return comm;
        }
        bpf_get_current_comm().unwrap_or([0; 16])
    }

    /// The task's cgroup id in the default hierarchy, as `bpf_get_current_cgroup_id` gives it.
    #[inline(always)]
    pub fn cgroup_id(&self) -> u64 {
        if self.task != 0 {
            return btf_read::<u64>(self.task, task_off!(task_cgroups))
                .and_then(|css| btf_read::<u64>(css, task_off!(css_set_dfl_cgrp)))
                .and_then(|cg| btf_read::<u64>(cg, task_off!(cgroup_kn)))
                .and_then(|kn| btf_read::<u64>(kn, task_off!(kernfs_node_id)))
                .unwrap_or(0);
        }
        // SAFETY: a helper without pointer arguments.
        unsafe { bpf_get_current_cgroup_id() }
    }

    /// The task's BTF pointer: as [`current_raw`] read it, else asked now (plain loads through
    /// it only where [`plain_loads`]).
    #[inline(always)]
    pub fn btf_ptr(&self) -> u64 {
        if self.task != 0 {
            self.task
        } else {
            current_task_btf()
        }
    }

    /// The task's uid in the initial user namespace, as `bpf_get_current_uid_gid` gives it.
    #[inline(always)]
    pub fn uid(&self) -> u32 {
        if self.task != 0 {
            return btf_read::<u64>(self.task, task_off!(task_cred))
                .and_then(|cred| btf_read::<u32>(cred, task_off!(cred_uid)))
                .unwrap_or(0);
        }
        bpf_get_current_uid_gid() as u32
    }
}

/// Whether this kernel's verifier accepts plain loads through BTF pointers the way tracer makes
/// them ([`TaskOffsets::plain_loads`], 6.2 on). A constant at load, so each kernel's verifier
/// only sees one of the two paths.
#[inline(always)]
pub fn plain_loads() -> bool {
    TaskOffsets::plain_loads(task_off!(mm_rss_stride))
}

/// Whether the current task's ids, comm, uid and cgroup are read with plain loads through its
/// BTF pointer: one helper call (`bpf_get_current_task_btf`) instead of four per record.
#[inline(always)]
pub fn task_loads() -> bool {
    let u = TaskOffsets::UNKNOWN;
    plain_loads()
        && task_off!(task_pid) != u
        && task_off!(task_tgid) != u
        && task_off!(task_comm) != u
        && task_off!(task_cred) != u
        && task_off!(cred_uid) != u
        && task_off!(task_cgroups) != u
        && task_off!(css_set_dfl_cgrp) != u
        && task_off!(cgroup_kn) != u
        && task_off!(kernfs_node_id) != u
}

/// The current task as a BTF pointer (plain loads through it only where [`plain_loads`]).
#[inline(always)]
pub fn current_task_btf() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_get_current_task_btf() as u64 }
}

#[inline(always)]
pub fn option(bit: u32) -> bool {
    conf!(options) & bit != 0
}

/// Whether any of `--pid`, `--comm`, `--cgroup` is set.
#[inline(always)]
pub fn filtering() -> bool {
    conf!(filter.flags) != 0
}

#[inline(always)]
pub fn family_enabled(f: Family) -> bool {
    conf!(families) & f.bit() != 0
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
pub fn is_self(tgid: u32) -> bool {
    tgid == conf!(self_tgid)
}

/// The current task, unless it is the collector itself.
#[inline(always)]
pub fn current() -> Option<Task> {
    let t = current_raw();
    if is_self(t.tgid) { None } else { Some(t) }
}

#[inline(always)]
pub fn current_raw() -> Task {
    if task_loads() {
        let task = current_task_btf();
        // Two loads: the verifier checks each against one member.
        return Task {
            tgid: btf_read::<u32>(task, task_off!(task_tgid)).unwrap_or(0),
            pid: btf_read::<u32>(task, task_off!(task_pid)).unwrap_or(0),
            task,
        };
    }
    let id = bpf_get_current_pid_tgid();
    Task {
        tgid: (id >> 32) as u32,
        pid: id as u32,
        task: 0,
    }
}

#[inline(always)]
pub fn tracked(tgid: u32) -> bool {
    // SAFETY: only whether an entry exists is used; the value is never read.
    unsafe { TRACKED.get(&tgid).is_some() }
}

/// The loaded [`Config::filter`], read field by field.
struct LoadedRule;

impl Rule for LoadedRule {
    #[inline(always)]
    fn flags(&self) -> u32 {
        conf!(filter.flags)
    }
    #[inline(always)]
    fn cgroup_level(&self) -> u32 {
        conf!(filter.cgroup_level)
    }
    #[inline(always)]
    fn cgroup(&self) -> u64 {
        conf!(filter.cgroup)
    }
    #[inline(always)]
    fn comm(&self) -> [u8; 16] {
        conf!(filter.comm)
    }
}

/// A cgroup's ancestor at the `--cgroup` filter's level, per cgroup id, as last seen for a
/// current task: the ancestry of another task (a socket's owner, known by its cgroup id only)
/// cannot be asked of the kernel, but its owner was a current task when it was recorded.
#[map]
static CGROUP_SCOPE: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

struct Current<'a>(&'a Task);

impl Subject for Current<'_> {
    #[inline(always)]
    fn tracked(&self) -> bool {
        tracked(self.0.tgid)
    }
    #[inline(always)]
    fn comm(&self) -> [u8; 16] {
        self.0.comm()
    }
    #[inline(always)]
    fn cgroup_ancestor(&self, level: u32) -> u64 {
        // SAFETY: a helper without pointer arguments.
        let a = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        let id = self.0.cgroup_id();
        // SAFETY: the value is copied out before the map is touched again.
        if unsafe { CGROUP_SCOPE.get(&id) }.copied() != Some(a) {
            let _ = CGROUP_SCOPE.insert(&id, &a, 0);
        }
        a
    }
}

/// A task other than the current one: a signal's target (cgroup unknown: 0), a socket's owner.
struct Other<'a> {
    tgid: u32,
    comm: &'a [u8; 16],
    cgroup_id: u64,
}

impl Subject for Other<'_> {
    #[inline(always)]
    fn tracked(&self) -> bool {
        tracked(self.tgid)
    }
    #[inline(always)]
    fn comm(&self) -> [u8; 16] {
        *self.comm
    }
    #[inline(always)]
    fn cgroup_ancestor(&self, _level: u32) -> u64 {
        if self.cgroup_id == 0 {
            return 0;
        }
        // SAFETY: the value is copied out at once.
        unsafe { CGROUP_SCOPE.get(&self.cgroup_id) }
            .copied()
            .unwrap_or(0)
    }
}

/// The current task passes `--pid`, `--comm` and `--cgroup` (cgroup: the filter's cgroup or a
/// descendant of it).
#[inline(always)]
pub fn current_allowed(t: &Task) -> bool {
    filter::allows(&LoadedRule, &Current(t))
}

/// Another task (a signal's target, a socket's owner) passes the filters. Its cgroup is only
/// known for socket owners (`cgroup_id` 0 means unknown and fails a cgroup filter); a socket
/// owner's cgroup is matched with its descendants too, through [`CGROUP_SCOPE`].
#[inline(always)]
pub fn other_allowed(tgid: u32, comm: &[u8; 16], cgroup_id: u64) -> bool {
    filter::allows(
        &LoadedRule,
        &Other {
            tgid,
            comm,
            cgroup_id,
        },
    )
}

#[inline(always)]
fn count_drop(kind: u32) {
    if let Some(p) = DROPS.get_ptr_mut(kind) {
        // SAFETY: a per-CPU array value pointer is valid for the rest of this program. A
        // program nesting on this CPU (softirq) may race the increment: a rare undercount.
        unsafe { *p += 1 };
    }
}

/// The boot-clock time records are stamped with.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without pointer arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// The current task's comm and cgroup as the program has just read them (a connection's new
/// owner): a record's header takes them instead of asking the kernel twice.
#[derive(Clone, Copy)]
pub struct Known {
    pub comm: [u8; 16],
    pub cgroup_id: u64,
}

#[inline(always)]
fn header<T: Payload>(t: &Task, ts_ns: u64, known: Option<&Known>) -> Header {
    let (comm, cgroup_id) = match known {
        Some(k) => (k.comm, k.cgroup_id),
        None => (t.comm(), t.cgroup_id()),
    };
    Header {
        kind: T::KIND as u16,
        payload_len: core::mem::size_of::<T>() as u16,
        // SAFETY: a helper without pointer arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns,
        tgid: t.tgid,
        pid: t.pid,
        uid: t.uid(),
        _pad: 0,
        cgroup_id,
        comm,
    }
}

/// Reserves a record of kind `T` in the ring buffer for its family, with the header filled
/// in. A full ring buffer is counted in DROPS.
#[inline(always)]
pub fn reserve<T: Payload + 'static>(t: &Task) -> Option<RingBufEntry<Record<T>>> {
    reserve_known(t, now(), None)
}

#[inline(always)]
fn reserve_known<T: Payload + 'static>(
    t: &Task,
    ts_ns: u64,
    known: Option<&Known>,
) -> Option<RingBufEntry<Record<T>>> {
    let rb = if T::KIND.is_critical() {
        &CRITICAL
    } else {
        &BULK
    };
    match rb.reserve::<Record<T>>(0) {
        Some(mut e) => {
            // SAFETY: the reserved entry is exclusively ours and large enough for a Record<T>; the
            // header is written in place without reading the uninitialised memory.
            unsafe { (&raw mut (*e.as_mut_ptr()).header).write(header::<T>(t, ts_ns, known)) };
            Some(e)
        }
        None => {
            count_drop(T::KIND as u32);
            None
        }
    }
}

/// Flags for submitting a record of kind `T`: the collector is woken only when a quarter of
/// the ring waits; otherwise it drains both rings on a 50 ms timer. A wakeup per record costs
/// more than the record itself.
#[inline(always)]
pub fn submit_flags<T: Payload>() -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    let (waiting, threshold) = if T::KIND.is_critical() {
        (
            CRITICAL.query(BPF_RB_AVAIL_DATA as u64),
            conf!(critical_wakeup_bytes),
        )
    } else {
        (
            BULK.query(BPF_RB_AVAIL_DATA as u64),
            conf!(bulk_wakeup_bytes),
        )
    };
    if waiting >= threshold as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Writes a small record built on the stack.
#[inline(always)]
pub fn emit<T: Payload + 'static>(t: &Task, payload: T) {
    emit_known(t, now(), None, payload);
}

/// [`emit`], stamped with `ts_ns` (a [`now`] the program already read) and, when given, the
/// comm and cgroup it has just read.
#[inline(always)]
pub fn emit_known<T: Payload + 'static>(t: &Task, ts_ns: u64, known: Option<&Known>, payload: T) {
    if let Some(mut e) = reserve_known::<T>(t, ts_ns, known) {
        // SAFETY: the reserved entry is exclusively ours and large enough for a Record<T>; the
        // payload is written in place without reading the uninitialised memory.
        unsafe { (&raw mut (*e.as_mut_ptr()).payload).write(payload) };
        e.submit(submit_flags::<T>());
    }
}

/// Counts a failed read of program `p` in PROG_ERRORS. Only failure paths call it: a read that
/// succeeds costs nothing more.
#[inline(always)]
pub fn read_failed(p: Prog) {
    if let Some(c) = PROG_ERRORS.get_ptr_mut(p as u32) {
        // SAFETY: a per-CPU array value pointer is valid for the rest of this program. A
        // program nesting on this CPU (softirq) may race the increment: a rare undercount.
        unsafe { *c += 1 };
    }
}

/// The value of a read, or None with the failure counted for `p`.
#[inline(always)]
fn counted<T, E>(p: Prog, r: Result<T, E>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(_) => {
            read_failed(p);
            None
        }
    }
}

/// Reads a kernel value at `base + off`; None when the offset is unknown or the base null
/// (not counted), or when the read faults (counted for `p`).
#[inline(always)]
pub fn kread<T>(p: Prog, base: u64, off: u32) -> Option<T> {
    if off == TaskOffsets::UNKNOWN || base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address itself and returns an error on a fault; T is
    // plain data (integers, byte arrays) for which any bytes are a valid value.
    counted(p, unsafe {
        bpf_probe_read_kernel((base + off as u64) as *const T)
    })
}

/// Reads a member of a kernel object that a BTF tracepoint was handed as a typed argument (the
/// `struct sock *` of `inet_sock_set_state`, `sock_recv_length`, ...) with a plain load
/// instead of a bpf_probe_read_kernel call: the verifier knows the argument's BTF type and the
/// offset (a read-only global), checks the load against the struct's members and makes it
/// fault-safe. None when the offset is unknown or the pointer null. Only for such arguments:
/// a pointer read out of kernel memory is a plain number to the verifier and needs [`kread`].
#[inline(always)]
pub fn btf_read<T>(base: u64, off: u32) -> Option<T> {
    if off == TaskOffsets::UNKNOWN || base == 0 {
        return None;
    }
    // SAFETY: `base` is a BTF-typed pointer argument; the verifier rejects the program unless
    // `base + off` is a member of its type of T's size, and the JIT turns a fault into zero.
    Some(unsafe { core::ptr::read_volatile((base + off as u64) as *const T) })
}

/// A read of a `struct sock` member: [`btf_read`] when `BTF` (the socket is a BTF tracepoint's
/// argument), [`kread`] otherwise.
#[inline(always)]
pub fn sk_read<T, const BTF: bool>(p: Prog, sk: u64, off: u32) -> Option<T> {
    if BTF {
        btf_read(sk, off)
    } else {
        kread(p, sk, off)
    }
}

/// Reads a value from the current process's memory at `addr`; a fault is counted for `p`.
#[inline(always)]
pub fn uread<T>(p: Prog, addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_user checks the user address and returns an error on a fault; T is
    // plain data for which any bytes are a valid value.
    counted(p, unsafe { bpf_probe_read_user(addr as *const T) })
}

/// Reads a NUL-terminated kernel string at `src` into `dst`: its length without the NUL, or
/// None with the failure counted for `p`.
#[inline(always)]
pub fn kread_str(p: Prog, src: *const u8, dst: &mut [u8]) -> Option<usize> {
    // SAFETY: bpf_probe_read_kernel_str_bytes checks the address and writes at most `dst`'s
    // length.
    counted(
        p,
        unsafe { bpf_probe_read_kernel_str_bytes(src, dst) }.map(|s| s.len()),
    )
}

#[inline(always)]
pub fn current_task_ptr() -> u64 {
    // SAFETY: a helper without pointer arguments; the task pointer is only read through
    // bpf_probe_read_kernel.
    unsafe { bpf_get_current_task() }
}

/// Reads a tracepoint field; None when this kernel lacks it (not counted) or the read fails
/// (counted for `p`).
#[inline(always)]
pub fn field<T>(
    p: Prog,
    ctx: &aya_ebpf::programs::TracePointContext,
    f: tracer_common::config::FieldOffset,
) -> Option<T> {
    if f.size == 0 {
        return None;
    }
    // SAFETY: read_at goes through bpf_probe_read_kernel, which checks the address; T is plain
    // data.
    counted(p, unsafe { ctx.read_at::<T>(f.offset as usize) })
}

/// Where every kernel puts a syscall tracepoint's first argument (sys_enter) and its return
/// value (sys_exit): after the 8-byte common header and the syscall number.
const SYSCALL_FIELDS_AT: u16 = 16;

/// Reads the u64 at constant offset `at` of a classic tracepoint's record with a plain load
/// instead of a bpf_probe_read_kernel call (about 50 ns a call on the measured machine). The
/// verifier allows a direct context read only at an offset fixed in the instruction, so `at`
/// must fold to a constant where this is inlined; the load is checked against the record's
/// size when the program is attached.
#[inline(always)]
fn ctx_u64(ctx: &aya_ebpf::programs::TracePointContext, at: u16) -> u64 {
    use aya_ebpf::EbpfContext;
    // SAFETY: the context of a tracepoint program is its record, which the verifier lets a
    // program read directly at a constant offset (it rejects the program otherwise).
    unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(at as usize).cast::<u64>()) }
}

/// Reads syscall argument `i` of a sys_enter_* tracepoint. `i` is a constant at every call
/// site; the layout this kernel reports (a read-only global the verifier knows) selects the
/// direct read, so the probe-read fallback is pruned at load on kernels with the usual layout.
#[inline(always)]
pub fn sys_arg(p: Prog, ctx: &aya_ebpf::programs::TracePointContext, i: u16) -> Option<u64> {
    let base = off!(sys_args0);
    if base.size == 0 {
        return None;
    }
    if base.offset == SYSCALL_FIELDS_AT {
        return Some(ctx_u64(ctx, SYSCALL_FIELDS_AT + 8 * i));
    }
    // SAFETY: read_at goes through bpf_probe_read_kernel, which checks the address.
    counted(p, unsafe {
        ctx.read_at::<u64>((base.offset + 8 * i) as usize)
    })
}

/// The return value of a sys_exit_* tracepoint.
#[inline(always)]
pub fn sys_ret(p: Prog, ctx: &aya_ebpf::programs::TracePointContext) -> Option<i64> {
    let f = off!(sys_ret);
    if f.size == 8 && f.offset == SYSCALL_FIELDS_AT {
        return Some(ctx_u64(ctx, SYSCALL_FIELDS_AT) as i64);
    }
    field::<i64>(p, ctx, f)
}

/// Writes `v` over the entry at `key`, else inserts it. The entries of ARGS, SOCK_FDS and
/// CONNS outlive their use (a thread's saved arguments, the tombstone of a closed fd number or
/// socket) and are written over when the key comes back, which it does at once (a thread's next
/// syscall, a reused fd number or socket address): a hash insert, and the delete that made
/// room for it, each cost several lookups.
#[inline(always)]
pub fn put<K, V: Copy>(map: &LruHashMap<K, V>, key: &K, v: &V) {
    if let Some(p) = map.get_ptr_mut(key) {
        // SAFETY: a valid map value pointer for the rest of this program.
        unsafe { *p = *v };
        return;
    }
    let _ = map.insert(key, v, 0);
}

/// Saves a thread's arguments for its sys_exit, over its entry from its last syscall (a thread
/// keeps one entry while it lives; the LRU evicts those of threads gone).
#[inline(always)]
pub fn save_args(tid: u32, args: [u64; 4]) {
    put(&ARGS, &tid, &args);
}

/// At a sys_enter of a traced family: saves `tag` and syscall arguments `idx` for the sys_exit,
/// when the current task passes the filters.
#[inline(always)]
pub fn save_enter_args(
    p: Prog,
    ctx: &aya_ebpf::programs::TracePointContext,
    family: Family,
    tag: u64,
    idx: [u16; 3],
) -> Option<()> {
    if !family_enabled(family) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    save_args(
        cur.pid,
        [
            tag,
            sys_arg(p, ctx, idx[0])?,
            sys_arg(p, ctx, idx[1])?,
            sys_arg(p, ctx, idx[2])?,
        ],
    );
    Some(())
}

/// The arguments the thread's sys_enter saved, once: the entry stays, its tag cleared in place
/// (every tag is non-zero).
#[inline(always)]
pub fn take_args(tid: u32) -> Option<[u64; 4]> {
    let p = ARGS.get_ptr_mut(&tid)?;
    // SAFETY: a valid map value pointer for the rest of this program; copied out at once.
    let v = unsafe { *p };
    if v[0] == 0 {
        return None;
    }
    // SAFETY: as above.
    unsafe { (*p)[0] = 0 };
    Some(v)
}

/// Writes the entry of socket fd `key` over the one there (the tombstone an fd number closed
/// earlier left), else inserts it.
#[inline(always)]
pub fn put_sock_fd(key: u64, v: SockFd) {
    put(&SOCK_FDS, &key, &v);
}
