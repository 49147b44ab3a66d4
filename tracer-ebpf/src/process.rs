//! Process tree: fork (BTF tracepoint, to tell processes from threads), exec and exit.
use aya_ebpf::{
    helpers::generated,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    Family,
    config::FILTER_PID,
    process::{
        CGROUP_MEMORY, CGROUP_PATH_LEN, CGROUP_PATH_TRUNCATED, CGROUP_V2_HIERARCHY, CgroupAttach,
        EXEC_ARGS_LEN, EXIT_CODE_KNOWN, Exec, Exit, Fork, RLIMIT_NOFILE, Rename, Rlimit,
    },
    prog::Prog,
};

use crate::common::{
    TRACKED, conf, current, current_allowed, current_task_ptr, emit, family_enabled, field, kread,
    kread_str, off, other_allowed, read_failed, reserve, save_args, sys_arg, sys_ret, take_args,
    task_off, tracked, uread,
};

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_process_fork(Prog::sched_process_fork, &ctx);
    0
}

fn try_sched_process_fork(p: Prog, ctx: &BtfTracePointContext) -> Option<()> {
    let child: u64 = ctx.arg::<*const u8>(1) as u64;
    let child_tgid: u32 = kread(p, child, task_off!(task_tgid))?;
    let child_pid: u32 = kread(p, child, task_off!(task_pid))?;
    if child_tgid != child_pid {
        return None; // a new thread, not a process
    }
    // `--pid` follows descendants, the collector's own children included (`tracer demo`);
    // done even when the process family is not traced.
    let parent = crate::common::current_tgid();
    if conf!(filter.flags) & FILTER_PID != 0 {
        if tracked(parent) {
            let _ = TRACKED.insert(&child_tgid, &1, 0);
        } else {
            // A recycled pid of a followed process that exited: not followed any more.
            let _ = TRACKED.remove(&child_tgid);
        }
    }
    crate::fd::forked(parent, child_tgid);
    let cur = current()?;
    if !family_enabled(Family::Process) || !current_allowed(&cur) {
        return None;
    }
    emit(
        &cur,
        Fork {
            child_pid: child_tgid,
            _pad: 0,
        },
    );
    Some(())
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let _ = try_sched_process_exec(Prog::sched_process_exec, &ctx);
    0
}

fn try_sched_process_exec(p: Prog, ctx: &TracePointContext) -> Option<()> {
    // A new program image: its memory accounting starts afresh (brk base, counters).
    crate::memory::forget(crate::common::current_tgid());
    if !family_enabled(Family::Process) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    let loc: u32 = field(p, ctx, off!(exec_filename))?;
    let old_pid: u32 = field(p, ctx, off!(exec_old_pid)).unwrap_or(cur.tgid);
    let mut e = reserve::<Exec>(&cur)?;
    // SAFETY: the reserved entry is exclusively ours until submitted and sized for a
    // Record<Exec>; `reserve` wrote the header, the scalar fields are set below, and the
    // filename and args buffers are read only up to the lengths set here.
    let rec = unsafe { &mut *e.as_mut_ptr() };
    rec.payload.old_pid = old_pid;
    rec.payload._pad = 0;
    let parent: u64 = kread(p, current_task_ptr(), task_off!(task_real_parent)).unwrap_or(0);
    rec.payload.ppid = kread(p, parent, task_off!(task_tgid)).unwrap_or(0);
    rec.payload.filename_len = 0;
    rec.payload.args_len = 0;
    let src = (ctx.as_ptr_u64() + (loc & 0xffff) as u64) as *const u8;
    if let Some(n) = kread_str(p, src, &mut rec.payload.filename) {
        rec.payload.filename_len = n as u16;
    }
    // The new program's argv, from its mm (we run in the new program's context).
    let mm: u64 = kread(p, current_task_ptr(), task_off!(task_mm)).unwrap_or(0);
    let start: u64 = kread(p, mm, task_off!(mm_arg_start)).unwrap_or(0);
    let end: u64 = kread(p, mm, task_off!(mm_arg_end)).unwrap_or(0);
    if start != 0 && end > start {
        let len = core::cmp::min(end - start, EXEC_ARGS_LEN as u64) as u32;
        let n = len & (EXEC_ARGS_LEN as u32 - 1);
        let n = if len == EXEC_ARGS_LEN as u32 {
            EXEC_ARGS_LEN as u32
        } else {
            n
        };
        let dst = rec.payload.args.as_mut_ptr() as *mut core::ffi::c_void;
        // SAFETY: bpf_probe_read_user checks the user address; `dst` is the record's args buffer
        // and `n` is at most its length (EXEC_ARGS_LEN).
        if unsafe { generated::bpf_probe_read_user(dst, n, start as *const core::ffi::c_void) } == 0
        {
            rec.payload.args_len = n as u16;
        } else {
            read_failed(p);
        }
    }
    e.submit(crate::common::submit_flags::<Exec>());
    Some(())
}

trait CtxPtr {
    fn as_ptr_u64(&self) -> u64;
}
impl CtxPtr for TracePointContext {
    fn as_ptr_u64(&self) -> u64 {
        aya_ebpf::EbpfContext::as_ptr(self) as u64
    }
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = try_sched_process_exit(Prog::sched_process_exit, &ctx);
    0
}

fn try_sched_process_exit(p: Prog, ctx: &TracePointContext) -> Option<()> {
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    let (tgid, tid) = ((id >> 32) as u32, id as u32);
    // Only the end of the whole process: the last thread (group_dead), or the leader on
    // kernels without that field.
    let last = match field::<u8>(p, ctx, off!(exit_group_dead)) {
        Some(g) => g != 0,
        None => tgid == tid,
    };
    if !last {
        return None;
    }
    crate::memory::forget(tgid);
    let cur = current()?;
    let allowed = current_allowed(&cur);
    if !family_enabled(Family::Process) || !allowed {
        return None;
    }
    let code: Option<i32> = kread(p, current_task_ptr(), task_off!(task_exit_code));
    emit(
        &cur,
        Exit {
            exit_code: code.unwrap_or(0),
            flags: if code.is_some() { EXIT_CODE_KNOWN } else { 0 },
        },
    );
    Some(())
}

/// Marks a saved setrlimit/prlimit64 in ARGS (the other families use 1..=11).
const TAG_RLIMIT: u64 = 20;

/// Saves a new RLIMIT_NOFILE (read from the caller's memory now: it may change before the
/// exit) for the exit to emit if the call succeeds.
#[inline(always)]
fn rlimit_enter(p: Prog, target: u64, resource: u64, new: u64) -> Option<()> {
    if resource != RLIMIT_NOFILE as u64 || new == 0 || !family_enabled(Family::Process) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    // struct rlimit64 { rlim_cur, rlim_max } (struct rlimit has the same layout on 64-bit).
    let lim: [u64; 2] = uread(p, new)?;
    let target = if target == 0 { cur.tgid as u64 } else { target };
    save_args(cur.pid, [TAG_RLIMIT, target, lim[0], lim[1]]);
    Some(())
}

#[inline(always)]
fn rlimit_exit(p: Prog, ctx: &TracePointContext) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let args = take_args(tid)?;
    if args[0] != TAG_RLIMIT || sys_ret(p, ctx)? != 0 {
        return None;
    }
    let cur = current()?;
    emit(
        &cur,
        Rlimit {
            target_pid: args[1] as u32,
            resource: RLIMIT_NOFILE,
            soft: args[2],
            hard: args[3],
        },
    );
    Some(())
}

#[tracepoint]
pub fn sys_enter_prlimit64(ctx: TracePointContext) -> u32 {
    let p = Prog::sys_enter_prlimit64;
    // prlimit64(pid, resource, new_rlim, old_rlim); pid 0 is the caller.
    if let (Some(pid), Some(res), Some(new)) = (
        sys_arg(p, &ctx, 0),
        sys_arg(p, &ctx, 1),
        sys_arg(p, &ctx, 2),
    ) {
        let _ = rlimit_enter(p, pid & 0xffff_ffff, res, new);
    }
    0
}

#[tracepoint]
pub fn sys_exit_prlimit64(ctx: TracePointContext) -> u32 {
    let _ = rlimit_exit(Prog::sys_exit_prlimit64, &ctx);
    0
}

#[tracepoint]
pub fn sys_enter_setrlimit(ctx: TracePointContext) -> u32 {
    let p = Prog::sys_enter_setrlimit;
    // setrlimit(resource, rlim): always the caller.
    if let (Some(res), Some(new)) = (sys_arg(p, &ctx, 0), sys_arg(p, &ctx, 1)) {
        let _ = rlimit_enter(p, 0, res, new);
    }
    0
}

#[tracepoint]
pub fn sys_exit_setrlimit(ctx: TracePointContext) -> u32 {
    let _ = rlimit_exit(Prog::sys_exit_setrlimit, &ctx);
    0
}

/// `task_rename(task, comm)`: fires before the new name is copied in, so `task->comm` is still
/// the old one. exec renames through the same function: those are told apart by the new
/// program's mm, whose arguments are not laid out yet (`arg_start` 0) when exec renames.
#[btf_tracepoint(function = "task_rename")]
pub fn task_rename(ctx: BtfTracePointContext) -> i32 {
    let _ = try_task_rename(Prog::task_rename, &ctx);
    0
}

fn try_task_rename(p: Prog, ctx: &BtfTracePointContext) -> Option<()> {
    if !family_enabled(Family::Process) {
        return None;
    }
    let task: u64 = ctx.arg::<*const u8>(0) as u64;
    let comm: u64 = ctx.arg::<*const u8>(1) as u64;
    let tgid: u32 = kread(p, task, task_off!(task_tgid))?;
    let pid: u32 = kread(p, task, task_off!(task_pid))?;
    if tgid != pid {
        return None; // a thread's name, not the process's
    }
    let mm: u64 = kread(p, task, task_off!(task_mm))?;
    let arg_start: u64 = kread(p, mm, task_off!(mm_arg_start))?;
    if arg_start == 0 {
        return None; // exec (or a kernel thread: no mm)
    }
    let cur = current()?;
    let old: [u8; 16] = kread(p, task, task_off!(task_comm))?;
    let mut new = [0u8; 16];
    let _ = kread_str(p, comm as *const u8, &mut new);
    if same_comm(&old, &new) {
        return None; // stress-ng and others set the name they already have, again and again
    }
    let allowed = if tgid == cur.tgid {
        current_allowed(&cur)
    } else {
        other_allowed(tgid, &old, 0)
    };
    if !allowed {
        return None;
    }
    let mut e = reserve::<Rename>(&cur)?;
    // SAFETY: the reserved ring buffer entry is exclusively ours until submitted; every payload
    // field is written below before the submit.
    let rec = unsafe { &mut *e.as_mut_ptr() };
    rec.payload.target_pid = tgid;
    rec.payload._pad = 0;
    rec.payload.old_comm = old;
    rec.payload.new_comm = new;
    e.submit(crate::common::submit_flags::<Rename>());
    Some(())
}

/// Two comms equal up to their first NUL (the kernel pads `task->comm` with NULs; the new name
/// read here is NUL-terminated, zero-filled after).
#[inline(always)]
fn same_comm(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if a[i] != b[i] {
            return false;
        }
        if a[i] == 0 {
            return true;
        }
        i += 1;
    }
    true
}

/// `cgroup/cgroup_attach_task`: a task moved into a cgroup (runc, systemd moving a process into
/// a scope, a supervisor, the process itself). Classic tracepoint: moves are rare, and its
/// record already carries the hierarchy, the id and the path. On cgroup v1 it fires once per
/// hierarchy: only cgroup v2 and the hierarchy holding the memory controller are reported.
/// Kept when the mover or the task moved passes the filters (as for signals and OOM kills).
#[tracepoint]
pub fn cgroup_attach_task(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_attach_task(Prog::cgroup_attach_task, &ctx);
    0
}

fn try_cgroup_attach_task(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Process) {
        return None;
    }
    let hierarchy = field::<i32>(p, ctx, off!(cat_dst_root))? as u32;
    let memory = hierarchy == conf!(memory_hierarchy);
    if !memory && hierarchy != CGROUP_V2_HIERARCHY {
        return None; // another v1 hierarchy (cpu, pids, ...): the same move, told again
    }
    let cur = current()?;
    let pid = field::<i32>(p, ctx, off!(cat_pid))? as u32;
    let base = ctx.as_ptr_u64();
    let mut comm = [0u8; 16];
    if let Some(loc) = field::<u32>(p, ctx, off!(cat_comm)) {
        // __data_loc char[]: low 16 bits offset in the record, high 16 bits length.
        let _ = kread_str(p, (base + (loc & 0xffff) as u64) as *const u8, &mut comm);
    }
    if !current_allowed(&cur) && !other_allowed(pid, &comm, 0) {
        return None;
    }
    let mut e = reserve::<CgroupAttach>(&cur)?;
    // SAFETY: the reserved entry is exclusively ours until submitted and sized for a
    // Record<CgroupAttach>; `reserve` wrote the header, every scalar field is set below, and the
    // path buffer is valid only up to `path_len` (the collector clears the rest as it reads).
    let rec = unsafe { &mut *e.as_mut_ptr() };
    rec.payload.pid = pid;
    rec.payload.hierarchy = hierarchy;
    rec.payload.cgroup_id = field(p, ctx, off!(cat_dst_id)).unwrap_or(0);
    rec.payload.level = field::<i32>(p, ctx, off!(cat_dst_level)).unwrap_or(0) as u32;
    rec.payload.flags = if memory { CGROUP_MEMORY } else { 0 };
    rec.payload.path_len = 0;
    rec.payload._pad = [0; 6];
    rec.payload.comm = comm;
    if let Some(loc) = field::<u32>(p, ctx, off!(cat_dst_path)) {
        let src = (base + (loc & 0xffff) as u64) as *const u8;
        if let Some(n) = kread_str(p, src, &mut rec.payload.path) {
            rec.payload.path_len = n as u16;
        }
        // The locator's length counts the NUL.
        if (loc >> 16) as usize > CGROUP_PATH_LEN {
            rec.payload.flags |= CGROUP_PATH_TRUNCATED;
        }
    }
    e.submit(crate::common::submit_flags::<CgroupAttach>());
    Some(())
}
