//! Socket fds made without socket() or accept(): dup(), dup2(), dup3(), fcntl(F_DUPFD,
//! F_DUPFD_CLOEXEC) of a socket fd, and socketpair(). Each new fd goes into SOCK_FDS like one
//! from socket(), so its close() is seen too; a duplicate never carries the connection
//! (`sk` 0), so closing it is a `socket_close` (one fd fewer), never the connection's close.
//!
//! Socket fds a child inherits through fork are in SOCK_FDS under its parent, not under it:
//! FORKED_FROM remembers the parent, and a close() of an fd the child was never seen opening
//! is a socket close when the parent (or its parent) holds a socket at that fd. A tombstone
//! then stands in the child's entry, so the fd number, reused for a file, is not taken for
//! the parent's socket again.
use aya_ebpf::{
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use tracer_common::{
    Family,
    prog::Prog,
    tcp::{DUP_REPLACED, FORK_DEPTH, FdDup, SocketClose, SocketOpen},
};

use crate::{
    common::{
        FD_ANNOUNCED, SOCK_FDS, SockFd, current, current_allowed, current_tgid, emit,
        family_enabled, put_sock_fd, save_args, save_enter_args, sys_arg, sys_ret, take_args,
        uread,
    },
    sockets::fd_key,
};

/// Child tgid → the tgid that forked it (processes only, not threads).
#[map]
static FORKED_FROM: LruHashMap<u32, u32> = LruHashMap::with_max_entries(65536, 0);

/// [`SockFd::flags`] of a tombstone: the process closed (or replaced) this fd, inherited or its
/// own; it is no socket until one is opened there again (written over in place then).
pub(crate) const FD_TOMBSTONE: u16 = 0x8000;

/// Called at every fork of a process (with `--events tcp`).
#[inline(always)]
pub fn forked(parent: u32, child: u32) {
    if family_enabled(Family::Tcp) {
        let _ = FORKED_FROM.insert(&child, &parent, 0);
    }
}

/// The entry of fd `fd` of `tgid`: its own, else (for a forked process without one) the
/// socket its parent or grandparent holds at that number. Tombstones are no socket.
#[inline(always)]
pub fn sock_fd(tgid: u32, fd: u32) -> Option<SockFd> {
    // SAFETY: the value is copied out at once.
    if let Some(e) = unsafe { SOCK_FDS.get(&fd_key(tgid, fd)).copied() } {
        return if e.flags & FD_TOMBSTONE != 0 {
            None
        } else {
            Some(e)
        };
    }
    inherited(tgid, fd)
}

/// For a process without an entry of its own at fd `fd`: the socket its parent or grandparent
/// holds at that number (one more fd of the socket, never the connection itself).
#[inline(always)]
fn inherited(tgid: u32, fd: u32) -> Option<SockFd> {
    let mut t = tgid;
    for _ in 0..FORK_DEPTH {
        // SAFETY: the value is copied out at once.
        t = unsafe { FORKED_FROM.get(&t).copied() }?;
        // SAFETY: the value is copied out at once.
        if let Some(e) = unsafe { SOCK_FDS.get(&fd_key(t, fd)).copied() } {
            if e.flags & FD_TOMBSTONE != 0 {
                return None;
            }
            return Some(SockFd { sk: 0, ..e });
        }
    }
    None
}

/// What a closed socket fd becomes: for a forked process, its parent may still hold a socket
/// at that number, which this fd no longer is; for any process, an entry the next socket at
/// that number is written over (an insert and a delete per socket cost several lookups).
const TOMBSTONE: SockFd = SockFd {
    family: 0,
    sock_type: 0,
    flags: FD_TOMBSTONE,
    _pad: 0,
    sk: 0,
};

/// Whether `tgid` was forked while tracing (its parent's fds may be its own too).
#[inline(always)]
fn is_forked(tgid: u32) -> bool {
    // SAFETY: only whether an entry exists is used; the value is never read.
    unsafe { FORKED_FROM.get(&tgid) }.is_some()
}

/// Fd `fd` of `tgid` is closed: its entry becomes a tombstone in place; without one, a forked
/// process (whose parent may still hold a socket at that number) gets one.
#[inline(always)]
pub fn closed(tgid: u32, fd: u32) {
    let key = fd_key(tgid, fd);
    if let Some(e) = SOCK_FDS.get_ptr_mut(&key) {
        // SAFETY: a valid map value pointer for the rest of this program.
        unsafe { *e = TOMBSTONE };
    } else if is_forked(tgid) {
        let _ = SOCK_FDS.insert(&key, &TOMBSTONE, 0);
    }
}

/// close() of fd `fd` of `tgid`: its entry as [`sock_fd`] finds it, then a tombstone as
/// [`closed`] makes, written in place; its own entry is looked up once (most closed fds are no
/// socket at all).
#[inline(always)]
pub fn take_closed(tgid: u32, fd: u32) -> Option<SockFd> {
    let Some(e) = SOCK_FDS.get_ptr_mut(&fd_key(tgid, fd)) else {
        let info = inherited(tgid, fd)?;
        // Inherited, so forked: the tombstone `closed` would insert.
        let _ = SOCK_FDS.insert(&fd_key(tgid, fd), &TOMBSTONE, 0);
        return Some(info);
    };
    // SAFETY: a valid map value pointer for the rest of this program; copied out at once.
    let info = unsafe { *e };
    if info.flags & FD_TOMBSTONE != 0 {
        return None;
    }
    // SAFETY: as above.
    unsafe { *e = TOMBSTONE };
    Some(info)
}

const TAG_DUP: u64 = 10;
const TAG_PAIR: u64 = 11;
/// No target fd given (dup(), fcntl()): the kernel picks it.
const ANY_FD: u64 = u64::MAX;
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

/// Saves the arguments of a dup-family call that concerns a socket fd (its source, or for
/// dup2/dup3 the fd it replaces): most dups and fcntls are of other files and cost one lookup.
#[inline(always)]
fn dup_enter(oldfd: u64, newfd: u64) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let tgid = current_tgid();
    let known = |fd: u64| {
        // SAFETY: the flags are copied out at once.
        fd != ANY_FD
            && unsafe { SOCK_FDS.get(&fd_key(tgid, fd as u32)) }
                .is_some_and(|e| e.flags & FD_TOMBSTONE == 0)
    };
    if !known(oldfd) && !known(newfd) {
        return None;
    }
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    save_args(tid, [TAG_DUP, oldfd, newfd, 0]);
    Some(())
}

#[inline(always)]
fn dup_exit(p: Prog, ctx: &TracePointContext) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let args = take_args(tid)?;
    if args[0] != TAG_DUP {
        return None;
    }
    let ret = sys_ret(p, ctx)?;
    if ret < 0 || ret as u64 == args[1] {
        // Failed, or dup2(fd, fd): nothing changed.
        return None;
    }
    let cur = current()?;
    let (oldfd, newfd) = (args[1] as u32, ret as u32);
    let new_key = fd_key(cur.tgid, newfd);
    // dup2()/dup3() closed the socket fd `newfd` named before, if any. Fields are taken out
    // at once: an Option<SockFd> copied around carries uninitialised padding the verifier
    // rejects.
    let (replaced_counted, r_family, r_type) = match sock_fd(cur.tgid, newfd) {
        Some(r) => (r.flags & FD_ANNOUNCED != 0, r.family, r.sock_type),
        None => (false, 0, 0),
    };
    let allowed = current_allowed(&cur);
    match sock_fd(cur.tgid, oldfd) {
        Some(o) => {
            let (family, sock_type, flags) = (o.family, o.sock_type, o.flags);
            put_sock_fd(
                new_key,
                SockFd {
                    family,
                    sock_type,
                    flags,
                    _pad: 0,
                    sk: 0,
                },
            );
            if allowed && flags & FD_ANNOUNCED != 0 {
                emit(
                    &cur,
                    FdDup {
                        oldfd: oldfd as i32,
                        newfd: newfd as i32,
                        family,
                        sock_type,
                        flags: if replaced_counted { DUP_REPLACED } else { 0 },
                    },
                );
                return Some(());
            }
        }
        None => closed(cur.tgid, newfd),
    }
    // A socket fd replaced by a dup of something this tracer does not count.
    if allowed && replaced_counted {
        emit(
            &cur,
            SocketClose {
                fd: newfd as i32,
                family: r_family,
                sock_type: r_type,
            },
        );
    }
    Some(())
}

#[tracepoint]
pub fn sys_enter_dup(ctx: TracePointContext) -> u32 {
    let p = Prog::sys_enter_dup;
    if let Some(fd) = sys_arg(p, &ctx, 0) {
        let _ = dup_enter(fd as u32 as u64, ANY_FD);
    }
    0
}

#[tracepoint]
pub fn sys_enter_dup2(ctx: TracePointContext) -> u32 {
    let p = Prog::sys_enter_dup2;
    if let (Some(old), Some(new)) = (sys_arg(p, &ctx, 0), sys_arg(p, &ctx, 1)) {
        let _ = dup_enter(old as u32 as u64, new as u32 as u64);
    }
    0
}

#[tracepoint]
pub fn sys_enter_dup3(ctx: TracePointContext) -> u32 {
    let p = Prog::sys_enter_dup3;
    if let (Some(old), Some(new)) = (sys_arg(p, &ctx, 0), sys_arg(p, &ctx, 1)) {
        let _ = dup_enter(old as u32 as u64, new as u32 as u64);
    }
    0
}

#[tracepoint]
pub fn sys_enter_fcntl(ctx: TracePointContext) -> u32 {
    let p = Prog::sys_enter_fcntl;
    if let (Some(fd), Some(cmd)) = (sys_arg(p, &ctx, 0), sys_arg(p, &ctx, 1))
        && (cmd as u32 as u64 == F_DUPFD || cmd as u32 as u64 == F_DUPFD_CLOEXEC)
    {
        let _ = dup_enter(fd as u32 as u64, ANY_FD);
    }
    0
}

#[tracepoint]
pub fn sys_exit_dup(ctx: TracePointContext) -> u32 {
    let _ = dup_exit(Prog::sys_exit_dup, &ctx);
    0
}

#[tracepoint]
pub fn sys_exit_dup2(ctx: TracePointContext) -> u32 {
    let _ = dup_exit(Prog::sys_exit_dup2, &ctx);
    0
}

#[tracepoint]
pub fn sys_exit_dup3(ctx: TracePointContext) -> u32 {
    let _ = dup_exit(Prog::sys_exit_dup3, &ctx);
    0
}

#[tracepoint]
pub fn sys_exit_fcntl(ctx: TracePointContext) -> u32 {
    let _ = dup_exit(Prog::sys_exit_fcntl, &ctx);
    0
}

#[tracepoint]
pub fn sys_enter_socketpair(ctx: TracePointContext) -> u32 {
    let _ = try_enter_socketpair(Prog::sys_enter_socketpair, &ctx);
    0
}

/// family, type, and the user pointer the two fds are written to.
fn try_enter_socketpair(p: Prog, ctx: &TracePointContext) -> Option<()> {
    save_enter_args(p, ctx, Family::Tcp, TAG_PAIR, [0, 1, 3])
}

#[tracepoint]
pub fn sys_exit_socketpair(ctx: TracePointContext) -> u32 {
    let _ = try_exit_socketpair(Prog::sys_exit_socketpair, &ctx);
    0
}

/// Two connected (unix) socket fds: counted like two from socket().
fn try_exit_socketpair(p: Prog, ctx: &TracePointContext) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let args = take_args(tid)?;
    if args[0] != TAG_PAIR || sys_ret(p, ctx)? != 0 {
        return None;
    }
    let cur = current()?;
    let fds: [i32; 2] = uread(p, args[3])?;
    let family = args[1] as u16;
    // SOCK_NONBLOCK / SOCK_CLOEXEC live in the upper bits of the type argument.
    let sock_type = (args[2] & 0xf) as u16;
    for fd in fds {
        if fd < 0 {
            continue;
        }
        put_sock_fd(
            fd_key(cur.tgid, fd as u32),
            SockFd {
                family,
                sock_type,
                flags: FD_ANNOUNCED,
                _pad: 0,
                sk: 0,
            },
        );
        emit(
            &cur,
            SocketOpen {
                fd,
                family,
                sock_type,
                protocol: 0,
                _pad: 0,
            },
        );
    }
    Some(())
}
