//! Signals from `signal/signal_generate`, which runs in the sender's context.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    Family,
    config::OPT_SIGCHLD,
    signal::{SIGCHLD, Signal},
};

use crate::common::{
    conf, current_allowed, current_raw, emit, family_enabled, field, is_self, off, other_allowed,
};

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let _ = try_signal_generate(&ctx);
    0
}

fn try_signal_generate(ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Signal) {
        return None;
    }
    let sig: i32 = field(ctx, off!(sg_sig))?;
    // Every child exit sends SIGCHLD to its parent: noise unless asked for.
    if sig == SIGCHLD && conf!(options) & OPT_SIGCHLD == 0 {
        return None;
    }
    let cur = current_raw();
    let target_pid: i32 = field(ctx, off!(sg_pid)).unwrap_or(0);
    let target_comm: [u8; 16] = field(ctx, off!(sg_comm)).unwrap_or([0; 16]);
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
            code: field(ctx, off!(sg_code)).unwrap_or(0),
            result: field(ctx, off!(sg_result)).unwrap_or(0),
            target_pid,
            group: field(ctx, off!(sg_group)).unwrap_or(0),
            errno: field(ctx, off!(sg_errno)).unwrap_or(0),
            target_comm,
        },
    );
    Some(())
}
