//! OOM kills from `oom/mark_victim`: the current task is the one whose allocation triggered
//! the OOM killer; the victim is in the record.
use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    Family,
    oom::{OOM_HAS_COMM, OOM_HAS_MEMORY, OomKill},
    prog::Prog,
};

use crate::common::{
    current_allowed, current_raw, emit, family_enabled, field, is_self, kread_str, off,
    other_allowed,
};

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let _ = try_mark_victim(Prog::mark_victim, &ctx);
    0
}

fn try_mark_victim(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Oom) {
        return None;
    }
    let cur = current_raw();
    let victim: i32 = field(p, ctx, off!(mv_pid))?;
    let mut ev = OomKill {
        victim_pid: victim as u32,
        victim_uid: field(p, ctx, off!(mv_uid)).unwrap_or(0),
        victim_comm: [0; 16],
        total_vm_kb: 0,
        anon_rss_kb: 0,
        file_rss_kb: 0,
        shmem_rss_kb: 0,
        pgtables_kb: field(p, ctx, off!(mv_pgtables)).unwrap_or(0),
        oom_score_adj: field(p, ctx, off!(mv_oom_score_adj)).unwrap_or(0),
        _pad: 0,
        flags: 0,
    };
    let comm = off!(mv_comm);
    if comm.size == 4 {
        // __data_loc char[]: low 16 bits offset in the record, high 16 bits length.
        let loc: u32 = field(p, ctx, comm)?;
        let src = (ctx.as_ptr() as u64 + (loc & 0xffff) as u64) as *const u8;
        if kread_str(p, src, &mut ev.victim_comm).is_some() {
            ev.flags |= OOM_HAS_COMM;
        }
    } else if comm.size == 16 {
        ev.victim_comm = field(p, ctx, comm)?;
        ev.flags |= OOM_HAS_COMM;
    }
    if let Some(total) = field::<u64>(p, ctx, off!(mv_total_vm)) {
        ev.total_vm_kb = total;
        ev.anon_rss_kb = field(p, ctx, off!(mv_anon_rss)).unwrap_or(0);
        ev.file_rss_kb = field(p, ctx, off!(mv_file_rss)).unwrap_or(0);
        ev.shmem_rss_kb = field(p, ctx, off!(mv_shmem_rss)).unwrap_or(0);
        ev.flags |= OOM_HAS_MEMORY;
    }
    if is_self(ev.victim_pid) && is_self(cur.tgid) {
        return None;
    }
    if !current_allowed(&cur) && !other_allowed(ev.victim_pid, &ev.victim_comm, 0) {
        return None;
    }
    emit(&cur, ev);
    Some(())
}
