//! TCP: state changes, resets, accept results, socket fd accounting and socket ownership.
//!
//! `inet_sock_set_state` and the reset tracepoints often run in softirq, where the current
//! task is not the socket's owner. Ownership is learnt only in process context (connect,
//! listen, accept, close, send/recv) and kept in SOCK_OWNER, keyed by the `struct sock`.
use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    AF_INET, AF_INET6, Family,
    tcp::{
        RESET_RECEIVED, RESET_SENT, SockOwner, SocketClose, SocketOpen, TcpAccept, TcpConnect,
        TcpListen, TcpReset, TcpState, state,
    },
};

use crate::common::{
    Owner, SOCK_FDS, SOCK_OWNER, SockFd, Task, current, current_allowed, current_raw,
    current_task_ptr, emit, family_enabled, field, is_self, kread, off, other_allowed, save_args,
    sys_arg, sys_ret, take_args, task_off,
};

const IPPROTO_TCP: u16 = 6;
const EAGAIN: i64 = 11;
const EINTR: i64 = 4;

#[inline(always)]
fn owner_of(t: &Task) -> Owner {
    Owner {
        tgid: t.tgid,
        _pad: 0,
        cgroup_id: t.cgroup_id(),
        comm: t.comm(),
    }
}

#[inline(always)]
fn fd_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

/// Whether the socket's owner (or, when unknown, the current task) should be traced.
#[inline(always)]
fn subject_allowed(owner: Option<&Owner>, cur: &Task) -> bool {
    match owner {
        Some(o) => !is_self(o.tgid) && other_allowed(o.tgid, &o.comm, o.cgroup_id),
        None => !is_self(cur.tgid) && current_allowed(cur),
    }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    if let Some(p) = field::<u16>(ctx, off!(iss_protocol))
        && p != IPPROTO_TCP
    {
        return None;
    }
    let sk: u64 = field(ctx, off!(iss_skaddr))?;
    let old = field::<i32>(ctx, off!(iss_oldstate))? as u16;
    let new = field::<i32>(ctx, off!(iss_newstate))? as u16;
    let cur = current_raw();
    // These transitions only happen inside connect(), listen(), close() or shutdown(): the
    // current task owns the socket.
    let in_process_context = new == state::SYN_SENT
        || new == state::LISTEN
        || (old == state::ESTABLISHED && new == state::FIN_WAIT1)
        || (old == state::CLOSE_WAIT && new == state::LAST_ACK);
    // The owner is kept past CLOSE: close() with SO_LINGER 0 sends its reset after the
    // socket entered CLOSE. A new passive socket (LISTEN -> SYN_RECV) may reuse the address of
    // an old one: its old owner is forgotten then (accept() names the new one); active and
    // listening sockets overwrite it in process context.
    let owner = if in_process_context {
        let o = owner_of(&cur);
        let _ = SOCK_OWNER.insert(&sk, &o, 0);
        Some(o)
    } else if old == state::LISTEN && new == state::SYN_RECV {
        let _ = SOCK_OWNER.remove(&sk);
        None
    } else {
        unsafe { SOCK_OWNER.get(&sk).copied() }
    };
    if !subject_allowed(owner.as_ref(), &cur) {
        return None;
    }
    let family: u16 = field(ctx, off!(iss_family))?;
    let mut ev = TcpState {
        skaddr: sk,
        old_state: old,
        new_state: new,
        family,
        sport: field(ctx, off!(iss_sport)).unwrap_or(0),
        dport: field(ctx, off!(iss_dport)).unwrap_or(0),
        _pad: 0,
        owner_tgid: owner.map(|o| o.tgid).unwrap_or(0),
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET6 {
        ev.saddr = field(ctx, off!(iss_saddr_v6)).unwrap_or([0; 16]);
        ev.daddr = field(ctx, off!(iss_daddr_v6)).unwrap_or([0; 16]);
    } else {
        let s: [u8; 4] = field(ctx, off!(iss_saddr)).unwrap_or([0; 4]);
        let d: [u8; 4] = field(ctx, off!(iss_daddr)).unwrap_or([0; 4]);
        ev.saddr[..4].copy_from_slice(&s);
        ev.daddr[..4].copy_from_slice(&d);
    }
    emit(&cur, ev);
    Some(())
}

/// Decodes a `struct sockaddr_in`/`sockaddr_in6` image (as in tcp_send_reset on 6.10+).
#[inline(always)]
fn from_sockaddr(sa: &[u8; 28], addr: &mut [u8; 16]) -> (u16, u16) {
    let family = u16::from_ne_bytes([sa[0], sa[1]]);
    let port = u16::from_be_bytes([sa[2], sa[3]]);
    if family == AF_INET6 {
        addr.copy_from_slice(&sa[8..24]);
    } else {
        addr[..4].copy_from_slice(&sa[4..8]);
    }
    (family, port)
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let _ = try_tcp_send_reset(&ctx);
    0
}

fn try_tcp_send_reset(ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let sk: u64 = field(ctx, off!(tsr_skaddr)).unwrap_or(0);
    let cur = current_raw();
    let owner = if sk != 0 {
        unsafe { SOCK_OWNER.get(&sk).copied() }
    } else {
        None
    };
    if !subject_allowed(owner.as_ref(), &cur) {
        return None;
    }
    let mut ev = TcpReset {
        sk,
        direction: RESET_SENT,
        _pad: 0,
        family: 0,
        sport: 0,
        dport: 0,
        owner_tgid: owner.map(|o| o.tgid).unwrap_or(0),
        state: field::<i32>(ctx, off!(tsr_state)).unwrap_or(0) as u32,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    let saddr = off!(tsr_saddr);
    if saddr.size == 28 {
        let s: [u8; 28] = field(ctx, saddr)?;
        let d: [u8; 28] = field(ctx, off!(tsr_daddr))?;
        let (family, sport) = from_sockaddr(&s, &mut ev.saddr);
        let (_, dport) = from_sockaddr(&d, &mut ev.daddr);
        ev.family = family;
        ev.sport = sport;
        ev.dport = dport;
    } else {
        ev.family = field(ctx, off!(tsr_family)).unwrap_or(0);
        ev.sport = field(ctx, off!(tsr_sport)).unwrap_or(0);
        ev.dport = field(ctx, off!(tsr_dport)).unwrap_or(0);
        if ev.family == AF_INET6 {
            ev.saddr = field(ctx, off!(tsr_saddr_v6)).unwrap_or([0; 16]);
            ev.daddr = field(ctx, off!(tsr_daddr_v6)).unwrap_or([0; 16]);
        } else {
            let s: [u8; 4] = field(ctx, saddr).unwrap_or([0; 4]);
            let d: [u8; 4] = field(ctx, off!(tsr_daddr)).unwrap_or([0; 4]);
            ev.saddr[..4].copy_from_slice(&s);
            ev.daddr[..4].copy_from_slice(&d);
        }
    }
    emit(&cur, ev);
    Some(())
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let _ = try_tcp_receive_reset(&ctx);
    0
}

fn try_tcp_receive_reset(ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let sk: u64 = field(ctx, off!(trr_skaddr)).unwrap_or(0);
    let cur = current_raw();
    let owner = if sk != 0 {
        unsafe { SOCK_OWNER.get(&sk).copied() }
    } else {
        None
    };
    if !subject_allowed(owner.as_ref(), &cur) {
        return None;
    }
    let family: u16 = field(ctx, off!(trr_family)).unwrap_or(0);
    let mut ev = TcpReset {
        sk,
        direction: RESET_RECEIVED,
        _pad: 0,
        family,
        sport: field(ctx, off!(trr_sport)).unwrap_or(0),
        dport: field(ctx, off!(trr_dport)).unwrap_or(0),
        owner_tgid: owner.map(|o| o.tgid).unwrap_or(0),
        state: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET6 {
        ev.saddr = field(ctx, off!(trr_saddr_v6)).unwrap_or([0; 16]);
        ev.daddr = field(ctx, off!(trr_daddr_v6)).unwrap_or([0; 16]);
    } else {
        let s: [u8; 4] = field(ctx, off!(trr_saddr)).unwrap_or([0; 4]);
        let d: [u8; 4] = field(ctx, off!(trr_daddr)).unwrap_or([0; 4]);
        ev.saddr[..4].copy_from_slice(&s);
        ev.daddr[..4].copy_from_slice(&d);
    }
    emit(&cur, ev);
    Some(())
}

/// send/recv on a socket: learn (or correct) its owner; emit only on first sight or change.
#[inline(always)]
fn sock_length(ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    if field::<u16>(ctx, off!(sl_protocol))? != IPPROTO_TCP {
        return None;
    }
    let sk: u64 = field(ctx, off!(sl_sk))?;
    let tgid = crate::common::current_tgid();
    let prev = unsafe { SOCK_OWNER.get(&sk).map(|o| o.tgid) };
    if prev == Some(tgid) {
        return None;
    }
    let cur = current_raw();
    let _ = SOCK_OWNER.insert(&sk, &owner_of(&cur), 0);
    if is_self(tgid) || !current_allowed(&cur) {
        return None;
    }
    emit(
        &cur,
        SockOwner {
            sk,
            prev_tgid: prev.unwrap_or(0),
            _pad: 0,
        },
    );
    Some(())
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    let _ = sock_length(&ctx);
    0
}

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    let _ = sock_length(&ctx);
    0
}

/// The `struct sock` behind fd `fd` of the current process, through BTF offsets:
/// task->files->fdt->fd[fd]->private_data (struct socket)->sk.
#[inline(always)]
fn sock_of_fd(fd: u32) -> Option<u64> {
    let task = current_task_ptr();
    let files: u64 = kread(task, task_off!(task_files))?;
    let fdt: u64 = kread(files, task_off!(files_fdt))?;
    let max: u32 = kread(fdt, task_off!(fdtable_max_fds))?;
    if fd >= max {
        return None;
    }
    let fds: u64 = kread(fdt, task_off!(fdtable_fd))?;
    let file: u64 = kread(fds, fd.checked_mul(8)?)?;
    let sock: u64 = kread(file, task_off!(file_private_data))?;
    let sk: u64 = kread(sock, task_off!(socket_sk))?;
    if sk == 0 { None } else { Some(sk) }
}

/// Family, local port, remote port and addresses of a `struct sock`.
#[inline(always)]
fn sock_addrs(sk: u64, ev: &mut TcpAccept) {
    let family: u16 = kread(sk, task_off!(skc_family)).unwrap_or(0);
    ev.family = family;
    ev.sport = kread(sk, task_off!(skc_num)).unwrap_or(0);
    ev.dport = u16::from_be(kread(sk, task_off!(skc_dport)).unwrap_or(0));
    if family == AF_INET6 {
        ev.saddr = kread(sk, task_off!(skc_v6_rcv_saddr)).unwrap_or([0; 16]);
        ev.daddr = kread(sk, task_off!(skc_v6_daddr)).unwrap_or([0; 16]);
    } else {
        let s: [u8; 4] = kread(sk, task_off!(skc_rcv_saddr)).unwrap_or([0; 4]);
        let d: [u8; 4] = kread(sk, task_off!(skc_daddr)).unwrap_or([0; 4]);
        ev.saddr[..4].copy_from_slice(&s);
        ev.daddr[..4].copy_from_slice(&d);
    }
}

const TAG_ACCEPT: u64 = 1;
const TAG_SOCKET: u64 = 2;
const TAG_CONNECT: u64 = 3;

#[inline(always)]
fn accept_enter(ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    save_args(cur.pid, [TAG_ACCEPT, sys_arg(ctx, 0)?, 0, 0]);
    Some(())
}

#[inline(always)]
fn accept_exit(ctx: &TracePointContext) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let args = take_args(tid)?;
    if args[0] != TAG_ACCEPT {
        return None;
    }
    let ret = sys_ret(ctx)?;
    // Non-blocking accept loops see EAGAIN constantly: not an event.
    if ret == -EAGAIN || ret == -EINTR {
        return None;
    }
    let cur = current()?;
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
    if ret >= 0 {
        if let Some(sk) = sock_of_fd(ret as u32) {
            ev.sk = sk;
            sock_addrs(sk, &mut ev);
            let _ = SOCK_OWNER.insert(&sk, &owner_of(&cur), 0);
        }
        let fdv = SockFd {
            family: ev.family,
            sock_type: 1,
            _pad: 0,
        };
        let _ = SOCK_FDS.insert(&fd_key(cur.tgid, ret as u32), &fdv, 0);
        if ev.family != AF_INET && ev.family != AF_INET6 && ev.family != 0 {
            // accept() on a unix socket: still a socket fd for the accounting.
            emit(
                &cur,
                SocketOpen {
                    fd: ret as i32,
                    family: ev.family,
                    sock_type: 1,
                    protocol: 0,
                    _pad: 0,
                },
            );
            return Some(());
        }
    } else if let Some(sk) = sock_of_fd(args[1] as u32) {
        // Failure: report the listening socket's address, so EMFILE names the port.
        sock_addrs(sk, &mut ev);
        if ev.family != AF_INET && ev.family != AF_INET6 {
            emit(
                &cur,
                SocketOpen {
                    fd: ret as i32,
                    family: ev.family,
                    sock_type: 1,
                    protocol: 0,
                    _pad: 0,
                },
            );
            return Some(());
        }
    }
    emit(&cur, ev);
    Some(())
}

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    let _ = accept_enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    let _ = accept_enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = accept_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = accept_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_enter_socket(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_socket(&ctx);
    0
}

fn try_sys_enter_socket(ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    save_args(
        cur.pid,
        [
            TAG_SOCKET,
            sys_arg(ctx, 0)?,
            sys_arg(ctx, 1)?,
            sys_arg(ctx, 2)?,
        ],
    );
    Some(())
}

#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_socket(&ctx);
    0
}

fn try_sys_exit_socket(ctx: &TracePointContext) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let args = take_args(tid)?;
    if args[0] != TAG_SOCKET {
        return None;
    }
    let ret = sys_ret(ctx)?;
    let cur = current()?;
    let family = args[1] as u16;
    // SOCK_NONBLOCK / SOCK_CLOEXEC live in the upper bits of the type argument.
    let sock_type = (args[2] & 0xf) as u16;
    if ret >= 0 {
        let _ = SOCK_FDS.insert(
            &fd_key(cur.tgid, ret as u32),
            &SockFd {
                family,
                sock_type,
                _pad: 0,
            },
            0,
        );
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
    let _ = try_sys_enter_close(&ctx);
    0
}

fn try_sys_enter_close(ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let fd = sys_arg(ctx, 0)? as u32;
    let key = fd_key(crate::common::current_tgid(), fd);
    let info = unsafe { SOCK_FDS.get(&key).copied() }?;
    let _ = SOCK_FDS.remove(&key);
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    emit(
        &cur,
        SocketClose {
            fd: fd as i32,
            family: info.family,
            sock_type: info.sock_type,
        },
    );
    Some(())
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_connect(&ctx);
    0
}

fn try_sys_enter_connect(ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let fd = sys_arg(ctx, 0)?;
    let cur = current()?;
    let info = unsafe { SOCK_FDS.get(&fd_key(cur.tgid, fd as u32)).copied() }?;
    if info.family != AF_INET && info.family != AF_INET6 {
        return None;
    }
    if !current_allowed(&cur) {
        return None;
    }
    save_args(cur.pid, [TAG_CONNECT, fd, sys_arg(ctx, 1)?, 0]);
    Some(())
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_connect(&ctx);
    0
}

fn try_sys_exit_connect(ctx: &TracePointContext) -> Option<()> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let args = take_args(tid)?;
    if args[0] != TAG_CONNECT {
        return None;
    }
    let ret = sys_ret(ctx)?;
    let cur = current()?;
    let sa: [u8; 28] =
        unsafe { bpf_probe_read_user(args[2] as *const [u8; 28]) }.unwrap_or([0; 28]);
    let mut daddr = [0u8; 16];
    let (family, dport) = from_sockaddr(&sa, &mut daddr);
    emit(
        &cur,
        TcpConnect {
            fd: args[1] as i32,
            ret: ret as i32,
            family,
            dport,
            _pad: 0,
            daddr,
        },
    );
    Some(())
}

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_listen(&ctx);
    0
}

fn try_sys_enter_listen(ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let cur = current()?;
    if !current_allowed(&cur) {
        return None;
    }
    let fd = sys_arg(ctx, 0)?;
    let backlog = sys_arg(ctx, 1)?;
    emit(
        &cur,
        TcpListen {
            fd: fd as i32,
            backlog: backlog as i32,
        },
    );
    Some(())
}
