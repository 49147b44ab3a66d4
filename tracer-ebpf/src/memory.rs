//! Memory: per-process RSS and mapped bytes aggregated here, in the kernel, and emitted as a
//! sample only when one of them moved by the sample step (1/32 of its value, between 1 MiB
//! and `--mem-threshold`); single events for large mmap/munmap/brk moves. `kmem/rss_stat`
//! fires on every RSS counter update (page faults), so its programs filter first, do one map
//! lookup and rarely more. Its BTF tracepoint (no trace record built per fault) reads the
//! counters from the `mm_struct` with plain loads (no bpf_probe_read_kernel call); the classic
//! one, its fallback, reads the record.
use aya_ebpf::{
    helpers::generated::bpf_task_pt_regs,
    macros::{btf_tracepoint, map, tracepoint},
    maps::LruHashMap,
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    Family,
    config::TaskOffsets,
    memory::{Brk, MAP_ANONYMOUS, MemSample, Mmap, Munmap, sample_step},
    prog::Prog,
};

use crate::common::{
    Task, btf_read, conf, current, current_allowed, current_task_ptr, emit, family_enabled, field,
    kread, off, plain_loads, regs_arg, save_args, sys_arg, sys_ret, take_args, task_off,
};

/// Per-process memory state (tgid key).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MemState {
    /// rss_stat members: MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES (bytes).
    pub counters: [u64; 4],
    pub last_rss: u64,
    pub last_mapped: u64,
    /// Program break at the last brk event (or when first seen).
    pub last_brk: u64,
}

#[map]
pub static PROC_MEM: LruHashMap<u32, MemState> = LruHashMap::with_max_entries(65536, 0);

const TAG_MMAP: u64 = 10;

pub fn forget(tgid: u32) {
    let _ = PROC_MEM.remove(&tgid);
}

#[inline(always)]
fn state(tgid: u32) -> Option<*mut MemState> {
    if let Some(p) = PROC_MEM.get_ptr_mut(&tgid) {
        return Some(p);
    }
    let zero = MemState {
        counters: [0; 4],
        last_rss: 0,
        last_mapped: 0,
        last_brk: 0,
    };
    let _ = PROC_MEM.insert(&tgid, &zero, 0);
    PROC_MEM.get_ptr_mut(&tgid)
}

/// The current task's `mm_struct` (0 for a kernel thread): from 6.2 on with a plain load
/// through the task's BTF pointer, no bpf_probe_read_kernel call (about 50 ns each on the
/// measured VM). None when BTF gave no `task_struct.mm`; `p` counts a failed read.
#[inline(always)]
fn current_mm(p: Prog, cur: &Task) -> Option<u64> {
    let at = task_off!(task_mm);
    if at == TaskOffsets::UNKNOWN {
        return None;
    }
    if !plain_loads() {
        return kread(p, current_task_ptr(), at);
    }
    btf_read::<u64>(cur.btf_ptr(), at)
}

/// `mm->total_vm` in bytes of `mm`, as [`current_mm`] gave it (0 when unknown); `p` counts a
/// failed read.
#[inline(always)]
fn mapped_bytes_of(p: Prog, mm: Option<u64>) -> u64 {
    let at = task_off!(mm_total_vm);
    let pages: u64 = mm
        .and_then(|mm| {
            if plain_loads() {
                btf_read(mm, at)
            } else {
                kread(p, mm, at)
            }
        })
        .unwrap_or(0);
    pages * conf!(page_size) as u64
}

/// `mm->total_vm` of the current task in bytes (0 when unknown).
#[inline(always)]
fn mapped_bytes(p: Prog, cur: &Task) -> u64 {
    mapped_bytes_of(p, current_mm(p, cur))
}

/// The four RSS counters of `mm` (a BTF pointer: the hook's argument or `task_struct.mm`) in
/// bytes, each clamped at 0, as `get_mm_counter` reads them. Four plain loads at offsets fixed
/// at load time (the verifier takes no variable offset into a BTF object). None when BTF gave
/// no layout for them, or for the layout before 6.2 (`atomic_long_t count[4]`, an 8-byte
/// stride), whose verifier cannot walk into an array of `atomic_long_t` ("Type
/// 'atomic_long_t' is not a struct", seen on 6.1): the stride is known at load, so that
/// kernel's verifier never sees these loads.
#[inline(always)]
fn mm_counters(mm: u64) -> Option<[u64; 4]> {
    let (at, stride, count) = (
        task_off!(mm_rss_stat),
        task_off!(mm_rss_stride),
        task_off!(mm_rss_count),
    );
    if !plain_loads() || at == TaskOffsets::UNKNOWN || count == TaskOffsets::UNKNOWN {
        return None;
    }
    let page = conf!(page_size) as u64;
    let read = |i: u32| {
        btf_read::<i64>(mm, at.wrapping_add(i * stride).wrapping_add(count))
            .map(|pages| (pages.max(0) as u64).wrapping_mul(page))
    };
    Some([read(0)?, read(1)?, read(2)?, read(3)?])
}

/// After an mmap or brk: the current task's RSS counters, read from its mm when BTF gave their
/// layout (fresher than the last rss_stat), else as the last rss_stat left them in `st`; then
/// a sample if RSS or mapped bytes moved. The mm is looked up once for both.
#[inline(always)]
fn sample_current(p: Prog, cur: &Task, st: *mut MemState) {
    let mm = current_mm(p, cur);
    // SAFETY: `st` is a map value pointer from `state`, valid for the rest of this program.
    let c = mm
        .and_then(mm_counters)
        .unwrap_or(unsafe { (*st).counters });
    maybe_sample(p, cur, st, c, Some(mapped_bytes_of(p, mm)));
}

#[inline(always)]
fn moved(now: u64, last: u64, by: u64) -> bool {
    now.abs_diff(last) >= by
}

/// Emits a sample when RSS or mapped bytes moved by their step since the last one. The step
/// is relative to the current value, so the last sample stays within ~3% of it (a fixed
/// 16 MiB step left small processes up to 19% off, or unsampled below 16 MiB).
#[inline(always)]
fn maybe_sample(p: Prog, cur: &Task, st: *mut MemState, c: [u64; 4], mapped: Option<u64>) {
    let max = conf!(mem_sample_bytes);
    // SAFETY: `st` is a map value pointer from `state`, valid for the rest of this program.
    let s = unsafe { &mut *st };
    let rss = c[0] + c[1] + c[3];
    // No rss_stat seen yet for this process: its RSS is unknown, not 0. Kernels before 6.2
    // fire rss_stat only when a task's cached counters sync (about every 64 page faults), so
    // a new process's first mmap came before any: no sample until one has.
    if rss == 0 {
        return;
    }
    let rss_moved = moved(rss, s.last_rss, sample_step(rss, max));
    let mapped_moved = matches!(mapped, Some(m) if moved(m, s.last_mapped, sample_step(m, max)));
    if !rss_moved && !mapped_moved {
        return;
    }
    let mapped = mapped.unwrap_or_else(|| mapped_bytes(p, cur));
    s.last_rss = rss;
    s.last_mapped = mapped;
    emit(
        cur,
        MemSample {
            rss_bytes: rss,
            rss_anon: c[1],
            rss_file: c[0],
            rss_shmem: c[3],
            swap_bytes: c[2],
            mapped_bytes: mapped,
        },
    );
}

/// The task `rss_stat` may count for: the current one, unless it is the collector or filtered
/// out (which costs no field reads).
#[inline(always)]
fn rss_subject() -> Option<Task> {
    if !family_enabled(Family::Memory) {
        return None;
    }
    let cur = current()?;
    current_allowed(&cur).then_some(cur)
}

/// One RSS counter's new value (`member`: MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS or
/// MM_SHMEMPAGES; `bytes` clamped at 0), then a sample if RSS moved by its step.
#[inline(always)]
fn rss_update(p: Prog, cur: &Task, member: i32, bytes: i64) -> Option<()> {
    let st = state(cur.tgid)?;
    // SAFETY: `st` is a map value pointer from `state`, valid for the rest of this program.
    let c = unsafe {
        (*st).counters[member as usize & 3] = bytes.max(0) as u64;
        (*st).counters
    };
    maybe_sample(p, cur, st, c, None);
    Some(())
}

/// BTF tracepoint: `(struct mm_struct *mm, int member)` (6.1 adds the new count, unused). The
/// counters are read from the mm (with plain loads from 6.2 on), as the classic record's `size` is
/// (`get_mm_counter`): the collector attaches this only when BTF gave the counters' layout
/// (`TaskOffsets::rss_counters_known`).
#[btf_tracepoint(function = "rss_stat")]
pub fn rss_stat_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = try_rss_stat_btf(Prog::rss_stat_btf, &ctx);
    0
}

fn try_rss_stat_btf(p: Prog, ctx: &BtfTracePointContext) -> Option<()> {
    let cur = rss_subject()?;
    // Updates of another process's mm (reclaim, remote faults) cannot be attributed here.
    let mm = ctx.arg::<*const u8>(0) as u64;
    if current_mm(p, &cur)? != mm {
        return None;
    }
    let Some(c) = mm_counters(mm) else {
        // Before 6.2: the one counter that moved, through bpf_probe_read_kernel.
        let member = ctx.arg::<i32>(1);
        if !(0..4).contains(&member) {
            return None;
        }
        let at = task_off!(mm_rss_stat)
            .wrapping_add((member as u32).wrapping_mul(task_off!(mm_rss_stride)))
            .wrapping_add(task_off!(mm_rss_count));
        let pages = kread::<i64>(p, mm, at)?;
        return rss_update(
            p,
            &cur,
            member,
            pages.max(0).wrapping_mul(conf!(page_size) as i64),
        );
    };
    let st = state(cur.tgid)?;
    // SAFETY: `st` is a map value pointer from `state`, valid for the rest of this program.
    unsafe { (*st).counters = c };
    maybe_sample(p, &cur, st, c, None);
    Some(())
}

/// Classic tracepoint, the fallback: the kernel's record says whether the mm is the current
/// task's (`curr`), which counter and its size in bytes.
#[tracepoint]
pub fn rss_stat(ctx: TracePointContext) -> u32 {
    let _ = try_rss_stat(Prog::rss_stat, &ctx);
    0
}

fn try_rss_stat(p: Prog, ctx: &TracePointContext) -> Option<()> {
    let cur = rss_subject()?;
    // Updates of another process's mm (reclaim, remote faults) cannot be attributed here.
    if field::<u32>(p, ctx, off!(rss_curr))? == 0 {
        return None;
    }
    let member = field::<i32>(p, ctx, off!(rss_member))?;
    if !(0..4).contains(&member) {
        return None;
    }
    rss_update(p, &cur, member, field::<i64>(p, ctx, off!(rss_size))?)
}

#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_mmap(Prog::sys_enter_mmap, &ctx);
    0
}

fn try_sys_enter_mmap(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Memory) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    let len = sys_arg(p, ctx, 1)?;
    let prot = sys_arg(p, ctx, 2)?;
    let flags = sys_arg(p, ctx, 3)?;
    let fd = sys_arg(p, ctx, 4)?;
    save_args(
        cur.pid,
        [TAG_MMAP, len, (prot << 32) | (flags & 0xffff_ffff), fd],
    );
    Some(())
}

#[tracepoint]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_mmap(Prog::sys_exit_mmap, &ctx);
    0
}

fn try_sys_exit_mmap(p: Prog, ctx: &TracePointContext) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let args = take_args(tid)?;
    if args[0] != TAG_MMAP {
        return None;
    }
    let ret = sys_ret(p, ctx)?;
    let cur = current()?;
    mmap_done(p, &cur, ret, args[1], args[2], args[3])
}

/// mmap()'s exit without a `sys_enter` program (from 6.2 on, when BTF gave where `struct
/// pt_regs` keeps the arguments): its length, protection, flags and fd are read from the
/// registers the task entered the call with, which the call leaves as they were. One hook and
/// a saved-arguments write and lookup less per mmap(); `sys_enter_mmap` and `sys_exit_mmap`
/// are its fallback.
#[tracepoint]
pub fn sys_exit_mmap_regs(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_mmap_regs(Prog::sys_exit_mmap_regs, &ctx);
    0
}

fn try_sys_exit_mmap_regs(p: Prog, ctx: &TracePointContext) -> Option<()> {
    // Attached only where plain loads pass (`sys_exit_mmap_regs_unusable`).
    if !family_enabled(Family::Memory) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    let ret = sys_ret(p, ctx)?;
    // SAFETY: the current task's BTF pointer is what the helper takes; it returns the task's
    // saved user registers as a BTF pointer, which `btf_read` only loads members of.
    let regs = unsafe { bpf_task_pt_regs(cur.btf_ptr() as *mut _) } as u64;
    let arg = |i: usize| btf_read::<u64>(regs, regs_arg(i));
    let len = arg(1)?;
    let prot = arg(2)?;
    let flags = arg(3)?;
    let fd = arg(4)?;
    mmap_done(p, &cur, ret, len, (prot << 32) | (flags & 0xffff_ffff), fd)
}

/// After mmap(): a record when the mapping is large or the call failed, then a sample.
/// `prot_flags` is prot in the high half, flags in the low one.
#[inline(always)]
fn mmap_done(p: Prog, cur: &Task, ret: i64, len: u64, prot_flags: u64, fd: u64) -> Option<()> {
    if len >= conf!(large_mapping_bytes) || ret < 0 {
        let flags = prot_flags as u32;
        emit(
            cur,
            Mmap {
                ret,
                len,
                prot: (prot_flags >> 32) as u32,
                flags,
                fd: if flags & MAP_ANONYMOUS != 0 {
                    -1
                } else {
                    fd as i32
                },
                _pad: 0,
            },
        );
    }
    if ret >= 0 {
        sample_current(p, cur, state(cur.tgid)?);
    }
    Some(())
}

#[tracepoint]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_munmap(Prog::sys_enter_munmap, &ctx);
    0
}

fn try_sys_enter_munmap(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Memory) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    let addr = sys_arg(p, ctx, 0)?;
    let len = sys_arg(p, ctx, 1)?;
    if len >= conf!(large_mapping_bytes) {
        emit(&cur, Munmap { addr, len });
    }
    // Mapped bytes drop after this returns; the next mmap/brk/rss update samples it.
    Some(())
}

/// brk() needs no sys_enter program: the new break is its return value, and the filters are
/// checked here (one hook and an ARGS insert, lookup and delete less per call).
#[tracepoint]
pub fn sys_exit_brk(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_brk(Prog::sys_exit_brk, &ctx);
    0
}

fn try_sys_exit_brk(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Memory) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    let brk = sys_ret(p, ctx)? as u64;
    let st = state(cur.tgid)?;
    // SAFETY: `st` is a map value pointer from `state`, valid for the rest of this program.
    let s = unsafe { &mut *st };
    if s.last_brk == 0 {
        s.last_brk = brk;
    } else if moved(brk, s.last_brk, conf!(large_mapping_bytes)) {
        emit(
            &cur,
            Brk {
                brk,
                prev: s.last_brk,
            },
        );
        s.last_brk = brk;
    }
    sample_current(p, &cur, st);
    Some(())
}
