//! Signals from `signal/signal_generate`, which runs in the sender's context.
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    Family,
    config::OPT_SIGCHLD,
    prog::Prog,
    signal::{SIGCHLD, Signal},
};

use crate::common::{
    conf, current_allowed, current_raw, emit, family_enabled, field, is_self, kread, off,
    other_allowed, task_off,
};

/// `kernel_siginfo`: si_signo, si_errno, si_code are its first three ints (ABI).
const SI_ERRNO_OFF: u32 = 4;
const SI_CODE_OFF: u32 = 8;
/// The special `info` values of the kernel's signal API.
const SEND_SIG_NOINFO: u64 = 0;
const SEND_SIG_PRIV: u64 = 1;
const SI_USER: i32 = 0;

/// The BTF tracepoint gives the target task itself, so the target is named by its process id
/// (the classic tracepoint only has the thread id, which for a signal to a multi-threaded
/// process is whichever thread was picked).
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = try_signal_generate_btf(Prog::signal_generate_btf, &ctx);
    0
}

fn try_signal_generate_btf(p: Prog, ctx: &BtfTracePointContext) -> Option<()> {
    if !family_enabled(Family::Signal) {
        return None;
    }
    let sig: i32 = ctx.arg::<i64>(0) as i32;
    if sig == SIGCHLD && conf!(options) & OPT_SIGCHLD == 0 {
        return None;
    }
    let info = ctx.arg::<*const u8>(1) as u64;
    let task = ctx.arg::<*const u8>(2) as u64;
    let cur = current_raw();
    if is_self(cur.tgid) {
        return None;
    }
    let target_pid: u32 = kread(p, task, task_off!(task_tgid))?;
    let target_comm: [u8; 16] = kread(p, task, task_off!(task_comm)).unwrap_or([0; 16]);
    if !current_allowed(&cur) && !other_allowed(target_pid, &target_comm, 0) {
        return None;
    }
    let (code, errno) = match info {
        SEND_SIG_NOINFO => (SI_USER, 0),
        SEND_SIG_PRIV => (tracer_common::signal::SI_KERNEL, 0),
        si => (
            kread(p, si, SI_CODE_OFF).unwrap_or(0),
            kread(p, si, SI_ERRNO_OFF).unwrap_or(0),
        ),
    };
    emit(
        &cur,
        Signal {
            sig,
            code,
            result: ctx.arg::<i64>(4) as i32,
            target_pid: target_pid as i32,
            group: ctx.arg::<i64>(3) as i32,
            errno,
            target_comm,
        },
    );
    Some(())
}

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let _ = try_signal_generate(Prog::signal_generate, &ctx);
    0
}

fn try_signal_generate(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Signal) {
        return None;
    }
    let sig: i32 = field(p, ctx, off!(sg_sig))?;
    // Every child exit sends SIGCHLD to its parent: noise unless asked for.
    if sig == SIGCHLD && conf!(options) & OPT_SIGCHLD == 0 {
        return None;
    }
    let cur = current_raw();
    let target_pid: i32 = field(p, ctx, off!(sg_pid)).unwrap_or(0);
    let target_comm: [u8; 16] = field(p, ctx, off!(sg_comm)).unwrap_or([0; 16]);
    if is_self(cur.tgid) {
        return None;
    }
    // A signal matters to the filter if either end of it does.
    if !current_allowed(&cur) && !other_allowed(target_pid as u32, &target_comm, 0) {
        return None;
    }
    emit(
        &cur,
        Signal {
            sig,
            code: field(p, ctx, off!(sg_code)).unwrap_or(0),
            result: field(p, ctx, off!(sg_result)).unwrap_or(0),
            target_pid,
            group: field(p, ctx, off!(sg_group)).unwrap_or(0),
            errno: field(p, ctx, off!(sg_errno)).unwrap_or(0),
            target_comm,
        },
    );
    Some(())
}
