//! One JSON object per event, written straight into the caller's buffer: no `serde_json::Value`,
//! no serializer state machine, no allocation for the fields of the frequent kinds. Keys are
//! static ASCII and written as they are; strings are escaped as serde_json escapes them, and
//! integers go through `itoa`, so the bytes are those serde_json wrote (the golden test).
use std::io;

use tracer_common::{memory, tcp};

use super::{
    EINPROGRESS, closed_by, family_name, kb_total, ms_since, owner, prot_string, rlimit_name,
    role_name,
};
use crate::{
    event::{Body, Comm, Event, socket_addr},
    pipeline::Ctx,
    vocab::{errno_name, signal_from_kernel, signal_name, tcp_state_name, wait_status},
};

/// The JSON object for one event: `ts`, `kind`, `pid`, `tid`, `comm`, `ppid`, then the fields
/// of its kind. This shape is a stable interface.
///
/// Write it with [`write_json_line`] (the fast path), `to_string()`, or as a `Serialize` value
/// (through a parsed `serde_json::Value`: for callers that want one anyway).
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
    write_event(buf, ev, ctx)?;
    buf.push(b'\n');
    Ok(())
}

impl std::fmt::Display for EventJson<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = Vec::with_capacity(256);
        write_event(&mut buf, self.ev, self.ctx).map_err(|_| std::fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?)
    }
}

impl serde::Serialize for EventJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::with_capacity(256);
        write_event(&mut buf, self.ev, self.ctx).map_err(serde::ser::Error::custom)?;
        // The map keeps the key order (serde_json's preserve_order).
        let v: serde_json::Value =
            serde_json::from_slice(&buf).map_err(serde::ser::Error::custom)?;
        v.serialize(s)
    }
}

/// A value as JSON, appended to a buffer.
trait Val {
    fn put(&self, b: &mut Vec<u8>);
}

macro_rules! int_val {
    ($($t:ty),*) => {$(
        impl Val for $t {
            #[inline]
            fn put(&self, b: &mut Vec<u8>) {
                b.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
            }
        }
    )*};
}
int_val!(u8, u16, u32, u64, i16, i32, i64);

impl Val for bool {
    fn put(&self, b: &mut Vec<u8>) {
        b.extend_from_slice(if *self { b"true" } else { b"false" });
    }
}

impl Val for str {
    fn put(&self, b: &mut Vec<u8>) {
        string(b, self);
    }
}

impl Val for String {
    fn put(&self, b: &mut Vec<u8>) {
        string(b, self);
    }
}

impl<T: Val + ?Sized> Val for &T {
    fn put(&self, b: &mut Vec<u8>) {
        (**self).put(b);
    }
}

impl<T: Val> Val for Option<T> {
    fn put(&self, b: &mut Vec<u8>) {
        match self {
            Some(v) => v.put(b),
            None => b.extend_from_slice(b"null"),
        }
    }
}

impl Val for [String] {
    fn put(&self, b: &mut Vec<u8>) {
        b.push(b'[');
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            string(b, s);
        }
        b.push(b']');
    }
}

impl Val for Comm {
    fn put(&self, b: &mut Vec<u8>) {
        string(b, &String::from_utf8_lossy(self.as_bytes()));
    }
}

/// A name from the tool's own vocabulary (a kind, a state, a family): static ASCII letters,
/// digits, `_` and `+`, with nothing to escape, so written without looking at each byte.
struct Name(&'static str);

impl Val for Name {
    #[inline]
    fn put(&self, b: &mut Vec<u8>) {
        b.push(b'"');
        b.extend_from_slice(self.0.as_bytes());
        b.push(b'"');
    }
}

/// `0x` and lowercase hex digits, as `{:#x}` writes them.
struct Hex(u64);

impl Val for Hex {
    fn put(&self, b: &mut Vec<u8>) {
        let mut d = [0u8; 18];
        let mut n = d.len();
        let mut v = self.0;
        loop {
            n -= 1;
            d[n] = b"0123456789abcdef"[(v & 15) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        n -= 2;
        d[n] = b'0';
        d[n + 1] = b'x';
        b.push(b'"');
        b.extend_from_slice(&d[n..]);
        b.push(b'"');
    }
}

/// An address as [`super::ip`] formats it, quoted.
pub(super) struct Ip<'a>(pub u16, pub &'a [u8; 16]);

impl Val for Ip<'_> {
    fn put(&self, b: &mut Vec<u8>) {
        b.push(b'"');
        if self.0 == tracer_common::AF_INET6 {
            use std::io::Write as _;
            // Hex digits, colons and dots only: nothing to escape.
            let _ = write!(b, "{}", socket_addr(self.0, self.1, 0).ip());
        } else {
            // IPv4 (and what socket_addr reads as IPv4) by hand: the most frequent field
            // there is.
            for (i, &o) in self.1[..4].iter().enumerate() {
                if i > 0 {
                    b.push(b'.');
                }
                if o >= 100 {
                    b.push(b'0' + o / 100);
                }
                if o >= 10 {
                    b.push(b'0' + o / 10 % 10);
                }
                b.push(b'0' + o % 10);
            }
        }
        b.push(b'"');
    }
}

/// An address as the JSON printer writes it (the tests compare it with [`super::ip`]).
#[cfg(test)]
pub(super) fn ip_json(family: u16, a: &[u8; 16]) -> String {
    let mut b = Vec::new();
    Ip(family, a).put(&mut b);
    String::from_utf8(b).unwrap_or_default()
}

/// A JSON string, escaped as serde_json escapes it: `"` and `\`, the short forms `\b \t \n \f
/// \r`, other control characters as `\u00xx`; everything else (DEL and non-ASCII included) as
/// it is.
fn string(b: &mut Vec<u8>, s: &str) {
    b.push(b'"');
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\') {
        b.extend_from_slice(bytes);
        b.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0..=0x1f => &[],
            _ => continue,
        };
        b.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            b.extend_from_slice(b"\\u00");
            b.push(HEX[(c >> 4) as usize]);
            b.push(HEX[(c & 15) as usize]);
        } else {
            b.extend_from_slice(esc);
        }
        start = i + 1;
    }
    b.extend_from_slice(&bytes[start..]);
    b.push(b'"');
}

/// The fields after the first: `,"key":value`.
struct Obj<'b>(&'b mut Vec<u8>);

impl Obj<'_> {
    #[inline]
    fn f<V: Val + ?Sized>(&mut self, key: &str, v: &V) {
        let b = &mut *self.0;
        b.extend_from_slice(b",\"");
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(b"\":");
        v.put(b);
    }

    /// A TCP record's family, addresses and ports, in the order every such kind writes them.
    fn endpoints(
        &mut self,
        family: u16,
        saddr: &[u8; 16],
        sport: u16,
        daddr: &[u8; 16],
        dport: u16,
    ) {
        self.f("family", &Name(family_name(family)));
        self.f("saddr", &Ip(family, saddr));
        self.f("sport", &sport);
        self.f("daddr", &Ip(family, daddr));
        self.f("dport", &dport);
    }
}

fn write_event(buf: &mut Vec<u8>, ev: &Event, ctx: &Ctx<'_>) -> io::Result<()> {
    buf.extend_from_slice(b"{\"ts\":\"");
    buf.extend_from_slice(ctx.host.rfc3339_stamp(ev.ts_ns).as_str().as_bytes());
    buf.push(b'"');
    let mut m = Obj(buf);
    m.f("kind", &Name(ev.kind_name()));
    m.f("pid", &ev.tgid);
    m.f("tid", &ev.tid);
    m.f("comm", &ev.comm);
    let entry = ctx.procs.get(ev.tgid);
    m.f("ppid", &ctx.procs.ppid(ev.tgid));
    m.f("uid", &ev.uid);
    if let Some(w) = entry.and_then(|p| p.workload.as_ref()) {
        for (k, v) in w.fields() {
            m.f(k, v);
        }
    }
    match &ev.body {
        Body::TcpState(t) => {
            m.f("old_state", &Name(tcp_state_name(t.old_state)));
            m.f("new_state", &Name(tcp_state_name(t.new_state)));
            m.endpoints(t.family, &t.saddr, t.sport, &t.daddr, t.dport);
            m.f("owner_pid", &owner(t.owner_tgid));
            m.f("sk", &Hex(t.skaddr));
        }
        Body::TcpAccept(a) => {
            if a.ret >= 0 {
                m.f("fd", &a.ret);
            } else {
                m.f("error", &errno_name(a.ret));
            }
            m.f("listen_fd", &a.listen_fd);
            if a.family != 0 {
                m.f("family", &Name(family_name(a.family)));
                m.f("saddr", &Ip(a.family, &a.saddr));
                m.f("sport", &a.sport);
                if a.ret >= 0 {
                    m.f("daddr", &Ip(a.family, &a.daddr));
                    m.f("dport", &a.dport);
                }
            }
        }
        Body::TcpReset(r) => {
            let direction = if r.direction == tcp::RESET_SENT {
                "sent"
            } else {
                "received"
            };
            m.f("direction", &Name(direction));
            m.f("cause", &Name(crate::analysis::resets::cause(r).name()));
            if let Some(reason) = tcp::reset_reason_name(r.reason) {
                m.f("reason", &Name(reason));
            }
            m.endpoints(r.family, &r.saddr, r.sport, &r.daddr, r.dport);
            m.f("owner_pid", &owner(r.owner_tgid));
        }
        Body::SocketOpen(x) => {
            if x.fd >= 0 {
                m.f("fd", &x.fd);
            } else {
                m.f("error", &errno_name(x.fd));
            }
            m.f("family", &Name(family_name(x.family)));
            m.f("sock_type", &x.sock_type);
        }
        Body::SocketClose(x) => {
            m.f("fd", &x.fd);
            m.f("family", &Name(family_name(x.family)));
        }
        Body::FdDup(d) => {
            m.f("oldfd", &d.oldfd);
            m.f("newfd", &d.newfd);
            m.f("family", &Name(family_name(d.family)));
            m.f("replaced", &(d.flags & tcp::DUP_REPLACED != 0));
        }
        Body::SockOwner(o) => {
            m.f("sk", &Hex(o.sk));
            m.f("prev_owner_pid", &owner(o.prev_tgid));
        }
        Body::TcpConnect(c) => {
            m.f("fd", &c.fd);
            if c.ret < 0 {
                m.f("error", &errno_name(c.ret));
            }
            m.f("daddr", &Ip(c.family, &c.daddr));
            m.f("dport", &c.dport);
        }
        Body::TcpListen(l) => {
            m.f("fd", &l.fd);
            m.f("backlog", &l.backlog);
        }
        Body::ConnOpen(c) => {
            m.f("role", &Name(role_name(c.role)));
            m.f("fd", &c.fd);
            if c.ret < 0 && c.ret != -EINPROGRESS {
                m.f("error", &errno_name(c.ret));
            }
            m.endpoints(c.family, &c.saddr, c.sport, &c.daddr, c.dport);
            m.f("sk", &Hex(c.sk));
        }
        Body::ConnClose(c) => {
            m.f("role", &Name(role_name(c.role)));
            m.f("fd", &c.fd);
            m.f("state", &Name(tcp_state_name(u16::from(c.state))));
            m.f("closed_first", &Name(closed_by(c.state)));
            m.endpoints(c.family, &c.saddr, c.sport, &c.daddr, c.dport);
            m.f("duration_ms", &ms_since(ev.ts_ns, c.open_ns));
            m.f("bytes_in", &c.bytes_in);
            m.f("bytes_out", &c.bytes_out);
            m.f("last_recv_ms_ago", &ms_since(ev.ts_ns, c.last_recv_ns));
            m.f("unanswered_ms", &ms_since(ev.ts_ns, c.wait_ns));
            m.f("sk", &Hex(c.sk));
        }
        Body::ConnStatus(c) => {
            m.f("status", &Name(crate::conns::status_name(c.status)));
            m.f("for_ms", &ms_since(ev.ts_ns, c.since_ns));
            m.f("state", &Name(tcp_state_name(u16::from(c.state))));
            m.f("role", &Name(role_name(c.role)));
            m.endpoints(c.family, &c.saddr, c.sport, &c.daddr, c.dport);
            m.f("age_ms", &ms_since(ev.ts_ns, c.open_ns));
            m.f("bytes_in", &c.bytes_in);
            m.f("bytes_out", &c.bytes_out);
            m.f("owner_pid", &owner(ev.tgid));
            m.f("sk", &Hex(c.sk));
        }
        Body::Signal(x) => {
            m.f("signal", &x.sig);
            m.f("signal_name", &signal_name(x.sig));
            m.f("target_pid", &x.target_pid);
            m.f("target_comm", &Comm(x.target_comm));
            m.f("code", &x.code);
            m.f("from_kernel", &signal_from_kernel(x.code));
            m.f("result", &x.result);
        }
        Body::Fork(f) => m.f("child_pid", &f.child_pid),
        Body::Exec(x) => {
            m.f("filename", &x.filename);
            m.f("args", x.args.as_slice());
        }
        Body::Exit(x) => {
            let known = x.flags & tracer_common::process::EXIT_CODE_KNOWN != 0;
            let (code, sig) = if known {
                wait_status(x.exit_code)
            } else {
                (None, None)
            };
            m.f("exit_code", &code);
            m.f("signal", &sig);
            m.f("signal_name", &sig.map(signal_name));
        }
        Body::Rlimit(r) => {
            let limit = |v: u64| (v != tracer_common::process::RLIM_INFINITY).then_some(v);
            m.f("target_pid", &r.target_pid);
            m.f("resource", &Name(rlimit_name(r.resource)));
            // null: unlimited (RLIM_INFINITY).
            m.f("soft", &limit(r.soft));
            m.f("hard", &limit(r.hard));
        }
        Body::Rename(r) => {
            m.f("target_pid", &r.target_pid);
            m.f("old_comm", &Comm(r.old_comm));
            m.f("new_comm", &Comm(r.new_comm));
        }
        Body::CgroupAttach(c) => {
            m.f("target_pid", &c.pid);
            m.f("target_comm", &c.comm);
            m.f("cgroup", &c.path);
            m.f("cgroup_truncated", &c.truncated);
            m.f("cgroup_id", &c.cgroup_id);
            // 0: cgroup v2; else the v1 hierarchy's id (/proc/cgroups).
            m.f("hierarchy", &c.hierarchy);
            m.f("level", &c.level);
            m.f("memory", &c.memory);
        }
        Body::OomKill(o) => {
            m.f("victim_pid", &o.victim_pid);
            m.f("victim_comm", &Comm(o.victim_comm));
            let has_mem = o.flags & tracer_common::oom::OOM_HAS_MEMORY != 0;
            m.f("victim_rss_bytes", &has_mem.then(|| kb_total(o)));
            m.f(
                "victim_total_vm_bytes",
                &has_mem.then(|| o.total_vm_kb.saturating_mul(1024)),
            );
            m.f(
                "victim_anon_rss_bytes",
                &has_mem.then(|| o.anon_rss_kb.saturating_mul(1024)),
            );
            m.f("oom_score_adj", &o.oom_score_adj);
        }
        Body::Mmap(x) => {
            if x.ret >= 0 {
                m.f("addr", &Hex(x.ret as u64));
            } else {
                m.f("error", &errno_name(x.ret as i32));
            }
            m.f("len", &x.len);
            m.f("prot", &prot_string(x.prot));
            m.f("anonymous", &(x.flags & memory::MAP_ANONYMOUS != 0));
            m.f("shared", &(x.flags & memory::MAP_SHARED != 0));
            if x.fd >= 0 {
                m.f("fd", &x.fd);
            }
        }
        Body::Munmap(x) => {
            m.f("addr", &Hex(x.addr));
            m.f("len", &x.len);
        }
        Body::Brk(b) => {
            m.f("addr", &Hex(b.brk));
            m.f("prev_addr", &Hex(b.prev));
            m.f("len", &(b.brk as i64).wrapping_sub(b.prev as i64));
        }
        Body::MemSample(x) => {
            m.f("rss_bytes", &x.rss_bytes);
            m.f("rss_anon_bytes", &x.rss_anon);
            m.f("rss_file_bytes", &x.rss_file);
            m.f("rss_shmem_bytes", &x.rss_shmem);
            m.f("swap_bytes", &x.swap_bytes);
            m.f("mapped_bytes", &x.mapped_bytes);
        }
        Body::ProcInfo(p) => {
            // A collector record, not printed: serde's derive writes its nested object.
            m.0.extend_from_slice(b",\"info\":");
            serde_json::to_writer(&mut *m.0, &**p).map_err(io::Error::from)?;
        }
        Body::Tick => {}
        Body::RecorderGap(g) => {
            // A collector record, rare: serde's derive writes its nested object.
            m.0.extend_from_slice(b",\"gap\":");
            serde_json::to_writer(&mut *m.0, &**g).map_err(io::Error::from)?;
        }
        Body::Drops(d) => {
            // Sorted by kind name, the last count of a name winning, as always.
            let drops: std::collections::BTreeMap<&str, u64> =
                d.per_kind.iter().map(|(k, n)| (k.as_str(), *n)).collect();
            let b = &mut *m.0;
            b.extend_from_slice(b",\"drops\":{");
            for (i, (k, n)) in drops.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                string(b, k);
                b.push(b':');
                n.put(b);
            }
            b.push(b'}');
        }
    }
    m.0.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ASCII character, DEL, and multi-byte characters escape as serde_json escapes them.
    #[test]
    fn strings_escape_as_serde_json() {
        let mut all: String = (0u8..=0x7f).map(char::from).collect();
        all.push_str("é€😀\u{80}\u{2028}\u{fffd}");
        for s in all
            .chars()
            .map(String::from)
            .chain([all.clone(), String::new()])
        {
            let mut b = Vec::new();
            string(&mut b, &s);
            assert_eq!(b, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }

    /// The names written unescaped need no escaping.
    #[test]
    fn names_need_no_escaping() {
        let mut names: Vec<&'static str> =
            tracer_common::Kind::ALL.iter().map(|k| k.name()).collect();
        names.extend(["proc_info", "drops", "tick", "unknown"]);
        for v in 0..=u16::from(u8::MAX) {
            names.push(tcp_state_name(v));
            names.push(family_name(v));
            names.push(closed_by(v as u8));
            names.push(role_name(v as u8));
            names.push(crate::conns::status_name(v as u8));
            names.push(rlimit_name(u32::from(v)));
            names.extend(tcp::reset_reason_name(v as u8));
        }
        for n in names {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            Name(n).put(&mut a);
            string(&mut b, n);
            assert_eq!(a, b, "{n}");
        }
    }

    /// Hex as `{:#x}`, integers as serde_json writes them, at the edges.
    #[test]
    fn numbers_write_as_std() {
        for v in [0, 1, 9, 10, 15, 16, 255, 0xffff_8880_1234_5678, u64::MAX] {
            let mut b = Vec::new();
            Hex(v).put(&mut b);
            assert_eq!(b, format!("\"{v:#x}\"").as_bytes());
            b.clear();
            v.put(&mut b);
            assert_eq!(b, serde_json::to_vec(&v).unwrap());
        }
        for v in [i64::MIN, -1, 0, i64::MAX] {
            let mut b = Vec::new();
            v.put(&mut b);
            assert_eq!(b, serde_json::to_vec(&v).unwrap());
        }
    }
}
