//! Rendering events for people (one line each) and for scripts (one JSON object per line).
//! The only module that writes to stdout.
use std::io::{self, Write};

use serde_json::{Map, Value, json};
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
pub fn to_json(ev: &Event, ctx: &Ctx<'_>) -> Value {
    let mut m = Map::new();
    m.insert("ts".into(), json!(ctx.host.rfc3339(ev.ts_ns)));
    m.insert("kind".into(), json!(ev.kind_name()));
    m.insert("pid".into(), json!(ev.tgid));
    m.insert("tid".into(), json!(ev.tid));
    m.insert("comm".into(), json!(ev.comm));
    m.insert("ppid".into(), json!(ctx.procs.ppid(ev.tgid)));
    m.insert("uid".into(), json!(ev.uid));
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    match &ev.body {
        Body::TcpState(t) => {
            put("old_state", json!(tcp_state_name(t.old_state)));
            put("new_state", json!(tcp_state_name(t.new_state)));
            put("family", json!(family_name(t.family)));
            put("saddr", json!(ip(t.family, &t.saddr)));
            put("sport", json!(t.sport));
            put("daddr", json!(ip(t.family, &t.daddr)));
            put("dport", json!(t.dport));
            put("owner_pid", owner(t.owner_tgid));
            put("sk", json!(format!("{:#x}", t.skaddr)));
        }
        Body::TcpAccept(a) => {
            if a.ret >= 0 {
                put("fd", json!(a.ret));
            } else {
                put("error", json!(errno_name(a.ret)));
            }
            put("listen_fd", json!(a.listen_fd));
            if a.family != 0 {
                put("family", json!(family_name(a.family)));
                put("saddr", json!(ip(a.family, &a.saddr)));
                put("sport", json!(a.sport));
                if a.ret >= 0 {
                    put("daddr", json!(ip(a.family, &a.daddr)));
                    put("dport", json!(a.dport));
                }
            }
        }
        Body::TcpReset(r) => {
            put(
                "direction",
                json!(if r.direction == tcp::RESET_SENT {
                    "sent"
                } else {
                    "received"
                }),
            );
            put("family", json!(family_name(r.family)));
            put("saddr", json!(ip(r.family, &r.saddr)));
            put("sport", json!(r.sport));
            put("daddr", json!(ip(r.family, &r.daddr)));
            put("dport", json!(r.dport));
            put("owner_pid", owner(r.owner_tgid));
        }
        Body::SocketOpen(s) => {
            if s.fd >= 0 {
                put("fd", json!(s.fd));
            } else {
                put("error", json!(errno_name(s.fd)));
            }
            put("family", json!(family_name(s.family)));
            put("sock_type", json!(s.sock_type));
        }
        Body::SocketClose(s) => {
            put("fd", json!(s.fd));
            put("family", json!(family_name(s.family)));
        }
        Body::SockOwner(o) => {
            put("sk", json!(format!("{:#x}", o.sk)));
            put("prev_owner_pid", owner(o.prev_tgid));
        }
        Body::TcpConnect(c) => {
            put("fd", json!(c.fd));
            if c.ret < 0 {
                put("error", json!(errno_name(c.ret)));
            }
            put("daddr", json!(ip(c.family, &c.daddr)));
            put("dport", json!(c.dport));
        }
        Body::TcpListen(l) => {
            put("fd", json!(l.fd));
            put("backlog", json!(l.backlog));
        }
        Body::Signal(s) => {
            put("signal", json!(s.sig));
            put("signal_name", json!(signal_name(s.sig)));
            put("target_pid", json!(s.target_pid));
            put("target_comm", json!(Comm(s.target_comm)));
            put("code", json!(s.code));
            put("from_kernel", json!(signal_from_kernel(s.code)));
            put("result", json!(s.result));
        }
        Body::Fork(f) => put("child_pid", json!(f.child_pid)),
        Body::Exec(x) => {
            put("filename", json!(x.filename));
            put("args", json!(x.args));
        }
        Body::Exit(x) => {
            let known = x.flags & tracer_common::process::EXIT_CODE_KNOWN != 0;
            let (code, sig) = if known {
                wait_status(x.exit_code)
            } else {
                (None, None)
            };
            put("exit_code", json!(code));
            put("signal", json!(sig));
            put("signal_name", json!(sig.map(signal_name)));
        }
        Body::OomKill(o) => {
            put("victim_pid", json!(o.victim_pid));
            put("victim_comm", json!(Comm(o.victim_comm)));
            let has_mem = o.flags & tracer_common::oom::OOM_HAS_MEMORY != 0;
            let rss = kb_total(o);
            put(
                "victim_rss_bytes",
                if has_mem { json!(rss) } else { Value::Null },
            );
            put(
                "victim_total_vm_bytes",
                if has_mem {
                    json!(o.total_vm_kb.saturating_mul(1024))
                } else {
                    Value::Null
                },
            );
            put(
                "victim_anon_rss_bytes",
                if has_mem {
                    json!(o.anon_rss_kb.saturating_mul(1024))
                } else {
                    Value::Null
                },
            );
            put("oom_score_adj", json!(o.oom_score_adj));
        }
        Body::Mmap(x) => {
            if x.ret >= 0 {
                put("addr", json!(format!("{:#x}", x.ret)));
            } else {
                put("error", json!(errno_name(x.ret as i32)));
            }
            put("len", json!(x.len));
            put("prot", json!(prot_string(x.prot)));
            put("anonymous", json!(x.flags & memory::MAP_ANONYMOUS != 0));
            put("shared", json!(x.flags & memory::MAP_SHARED != 0));
            if x.fd >= 0 {
                put("fd", json!(x.fd));
            }
        }
        Body::Munmap(x) => {
            put("addr", json!(format!("{:#x}", x.addr)));
            put("len", json!(x.len));
        }
        Body::Brk(b) => {
            put("addr", json!(format!("{:#x}", b.brk)));
            put("prev_addr", json!(format!("{:#x}", b.prev)));
            put("len", json!((b.brk as i64).wrapping_sub(b.prev as i64)));
        }
        Body::MemSample(s) => {
            put("rss_bytes", json!(s.rss_bytes));
            put("rss_anon_bytes", json!(s.rss_anon));
            put("rss_file_bytes", json!(s.rss_file));
            put("rss_shmem_bytes", json!(s.rss_shmem));
            put("swap_bytes", json!(s.swap_bytes));
            put("mapped_bytes", json!(s.mapped_bytes));
        }
        Body::ProcInfo(p) => {
            put("info", serde_json::to_value(p).unwrap_or(Value::Null));
        }
        Body::Drops(d) => {
            put(
                "drops",
                json!(
                    d.per_kind
                        .iter()
                        .cloned()
                        .collect::<std::collections::BTreeMap<_, _>>()
                ),
            );
        }
    }
    Value::Object(m)
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

fn owner(tgid: u32) -> Value {
    if tgid == 0 { Value::Null } else { json!(tgid) }
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

fn who(pid: u32, ctx: &Ctx<'_>) -> String {
    match ctx.procs.get(pid) {
        Some(p) => format!("{pid}({})", p.comm),
        None => pid.to_string(),
    }
}

/// One line for people: time, process, kind, then what happened.
pub fn to_line(ev: &Event, ctx: &Ctx<'_>) -> String {
    let ts = ctx.host.rfc3339(ev.ts_ns);
    let time = ts.get(11..23).unwrap_or(&ts);
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
            "{} {} -> {}  owner={}",
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
            }
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
    /// Flush after every line, or let the buffer fill and flush at batch ends (`live` flushes
    /// after each batch it drains from the kernel) or when full (replay).
    line_flush: bool,
}

impl Printer {
    pub fn new(format: Format, line_flush: bool) -> Printer {
        Printer { format, line_flush }
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
    !matches!(ev.body, Body::ProcInfo(_) | Body::Drops(_))
}

impl Sink for Printer {
    fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        if !printable(ev) {
            return Ok(());
        }
        let mut out = stdout_buf();
        let r = match self.format {
            Format::Json => serde_json::to_writer(&mut *out, &to_json(ev, ctx))
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n")),
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
            56, 56, 56, 16, 8, 16, 32, 8, 40, 8, 528, 8, 72, 32, 16, 16, 48,
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
