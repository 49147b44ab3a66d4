//! Rendering events for people (one line each) and for scripts (one JSON object per line).
//! The only module that writes to stdout.
use std::io::{self, Write};

use serde::{Serialize, Serializer, ser::SerializeMap};
use tracer_common::{memory, tcp};

use crate::{
    event::{Body, Comm, Event, socket_addr},
    pipeline::{Ctx, Sink},
    units::bytes_human,
    vocab::{errno_name, signal_from_kernel, signal_name, tcp_state_name, wait_status},
};

pub fn ip(family: u16, a: &[u8; 16]) -> String {
    socket_addr(family, a, 0).ip().to_string()
}

/// `addr:port`, with brackets for IPv6.
pub fn endpoint(family: u16, a: &[u8; 16], port: u16) -> String {
    socket_addr(family, a, port).to_string()
}

fn family_name(f: u16) -> &'static str {
    match f {
        1 => "unix",
        2 => "inet",
        10 => "inet6",
        16 => "netlink",
        17 => "packet",
        _ => "other",
    }
}

/// The JSON object for one event: `ts`, `kind`, `pid`, `tid`, `comm`, `ppid`, then the fields
/// of its kind. This shape is a stable interface.
///
/// A view that serializes straight into the output (no `serde_json::Value` per event): write
/// it with `serde_json::to_writer`, [`write_json_line`], or `to_string()`.
pub fn to_json<'a>(ev: &'a Event, ctx: &'a Ctx<'a>) -> EventJson<'a> {
    EventJson { ev, ctx }
}

/// One event as JSON; see [`to_json`].
#[derive(Clone, Copy)]
pub struct EventJson<'a> {
    ev: &'a Event,
    ctx: &'a Ctx<'a>,
}

/// Appends one event as a JSON line (with its `\n`) to `buf`.
pub fn write_json_line(buf: &mut Vec<u8>, ev: &Event, ctx: &Ctx<'_>) -> io::Result<()> {
    serde_json::to_writer(&mut *buf, &EventJson { ev, ctx }).map_err(io::Error::from)?;
    buf.push(b'\n');
    Ok(())
}

impl std::fmt::Display for EventJson<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = Vec::with_capacity(256);
        serde_json::to_writer(&mut buf, self).map_err(|_| std::fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?)
    }
}

/// A JSON string written from `Display` output, escaped as it is written (no allocation).
struct Str<T>(T);

impl<T: std::fmt::Display> Serialize for Str<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// An address as [`ip`] formats it, without the `String`.
struct Ip<'a>(u16, &'a [u8; 16]);

impl std::fmt::Display for Ip<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == tracer_common::AF_INET6 {
            return std::fmt::Display::fmt(&socket_addr(self.0, self.1, 0).ip(), f);
        }
        // IPv4 (and what socket_addr reads as IPv4) by hand: the most frequent field there is,
        // and std's formatter goes through `fmt::write` per octet.
        let mut buf = [0u8; 15];
        let mut n = 0;
        for (i, &o) in self.1[..4].iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            if o >= 100 {
                buf[n] = b'0' + o / 100;
                n += 1;
            }
            if o >= 10 {
                buf[n] = b'0' + o / 10 % 10;
                n += 1;
            }
            buf[n] = b'0' + o % 10;
            n += 1;
        }
        // Digits and dots only.
        f.write_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
    }
}

fn owner(tgid: u32) -> Option<u32> {
    (tgid != 0).then_some(tgid)
}

/// A TCP record's family, addresses and ports, in the order every such kind writes them.
fn endpoints<M: SerializeMap>(
    m: &mut M,
    family: u16,
    saddr: &[u8; 16],
    sport: u16,
    daddr: &[u8; 16],
    dport: u16,
) -> Result<(), M::Error> {
    m.serialize_entry("family", family_name(family))?;
    m.serialize_entry("saddr", &Str(Ip(family, saddr)))?;
    m.serialize_entry("sport", &sport)?;
    m.serialize_entry("daddr", &Str(Ip(family, daddr)))?;
    m.serialize_entry("dport", &dport)
}

/// Milliseconds from boot-clock `since` to `now`; None when `since` is 0 (never, or unknown).
fn ms_since(now: u64, since: u64) -> Option<u64> {
    (since != 0).then(|| now.saturating_sub(since) / 1_000_000)
}

fn role_name(role: u8) -> &'static str {
    match role {
        tcp::ROLE_ACTIVE => "connect",
        tcp::ROLE_PASSIVE => "accept",
        _ => "unknown",
    }
}

/// Who closed first, from the state a connection was in when its fd was closed.
fn closed_by(state: u8) -> &'static str {
    match u16::from(state) {
        tcp::state::ESTABLISHED | tcp::state::SYN_SENT | tcp::state::SYN_RECV => "local",
        tcp::state::CLOSE_WAIT | tcp::state::LAST_ACK => "peer",
        tcp::state::CLOSE => "reset",
        _ => "unknown",
    }
}

/// EINPROGRESS: a non-blocking connect() under way, not a failure.
const EINPROGRESS: i32 = 115;

impl Serialize for EventJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (ev, ctx) = (self.ev, self.ctx);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ts", ctx.host.rfc3339_stamp(ev.ts_ns).as_str())?;
        m.serialize_entry("kind", ev.kind_name())?;
        m.serialize_entry("pid", &ev.tgid)?;
        m.serialize_entry("tid", &ev.tid)?;
        m.serialize_entry("comm", &Str(&ev.comm))?;
        m.serialize_entry("ppid", &ctx.procs.ppid(ev.tgid))?;
        m.serialize_entry("uid", &ev.uid)?;
        if let Some(w) = ctx.procs.get(ev.tgid).and_then(|p| p.workload.as_ref()) {
            for (k, v) in w.fields() {
                m.serialize_entry(k, v)?;
            }
        }
        match &ev.body {
            Body::TcpState(t) => {
                m.serialize_entry("old_state", tcp_state_name(t.old_state))?;
                m.serialize_entry("new_state", tcp_state_name(t.new_state))?;
                endpoints(&mut m, t.family, &t.saddr, t.sport, &t.daddr, t.dport)?;
                m.serialize_entry("owner_pid", &owner(t.owner_tgid))?;
                m.serialize_entry("sk", &Str(format_args!("{:#x}", t.skaddr)))?;
            }
            Body::TcpAccept(a) => {
                if a.ret >= 0 {
                    m.serialize_entry("fd", &a.ret)?;
                } else {
                    m.serialize_entry("error", &errno_name(a.ret))?;
                }
                m.serialize_entry("listen_fd", &a.listen_fd)?;
                if a.family != 0 {
                    m.serialize_entry("family", family_name(a.family))?;
                    m.serialize_entry("saddr", &Str(Ip(a.family, &a.saddr)))?;
                    m.serialize_entry("sport", &a.sport)?;
                    if a.ret >= 0 {
                        m.serialize_entry("daddr", &Str(Ip(a.family, &a.daddr)))?;
                        m.serialize_entry("dport", &a.dport)?;
                    }
                }
            }
            Body::TcpReset(r) => {
                let direction = if r.direction == tcp::RESET_SENT {
                    "sent"
                } else {
                    "received"
                };
                m.serialize_entry("direction", direction)?;
                m.serialize_entry("cause", crate::analysis::resets::cause(r).name())?;
                if let Some(reason) = tcp::reset_reason_name(r.reason) {
                    m.serialize_entry("reason", reason)?;
                }
                endpoints(&mut m, r.family, &r.saddr, r.sport, &r.daddr, r.dport)?;
                m.serialize_entry("owner_pid", &owner(r.owner_tgid))?;
            }
            Body::SocketOpen(x) => {
                if x.fd >= 0 {
                    m.serialize_entry("fd", &x.fd)?;
                } else {
                    m.serialize_entry("error", &errno_name(x.fd))?;
                }
                m.serialize_entry("family", family_name(x.family))?;
                m.serialize_entry("sock_type", &x.sock_type)?;
            }
            Body::SocketClose(x) => {
                m.serialize_entry("fd", &x.fd)?;
                m.serialize_entry("family", family_name(x.family))?;
            }
            Body::SockOwner(o) => {
                m.serialize_entry("sk", &Str(format_args!("{:#x}", o.sk)))?;
                m.serialize_entry("prev_owner_pid", &owner(o.prev_tgid))?;
            }
            Body::TcpConnect(c) => {
                m.serialize_entry("fd", &c.fd)?;
                if c.ret < 0 {
                    m.serialize_entry("error", &errno_name(c.ret))?;
                }
                m.serialize_entry("daddr", &Str(Ip(c.family, &c.daddr)))?;
                m.serialize_entry("dport", &c.dport)?;
            }
            Body::TcpListen(l) => {
                m.serialize_entry("fd", &l.fd)?;
                m.serialize_entry("backlog", &l.backlog)?;
            }
            Body::ConnOpen(c) => {
                m.serialize_entry("role", role_name(c.role))?;
                m.serialize_entry("fd", &c.fd)?;
                if c.ret < 0 && c.ret != -EINPROGRESS {
                    m.serialize_entry("error", &errno_name(c.ret))?;
                }
                endpoints(&mut m, c.family, &c.saddr, c.sport, &c.daddr, c.dport)?;
                m.serialize_entry("sk", &Str(format_args!("{:#x}", c.sk)))?;
            }
            Body::ConnClose(c) => {
                m.serialize_entry("role", role_name(c.role))?;
                m.serialize_entry("fd", &c.fd)?;
                m.serialize_entry("state", tcp_state_name(u16::from(c.state)))?;
                m.serialize_entry("closed_first", closed_by(c.state))?;
                endpoints(&mut m, c.family, &c.saddr, c.sport, &c.daddr, c.dport)?;
                m.serialize_entry("duration_ms", &ms_since(ev.ts_ns, c.open_ns))?;
                m.serialize_entry("bytes_in", &c.bytes_in)?;
                m.serialize_entry("bytes_out", &c.bytes_out)?;
                m.serialize_entry("last_recv_ms_ago", &ms_since(ev.ts_ns, c.last_recv_ns))?;
                m.serialize_entry("unanswered_ms", &ms_since(ev.ts_ns, c.wait_ns))?;
                m.serialize_entry("sk", &Str(format_args!("{:#x}", c.sk)))?;
            }
            Body::ConnStatus(c) => {
                m.serialize_entry("status", crate::conns::status_name(c.status))?;
                m.serialize_entry("for_ms", &ms_since(ev.ts_ns, c.since_ns))?;
                m.serialize_entry("state", tcp_state_name(u16::from(c.state)))?;
                m.serialize_entry("role", role_name(c.role))?;
                endpoints(&mut m, c.family, &c.saddr, c.sport, &c.daddr, c.dport)?;
                m.serialize_entry("age_ms", &ms_since(ev.ts_ns, c.open_ns))?;
                m.serialize_entry("bytes_in", &c.bytes_in)?;
                m.serialize_entry("bytes_out", &c.bytes_out)?;
                m.serialize_entry("owner_pid", &owner(ev.tgid))?;
                m.serialize_entry("sk", &Str(format_args!("{:#x}", c.sk)))?;
            }
            Body::Signal(x) => {
                m.serialize_entry("signal", &x.sig)?;
                m.serialize_entry("signal_name", &signal_name(x.sig))?;
                m.serialize_entry("target_pid", &x.target_pid)?;
                m.serialize_entry("target_comm", &Str(Comm(x.target_comm)))?;
                m.serialize_entry("code", &x.code)?;
                m.serialize_entry("from_kernel", &signal_from_kernel(x.code))?;
                m.serialize_entry("result", &x.result)?;
            }
            Body::Fork(f) => m.serialize_entry("child_pid", &f.child_pid)?,
            Body::Exec(x) => {
                m.serialize_entry("filename", &x.filename)?;
                m.serialize_entry("args", &x.args)?;
            }
            Body::Exit(x) => {
                let known = x.flags & tracer_common::process::EXIT_CODE_KNOWN != 0;
                let (code, sig) = if known {
                    wait_status(x.exit_code)
                } else {
                    (None, None)
                };
                m.serialize_entry("exit_code", &code)?;
                m.serialize_entry("signal", &sig)?;
                m.serialize_entry("signal_name", &sig.map(signal_name))?;
            }
            Body::Rlimit(r) => {
                let limit = |v: u64| (v != tracer_common::process::RLIM_INFINITY).then_some(v);
                m.serialize_entry("target_pid", &r.target_pid)?;
                m.serialize_entry("resource", rlimit_name(r.resource))?;
                // null: unlimited (RLIM_INFINITY).
                m.serialize_entry("soft", &limit(r.soft))?;
                m.serialize_entry("hard", &limit(r.hard))?;
            }
            Body::Rename(r) => {
                m.serialize_entry("target_pid", &r.target_pid)?;
                m.serialize_entry("old_comm", &Str(Comm(r.old_comm)))?;
                m.serialize_entry("new_comm", &Str(Comm(r.new_comm)))?;
            }
            Body::OomKill(o) => {
                m.serialize_entry("victim_pid", &o.victim_pid)?;
                m.serialize_entry("victim_comm", &Str(Comm(o.victim_comm)))?;
                let has_mem = o.flags & tracer_common::oom::OOM_HAS_MEMORY != 0;
                m.serialize_entry("victim_rss_bytes", &has_mem.then(|| kb_total(o)))?;
                m.serialize_entry(
                    "victim_total_vm_bytes",
                    &has_mem.then(|| o.total_vm_kb.saturating_mul(1024)),
                )?;
                m.serialize_entry(
                    "victim_anon_rss_bytes",
                    &has_mem.then(|| o.anon_rss_kb.saturating_mul(1024)),
                )?;
                m.serialize_entry("oom_score_adj", &o.oom_score_adj)?;
            }
            Body::Mmap(x) => {
                if x.ret >= 0 {
                    m.serialize_entry("addr", &Str(format_args!("{:#x}", x.ret)))?;
                } else {
                    m.serialize_entry("error", &errno_name(x.ret as i32))?;
                }
                m.serialize_entry("len", &x.len)?;
                m.serialize_entry("prot", &prot_string(x.prot))?;
                m.serialize_entry("anonymous", &(x.flags & memory::MAP_ANONYMOUS != 0))?;
                m.serialize_entry("shared", &(x.flags & memory::MAP_SHARED != 0))?;
                if x.fd >= 0 {
                    m.serialize_entry("fd", &x.fd)?;
                }
            }
            Body::Munmap(x) => {
                m.serialize_entry("addr", &Str(format_args!("{:#x}", x.addr)))?;
                m.serialize_entry("len", &x.len)?;
            }
            Body::Brk(b) => {
                m.serialize_entry("addr", &Str(format_args!("{:#x}", b.brk)))?;
                m.serialize_entry("prev_addr", &Str(format_args!("{:#x}", b.prev)))?;
                m.serialize_entry("len", &(b.brk as i64).wrapping_sub(b.prev as i64))?;
            }
            Body::MemSample(x) => {
                m.serialize_entry("rss_bytes", &x.rss_bytes)?;
                m.serialize_entry("rss_anon_bytes", &x.rss_anon)?;
                m.serialize_entry("rss_file_bytes", &x.rss_file)?;
                m.serialize_entry("rss_shmem_bytes", &x.rss_shmem)?;
                m.serialize_entry("swap_bytes", &x.swap_bytes)?;
                m.serialize_entry("mapped_bytes", &x.mapped_bytes)?;
            }
            Body::ProcInfo(p) => m.serialize_entry("info", &**p)?,
            Body::Tick => {}
            Body::Drops(d) => {
                // Sorted by kind name, the last count of a name winning, as always.
                let drops: std::collections::BTreeMap<&str, u64> =
                    d.per_kind.iter().map(|(k, n)| (k.as_str(), *n)).collect();
                m.serialize_entry("drops", &drops)?;
            }
        }
        m.end()
    }
}

/// Command lines may hold newlines and escapes: keep one event on one line.
fn escape_controls(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Resident bytes of an OOM victim (saturating: dumps may hold anything).
fn kb_total(o: &tracer_common::oom::OomKill) -> u64 {
    o.anon_rss_kb
        .saturating_add(o.file_rss_kb)
        .saturating_add(o.shmem_rss_kb)
        .saturating_mul(1024)
}

pub fn prot_string(p: u32) -> String {
    let mut s = String::with_capacity(3);
    s.push(if p & memory::PROT_READ != 0 { 'r' } else { '-' });
    s.push(if p & memory::PROT_WRITE != 0 {
        'w'
    } else {
        '-'
    });
    s.push(if p & memory::PROT_EXEC != 0 { 'x' } else { '-' });
    s
}

/// The name of an `RLIMIT_*` resource (only RLIMIT_NOFILE is traced today).
fn rlimit_name(r: u32) -> &'static str {
    match r {
        tracer_common::process::RLIMIT_NOFILE => "nofile",
        _ => "other",
    }
}

fn who(pid: u32, ctx: &Ctx<'_>) -> String {
    match ctx.procs.get(pid) {
        Some(p) => format!("{pid}({})", p.comm),
        None => pid.to_string(),
    }
}

/// One line for people: time, process, kind, then what happened.
pub fn to_line(ev: &Event, ctx: &Ctx<'_>) -> String {
    let stamp = ctx.host.rfc3339_stamp(ev.ts_ns);
    let ts = stamp.as_str();
    let time = ts.get(11..23).unwrap_or(ts);
    let what = match &ev.body {
        Body::TcpState(t) => format!(
            "{} -> {}  {} -> {}  owner={}",
            tcp_state_name(t.old_state),
            tcp_state_name(t.new_state),
            endpoint(t.family, &t.saddr, t.sport),
            endpoint(t.family, &t.daddr, t.dport),
            if t.owner_tgid == 0 {
                "?".into()
            } else {
                who(t.owner_tgid, ctx)
            }
        ),
        Body::TcpAccept(a) if a.ret >= 0 => format!(
            "fd {} from {} on {}",
            a.ret,
            endpoint(a.family, &a.daddr, a.dport),
            endpoint(a.family, &a.saddr, a.sport)
        ),
        Body::TcpAccept(a) => format!(
            "FAILED {} on listen fd {} ({})",
            errno_name(a.ret),
            a.listen_fd,
            endpoint(a.family, &a.saddr, a.sport)
        ),
        Body::TcpReset(r) => format!(
            "{} {} -> {}  owner={}  cause={}{}",
            if r.direction == tcp::RESET_SENT {
                "sent"
            } else {
                "received"
            },
            endpoint(r.family, &r.saddr, r.sport),
            endpoint(r.family, &r.daddr, r.dport),
            if r.owner_tgid == 0 {
                "?".into()
            } else {
                who(r.owner_tgid, ctx)
            },
            crate::analysis::resets::cause(r).name(),
            tcp::reset_reason_name(r.reason)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        Body::SocketOpen(s) if s.fd >= 0 => format!("fd {} ({})", s.fd, family_name(s.family)),
        Body::SocketOpen(s) => format!("FAILED {} ({})", errno_name(s.fd), family_name(s.family)),
        Body::SocketClose(s) => format!("fd {} ({})", s.fd, family_name(s.family)),
        Body::SockOwner(o) => format!("sk {:#x} prev={}", o.sk, o.prev_tgid),
        Body::TcpConnect(c) => format!(
            "fd {} -> {} {}",
            c.fd,
            endpoint(c.family, &c.daddr, c.dport),
            if c.ret < 0 {
                errno_name(c.ret)
            } else {
                "ok".into()
            }
        ),
        Body::TcpListen(l) => format!("fd {} backlog {}", l.fd, l.backlog),
        Body::ConnOpen(c) => format!(
            "{} fd {}  {} -> {}{}",
            role_name(c.role),
            c.fd,
            endpoint(c.family, &c.saddr, c.sport),
            endpoint(c.family, &c.daddr, c.dport),
            if c.ret < 0 && c.ret != -EINPROGRESS {
                format!("  FAILED {}", errno_name(c.ret))
            } else {
                String::new()
            }
        ),
        Body::ConnClose(c) => format!(
            "fd {}  {} -> {}  {} (closed first: {})  {}  in {} out {}",
            c.fd,
            endpoint(c.family, &c.saddr, c.sport),
            endpoint(c.family, &c.daddr, c.dport),
            tcp_state_name(u16::from(c.state)),
            closed_by(c.state),
            ms_since(ev.ts_ns, c.open_ns)
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_else(|| "age unknown".into()),
            bytes_human(c.bytes_in),
            bytes_human(c.bytes_out)
        ),
        Body::ConnStatus(c) => format!(
            "{}  {} -> {}  {}  owner={}",
            match ms_since(ev.ts_ns, c.since_ns) {
                Some(ms) => format!("{} for {ms} ms", crate::conns::status_name(c.status)),
                None => crate::conns::status_name(c.status).to_owned(),
            },
            endpoint(c.family, &c.saddr, c.sport),
            endpoint(c.family, &c.daddr, c.dport),
            tcp_state_name(u16::from(c.state)),
            if ev.tgid == 0 {
                "?".into()
            } else {
                who(ev.tgid, ctx)
            }
        ),
        Body::Signal(s) => format!(
            "{} -> {}({}){}",
            signal_name(s.sig),
            s.target_pid,
            Comm(s.target_comm),
            if signal_from_kernel(s.code) {
                " [kernel]"
            } else {
                ""
            }
        ),
        Body::Fork(f) => format!("child {}", f.child_pid),
        Body::Exec(x) => format!("{} [{}]", x.filename, escape_controls(&x.args.join(" "))),
        Body::Exit(x) => match wait_status(x.exit_code) {
            _ if x.flags & tracer_common::process::EXIT_CODE_KNOWN == 0 => "code unknown".into(),
            (Some(c), _) => format!("code {c}"),
            (_, Some(s)) => format!("killed by {}", signal_name(s)),
            _ => String::new(),
        },
        Body::Rlimit(r) => {
            let limit = |v: u64| {
                if v == tracer_common::process::RLIM_INFINITY {
                    "unlimited".to_owned()
                } else {
                    v.to_string()
                }
            };
            format!(
                "{} {}:{} for {}",
                rlimit_name(r.resource),
                limit(r.soft),
                limit(r.hard),
                who(r.target_pid, ctx)
            )
        }
        Body::Rename(r) => format!(
            "{} renamed {} -> {}",
            r.target_pid,
            escape_controls(&Comm(r.old_comm).to_string()),
            escape_controls(&Comm(r.new_comm).to_string())
        ),
        Body::OomKill(o) => format!(
            "victim {}({}) rss {}",
            o.victim_pid,
            Comm(o.victim_comm),
            bytes_human(kb_total(o))
        ),
        Body::Mmap(x) if x.ret >= 0 => format!(
            "{} {} {} at {:#x}",
            bytes_human(x.len),
            prot_string(x.prot),
            if x.flags & memory::MAP_ANONYMOUS != 0 {
                "anon"
            } else {
                "file"
            },
            x.ret
        ),
        Body::Mmap(x) => format!("{} FAILED {}", bytes_human(x.len), errno_name(x.ret as i32)),
        Body::Munmap(x) => format!("{} at {:#x}", bytes_human(x.len), x.addr),
        Body::Brk(b) => format!(
            "{:+} bytes to {:#x}",
            (b.brk as i64).wrapping_sub(b.prev as i64),
            b.brk
        ),
        Body::MemSample(s) => format!(
            "rss {} mapped {}",
            bytes_human(s.rss_bytes),
            bytes_human(s.mapped_bytes)
        ),
        Body::ProcInfo(p) => format!("{} {}", p.pid, p.cmdline.join(" ")),
        Body::Drops(d) => format!("{} records lost so far", d.total()),
        Body::Tick => String::new(),
    };
    format!(
        "{time} {:>7} {:<15} {:<12} {what}",
        ev.tgid,
        ev.comm.to_string(),
        ev.kind_name()
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

/// Prints events to stdout. Collector records (process info, drops) are not events for people
/// and are left out, in both formats, so live and replay print the same lines.
pub struct Printer {
    format: Format,
    /// One JSON line, reused from event to event.
    buf: Vec<u8>,
    /// Flush after every line, or let the buffer fill and flush at batch ends (`live` flushes
    /// after each batch it drains from the kernel) or when full (replay).
    line_flush: bool,
}

impl Printer {
    pub fn new(format: Format, line_flush: bool) -> Printer {
        Printer {
            format,
            buf: Vec::with_capacity(512),
            line_flush,
        }
    }
}

/// The one buffered stdout: events, findings and reports go through it in the order they are
/// produced, whether or not each line is flushed.
fn stdout_buf() -> std::sync::MutexGuard<'static, io::BufWriter<io::Stdout>> {
    static OUT: std::sync::OnceLock<std::sync::Mutex<io::BufWriter<io::Stdout>>> =
        std::sync::OnceLock::new();
    OUT.get_or_init(|| std::sync::Mutex::new(io::BufWriter::with_capacity(1 << 16, io::stdout())))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Flushes stdout (at exit).
pub fn flush_stdout() {
    let _ = stdout_buf().flush();
}

/// Whether an event is shown by the printer.
pub fn printable(ev: &Event) -> bool {
    !matches!(ev.body, Body::ProcInfo(_) | Body::Drops(_) | Body::Tick)
}

impl Sink for Printer {
    fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        if !printable(ev) {
            return Ok(());
        }
        let mut out = stdout_buf();
        let r = match self.format {
            Format::Json => {
                self.buf.clear();
                write_json_line(&mut self.buf, ev, ctx).and_then(|()| out.write_all(&self.buf))
            }
            Format::Human => writeln!(out, "{}", to_line(ev, ctx)),
        };
        match r {
            // The reader went away (`| head`): stop quietly.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(BrokenPipe.into()),
            r => r?,
        }
        if self.line_flush {
            out.flush().map_err(|e| {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    anyhow::Error::from(BrokenPipe)
                } else {
                    anyhow::Error::from(e)
                }
            })?;
        }
        Ok(())
    }

    fn finish(&mut self, _ctx: &Ctx<'_>) -> anyhow::Result<()> {
        flush_stdout();
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("output closed")]
pub struct BrokenPipe;

/// Writes a line to stdout (for summaries and reports).
pub fn print(s: &str) {
    let mut o = stdout_buf();
    let _ = writeln!(o, "{s}");
    let _ = o.flush();
}

/// Writes a line to stderr (summaries that must not mix with JSON on stdout).
pub fn eprint(s: &str) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{s}");
}

#[cfg(test)]
mod render_tests {
    use super::*;
    use crate::{host::HostInfo, proc_table::ProcTable};
    use tracer_common::{HEADER_LEN, Kind};

    /// The hand-written IPv4 formatter against std's, for every octet value in every place,
    /// and IPv6 and other families as before.
    #[test]
    fn ip_formats_as_std() {
        let mut a = [0u8; 16];
        for v in 0..=255u8 {
            for i in 0..4 {
                a[..4].copy_from_slice(&[7, 70, 255, 0]);
                a[i] = v;
                for fam in [tracer_common::AF_INET, 0, 1, 99] {
                    assert_eq!(Ip(fam, &a).to_string(), ip(fam, &a));
                }
            }
        }
        a = [0; 16];
        a[0] = 0x20;
        a[15] = 1;
        assert_eq!(Ip(tracer_common::AF_INET6, &a).to_string(), "2000::1");
        assert_eq!(
            Ip(tracer_common::AF_INET6, &a).to_string(),
            ip(tracer_common::AF_INET6, &a)
        );
    }

    /// Any bytes that decode, whatever their values, render without panicking (dumps are
    /// untrusted input, and debug builds check arithmetic).
    #[test]
    fn every_kind_renders_any_field_values() {
        let procs = ProcTable::new();
        let host = HostInfo {
            boot_to_wall_ns: i64::MAX / 2,
            ..HostInfo::default()
        };
        let ctx = Ctx {
            procs: &procs,
            host: &host,
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let sizes = [
            56, 56, 56, 16, 8, 16, 32, 8, 56, 96, 96, 40, 8, 528, 8, 24, 40, 72, 32, 16, 16, 48,
        ];
        let mut decoded = 0;
        for round in 0..2000 {
            let kind = Kind::ALL[round % Kind::ALL.len()];
            let len = sizes[round % sizes.len()];
            let mut rec = vec![0u8; HEADER_LEN + len];
            for b in rec.iter_mut() {
                *b = next() as u8;
            }
            rec[0..2].copy_from_slice(&(kind as u16).to_ne_bytes());
            rec[2..4].copy_from_slice(&(len as u16).to_ne_bytes());
            if let Ok(ev) = crate::event::decode(&rec) {
                let _ = to_json(&ev, &ctx);
                let _ = to_line(&ev, &ctx);
                decoded += 1;
            }
        }
        assert_eq!(decoded, 2000, "every record of the right size decodes");
    }
}

#[cfg(test)]
mod golden_tests {
    use super::*;
    use crate::{
        event::{Drops, Exec, ProcInfo},
        host::HostInfo,
        proc_table::ProcTable,
    };
    use serde_json::Value;
    use tracer_common::{AF_INET, memory as m, oom, process as p, signal as sg};

    fn comm(b: &[u8]) -> Comm {
        let mut c = [0u8; 16];
        c[..b.len()].copy_from_slice(b);
        Comm(c)
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    fn v6() -> [u8; 16] {
        let mut x = [0u8; 16];
        x[0] = 0x20;
        x[1] = 0x01;
        x[2] = 0x0d;
        x[3] = 0xb8;
        x[15] = 1;
        x
    }

    /// Bodies covering every kind and every branch of the JSON shape, with awkward comms.
    fn golden_events() -> Vec<Event> {
        let comms = [
            comm(b"a\"b\\c\n\t\x01\x1f\x7f"),
            comm(&[0xff, b'x', 0xc3, 0x28, b'\r', 0x08, 0x0c, b'/']),
            comm("é€😀ok".as_bytes()),
            Comm([b'z'; 16]),
            comm(b""),
        ];
        let bodies = vec![
            Body::TcpState(tcp::TcpState {
                skaddr: 0xffff_8880_1234_5678,
                old_state: tcp::state::SYN_SENT,
                new_state: tcp::state::ESTABLISHED,
                family: AF_INET,
                sport: 43210,
                dport: 443,
                flags: 0,
                owner_tgid: 4242,
                saddr: v4([10, 0, 0, 1]),
                daddr: v4([192, 168, 1, 2]),
            }),
            Body::TcpState(tcp::TcpState {
                skaddr: 0,
                old_state: 99,
                new_state: tcp::state::CLOSE,
                family: tracer_common::AF_INET6,
                sport: 0,
                dport: 65535,
                flags: 0,
                owner_tgid: 0,
                saddr: v6(),
                daddr: [0; 16],
            }),
            Body::TcpAccept(tcp::TcpAccept {
                ret: 7,
                listen_fd: 3,
                sk: 1,
                family: AF_INET,
                sport: 80,
                dport: 50000,
                _pad: 0,
                saddr: v4([127, 0, 0, 1]),
                daddr: v4([127, 0, 0, 2]),
            }),
            Body::TcpAccept(tcp::TcpAccept {
                ret: -24,
                listen_fd: -1,
                sk: 0,
                family: tracer_common::AF_INET6,
                sport: 8080,
                dport: 1,
                _pad: 0,
                saddr: v6(),
                daddr: v6(),
            }),
            Body::TcpAccept(tcp::TcpAccept {
                ret: -11,
                listen_fd: 5,
                sk: 0,
                family: 0,
                sport: 1,
                dport: 2,
                _pad: 0,
                saddr: [0; 16],
                daddr: [0; 16],
            }),
            Body::TcpReset(tcp::TcpReset {
                sk: 5,
                direction: tcp::RESET_SENT,
                reason: 11,
                family: AF_INET,
                sport: 1,
                dport: 2,
                owner_tgid: 0,
                state: 1,
                saddr: v4([1, 2, 3, 4]),
                daddr: v4([5, 6, 7, 8]),
            }),
            Body::TcpReset(tcp::TcpReset {
                sk: 5,
                direction: tcp::RESET_RECEIVED,
                reason: 0,
                family: tracer_common::AF_INET6,
                sport: 1,
                dport: 2,
                owner_tgid: 77,
                state: 1,
                saddr: v6(),
                daddr: v6(),
            }),
            Body::SocketOpen(tcp::SocketOpen {
                fd: 9,
                family: 1,
                sock_type: 2,
                protocol: 0,
                _pad: 0,
            }),
            Body::SocketOpen(tcp::SocketOpen {
                fd: -97,
                family: 17,
                sock_type: 65535,
                protocol: 0,
                _pad: 0,
            }),
            Body::SocketClose(tcp::SocketClose {
                fd: i32::MIN,
                family: 16,
                sock_type: 1,
            }),
            Body::SockOwner(tcp::SockOwner {
                sk: u64::MAX,
                prev_tgid: 0,
                _pad: 0,
            }),
            Body::SockOwner(tcp::SockOwner {
                sk: 0,
                prev_tgid: u32::MAX,
                _pad: 0,
            }),
            Body::TcpConnect(tcp::TcpConnect {
                fd: 4,
                ret: 0,
                family: AF_INET,
                dport: 5432,
                _pad: 0,
                daddr: v4([10, 1, 2, 3]),
            }),
            Body::TcpConnect(tcp::TcpConnect {
                fd: 4,
                ret: -115,
                family: tracer_common::AF_INET6,
                dport: 5432,
                _pad: 0,
                daddr: v6(),
            }),
            Body::TcpConnect(tcp::TcpConnect {
                fd: 4,
                ret: -9999,
                family: AF_INET,
                dport: 0,
                _pad: 0,
                daddr: [0; 16],
            }),
            Body::TcpListen(tcp::TcpListen {
                fd: 3,
                backlog: i32::MAX,
            }),
            Body::Signal(sg::Signal {
                sig: 9,
                code: sg::SI_KERNEL,
                result: 0,
                target_pid: -1,
                group: 1,
                errno: 0,
                target_comm: comm(b"t\"a\\r\x00junk").0,
            }),
            Body::Signal(sg::Signal {
                sig: 40,
                code: 0,
                result: 2,
                target_pid: 1,
                group: 0,
                errno: 0,
                target_comm: [0xfe; 16],
            }),
            Body::Signal(sg::Signal {
                sig: 0,
                code: -6,
                result: 0,
                target_pid: 1,
                group: 0,
                errno: 0,
                target_comm: [0; 16],
            }),
            Body::Fork(p::Fork {
                child_pid: 1234,
                _pad: 0,
            }),
            Body::Exec(Box::new(Exec {
                old_pid: 1,
                ppid: 2,
                filename: "/usr/bin/\"x\\y\"\u{1}é".into(),
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo \"hi\"\n\tthere\\\u{7f}\u{1b}[0m\u{fffd}".into(),
                    String::new(),
                ],
            })),
            Body::Exec(Box::new(Exec {
                old_pid: 0,
                ppid: 0,
                filename: String::new(),
                args: vec![],
            })),
            Body::Exit(p::Exit {
                exit_code: 3 << 8,
                flags: p::EXIT_CODE_KNOWN,
            }),
            Body::Exit(p::Exit {
                exit_code: 11 | 0x80,
                flags: p::EXIT_CODE_KNOWN,
            }),
            Body::Exit(p::Exit {
                exit_code: 0x7f,
                flags: p::EXIT_CODE_KNOWN,
            }),
            Body::Exit(p::Exit {
                exit_code: 0,
                flags: 0,
            }),
            Body::OomKill(oom::OomKill {
                victim_pid: 666,
                victim_uid: 0,
                victim_comm: comm(b"v\"\\\x02\xc3").0,
                total_vm_kb: 8_000_000,
                anon_rss_kb: 7_000_000,
                file_rss_kb: 10_000,
                shmem_rss_kb: 1,
                pgtables_kb: 14_000,
                oom_score_adj: -1000,
                _pad: 0,
                flags: oom::OOM_HAS_COMM | oom::OOM_HAS_MEMORY,
            }),
            Body::OomKill(oom::OomKill {
                victim_pid: 0,
                victim_uid: 0,
                victim_comm: [0; 16],
                total_vm_kb: u64::MAX,
                anon_rss_kb: u64::MAX,
                file_rss_kb: u64::MAX,
                shmem_rss_kb: 0,
                pgtables_kb: 0,
                oom_score_adj: 1000,
                _pad: 0,
                flags: oom::OOM_HAS_COMM,
            }),
            Body::OomKill(oom::OomKill {
                victim_pid: 1,
                victim_uid: 0,
                victim_comm: [b'q'; 16],
                total_vm_kb: u64::MAX,
                anon_rss_kb: u64::MAX,
                file_rss_kb: 1,
                shmem_rss_kb: 0,
                pgtables_kb: 0,
                oom_score_adj: 0,
                _pad: 0,
                flags: oom::OOM_HAS_MEMORY,
            }),
            Body::Mmap(m::Mmap {
                ret: 0x7f00_dead_b000,
                len: 1 << 30,
                prot: m::PROT_READ | m::PROT_WRITE,
                flags: m::MAP_ANONYMOUS,
                fd: -1,
                _pad: 0,
            }),
            Body::Mmap(m::Mmap {
                ret: -12,
                len: u64::MAX,
                prot: 7,
                flags: m::MAP_SHARED,
                fd: 5,
                _pad: 0,
            }),
            Body::Mmap(m::Mmap {
                ret: i64::MIN,
                len: 0,
                prot: 0,
                flags: 0,
                fd: 0,
                _pad: 0,
            }),
            Body::Munmap(m::Munmap {
                addr: 0x1000,
                len: 4096,
            }),
            Body::Brk(m::Brk {
                brk: 0x5000,
                prev: 0x1000,
            }),
            Body::Brk(m::Brk {
                brk: 0,
                prev: u64::MAX,
            }),
            Body::MemSample(m::MemSample {
                rss_bytes: 1,
                rss_anon: 2,
                rss_file: 3,
                rss_shmem: 0,
                swap_bytes: u64::MAX,
                mapped_bytes: 1 << 40,
            }),
            Body::ProcInfo(Box::new(ProcInfo {
                pid: 10,
                ppid: 1,
                uid: 1000,
                comm: "p\"\\\n".into(),
                exe: "/bin/x".into(),
                cmdline: vec!["x".into(), "\u{0}y".into()],
                cgroup: "/sys/fs".into(),
                mem_limit: Some(1 << 30),
                nofile_limit: None,
                previous_comm: None,
                forked_by: None,
                open_fds: Some(3),
                open_sockets: None,
                ..ProcInfo::default()
            })),
            Body::ProcInfo(Box::default()),
            Body::Drops(Box::new(Drops {
                per_kind: vec![
                    ("tcp_state".into(), 5),
                    ("exec".into(), 1),
                    ("tcp_state".into(), 7),
                    ("a\"b".into(), u64::MAX),
                ],
            })),
            Body::Drops(Box::default()),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Event {
                ts_ns: 3_600_000_000_000u64.wrapping_mul(i as u64 + 1) + i as u64 * 7,
                cpu: i as u32,
                tgid: if i % 3 == 0 { 2301 } else { 40_000 + i as u32 },
                tid: 2301 + i as u32,
                uid: if i % 4 == 0 { u32::MAX } else { i as u32 },
                cgroup_id: 0,
                comm: comms[i % comms.len()],
                body,
            })
            .collect()
    }

    fn golden_ctx() -> (ProcTable, HostInfo) {
        let mut procs = ProcTable::new();
        procs.apply(&Event {
            ts_ns: 0,
            cpu: 0,
            tgid: 2301,
            tid: 2301,
            uid: 0,
            cgroup_id: 0,
            comm: Comm::new("node"),
            body: Body::ProcInfo(Box::new(ProcInfo {
                pid: 2301,
                ppid: 1,
                comm: "node".into(),
                ..ProcInfo::default()
            })),
        });
        let host = HostInfo {
            boot_to_wall_ns: 1_795_400_000_000_000_000,
            ..HostInfo::default()
        };
        (procs, host)
    }

    /// What the JSON printer wrote for these events when it still built a `serde_json::Value`
    /// per event: the streaming writer must produce exactly these bytes.
    const GOLDEN: [&str; 40] = [
        "{\"ts\":\"2026-11-23T03:13:20.000000000Z\",\"kind\":\"tcp_state\",\"pid\":2301,\"tid\":2301,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":1,\"uid\":4294967295,\"old_state\":\"SYN_SENT\",\"new_state\":\"ESTABLISHED\",\"family\":\"inet\",\"saddr\":\"10.0.0.1\",\"sport\":43210,\"daddr\":\"192.168.1.2\",\"dport\":443,\"owner_pid\":4242,\"sk\":\"0xffff888012345678\"}",
        "{\"ts\":\"2026-11-23T04:13:20.000000007Z\",\"kind\":\"tcp_state\",\"pid\":40001,\"tid\":2302,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":null,\"uid\":1,\"old_state\":\"UNKNOWN\",\"new_state\":\"CLOSE\",\"family\":\"inet6\",\"saddr\":\"2001:db8::1\",\"sport\":0,\"daddr\":\"::\",\"dport\":65535,\"owner_pid\":null,\"sk\":\"0x0\"}",
        "{\"ts\":\"2026-11-23T05:13:20.000000014Z\",\"kind\":\"tcp_accept\",\"pid\":40002,\"tid\":2303,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":2,\"fd\":7,\"listen_fd\":3,\"family\":\"inet\",\"saddr\":\"127.0.0.1\",\"sport\":80,\"daddr\":\"127.0.0.2\",\"dport\":50000}",
        "{\"ts\":\"2026-11-23T06:13:20.000000021Z\",\"kind\":\"tcp_accept\",\"pid\":2301,\"tid\":2304,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":1,\"uid\":3,\"error\":\"EMFILE\",\"listen_fd\":-1,\"family\":\"inet6\",\"saddr\":\"2001:db8::1\",\"sport\":8080}",
        "{\"ts\":\"2026-11-23T07:13:20.000000028Z\",\"kind\":\"tcp_accept\",\"pid\":40004,\"tid\":2305,\"comm\":\"\",\"ppid\":null,\"uid\":4294967295,\"error\":\"EAGAIN\",\"listen_fd\":5}",
        "{\"ts\":\"2026-11-23T08:13:20.000000035Z\",\"kind\":\"tcp_reset\",\"pid\":40005,\"tid\":2306,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":null,\"uid\":5,\"direction\":\"sent\",\"cause\":\"abort_on_close\",\"reason\":\"TCP_ABORT_ON_CLOSE\",\"family\":\"inet\",\"saddr\":\"1.2.3.4\",\"sport\":1,\"daddr\":\"5.6.7.8\",\"dport\":2,\"owner_pid\":null}",
        "{\"ts\":\"2026-11-23T09:13:20.000000042Z\",\"kind\":\"tcp_reset\",\"pid\":2301,\"tid\":2307,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":1,\"uid\":6,\"direction\":\"received\",\"cause\":\"received\",\"family\":\"inet6\",\"saddr\":\"2001:db8::1\",\"sport\":1,\"daddr\":\"2001:db8::1\",\"dport\":2,\"owner_pid\":77}",
        "{\"ts\":\"2026-11-23T10:13:20.000000049Z\",\"kind\":\"socket_open\",\"pid\":40007,\"tid\":2308,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":7,\"fd\":9,\"family\":\"unix\",\"sock_type\":2}",
        "{\"ts\":\"2026-11-23T11:13:20.000000056Z\",\"kind\":\"socket_open\",\"pid\":40008,\"tid\":2309,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":null,\"uid\":4294967295,\"error\":\"EAFNOSUPPORT\",\"family\":\"packet\",\"sock_type\":65535}",
        "{\"ts\":\"2026-11-23T12:13:20.000000063Z\",\"kind\":\"socket_close\",\"pid\":2301,\"tid\":2310,\"comm\":\"\",\"ppid\":1,\"uid\":9,\"fd\":-2147483648,\"family\":\"netlink\"}",
        "{\"ts\":\"2026-11-23T13:13:20.000000070Z\",\"kind\":\"sock_owner\",\"pid\":40010,\"tid\":2311,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":null,\"uid\":10,\"sk\":\"0xffffffffffffffff\",\"prev_owner_pid\":null}",
        "{\"ts\":\"2026-11-23T14:13:20.000000077Z\",\"kind\":\"sock_owner\",\"pid\":40011,\"tid\":2312,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":null,\"uid\":11,\"sk\":\"0x0\",\"prev_owner_pid\":4294967295}",
        "{\"ts\":\"2026-11-23T15:13:20.000000084Z\",\"kind\":\"tcp_connect\",\"pid\":2301,\"tid\":2313,\"comm\":\"é€😀ok\",\"ppid\":1,\"uid\":4294967295,\"fd\":4,\"daddr\":\"10.1.2.3\",\"dport\":5432}",
        "{\"ts\":\"2026-11-23T16:13:20.000000091Z\",\"kind\":\"tcp_connect\",\"pid\":40013,\"tid\":2314,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":null,\"uid\":13,\"fd\":4,\"error\":\"EINPROGRESS\",\"daddr\":\"2001:db8::1\",\"dport\":5432}",
        "{\"ts\":\"2026-11-23T17:13:20.000000098Z\",\"kind\":\"tcp_connect\",\"pid\":40014,\"tid\":2315,\"comm\":\"\",\"ppid\":null,\"uid\":14,\"fd\":4,\"error\":\"E9999\",\"daddr\":\"0.0.0.0\",\"dport\":0}",
        "{\"ts\":\"2026-11-23T18:13:20.000000105Z\",\"kind\":\"tcp_listen\",\"pid\":2301,\"tid\":2316,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":1,\"uid\":15,\"fd\":3,\"backlog\":2147483647}",
        "{\"ts\":\"2026-11-23T19:13:20.000000112Z\",\"kind\":\"signal\",\"pid\":40016,\"tid\":2317,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":null,\"uid\":4294967295,\"signal\":9,\"signal_name\":\"SIGKILL\",\"target_pid\":-1,\"target_comm\":\"t\\\"a\\\\r\",\"code\":128,\"from_kernel\":true,\"result\":0}",
        "{\"ts\":\"2026-11-23T20:13:20.000000119Z\",\"kind\":\"signal\",\"pid\":40017,\"tid\":2318,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":17,\"signal\":40,\"signal_name\":\"SIGRTMIN+6\",\"target_pid\":1,\"target_comm\":\"����������������\",\"code\":0,\"from_kernel\":false,\"result\":2}",
        "{\"ts\":\"2026-11-23T21:13:20.000000126Z\",\"kind\":\"signal\",\"pid\":2301,\"tid\":2319,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":1,\"uid\":18,\"signal\":0,\"signal_name\":\"SIG0\",\"target_pid\":1,\"target_comm\":\"\",\"code\":-6,\"from_kernel\":false,\"result\":0}",
        "{\"ts\":\"2026-11-23T22:13:20.000000133Z\",\"kind\":\"fork\",\"pid\":40019,\"tid\":2320,\"comm\":\"\",\"ppid\":null,\"uid\":19,\"child_pid\":1234}",
        "{\"ts\":\"2026-11-23T23:13:20.000000140Z\",\"kind\":\"exec\",\"pid\":40020,\"tid\":2321,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":null,\"uid\":4294967295,\"filename\":\"/usr/bin/\\\"x\\\\y\\\"\\u0001é\",\"args\":[\"sh\",\"-c\",\"echo \\\"hi\\\"\\n\\tthere\\\\\u{7f}\\u001b[0m�\",\"\"]}",
        "{\"ts\":\"2026-11-24T00:13:20.000000147Z\",\"kind\":\"exec\",\"pid\":2301,\"tid\":2322,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":1,\"uid\":21,\"filename\":\"\",\"args\":[]}",
        "{\"ts\":\"2026-11-24T01:13:20.000000154Z\",\"kind\":\"exit\",\"pid\":40022,\"tid\":2323,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":22,\"exit_code\":3,\"signal\":null,\"signal_name\":null}",
        "{\"ts\":\"2026-11-24T02:13:20.000000161Z\",\"kind\":\"exit\",\"pid\":40023,\"tid\":2324,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":null,\"uid\":23,\"exit_code\":null,\"signal\":11,\"signal_name\":\"SIGSEGV\"}",
        "{\"ts\":\"2026-11-24T03:13:20.000000168Z\",\"kind\":\"exit\",\"pid\":2301,\"tid\":2325,\"comm\":\"\",\"ppid\":1,\"uid\":4294967295,\"exit_code\":null,\"signal\":127,\"signal_name\":\"SIG127\"}",
        "{\"ts\":\"2026-11-24T04:13:20.000000175Z\",\"kind\":\"exit\",\"pid\":40025,\"tid\":2326,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":null,\"uid\":25,\"exit_code\":null,\"signal\":null,\"signal_name\":null}",
        "{\"ts\":\"2026-11-24T05:13:20.000000182Z\",\"kind\":\"oom_kill\",\"pid\":40026,\"tid\":2327,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":null,\"uid\":26,\"victim_pid\":666,\"victim_comm\":\"v\\\"\\\\\\u0002�\",\"victim_rss_bytes\":7178241024,\"victim_total_vm_bytes\":8192000000,\"victim_anon_rss_bytes\":7168000000,\"oom_score_adj\":-1000}",
        "{\"ts\":\"2026-11-24T06:13:20.000000189Z\",\"kind\":\"oom_kill\",\"pid\":2301,\"tid\":2328,\"comm\":\"é€😀ok\",\"ppid\":1,\"uid\":27,\"victim_pid\":0,\"victim_comm\":\"\",\"victim_rss_bytes\":null,\"victim_total_vm_bytes\":null,\"victim_anon_rss_bytes\":null,\"oom_score_adj\":1000}",
        "{\"ts\":\"2026-11-24T07:13:20.000000196Z\",\"kind\":\"oom_kill\",\"pid\":40028,\"tid\":2329,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":null,\"uid\":4294967295,\"victim_pid\":1,\"victim_comm\":\"qqqqqqqqqqqqqqqq\",\"victim_rss_bytes\":18446744073709551615,\"victim_total_vm_bytes\":18446744073709551615,\"victim_anon_rss_bytes\":18446744073709551615,\"oom_score_adj\":0}",
        "{\"ts\":\"2026-11-24T08:13:20.000000203Z\",\"kind\":\"mmap\",\"pid\":40029,\"tid\":2330,\"comm\":\"\",\"ppid\":null,\"uid\":29,\"addr\":\"0x7f00deadb000\",\"len\":1073741824,\"prot\":\"rw-\",\"anonymous\":true,\"shared\":false}",
        "{\"ts\":\"2026-11-24T09:13:20.000000210Z\",\"kind\":\"mmap\",\"pid\":2301,\"tid\":2331,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":1,\"uid\":30,\"error\":\"ENOMEM\",\"len\":18446744073709551615,\"prot\":\"rwx\",\"anonymous\":false,\"shared\":true,\"fd\":5}",
        "{\"ts\":\"2026-11-24T10:13:20.000000217Z\",\"kind\":\"mmap\",\"pid\":40031,\"tid\":2332,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":null,\"uid\":31,\"error\":\"E0\",\"len\":0,\"prot\":\"---\",\"anonymous\":false,\"shared\":false,\"fd\":0}",
        "{\"ts\":\"2026-11-24T11:13:20.000000224Z\",\"kind\":\"munmap\",\"pid\":40032,\"tid\":2333,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":4294967295,\"addr\":\"0x1000\",\"len\":4096}",
        "{\"ts\":\"2026-11-24T12:13:20.000000231Z\",\"kind\":\"brk\",\"pid\":2301,\"tid\":2334,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":1,\"uid\":33,\"addr\":\"0x5000\",\"prev_addr\":\"0x1000\",\"len\":16384}",
        "{\"ts\":\"2026-11-24T13:13:20.000000238Z\",\"kind\":\"brk\",\"pid\":40034,\"tid\":2335,\"comm\":\"\",\"ppid\":null,\"uid\":34,\"addr\":\"0x0\",\"prev_addr\":\"0xffffffffffffffff\",\"len\":1}",
        "{\"ts\":\"2026-11-24T14:13:20.000000245Z\",\"kind\":\"mem_sample\",\"pid\":40035,\"tid\":2336,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":null,\"uid\":35,\"rss_bytes\":1,\"rss_anon_bytes\":2,\"rss_file_bytes\":3,\"rss_shmem_bytes\":0,\"swap_bytes\":18446744073709551615,\"mapped_bytes\":1099511627776}",
        "{\"ts\":\"2026-11-24T15:13:20.000000252Z\",\"kind\":\"proc_info\",\"pid\":2301,\"tid\":2337,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":1,\"uid\":4294967295,\"info\":{\"pid\":10,\"ppid\":1,\"uid\":1000,\"comm\":\"p\\\"\\\\\\n\",\"exe\":\"/bin/x\",\"cmdline\":[\"x\",\"\\u0000y\"],\"cgroup\":\"/sys/fs\",\"mem_limit\":1073741824,\"nofile_limit\":null,\"open_fds\":3,\"open_sockets\":null}}",
        "{\"ts\":\"2026-11-24T16:13:20.000000259Z\",\"kind\":\"proc_info\",\"pid\":40037,\"tid\":2338,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":37,\"info\":{\"pid\":0,\"ppid\":0,\"uid\":0,\"comm\":\"\",\"exe\":\"\",\"cmdline\":[],\"cgroup\":\"\",\"mem_limit\":null,\"nofile_limit\":null,\"open_fds\":null,\"open_sockets\":null}}",
        "{\"ts\":\"2026-11-24T17:13:20.000000266Z\",\"kind\":\"drops\",\"pid\":40038,\"tid\":2339,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":null,\"uid\":38,\"drops\":{\"a\\\"b\":18446744073709551615,\"exec\":1,\"tcp_state\":7}}",
        "{\"ts\":\"2026-11-24T18:13:20.000000273Z\",\"kind\":\"drops\",\"pid\":2301,\"tid\":2340,\"comm\":\"\",\"ppid\":1,\"uid\":39,\"drops\":{}}",
    ];

    #[test]
    fn json_lines_are_byte_identical_to_golden() {
        let (procs, host) = golden_ctx();
        let ctx = Ctx {
            procs: &procs,
            host: &host,
        };
        let events = golden_events();
        assert_eq!(events.len(), GOLDEN.len());
        let mut buf = Vec::new();
        for (ev, want) in events.iter().zip(GOLDEN) {
            assert_eq!(to_json(ev, &ctx).to_string(), want);
            buf.clear();
            write_json_line(&mut buf, ev, &ctx).unwrap();
            assert_eq!(buf, format!("{want}\n").as_bytes(), "{}", ev.kind_name());
            let v: Value = serde_json::from_slice(&buf).unwrap();
            assert_eq!(v["kind"], ev.kind_name());
        }
    }
}
