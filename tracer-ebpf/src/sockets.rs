//! Socket syscalls: socket(), accept()/accept4(), connect(), listen() and close(), and the
//! SOCK_FDS bookkeeping of socket fds they keep (keyed by [`fd_key`]), so a close() of a
//! socket fd is seen as one. A connection is announced (`conn_open`) when connect() or accept()
//! returns and closed (`conn_close`) at its fd's close(); its entry in the connection model is
//! `tcp.rs`'s. Fds made by dup()/socketpair() or inherited through fork are `fd.rs`'s.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    AF_INET, AF_INET6, Family,
    prog::Prog,
    tcp::{
        CONN_CLOSED, ConnClose, ConnOpen, ROLE_ACTIVE, ROLE_PASSIVE, ROLE_UNKNOWN, SocketClose,
        SocketOpen, TcpAccept, TcpListen,
    },
};

use crate::{
    common::{
        ARGS, CONNS, FD_ANNOUNCED, SOCK_FDS, SockFd, Task, btf_read, current, current_allowed,
        current_raw, current_task_ptr, emit, emit_known, family_enabled, is_self, kread, now,
        put_sock_fd, save_args, sys_arg, sys_ret, take_args, task_off, uread,
    },
    fd::FD_TOMBSTONE,
    tcp::{Addrs, adopt, from_sockaddr, sock_addrs},
};

const SOCK_STREAM: u16 = 1;
const EAGAIN: i64 = 11;
const EINTR: i64 = 4;
const EINPROGRESS: i64 = 115;

#[inline(always)]
pub(crate) fn fd_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

/// The `struct sock` behind fd `fd` of the current task `cur`, through BTF offsets:
/// task->files->fdt->fd[fd]->private_data (struct socket)->sk.
#[inline(always)]
fn sock_of_fd(p: Prog, cur: &Task, fd: u32) -> Option<u64> {
    let (max, fds) = if cur.task != 0 {
        // Plain loads down to the fd array (its element, a `struct file *` in an array of
        // pointers, and what hangs off a file's `void *private_data` are plain numbers to the
        // verifier: read below with bpf_probe_read_kernel).
        let files = btf_read::<u64>(cur.task, task_off!(task_files))?;
        let fdt = btf_read::<u64>(files, task_off!(files_fdt))?;
        (
            btf_read::<u32>(fdt, task_off!(fdtable_max_fds))?,
            btf_read::<u64>(fdt, task_off!(fdtable_fd))?,
        )
    } else {
        fd_array(p)?
    };
    if fd >= max {
        return None;
    }
    let file: u64 = kread(p, fds, fd.checked_mul(8)?)?;
    let sock: u64 = kread(p, file, task_off!(file_private_data))?;
    let sk: u64 = kread(p, sock, task_off!(socket_sk))?;
    if sk == 0 { None } else { Some(sk) }
}

/// The current task's fd array and its size, with bpf_probe_read_kernel (before 6.2).
#[inline(always)]
fn fd_array(p: Prog) -> Option<(u32, u64)> {
    let task = current_task_ptr();
    let files: u64 = kread(p, task, task_off!(task_files))?;
    let fdt: u64 = kread(p, files, task_off!(files_fdt))?;
    // `max_fds` then the `fd` array pointer, as every kernel lays out `struct fdtable`: one
    // read for both (the offsets are read-only globals: the verifier keeps one path).
    Some(
        if task_off!(fdtable_max_fds) == 0 && task_off!(fdtable_fd) == 8 {
            let b: [u64; 2] = kread(p, fdt, 0)?;
            (b[0] as u32, b[1])
        } else {
            let max: u32 = kread(p, fdt, task_off!(fdtable_max_fds))?;
            (max, kread(p, fdt, task_off!(fdtable_fd))?)
        },
    )
}

const TAG_ACCEPT: u64 = 1;
const TAG_SOCKET: u64 = 2;
const TAG_CONNECT: u64 = 3;

#[inline(always)]
fn accept_enter(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    save_args(cur.pid, [TAG_ACCEPT, sys_arg(p, ctx, 0)?, 0, 0]);
    Some(())
}

/// A unix (or other non-inet) socket fd: counted, not a connection.
#[inline(always)]
fn socket_open(cur: &Task, fd: i32, family: u16) {
    emit(
        cur,
        SocketOpen {
            fd,
            family,
            sock_type: SOCK_STREAM,
            protocol: 0,
            _pad: 0,
        },
    );
}

#[inline(always)]
fn accept_exit(p: Prog, ctx: &TracePointContext) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let args = take_args(tid)?;
    if args[0] != TAG_ACCEPT {
        return None;
    }
    let ret = sys_ret(p, ctx)?;
    // Non-blocking accept loops see EAGAIN constantly: not an event.
    if ret == -EAGAIN || ret == -EINTR {
        return None;
    }
    let cur = current()?;
    if ret >= 0 {
        let fd = ret as i32;
        let sk = sock_of_fd(p, &cur, ret as u32).unwrap_or(0);
        let a = if sk != 0 {
            sock_addrs(p, sk)
        } else {
            Addrs {
                family: 0,
                sport: 0,
                dport: 0,
                saddr: [0; 16],
                daddr: [0; 16],
            }
        };
        let inet = a.family == AF_INET || a.family == AF_INET6;
        put_sock_fd(
            fd_key(cur.tgid, ret as u32),
            SockFd {
                family: a.family,
                sock_type: SOCK_STREAM,
                flags: FD_ANNOUNCED,
                _pad: 0,
                sk: if inet { sk } else { 0 },
            },
        );
        if a.family != 0 && !inet {
            // accept() on a unix socket: still a socket fd for the accounting.
            socket_open(&cur, fd, a.family);
            return Some(());
        }
        let ts = now();
        let known = if sk != 0 {
            adopt(sk, &cur, fd, ROLE_PASSIVE, &a, ts)
        } else {
            None
        };
        emit_known(
            &cur,
            ts,
            known.as_ref(),
            ConnOpen {
                sk,
                fd,
                ret: 0,
                role: ROLE_PASSIVE,
                _pad: 0,
                family: a.family,
                sport: a.sport,
                dport: a.dport,
                saddr: a.saddr,
                daddr: a.daddr,
            },
        );
        return Some(());
    }
    let mut ev = TcpAccept {
        ret: ret as i32,
        listen_fd: args[1] as i32,
        sk: 0,
        family: 0,
        sport: 0,
        dport: 0,
        _pad: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if let Some(sk) = sock_of_fd(p, &cur, args[1] as u32) {
        // Failure: report the listening socket's address, so EMFILE names the port.
        let a = sock_addrs(p, sk);
        if a.family != AF_INET && a.family != AF_INET6 {
            socket_open(&cur, ret as i32, a.family);
            return Some(());
        }
        ev.family = a.family;
        ev.sport = a.sport;
        ev.dport = a.dport;
        ev.saddr = a.saddr;
        ev.daddr = a.daddr;
    }
    emit(&cur, ev);
    Some(())
}

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    let _ = accept_enter(Prog::sys_enter_accept, &ctx);
    0
}

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    let _ = accept_enter(Prog::sys_enter_accept4, &ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = accept_exit(Prog::sys_exit_accept, &ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = accept_exit(Prog::sys_exit_accept4, &ctx);
    0
}

#[tracepoint]
pub fn sys_enter_socket(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_socket(Prog::sys_enter_socket, &ctx);
    0
}

fn try_sys_enter_socket(p: Prog, ctx: &TracePointContext) -> Option<()> {
    crate::common::save_enter_args(p, ctx, Family::Tcp, TAG_SOCKET, [0, 1, 2])
}

#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_socket(Prog::sys_exit_socket, &ctx);
    0
}

fn try_sys_exit_socket(p: Prog, ctx: &TracePointContext) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let args = take_args(tid)?;
    if args[0] != TAG_SOCKET {
        return None;
    }
    let ret = sys_ret(p, ctx)?;
    let cur = current()?;
    let family = args[1] as u16;
    // SOCK_NONBLOCK / SOCK_CLOEXEC live in the upper bits of the type argument.
    let sock_type = (args[2] & 0xf) as u16;
    // A TCP socket is announced when it is connected, accepted or listened on: a short
    // connection then costs one record at each end of its life, not three.
    let tcp = sock_type == SOCK_STREAM && (family == AF_INET || family == AF_INET6);
    if ret >= 0 {
        put_sock_fd(
            fd_key(cur.tgid, ret as u32),
            SockFd {
                family,
                sock_type,
                flags: if tcp { 0 } else { FD_ANNOUNCED },
                _pad: 0,
                sk: 0,
            },
        );
        if tcp {
            return Some(());
        }
    }
    emit(
        &cur,
        SocketOpen {
            fd: ret as i32,
            family,
            sock_type,
            protocol: args[3] as i32,
            _pad: 0,
        },
    );
    Some(())
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_close(Prog::sys_enter_close, &ctx);
    0
}

fn try_sys_enter_close(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let fd = sys_arg(p, ctx, 0)? as u32;
    let cur = current_raw();
    let info = crate::fd::take_closed(cur.tgid, fd)?;
    if info.flags & FD_ANNOUNCED == 0 || is_self(cur.tgid) {
        return None;
    }
    let allowed = current_allowed(&cur);
    if info.sk == 0 {
        if allowed {
            emit(
                &cur,
                SocketClose {
                    fd: fd as i32,
                    family: info.family,
                    sock_type: info.sock_type,
                },
            );
        }
        return None;
    }
    let mut ev = ConnClose {
        sk: info.sk,
        open_ns: 0,
        wait_ns: 0,
        last_recv_ns: 0,
        bytes_in: 0,
        bytes_out: 0,
        fd: fd as i32,
        state: 0,
        role: ROLE_UNKNOWN,
        family: info.family,
        sport: 0,
        dport: 0,
        _pad: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if let Some(p) = CONNS.get_ptr_mut(&info.sk) {
        // SAFETY: a valid map value pointer for the rest of this program.
        let c = unsafe { &mut *p };
        ev.open_ns = c.open_ns;
        ev.wait_ns = c.wait_ns;
        ev.last_recv_ns = c.last_recv_ns;
        ev.bytes_in = c.bytes_in;
        ev.bytes_out = c.bytes_out;
        ev.state = c.state;
        ev.role = c.role;
        ev.family = c.family;
        ev.sport = c.sport;
        ev.dport = c.dport;
        ev.saddr = c.saddr;
        ev.daddr = c.daddr;
        // Its fd is closed: once it is in CLOSE too (already, when reset, refused or never
        // seen connected), the entry is the socket's tombstone, kept for a late reset's
        // owner and written over when the kernel reuses the address for a new socket.
        c.flags |= CONN_CLOSED;
    }
    if allowed {
        emit(&cur, ev);
    }
    Some(())
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_connect(Prog::sys_enter_connect, &ctx);
    0
}

fn try_sys_enter_connect(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let fd = sys_arg(p, ctx, 0)?;
    let cur = current()?;
    // SAFETY: the value is copied out at once.
    let info = unsafe { SOCK_FDS.get(&fd_key(cur.tgid, fd as u32)).copied() }?;
    // TCP only, and once: a non-blocking connect() is often called again to learn its result.
    if (info.family != AF_INET && info.family != AF_INET6)
        || info.sock_type != SOCK_STREAM
        || info.flags & FD_ANNOUNCED != 0
    {
        return None;
    }
    if !current_allowed(&cur) {
        return None;
    }
    // fd and addrlen share a slot; the last one takes the socket from connect()'s SYN_SENT.
    let addrlen = sys_arg(p, ctx, 2)? as u32 as u64;
    save_args(
        cur.pid,
        [
            TAG_CONNECT,
            (fd as u32 as u64) | (addrlen << 32),
            sys_arg(p, ctx, 1)?,
            0,
        ],
    );
    Some(())
}

/// In connect(), its socket entered SYN_SENT: the thread's saved connect arguments take the
/// socket, so sys_exit_connect need not find it through task->files->fdt (seven reads).
#[inline(always)]
pub(crate) fn connecting(tid: u32, sk: u64) {
    if let Some(a) = ARGS.get_ptr_mut(&tid) {
        // SAFETY: a valid map value pointer for the rest of this program; the thread is
        // inside connect(), so its sys_exit_connect has not taken the entry yet.
        unsafe {
            if (*a)[0] == TAG_CONNECT {
                (*a)[3] = sk;
            }
        }
    }
}

/// The destination connect() was given, read no further than its `addrlen`.
#[inline(always)]
fn user_sockaddr(p: Prog, ptr: u64, len: u64, addr: &mut [u8; 16]) -> (u16, u16) {
    let mut sa = [0u8; 28];
    if len >= 28 {
        sa = uread(p, ptr).unwrap_or([0; 28]);
    } else if len >= 16 {
        let v4: [u8; 16] = uread(p, ptr).unwrap_or([0; 16]);
        sa[..16].copy_from_slice(&v4);
    }
    let (family, port) = from_sockaddr(&sa, addr);
    if family == AF_INET6 && len < 28 {
        *addr = [0; 16];
    }
    (family, port)
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_connect(Prog::sys_exit_connect, &ctx);
    0
}

fn try_sys_exit_connect(p: Prog, ctx: &TracePointContext) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let args = take_args(tid)?;
    if args[0] != TAG_CONNECT {
        return None;
    }
    let ret = sys_ret(p, ctx)?;
    let cur = current()?;
    let fd = args[1] as u32;
    let addrlen = args[1] >> 32;
    let key = fd_key(cur.tgid, fd);
    let info_p = SOCK_FDS.get_ptr_mut(&key)?;
    // SAFETY: a valid map value pointer for the rest of this program; copied out here and
    // updated in place below.
    let info = unsafe { *info_p };
    if info.flags & FD_TOMBSTONE != 0 {
        // Another thread closed the fd meanwhile.
        return None;
    }
    // The destination as asked for, when connect() failed: a failed connect() may have
    // cleared the socket's (a success or one in progress has it).
    let mut daddr = [0u8; 16];
    let (ufamily, dport) = if ret < 0 && ret != -EINPROGRESS {
        user_sockaddr(p, args[2], addrlen, &mut daddr)
    } else {
        (0, 0)
    };
    // From connect()'s SYN_SENT; a connect() that failed before it: through the fd table.
    let sk = if args[3] != 0 {
        args[3]
    } else {
        sock_of_fd(p, &cur, fd).unwrap_or(0)
    };
    let mut a = if sk != 0 {
        sock_addrs(p, sk)
    } else {
        Addrs {
            family: info.family,
            sport: 0,
            dport: 0,
            saddr: [0; 16],
            daddr: [0; 16],
        }
    };
    if ufamily != 0 && ufamily == a.family {
        a.dport = dport;
        a.daddr = daddr;
    }
    let known = if sk != 0 {
        adopt(sk, &cur, fd as i32, ROLE_ACTIVE, &a, 0)
    } else {
        None
    };
    // SAFETY: as above: the entry's value, written in place (no second hash update).
    unsafe {
        (*info_p).flags |= FD_ANNOUNCED;
        (*info_p).sk = sk;
    }
    emit_known(
        &cur,
        now(),
        known.as_ref(),
        ConnOpen {
            sk,
            fd: fd as i32,
            ret: ret as i32,
            role: ROLE_ACTIVE,
            _pad: 0,
            family: a.family,
            sport: a.sport,
            dport: a.dport,
            saddr: a.saddr,
            daddr: a.daddr,
        },
    );
    Some(())
}

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_listen(Prog::sys_enter_listen, &ctx);
    0
}

fn try_sys_enter_listen(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    let fd = sys_arg(p, ctx, 0)?;
    let backlog = sys_arg(p, ctx, 1)?;
    let key = fd_key(cur.tgid, fd as u32);
    if let Some(info_p) = SOCK_FDS.get_ptr_mut(&key)
        // SAFETY: a valid map value pointer for the rest of this program.
        && let info = unsafe { *info_p }
        && info.flags & (FD_ANNOUNCED | FD_TOMBSTONE) == 0
    {
        // A listening socket is counted from here (TCP sockets are announced when used).
        // SAFETY: as above; updated in place.
        unsafe { (*info_p).flags |= FD_ANNOUNCED };
        emit(
            &cur,
            SocketOpen {
                fd: fd as i32,
                family: info.family,
                sock_type: info.sock_type,
                protocol: 0,
                _pad: 0,
            },
        );
    }
    emit(
        &cur,
        TcpListen {
            fd: fd as i32,
            backlog: backlog as i32,
        },
    );
    Some(())
}
