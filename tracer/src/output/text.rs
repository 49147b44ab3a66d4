//! One line per event for people.
use tracer_common::{memory, tcp};

use super::endpoint;
use super::{
    EINPROGRESS, closed_by, family_name, kb_total, ms_since, prot_string, rlimit_name, role_name,
};
use crate::{
    event::{Body, Comm, Event},
    pipeline::Ctx,
    units::bytes_human,
    vocab::{errno_name, signal_from_kernel, signal_name, tcp_state_name, wait_status},
};

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
        Body::FdDup(d) => format!(
            "fd {} -> {} ({}){}",
            d.oldfd,
            d.newfd,
            family_name(d.family),
            if d.flags & tcp::DUP_REPLACED != 0 {
                ", replaced a socket fd"
            } else {
                ""
            }
        ),
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
        Body::CgroupAttach(c) => format!(
            "{}({}) -> {}{} ({})",
            c.pid,
            escape_controls(&c.comm.to_string()),
            escape_controls(&c.path),
            if c.truncated { "..." } else { "" },
            match (c.hierarchy, c.memory) {
                (0, true) => "cgroup v2, memory".to_owned(),
                (0, false) => "cgroup v2".to_owned(),
                (h, true) => format!("v1 hierarchy {h}, memory"),
                (h, false) => format!("v1 hierarchy {h}"),
            }
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
        Body::RecorderGap(g) => format!(
            "{} records not recorded ({} in this run): {}",
            g.lost, g.lost_total, g.reason
        ),
        Body::Tick => String::new(),
    };
    format!(
        "{time} {:>7} {:<15} {:<12} {what}",
        ev.tgid,
        ev.comm.to_string(),
        ev.kind_name()
    )
}
