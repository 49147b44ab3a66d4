//! Process tree: fork (BTF tracepoint, to tell processes from threads), exec and exit.
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_str_bytes, generated::bpf_probe_read_user},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    Family,
    config::FILTER_PID,
    process::{EXEC_ARGS_LEN, EXIT_CODE_KNOWN, Exec, Exit, Fork},
};

use crate::common::{
    TRACKED, conf, current, current_allowed, current_task_ptr, emit, family_enabled, field, kread,
    off, reserve, task_off, tracked,
};

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_process_fork(&ctx);
    0
}

fn try_sched_process_fork(ctx: &BtfTracePointContext) -> Option<()> {
    let child: u64 = ctx.arg::<*const u8>(1) as u64;
    let child_tgid: u32 = kread(child, task_off!(task_tgid))?;
    let child_pid: u32 = kread(child, task_off!(task_pid))?;
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
    let _ = try_sched_process_exec(&ctx);
    0
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Option<()> {
    // A new program image: its memory accounting starts afresh (brk base, counters).
    crate::memory::forget(crate::common::current_tgid());
    if !family_enabled(Family::Process) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    let loc: u32 = field(ctx, off!(exec_filename))?;
    let old_pid: u32 = field(ctx, off!(exec_old_pid)).unwrap_or(cur.tgid);
    let mut e = reserve::<Exec>(&cur)?;
    let rec = unsafe { &mut *e.as_mut_ptr() };
    rec.payload.old_pid = old_pid;
    rec.payload._pad = 0;
    let parent: u64 = kread(current_task_ptr(), task_off!(task_real_parent)).unwrap_or(0);
    rec.payload.ppid = kread(parent, task_off!(task_tgid)).unwrap_or(0);
    rec.payload.filename_len = 0;
    rec.payload.args_len = 0;
    let src = (ctx.as_ptr_u64() + (loc & 0xffff) as u64) as *const u8;
    if let Ok(s) = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut rec.payload.filename) } {
        rec.payload.filename_len = s.len() as u16;
    }
    // The new program's argv, from its mm (we run in the new program's context).
    let mm: u64 = kread(current_task_ptr(), task_off!(task_mm)).unwrap_or(0);
    let start: u64 = kread(mm, task_off!(mm_arg_start)).unwrap_or(0);
    let end: u64 = kread(mm, task_off!(mm_arg_end)).unwrap_or(0);
    if start != 0 && end > start {
        let len = core::cmp::min(end - start, EXEC_ARGS_LEN as u64) as u32;
        let n = len & (EXEC_ARGS_LEN as u32 - 1);
        let n = if len == EXEC_ARGS_LEN as u32 {
            EXEC_ARGS_LEN as u32
        } else {
            n
        };
        let dst = rec.payload.args.as_mut_ptr() as *mut core::ffi::c_void;
        if unsafe { bpf_probe_read_user(dst, n, start as *const core::ffi::c_void) } == 0 {
            rec.payload.args_len = n as u16;
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
    let _ = try_sched_process_exit(&ctx);
    0
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Option<()> {
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    let (tgid, tid) = ((id >> 32) as u32, id as u32);
    // Only the end of the whole process: the last thread (group_dead), or the leader on
    // kernels without that field.
    let last = match field::<u8>(ctx, off!(exit_group_dead)) {
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
    let code: Option<i32> = kread(current_task_ptr(), task_off!(task_exit_code));
    emit(
        &cur,
        Exit {
            exit_code: code.unwrap_or(0),
            flags: if code.is_some() { EXIT_CODE_KNOWN } else { 0 },
        },
    );
    Some(())
}
