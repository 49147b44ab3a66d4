//! TCP: the connection model (CONNS), state changes (`inet_sock_set_state`, BTF and classic),
//! resets sent and received, and bytes moved (`sock_send_length`/`sock_recv_length`). The
//! socket syscalls that open, announce and close connections are in `sockets.rs`.
//!
//! Each connection lives in CONNS (keyed by its `struct sock`) from connect()/accept() to
//! close(): state changes update it in place and emit nothing, so a short connection costs a
//! `conn_open` and a `conn_close` on each end. `--events tcp-states` also emits every state
//! change. `inet_sock_set_state` and the reset tracepoints often run in softirq, where the
//! current task is not the socket's owner: ownership is learnt only in process context
//! (connect, listen, accept, close, send/recv).
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    AF_INET6, Family,
    config::{OPT_TCP_STATES, ReasonMap, TaskOffsets},
    prog::Prog,
    tcp::{
        CONN_ALLOWED, CONN_ANNOUNCED, CONN_CLOSED, ConnInfo, RESET_REASON_UNRECOGNISED,
        RESET_RECEIVED, RESET_SENT, ROLE_ACTIVE, ROLE_PASSIVE, ROLE_UNKNOWN, STATE_FLAG_MODEL,
        SockOwner, TcpReset, TcpState, state,
    },
};

use crate::common::{
    CONNS, Known, Owner, Task, btf_read, current_allowed, current_raw, emit, family_enabled, field,
    filtering, is_self, kread, now, off, option, other_allowed, put, sk_read, task_off,
};

const IPPROTO_TCP: u16 = 6;

/// A connection entry as first seen, owned by `owner` (None: not known yet).
#[inline(always)]
fn fresh(owner: Option<&Task>, role: u8, state: u16, ts: u64) -> ConnInfo {
    let mut c = ConnInfo {
        owner_tgid: 0,
        fd: -1,
        cgroup_id: 0,
        comm: [0; 16],
        open_ns: ts,
        wait_ns: 0,
        last_recv_ns: 0,
        bytes_in: 0,
        bytes_out: 0,
        state_ns: ts,
        state: state as u8,
        role,
        flags: 0,
        _pad: 0,
        family: 0,
        sport: 0,
        dport: 0,
        _pad2: 0,
        _pad3: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    match owner {
        Some(t) => set_owner(&mut c, t),
        None if !filtering() => c.flags = CONN_ALLOWED,
        None => {}
    }
    c
}

#[inline(always)]
fn set_owner(c: &mut ConnInfo, t: &Task) {
    c.owner_tgid = t.tgid;
    c.cgroup_id = t.cgroup_id();
    c.comm = t.comm();
    if !is_self(t.tgid) && current_allowed(t) {
        c.flags |= CONN_ALLOWED;
    } else {
        c.flags &= !CONN_ALLOWED;
    }
}

/// The owner of connection `sk` (tgid 0: not known). A closed connection's entry stays as its
/// tombstone until the address is reused, so a reset sent after close() still finds it.
#[inline(always)]
fn conn_owner(sk: u64) -> Option<Owner> {
    if sk == 0 {
        return None;
    }
    // SAFETY: the entry is copied into an Owner at once.
    let c = unsafe { CONNS.get(&sk) }?;
    Some(Owner {
        tgid: c.owner_tgid,
        _pad: 0,
        cgroup_id: c.cgroup_id,
        comm: c.comm,
    })
}

/// Whether the socket's owner (or, when unknown, the current task) should be traced.
#[inline(always)]
fn subject_allowed(conn: Option<&Owner>, cur: &Task) -> bool {
    match conn {
        Some(c) if c.tgid != 0 => !is_self(c.tgid) && other_allowed(c.tgid, &c.comm, c.cgroup_id),
        _ => !is_self(cur.tgid) && current_allowed(cur),
    }
}

/// BTF tracepoint: the kernel passes the socket and both states, and copies nothing into a
/// trace buffer; the rest is read from the socket only when needed.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = try_inet_sock_set_state_btf(Prog::inet_sock_set_state_btf, &ctx);
    0
}

fn try_inet_sock_set_state_btf(p: Prog, ctx: &BtfTracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let sk = ctx.arg::<*const u8>(0) as u64;
    if btf_read::<u16>(sk, task_off!(sk_protocol))? != IPPROTO_TCP {
        return None;
    }
    let old = ctx.arg::<i64>(1) as u16;
    let new = ctx.arg::<i64>(2) as u16;
    state_change(sk, old, new, |a: &mut Addrs| {
        *a = sock_addrs_of::<true>(p, sk)
    })
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(Prog::inet_sock_set_state, &ctx);
    0
}

/// The classic tracepoint's copy of the socket's addresses (filled in place: a BPF function
/// may not return a pointer to its stack, which a returned struct becomes).
#[inline(always)]
fn tp_addrs(p: Prog, ctx: &TracePointContext, a: &mut Addrs) {
    let family: u16 = field(p, ctx, off!(iss_family)).unwrap_or(0);
    a.family = family;
    a.sport = field(p, ctx, off!(iss_sport)).unwrap_or(0);
    a.dport = field(p, ctx, off!(iss_dport)).unwrap_or(0);
    if family == AF_INET6 {
        a.saddr = field(p, ctx, off!(iss_saddr_v6)).unwrap_or([0; 16]);
        a.daddr = field(p, ctx, off!(iss_daddr_v6)).unwrap_or([0; 16]);
    } else {
        let s: [u8; 4] = field(p, ctx, off!(iss_saddr)).unwrap_or([0; 4]);
        let d: [u8; 4] = field(p, ctx, off!(iss_daddr)).unwrap_or([0; 4]);
        a.saddr[..4].copy_from_slice(&s);
        a.daddr[..4].copy_from_slice(&d);
    }
}

fn try_inet_sock_set_state(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    if let Some(proto) = field::<u16>(p, ctx, off!(iss_protocol))
        && proto != IPPROTO_TCP
    {
        return None;
    }
    let sk: u64 = field(p, ctx, off!(iss_skaddr))?;
    let old = field::<i32>(p, ctx, off!(iss_oldstate))? as u16;
    let new = field::<i32>(p, ctx, off!(iss_newstate))? as u16;
    state_change(sk, old, new, |a: &mut Addrs| tp_addrs(p, ctx, a))
}

/// Keeps CONNS up to date with a state change. A new socket (connect's SYN_SENT, or a passive
/// one: LISTEN -> SYN_RECV) may reuse the address of an old one: its entry starts afresh.
#[inline(always)]
fn update_model(
    sk: u64,
    old: u16,
    new: u16,
    in_process_context: bool,
    // The current task when `in_process_context`, else not read.
    cur: &Task,
    addrs: impl Fn(&mut Addrs),
) {
    // The time is read only where it is kept (a clock read is one of a hit's dearest parts).
    if new == state::SYN_SENT {
        let c = fresh(Some(cur), ROLE_ACTIVE, new, now());
        put(&CONNS, &sk, &c);
        crate::sockets::connecting(cur.pid, sk);
        return;
    }
    if old == state::LISTEN && new == state::SYN_RECV {
        // Its open time is accept()'s (0 until then: a connection never accepted is never
        // announced, and a CLOSE_WAIT keeps its own time).
        let mut c = fresh(None, ROLE_PASSIVE, new, 0);
        let mut a = Addrs::default();
        addrs(&mut a);
        c.family = a.family;
        c.sport = a.sport;
        c.dport = a.dport;
        put(&CONNS, &sk, &c);
        return;
    }
    if new == state::LISTEN || old == state::LISTEN {
        // A listener is not a connection.
        let _ = CONNS.remove(&sk);
        return;
    }
    let Some(p) = CONNS.get_ptr_mut(&sk) else {
        if new != state::CLOSE {
            // A connection from before we started: learn it from here on.
            let owner = if in_process_context { Some(cur) } else { None };
            let c = fresh(owner, ROLE_UNKNOWN, new, now());
            let _ = CONNS.insert(&sk, &c, 0);
        }
        return;
    };
    // SAFETY: a valid map value pointer for the rest of this program.
    let c = unsafe { &mut *p };
    c.state = new as u8;
    if in_process_context && c.owner_tgid != cur.tgid {
        set_owner(c, cur);
    }
    if new == state::CLOSE && c.flags & CONN_ANNOUNCED == 0 {
        // Never ours to see close (a passive connection that died before accept()): done.
        // With CONN_CLOSED and CLOSE, the entry is the socket's tombstone.
        c.flags |= CONN_CLOSED;
    }
    // Only the time CLOSE_WAIT began is read (by the collector, for a peer's close left
    // unanswered): a clock read is one of a hit's dearest parts.
    if new == state::CLOSE_WAIT {
        c.state_ns = now();
    }
}

/// A TCP state change: kept in the model; emitted for listeners, or every one with
/// `--tcp-states`.
#[inline(always)]
fn state_change(sk: u64, old: u16, new: u16, addrs: impl Fn(&mut Addrs)) -> Option<()> {
    // These transitions only happen inside connect(), listen(), close() or shutdown(): the
    // current task owns the socket. The others (most run in softirq) do not ask who is
    // current, unless the change is emitted: a helper call is one of a hit's dearest parts.
    let in_process_context = new == state::SYN_SENT
        || new == state::LISTEN
        || (old == state::ESTABLISHED && new == state::FIN_WAIT1)
        || (old == state::CLOSE_WAIT && new == state::LAST_ACK);
    let owner = if in_process_context {
        current_raw()
    } else {
        Task {
            tgid: 0,
            pid: 0,
            task: 0,
        }
    };
    update_model(sk, old, new, in_process_context, &owner, &addrs);
    // Listeners come and go rarely, and analyses need their ports; every other change only
    // when asked for.
    let listener = new == state::LISTEN || (old == state::LISTEN && new == state::CLOSE);
    if !listener && !option(OPT_TCP_STATES) {
        return Some(());
    }
    let cur = if in_process_context {
        owner
    } else {
        current_raw()
    };
    let conn = if listener || in_process_context {
        None
    } else {
        conn_owner(sk)
    };
    if !subject_allowed(conn.as_ref(), &cur) {
        return None;
    }
    let owner_tgid = match conn {
        Some(c) => c.tgid,
        None if listener || in_process_context => cur.tgid,
        None => 0,
    };
    let mut a = Addrs::default();
    addrs(&mut a);
    emit(
        &cur,
        TcpState {
            skaddr: sk,
            old_state: old,
            new_state: new,
            family: a.family,
            sport: a.sport,
            dport: a.dport,
            flags: STATE_FLAG_MODEL,
            owner_tgid,
            saddr: a.saddr,
            daddr: a.daddr,
        },
    );
    Some(())
}

/// Decodes a `struct sockaddr_in`/`sockaddr_in6` image (as in tcp_send_reset on 6.10+).
#[inline(always)]
pub(crate) fn from_sockaddr(sa: &[u8; 28], addr: &mut [u8; 16]) -> (u16, u16) {
    let family = u16::from_ne_bytes([sa[0], sa[1]]);
    let port = u16::from_be_bytes([sa[2], sa[3]]);
    if family == AF_INET6 {
        addr.copy_from_slice(&sa[8..24]);
    } else {
        addr[..4].copy_from_slice(&sa[4..8]);
    }
    (family, port)
}

/// The send reset's reason in tracer's numbering, through the collector's map of this
/// kernel's `enum sk_rst_reason` (0 when the kernel has no reason).
#[inline(always)]
fn reset_reason(p: Prog, ctx: &TracePointContext) -> u8 {
    let Some(v) = field::<u32>(p, ctx, off!(tsr_reason)) else {
        return 0;
    };
    if v as usize >= ReasonMap::LEN {
        return RESET_REASON_UNRECOGNISED;
    }
    let i = v as usize & (ReasonMap::LEN - 1);
    // SAFETY: `i` is within the array; OFFSETS is a read-only global.
    unsafe {
        core::ptr::read_volatile(
            (&raw const crate::common::OFFSETS.tsr_reason_map.0)
                .cast::<u8>()
                .add(i),
        )
    }
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let _ = try_tcp_send_reset(Prog::tcp_send_reset, &ctx);
    0
}

fn try_tcp_send_reset(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let sk: u64 = field(p, ctx, off!(tsr_skaddr)).unwrap_or(0);
    let cur = current_raw();
    let owner = conn_owner(sk);
    if !subject_allowed(owner.as_ref(), &cur) {
        return None;
    }
    let mut ev = TcpReset {
        sk,
        direction: RESET_SENT,
        reason: reset_reason(p, ctx),
        family: 0,
        sport: 0,
        dport: 0,
        owner_tgid: owner.map(|o| o.tgid).unwrap_or(0),
        state: field::<i32>(p, ctx, off!(tsr_state)).unwrap_or(0) as u32,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    let saddr = off!(tsr_saddr);
    if saddr.size == 28 {
        let s: [u8; 28] = field(p, ctx, saddr)?;
        let d: [u8; 28] = field(p, ctx, off!(tsr_daddr))?;
        let (family, sport) = from_sockaddr(&s, &mut ev.saddr);
        let (_, dport) = from_sockaddr(&d, &mut ev.daddr);
        ev.family = family;
        ev.sport = sport;
        ev.dport = dport;
    } else {
        ev.family = field(p, ctx, off!(tsr_family)).unwrap_or(0);
        ev.sport = field(p, ctx, off!(tsr_sport)).unwrap_or(0);
        ev.dport = field(p, ctx, off!(tsr_dport)).unwrap_or(0);
        if ev.family == AF_INET6 {
            ev.saddr = field(p, ctx, off!(tsr_saddr_v6)).unwrap_or([0; 16]);
            ev.daddr = field(p, ctx, off!(tsr_daddr_v6)).unwrap_or([0; 16]);
        } else {
            let s: [u8; 4] = field(p, ctx, saddr).unwrap_or([0; 4]);
            let d: [u8; 4] = field(p, ctx, off!(tsr_daddr)).unwrap_or([0; 4]);
            ev.saddr[..4].copy_from_slice(&s);
            ev.daddr[..4].copy_from_slice(&d);
        }
    }
    emit(&cur, ev);
    Some(())
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let _ = try_tcp_receive_reset(Prog::tcp_receive_reset, &ctx);
    0
}

fn try_tcp_receive_reset(p: Prog, ctx: &TracePointContext) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let sk: u64 = field(p, ctx, off!(trr_skaddr)).unwrap_or(0);
    let cur = current_raw();
    let owner = conn_owner(sk);
    if !subject_allowed(owner.as_ref(), &cur) {
        return None;
    }
    let family: u16 = field(p, ctx, off!(trr_family)).unwrap_or(0);
    let mut ev = TcpReset {
        sk,
        direction: RESET_RECEIVED,
        reason: 0,
        family,
        sport: field(p, ctx, off!(trr_sport)).unwrap_or(0),
        dport: field(p, ctx, off!(trr_dport)).unwrap_or(0),
        owner_tgid: owner.map(|o| o.tgid).unwrap_or(0),
        state: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET6 {
        ev.saddr = field(p, ctx, off!(trr_saddr_v6)).unwrap_or([0; 16]);
        ev.daddr = field(p, ctx, off!(trr_daddr_v6)).unwrap_or([0; 16]);
    } else {
        let s: [u8; 4] = field(p, ctx, off!(trr_saddr)).unwrap_or([0; 4]);
        let d: [u8; 4] = field(p, ctx, off!(trr_daddr)).unwrap_or([0; 4]);
        ev.saddr[..4].copy_from_slice(&s);
        ev.daddr[..4].copy_from_slice(&d);
    }
    emit(&cur, ev);
    Some(())
}

/// send/recv on a TCP socket: count bytes, the last receive and the first send still without
/// an answer; learn (or correct) its owner, emitting only on first sight or change. Calls that
/// moved nothing (EAGAIN from a non-blocking socket, EOF) teach nothing and cost one compare.
#[inline(always)]
fn sock_length(sk: u64, ret: i32, recv: bool) -> Option<()> {
    if ret <= 0 {
        return None;
    }
    let tgid = crate::common::current_tgid();
    let prev = match CONNS.get_ptr_mut(&sk) {
        Some(p) => {
            // SAFETY: a valid map value pointer for the rest of this program.
            let c = unsafe { &mut *p };
            if recv {
                c.bytes_in += ret as u64;
                c.last_recv_ns = now();
                c.wait_ns = 0;
            } else {
                c.bytes_out += ret as u64;
                if c.wait_ns == 0 {
                    c.wait_ns = now();
                }
            }
            if c.owner_tgid == tgid {
                return None;
            }
            let prev = c.owner_tgid;
            set_owner(c, &current_raw());
            prev
        }
        None => {
            let cur = current_raw();
            let mut c = fresh(Some(&cur), ROLE_UNKNOWN, 0, 0);
            let t = now();
            if recv {
                c.bytes_in = ret as u64;
                c.last_recv_ns = t;
            } else {
                c.bytes_out = ret as u64;
                c.wait_ns = t;
            }
            let _ = CONNS.insert(&sk, &c, 0);
            0
        }
    };
    let cur = current_raw();
    if is_self(tgid) || !current_allowed(&cur) {
        return None;
    }
    emit(
        &cur,
        SockOwner {
            sk,
            prev_tgid: prev,
            _pad: 0,
        },
    );
    Some(())
}

/// BTF tracepoints: (sk, ret, flags) straight from the kernel, no trace buffer.
#[inline(always)]
fn sock_length_btf(ctx: &BtfTracePointContext, recv: bool) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let ret = ctx.arg::<i64>(1) as i32;
    if ret <= 0 {
        return None;
    }
    let sk = ctx.arg::<*const u8>(0) as u64;
    if btf_read::<u16>(sk, task_off!(sk_protocol))? != IPPROTO_TCP {
        return None;
    }
    sock_length(sk, ret, recv)
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = sock_length_btf(&ctx, true);
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = sock_length_btf(&ctx, false);
    0
}

#[inline(always)]
fn sock_length_tp(p: Prog, ctx: &TracePointContext, recv: bool) -> Option<()> {
    if !family_enabled(Family::Tcp) {
        return None;
    }
    let ret = field::<i32>(p, ctx, off!(sl_ret)).unwrap_or(0);
    if ret <= 0 {
        return None;
    }
    if field::<u16>(p, ctx, off!(sl_protocol))? != IPPROTO_TCP {
        return None;
    }
    let sk: u64 = field(p, ctx, off!(sl_sk))?;
    sock_length(sk, ret, recv)
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    let _ = sock_length_tp(Prog::sock_recv_length, &ctx, true);
    0
}

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    let _ = sock_length_tp(Prog::sock_send_length, &ctx, false);
    0
}

/// A socket's local port: `num` (its `skc_num`, read with its other fields) while it holds the
/// port, else `inet_sport`, which outlives it: `skc_num` is cleared when the port is released,
/// before the socket's CLOSE state change. `inet_sport` is a member of `struct inet_sock`,
/// beyond the `struct sock` a BTF argument is typed as: always a probe read, so only made
/// when `skc_num` is gone.
#[inline(always)]
fn local_port(p: Prog, sk: u64, num: u16) -> u16 {
    if num != 0 {
        return num;
    }
    kread::<u16>(p, sk, task_off!(inet_sport)).map_or(0, u16::from_be)
}

/// Family, local and remote ports and addresses of a `struct sock`.
#[derive(Default)]
pub(crate) struct Addrs {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[inline(always)]
pub(crate) fn sock_addrs(p: Prog, sk: u64) -> Addrs {
    let daddr = task_off!(skc_daddr);
    // sock_common's usual layout (every kernel tracer knows): the IPv4 addresses, ports and
    // family in its first 18 bytes, the IPv6 addresses side by side. Then two or three probe
    // reads instead of six; the offsets are read-only globals, so the verifier keeps only
    // one of the two paths.
    if daddr == 0
        && task_off!(skc_rcv_saddr) == 4
        && task_off!(skc_dport) == 12
        && task_off!(skc_num) == 14
        && task_off!(skc_family) == 16
    {
        let b: [u8; 18] = kread(p, sk, daddr).unwrap_or([0; 18]);
        let family = u16::from_ne_bytes([b[16], b[17]]);
        let sport = local_port(p, sk, u16::from_ne_bytes([b[14], b[15]]));
        let mut a = Addrs {
            family,
            sport,
            dport: u16::from_be_bytes([b[12], b[13]]),
            saddr: [0; 16],
            daddr: [0; 16],
        };
        if family != AF_INET6 {
            a.saddr[..4].copy_from_slice(&b[4..8]);
            a.daddr[..4].copy_from_slice(&b[..4]);
            return a;
        }
        let v6 = task_off!(skc_v6_daddr);
        if v6 != TaskOffsets::UNKNOWN && task_off!(skc_v6_rcv_saddr) == v6 + 16 {
            let b: [u8; 32] = kread(p, sk, v6).unwrap_or([0; 32]);
            a.daddr.copy_from_slice(&b[..16]);
            a.saddr.copy_from_slice(&b[16..]);
            return a;
        }
    }
    sock_addrs_of::<false>(p, sk)
}

/// [`sock_addrs`]; `BTF`: `sk` is a BTF tracepoint's argument, read with plain loads.
#[inline(always)]
fn sock_addrs_of<const BTF: bool>(p: Prog, sk: u64) -> Addrs {
    let family: u16 = sk_read::<_, BTF>(p, sk, task_off!(skc_family)).unwrap_or(0);
    let sport = local_port(
        p,
        sk,
        sk_read::<_, BTF>(p, sk, task_off!(skc_num)).unwrap_or(0),
    );
    let mut a = Addrs {
        family,
        sport,
        dport: u16::from_be(sk_read::<_, BTF>(p, sk, task_off!(skc_dport)).unwrap_or(0)),
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET6 {
        a.saddr = sk_read::<_, BTF>(p, sk, task_off!(skc_v6_rcv_saddr)).unwrap_or([0; 16]);
        a.daddr = sk_read::<_, BTF>(p, sk, task_off!(skc_v6_daddr)).unwrap_or([0; 16]);
    } else {
        let s: [u8; 4] = sk_read::<_, BTF>(p, sk, task_off!(skc_rcv_saddr)).unwrap_or([0; 4]);
        let d: [u8; 4] = sk_read::<_, BTF>(p, sk, task_off!(skc_daddr)).unwrap_or([0; 4]);
        a.saddr[..4].copy_from_slice(&s);
        a.daddr[..4].copy_from_slice(&d);
    }
    a
}

/// The connection `sk` is now `cur`'s fd `fd`, announced in a conn_open: its entry says so.
/// `ts`: accept()'s time, a passive connection's open time (the conn_open's stamp too); 0 for
/// connect(), whose entry its SYN_SENT made (the clock is read only if there is none). Returns
/// the owner's comm and cgroup, read by this accept() or by this connect()'s SYN_SENT.
#[inline(always)]
pub(crate) fn adopt(sk: u64, cur: &Task, fd: i32, role: u8, a: &Addrs, ts: u64) -> Option<Known> {
    let p = match CONNS.get_ptr_mut(&sk) {
        Some(p) => p,
        None => {
            let c = fresh(None, role, 0, if ts != 0 { ts } else { now() });
            let _ = CONNS.insert(&sk, &c, 0);
            CONNS.get_ptr_mut(&sk)?
        }
    };
    // SAFETY: a valid map value pointer for the rest of this program.
    let c = unsafe { &mut *p };
    // connect()'s SYN_SENT already made this process the owner (comm, cgroup, filters): every
    // owner is set through set_owner, and no process has tgid 0.
    if c.owner_tgid != cur.tgid {
        set_owner(c, cur);
    }
    c.fd = fd;
    c.role = role;
    c.flags |= CONN_ANNOUNCED;
    c.flags &= !CONN_CLOSED;
    if role == ROLE_PASSIVE {
        c.open_ns = ts;
    }
    c.family = a.family;
    c.sport = a.sport;
    c.dport = a.dport;
    c.saddr = a.saddr;
    c.daddr = a.daddr;
    Some(Known {
        comm: c.comm,
        cgroup_id: c.cgroup_id,
    })
}
