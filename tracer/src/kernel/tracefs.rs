//! tracefs: where it is (mounting it if needed), which tracepoints exist, and the layout of
//! their records, read from `events/<category>/<name>/format` so no kernel's layout is
//! hard-coded.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use thiserror::Error;
use tracer_common::config::{FieldOffset, Offsets, ReasonMap};

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted (looked in /sys/kernel/tracing and /sys/kernel/debug/tracing) and \
         mounting it failed: {0}; mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NotMounted(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed format file {path}: {msg}")]
    Malformed { path: PathBuf, msg: String },
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub ctype: String,
    pub offset: u16,
    pub size: u16,
}

/// The record layout of one tracepoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub id: Option<u32>,
    pub fields: HashMap<String, Field>,
    /// The `print fmt:` line, after the colon.
    pub print_fmt: String,
}

impl Format {
    pub fn field(&self, name: &str) -> FieldOffset {
        self.fields
            .get(name)
            .map(|f| FieldOffset {
                offset: f.offset,
                size: f.size,
            })
            .unwrap_or(FieldOffset::ABSENT)
    }

    /// The value names `print fmt` gives a field with `__print_symbolic(REC-><field>, { 1,
    /// "NAME" }, ...)`; empty when it has none (or the list cannot be read). Values may be
    /// written as numbers or as enum constants; only numbers are returned.
    pub fn symbols(&self, field: &str) -> Vec<(u64, String)> {
        let key = format!("__print_symbolic(REC->{field},");
        let Some(start) = self.print_fmt.find(&key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut rest = &self.print_fmt[start + key.len()..];
        loop {
            rest = rest.trim_start();
            let Some(r) = rest.strip_prefix('{') else {
                break;
            };
            let Some(end) = r.find('}') else {
                break;
            };
            let (value, name) = match r[..end].split_once(',') {
                Some((v, n)) => (v.trim(), n.trim()),
                None => break,
            };
            let name = name.trim_matches('"');
            let value = match value.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => value.parse::<u64>().ok(),
            };
            if let Some(v) = value {
                out.push((v, name.to_owned()));
            }
            rest = r[end + 1..].trim_start();
            match rest.strip_prefix(',') {
                Some(r) => rest = r,
                None => break,
            }
        }
        out
    }
}

/// Parses a tracefs `format` file.
pub fn parse_format(text: &str) -> Result<Format, String> {
    let mut fmt = Format::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(id) = line.strip_prefix("ID:") {
            fmt.id = id.trim().parse().ok();
            continue;
        }
        if let Some(p) = line.strip_prefix("print fmt:") {
            fmt.print_fmt = p.trim().to_owned();
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        // field:unsigned short common_type;	offset:0;	size:2;	signed:0;
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for (i, part) in rest.split(';').map(str::trim).enumerate() {
            if i == 0 {
                decl = Some(part);
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.trim().parse::<u16>().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.trim().parse::<u16>().ok();
            }
        }
        let decl = decl.ok_or_else(|| format!("no declaration in {line:?}"))?;
        let (offset, size) = match (offset, size) {
            (Some(o), Some(s)) => (o, s),
            _ => return Err(format!("no offset/size in {line:?}")),
        };
        // The name is the last identifier, before any array suffix: `__u8 saddr[4]`.
        // (`__data_loc char[] comm` has brackets in its type, not after its name.)
        let base = match decl.strip_suffix(']') {
            Some(d) => d.rsplit_once('[').map_or(d, |(b, _)| b).trim_end(),
            None => decl,
        };
        let name = base
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("no field name in {line:?}"))?;
        let ctype = base[..base.len() - name.len()].trim().to_owned();
        fmt.fields.insert(
            name.to_owned(),
            Field {
                name: name.to_owned(),
                ctype,
                offset,
                size,
            },
        );
    }
    if fmt.fields.is_empty() {
        return Err("no fields".into());
    }
    Ok(fmt)
}

/// A tracefs mount.
#[derive(Clone, Debug)]
pub struct Tracefs {
    pub root: PathBuf,
}

impl Tracefs {
    /// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted (as `perf` and
    /// `bpftrace` do); fails with an explanation when that is impossible.
    pub fn find_or_mount() -> Result<Tracefs, TracefsError> {
        for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
            if Path::new(root).join("events").is_dir() {
                return Ok(Tracefs { root: root.into() });
            }
        }
        let target = c"/sys/kernel/tracing";
        // SAFETY: valid NUL-terminated strings; a failed mount has no effect.
        let rc = unsafe {
            libc::mount(
                c"nodev".as_ptr(),
                target.as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(TracefsError::NotMounted(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        Ok(Tracefs {
            root: "/sys/kernel/tracing".into(),
        })
    }

    pub fn at(root: impl Into<PathBuf>) -> Tracefs {
        Tracefs { root: root.into() }
    }

    pub fn exists(&self, category: &str, name: &str) -> bool {
        self.root.join("events").join(category).join(name).is_dir()
    }

    /// The layout of a tracepoint; `Ok(None)` when this kernel does not have it.
    pub fn format(&self, category: &str, name: &str) -> Result<Option<Format>, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TracefsError::Read { path, source: e }),
        };
        parse_format(&text)
            .map(Some)
            .map_err(|msg| TracefsError::Malformed { path, msg })
    }
}

/// A field the programs would like but this kernel's tracepoint lacks (or a missing
/// tracepoint, with `field` None).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub tracepoint: String,
    pub field: Option<&'static str>,
}

/// This kernel's `tcp_send_reset` reason numbers mapped to tracer's stable codes, by the names
/// in the format's `print fmt` (the enum was renumbered between kernel versions). A name tracer
/// does not know is recorded as unrecognised; no names at all leave every reason unknown (0).
pub fn reason_map(f: &Format) -> ReasonMap {
    let mut m = ReasonMap::default();
    for (value, name) in f.symbols("reason") {
        if let Some(slot) = m.0.get_mut(value as usize) {
            *slot = tracer_common::tcp::reset_reason_code(&name)
                .unwrap_or(tracer_common::tcp::RESET_REASON_UNRECOGNISED);
        }
    }
    m
}

/// Fills [`Offsets`] from the format files. Missing tracepoints and fields are reported, not
/// fatal: the programs treat an absent field (size 0) as unknown.
pub fn offsets(tfs: &Tracefs) -> Result<(Offsets, Vec<Missing>), TracefsError> {
    let mut o = Offsets::default();
    let mut missing = Vec::new();
    load(
        tfs,
        &mut missing,
        "sock",
        "inet_sock_set_state",
        &mut [
            ("skaddr", &mut o.iss_skaddr),
            ("oldstate", &mut o.iss_oldstate),
            ("newstate", &mut o.iss_newstate),
            ("sport", &mut o.iss_sport),
            ("dport", &mut o.iss_dport),
            ("family", &mut o.iss_family),
            ("protocol", &mut o.iss_protocol),
            ("saddr", &mut o.iss_saddr),
            ("daddr", &mut o.iss_daddr),
            ("saddr_v6", &mut o.iss_saddr_v6),
            ("daddr_v6", &mut o.iss_daddr_v6),
        ],
    )?;
    // tcp_send_reset changed shape in 6.10 (sockaddr images instead of family/ports): take
    // whichever fields exist without calling the others missing.
    match tfs.format("tcp", "tcp_send_reset")? {
        None => missing.push(Missing {
            tracepoint: "tcp/tcp_send_reset".into(),
            field: None,
        }),
        Some(f) => {
            o.tsr_skaddr = f.field("skaddr");
            o.tsr_state = f.field("state");
            o.tsr_sport = f.field("sport");
            o.tsr_dport = f.field("dport");
            o.tsr_family = f.field("family");
            o.tsr_saddr = f.field("saddr");
            o.tsr_daddr = f.field("daddr");
            o.tsr_saddr_v6 = f.field("saddr_v6");
            o.tsr_daddr_v6 = f.field("daddr_v6");
            o.tsr_reason = f.field("reason");
            if o.tsr_reason.present() {
                o.tsr_reason_map = reason_map(&f);
                if o.tsr_reason_map == ReasonMap::default() {
                    tracing::warn!(
                        "tcp/tcp_send_reset: no reason names in its print fmt; reset causes are inferred from socket and state"
                    );
                }
            }
            let sockaddr_style = o.tsr_saddr.size == 28;
            if !sockaddr_style && !o.tsr_family.present() {
                missing.push(Missing {
                    tracepoint: "tcp/tcp_send_reset".into(),
                    field: Some("family"),
                });
            }
        }
    }
    load(
        tfs,
        &mut missing,
        "tcp",
        "tcp_receive_reset",
        &mut [
            ("skaddr", &mut o.trr_skaddr),
            ("sport", &mut o.trr_sport),
            ("dport", &mut o.trr_dport),
            ("family", &mut o.trr_family),
            ("saddr", &mut o.trr_saddr),
            ("daddr", &mut o.trr_daddr),
            ("saddr_v6", &mut o.trr_saddr_v6),
            ("daddr_v6", &mut o.trr_daddr_v6),
        ],
    )?;
    let mut sl = [FieldOffset::ABSENT; 4];
    {
        let [a, b, c, d] = &mut sl;
        load(
            tfs,
            &mut missing,
            "sock",
            "sock_recv_length",
            &mut [("sk", a), ("family", b), ("protocol", c), ("ret", d)],
        )?;
    }
    let mut sl_send = [FieldOffset::ABSENT; 4];
    {
        let [a, b, c, d] = &mut sl_send;
        load(
            tfs,
            &mut missing,
            "sock",
            "sock_send_length",
            &mut [("sk", a), ("family", b), ("protocol", c), ("ret", d)],
        )?;
    }
    // Both programs read one set of offsets: they must agree (they share a tracepoint class).
    if sl == sl_send || sl_send.iter().all(|f| !f.present()) {
        [o.sl_sk, o.sl_family, o.sl_protocol, o.sl_ret] = sl;
    } else if sl.iter().all(|f| !f.present()) {
        [o.sl_sk, o.sl_family, o.sl_protocol, o.sl_ret] = sl_send;
    }
    load(
        tfs,
        &mut missing,
        "signal",
        "signal_generate",
        &mut [
            ("sig", &mut o.sg_sig),
            ("errno", &mut o.sg_errno),
            ("code", &mut o.sg_code),
            ("comm", &mut o.sg_comm),
            ("pid", &mut o.sg_pid),
            ("group", &mut o.sg_group),
            ("result", &mut o.sg_result),
        ],
    )?;
    load(
        tfs,
        &mut missing,
        "sched",
        "sched_process_exec",
        &mut [
            ("filename", &mut o.exec_filename),
            ("old_pid", &mut o.exec_old_pid),
        ],
    )?;
    match tfs.format("sched", "sched_process_exit")? {
        None => missing.push(Missing {
            tracepoint: "sched/sched_process_exit".into(),
            field: None,
        }),
        Some(f) => {
            o.exit_pid = f.field("pid");
            // Newer kernels only; without it the program uses "thread group leader exits".
            o.exit_group_dead = f.field("group_dead");
        }
    }
    match tfs.format("oom", "mark_victim")? {
        None => missing.push(Missing {
            tracepoint: "oom/mark_victim".into(),
            field: None,
        }),
        Some(f) => {
            // Older kernels carry only the pid: the rest is optional.
            o.mv_pid = f.field("pid");
            o.mv_comm = f.field("comm");
            o.mv_total_vm = f.field("total_vm");
            o.mv_anon_rss = f.field("anon_rss");
            o.mv_file_rss = f.field("file_rss");
            o.mv_shmem_rss = f.field("shmem_rss");
            o.mv_uid = f.field("uid");
            o.mv_pgtables = f.field("pgtables");
            o.mv_oom_score_adj = f.field("oom_score_adj");
            if !o.mv_pid.present() {
                missing.push(Missing {
                    tracepoint: "oom/mark_victim".into(),
                    field: Some("pid"),
                });
            }
        }
    }
    load(
        tfs,
        &mut missing,
        "cgroup",
        "cgroup_attach_task",
        &mut [
            ("dst_root", &mut o.cat_dst_root),
            ("dst_id", &mut o.cat_dst_id),
            ("dst_level", &mut o.cat_dst_level),
            ("pid", &mut o.cat_pid),
            ("dst_path", &mut o.cat_dst_path),
            ("comm", &mut o.cat_comm),
        ],
    )?;
    load(
        tfs,
        &mut missing,
        "kmem",
        "rss_stat",
        &mut [
            ("curr", &mut o.rss_curr),
            ("member", &mut o.rss_member),
            ("size", &mut o.rss_size),
        ],
    )?;
    // Syscall tracepoints: args[i] at a fixed stride after __syscall_nr. Take the layout from
    // one and check every syscall the programs read against it.
    let mut args0: Option<u16> = None;
    let mut ret: Option<FieldOffset> = None;
    for (name, first_arg) in SYSCALL_ENTERS {
        let Some(f) = tfs.format("syscalls", name)? else {
            missing.push(Missing {
                tracepoint: format!("syscalls/{name}"),
                field: None,
            });
            continue;
        };
        let a = f.field(first_arg);
        if !a.present() {
            missing.push(Missing {
                tracepoint: format!("syscalls/{name}"),
                field: Some(first_arg),
            });
            continue;
        }
        match args0 {
            None => args0 = Some(a.offset),
            Some(x) if x != a.offset => {
                return Err(TracefsError::Malformed {
                    path: tfs.root.join("events/syscalls").join(name),
                    msg: format!(
                        "first argument at {} where other syscalls have it at {x}",
                        a.offset
                    ),
                });
            }
            _ => {}
        }
    }
    for name in SYSCALL_EXITS {
        let Some(f) = tfs.format("syscalls", name)? else {
            missing.push(Missing {
                tracepoint: format!("syscalls/{name}"),
                field: None,
            });
            continue;
        };
        let r = f.field("ret");
        if r.present() {
            ret.get_or_insert(r);
        }
    }
    o.sys_args0 = args0
        .map(|offset| FieldOffset { offset, size: 8 })
        .unwrap_or_default();
    o.sys_ret = ret.unwrap_or_default();
    for m in check_sizes(&mut o) {
        tracing::warn!("{m}; it is treated as missing");
        missing.push(Missing {
            tracepoint: m.tracepoint.into(),
            field: Some(m.field),
        });
    }
    Ok((o, missing))
}

/// A field whose size on this kernel is not what the programs read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeMismatch {
    pub tracepoint: &'static str,
    pub field: &'static str,
    pub size: u16,
    pub want: &'static [u16],
}

impl std::fmt::Display for SizeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: field '{}' is {} bytes on this kernel, but the programs read {:?} bytes",
            self.tracepoint, self.field, self.size, self.want
        )
    }
}

type Slot = for<'a> fn(&'a mut Offsets) -> &'a mut FieldOffset;

/// The size each program reads of each field (the type of its `field::<T>` read in
/// tracer-ebpf; several sizes where the program picks its read by the field's size). Reading a
/// 2-byte field as 4 bytes would mix a neighbour into the value; a field of another size is
/// therefore absent for the programs.
const READ_SIZES: &[(&str, &str, Slot, &[u16])] = &[
    (
        "sock/inet_sock_set_state",
        "skaddr",
        |o| &mut o.iss_skaddr,
        &[8],
    ),
    (
        "sock/inet_sock_set_state",
        "oldstate",
        |o| &mut o.iss_oldstate,
        &[4],
    ),
    (
        "sock/inet_sock_set_state",
        "newstate",
        |o| &mut o.iss_newstate,
        &[4],
    ),
    (
        "sock/inet_sock_set_state",
        "sport",
        |o| &mut o.iss_sport,
        &[2],
    ),
    (
        "sock/inet_sock_set_state",
        "dport",
        |o| &mut o.iss_dport,
        &[2],
    ),
    (
        "sock/inet_sock_set_state",
        "family",
        |o| &mut o.iss_family,
        &[2],
    ),
    (
        "sock/inet_sock_set_state",
        "protocol",
        |o| &mut o.iss_protocol,
        &[2],
    ),
    (
        "sock/inet_sock_set_state",
        "saddr",
        |o| &mut o.iss_saddr,
        &[4],
    ),
    (
        "sock/inet_sock_set_state",
        "daddr",
        |o| &mut o.iss_daddr,
        &[4],
    ),
    (
        "sock/inet_sock_set_state",
        "saddr_v6",
        |o| &mut o.iss_saddr_v6,
        &[16],
    ),
    (
        "sock/inet_sock_set_state",
        "daddr_v6",
        |o| &mut o.iss_daddr_v6,
        &[16],
    ),
    ("tcp/tcp_send_reset", "skaddr", |o| &mut o.tsr_skaddr, &[8]),
    ("tcp/tcp_send_reset", "state", |o| &mut o.tsr_state, &[4]),
    ("tcp/tcp_send_reset", "sport", |o| &mut o.tsr_sport, &[2]),
    ("tcp/tcp_send_reset", "dport", |o| &mut o.tsr_dport, &[2]),
    ("tcp/tcp_send_reset", "family", |o| &mut o.tsr_family, &[2]),
    // A sockaddr image (6.10+) or an IPv4 address.
    (
        "tcp/tcp_send_reset",
        "saddr",
        |o| &mut o.tsr_saddr,
        &[4, 28],
    ),
    (
        "tcp/tcp_send_reset",
        "daddr",
        |o| &mut o.tsr_daddr,
        &[4, 28],
    ),
    (
        "tcp/tcp_send_reset",
        "saddr_v6",
        |o| &mut o.tsr_saddr_v6,
        &[16],
    ),
    (
        "tcp/tcp_send_reset",
        "daddr_v6",
        |o| &mut o.tsr_daddr_v6,
        &[16],
    ),
    ("tcp/tcp_send_reset", "reason", |o| &mut o.tsr_reason, &[4]),
    (
        "tcp/tcp_receive_reset",
        "skaddr",
        |o| &mut o.trr_skaddr,
        &[8],
    ),
    ("tcp/tcp_receive_reset", "sport", |o| &mut o.trr_sport, &[2]),
    ("tcp/tcp_receive_reset", "dport", |o| &mut o.trr_dport, &[2]),
    (
        "tcp/tcp_receive_reset",
        "family",
        |o| &mut o.trr_family,
        &[2],
    ),
    ("tcp/tcp_receive_reset", "saddr", |o| &mut o.trr_saddr, &[4]),
    ("tcp/tcp_receive_reset", "daddr", |o| &mut o.trr_daddr, &[4]),
    (
        "tcp/tcp_receive_reset",
        "saddr_v6",
        |o| &mut o.trr_saddr_v6,
        &[16],
    ),
    (
        "tcp/tcp_receive_reset",
        "daddr_v6",
        |o| &mut o.trr_daddr_v6,
        &[16],
    ),
    ("sock/sock_recv_length", "sk", |o| &mut o.sl_sk, &[8]),
    (
        "sock/sock_recv_length",
        "family",
        |o| &mut o.sl_family,
        &[2],
    ),
    (
        "sock/sock_recv_length",
        "protocol",
        |o| &mut o.sl_protocol,
        &[2],
    ),
    ("sock/sock_recv_length", "ret", |o| &mut o.sl_ret, &[4]),
    ("signal/signal_generate", "sig", |o| &mut o.sg_sig, &[4]),
    ("signal/signal_generate", "errno", |o| &mut o.sg_errno, &[4]),
    ("signal/signal_generate", "code", |o| &mut o.sg_code, &[4]),
    ("signal/signal_generate", "comm", |o| &mut o.sg_comm, &[16]),
    ("signal/signal_generate", "pid", |o| &mut o.sg_pid, &[4]),
    ("signal/signal_generate", "group", |o| &mut o.sg_group, &[4]),
    (
        "signal/signal_generate",
        "result",
        |o| &mut o.sg_result,
        &[4],
    ),
    // __data_loc: a u32 locator.
    (
        "sched/sched_process_exec",
        "filename",
        |o| &mut o.exec_filename,
        &[4],
    ),
    (
        "sched/sched_process_exec",
        "old_pid",
        |o| &mut o.exec_old_pid,
        &[4],
    ),
    (
        "sched/sched_process_exit",
        "group_dead",
        |o| &mut o.exit_group_dead,
        &[1],
    ),
    ("oom/mark_victim", "pid", |o| &mut o.mv_pid, &[4]),
    // __data_loc (4) or char[16].
    ("oom/mark_victim", "comm", |o| &mut o.mv_comm, &[4, 16]),
    ("oom/mark_victim", "total_vm", |o| &mut o.mv_total_vm, &[8]),
    ("oom/mark_victim", "anon_rss", |o| &mut o.mv_anon_rss, &[8]),
    ("oom/mark_victim", "file_rss", |o| &mut o.mv_file_rss, &[8]),
    (
        "oom/mark_victim",
        "shmem_rss",
        |o| &mut o.mv_shmem_rss,
        &[8],
    ),
    ("oom/mark_victim", "uid", |o| &mut o.mv_uid, &[4]),
    ("oom/mark_victim", "pgtables", |o| &mut o.mv_pgtables, &[8]),
    (
        "oom/mark_victim",
        "oom_score_adj",
        |o| &mut o.mv_oom_score_adj,
        &[2],
    ),
    (
        "cgroup/cgroup_attach_task",
        "dst_root",
        |o| &mut o.cat_dst_root,
        &[4],
    ),
    (
        "cgroup/cgroup_attach_task",
        "dst_id",
        |o| &mut o.cat_dst_id,
        &[8],
    ),
    (
        "cgroup/cgroup_attach_task",
        "dst_level",
        |o| &mut o.cat_dst_level,
        &[4],
    ),
    ("cgroup/cgroup_attach_task", "pid", |o| &mut o.cat_pid, &[4]),
    // __data_loc: u32 locators.
    (
        "cgroup/cgroup_attach_task",
        "dst_path",
        |o| &mut o.cat_dst_path,
        &[4],
    ),
    (
        "cgroup/cgroup_attach_task",
        "comm",
        |o| &mut o.cat_comm,
        &[4],
    ),
    ("kmem/rss_stat", "curr", |o| &mut o.rss_curr, &[4]),
    ("kmem/rss_stat", "member", |o| &mut o.rss_member, &[4]),
    ("kmem/rss_stat", "size", |o| &mut o.rss_size, &[8]),
    ("syscalls/sys_exit_*", "ret", |o| &mut o.sys_ret, &[8]),
];

/// Marks absent (size 0) every present field whose size is not one the programs read, and
/// says which.
pub fn check_sizes(o: &mut Offsets) -> Vec<SizeMismatch> {
    let mut out = Vec::new();
    for (tracepoint, field, slot, want) in READ_SIZES {
        let f = slot(o);
        if f.present() && !want.contains(&f.size) {
            out.push(SizeMismatch {
                tracepoint,
                field,
                size: f.size,
                want,
            });
            *f = FieldOffset::ABSENT;
        }
    }
    out
}

/// Reads the wanted fields of one tracepoint into their slots, noting what is missing.
fn load(
    tfs: &Tracefs,
    missing: &mut Vec<Missing>,
    cat: &str,
    name: &str,
    want: &mut [(&'static str, &mut FieldOffset)],
) -> Result<(), TracefsError> {
    match tfs.format(cat, name)? {
        None => missing.push(Missing {
            tracepoint: format!("{cat}/{name}"),
            field: None,
        }),
        Some(f) => {
            for (field, slot) in want.iter_mut() {
                **slot = f.field(field);
                if !slot.present() {
                    missing.push(Missing {
                        tracepoint: format!("{cat}/{name}"),
                        field: Some(field),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The sys_enter tracepoints the programs read, with their first argument's name.
const SYSCALL_ENTERS: [(&str, &str); 15] = [
    ("sys_enter_accept", "fd"),
    ("sys_enter_accept4", "fd"),
    ("sys_enter_socket", "family"),
    ("sys_enter_close", "fd"),
    ("sys_enter_connect", "fd"),
    ("sys_enter_listen", "fd"),
    ("sys_enter_mmap", "addr"),
    ("sys_enter_munmap", "addr"),
    ("sys_enter_prlimit64", "pid"),
    ("sys_enter_setrlimit", "resource"),
    ("sys_enter_dup", "fildes"),
    ("sys_enter_dup2", "oldfd"),
    ("sys_enter_dup3", "oldfd"),
    ("sys_enter_fcntl", "fd"),
    ("sys_enter_socketpair", "family"),
];
const SYSCALL_EXITS: [&str; 13] = [
    "sys_exit_accept",
    "sys_exit_accept4",
    "sys_exit_socket",
    "sys_exit_connect",
    "sys_exit_mmap",
    "sys_exit_brk",
    "sys_exit_prlimit64",
    "sys_exit_setrlimit",
    "sys_exit_dup",
    "sys_exit_dup2",
    "sys_exit_dup3",
    "sys_exit_fcntl",
    "sys_exit_socketpair",
];

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;

print fmt: \"family=%s\", REC->family
";

    #[test]
    fn parses_names_types_arrays_pointers_and_data_loc() {
        let f = parse_format(ISS).unwrap();
        assert_eq!(f.id, Some(2287));
        assert_eq!(f.field("skaddr"), FieldOffset { offset: 8, size: 8 });
        assert_eq!(f.fields["skaddr"].ctype, "const void *");
        assert_eq!(
            f.field("oldstate"),
            FieldOffset {
                offset: 16,
                size: 4
            }
        );
        assert_eq!(
            f.field("saddr_v6"),
            FieldOffset {
                offset: 40,
                size: 16
            }
        );
        assert_eq!(
            f.field("comm"),
            FieldOffset {
                offset: 12,
                size: 4
            }
        );
        assert_eq!(f.fields["comm"].ctype, "__data_loc char[]");
        assert!(!f.field("nope").present());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_format("hello").is_err());
        assert!(parse_format("field:int x;\toffset:zz;\tsize:4;").is_err());
    }

    fn write_tp(root: &Path, cat: &str, name: &str, fields: &[(&str, u16, u16)]) {
        let dir = root.join("events").join(cat).join(name);
        fs::create_dir_all(&dir).unwrap();
        let mut s = String::from(
            "format:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n",
        );
        for (decl, off, size) in fields {
            s.push_str(&format!(
                "\tfield:{decl};\toffset:{off};\tsize:{size};\tsigned:0;\n"
            ));
        }
        fs::write(dir.join("format"), s).unwrap();
    }

    #[test]
    fn missing_tracepoints_and_fields_are_reported_not_fatal() {
        let dir = std::env::temp_dir().join(format!("tracer-tracefs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        // An "old kernel": mark_victim with only the pid, no rss_stat, one syscall.
        write_tp(&dir, "oom", "mark_victim", &[("int pid", 8, 4)]);
        write_tp(
            &dir,
            "syscalls",
            "sys_enter_close",
            &[("int __syscall_nr", 8, 4), ("unsigned int fd", 16, 8)],
        );
        write_tp(
            &dir,
            "syscalls",
            "sys_exit_socket",
            &[("int __syscall_nr", 8, 4), ("long ret", 16, 8)],
        );
        let (o, missing) = offsets(&Tracefs::at(&dir)).unwrap();
        assert_eq!(o.mv_pid, FieldOffset { offset: 8, size: 4 });
        assert!(!o.mv_total_vm.present());
        assert_eq!(
            o.sys_args0,
            FieldOffset {
                offset: 16,
                size: 8
            }
        );
        assert_eq!(
            o.sys_ret,
            FieldOffset {
                offset: 16,
                size: 8
            }
        );
        assert!(missing.contains(&Missing {
            tracepoint: "kmem/rss_stat".into(),
            field: None
        }));
        assert!(!missing.iter().any(|m| m.tracepoint == "oom/mark_victim"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_field_of_another_size_than_the_programs_read_is_missing() {
        let dir = std::env::temp_dir().join(format!("tracer-tracefs-size-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        // sport widened to 4 bytes, daddr_v6 cut to 8; the rest as on 6.18.
        write_tp(
            &dir,
            "sock",
            "inet_sock_set_state",
            &[
                ("const void * skaddr", 8, 8),
                ("int oldstate", 16, 4),
                ("int newstate", 20, 4),
                ("__u32 sport", 24, 4),
                ("__u16 dport", 28, 2),
                ("__u16 family", 30, 2),
                ("__u16 protocol", 32, 2),
                ("__u8 saddr[4]", 34, 4),
                ("__u8 daddr[4]", 38, 4),
                ("__u8 saddr_v6[16]", 42, 16),
                ("__u8 daddr_v6[8]", 58, 8),
            ],
        );
        // Either reset address layout is fine.
        write_tp(
            &dir,
            "tcp",
            "tcp_send_reset",
            &[
                ("const void * skaddr", 16, 8),
                ("__u8 saddr[28]", 32, 28),
                ("__u8 daddr[28]", 60, 28),
            ],
        );
        let (o, missing) = offsets(&Tracefs::at(&dir)).unwrap();
        assert!(!o.iss_sport.present());
        assert!(!o.iss_daddr_v6.present());
        assert_eq!(
            o.iss_dport,
            FieldOffset {
                offset: 28,
                size: 2
            }
        );
        assert_eq!(o.tsr_saddr.size, 28);
        for field in ["sport", "daddr_v6"] {
            assert!(
                missing.contains(&Missing {
                    tracepoint: "sock/inet_sock_set_state".into(),
                    field: Some(field)
                }),
                "{field}: {missing:?}"
            );
        }
        assert!(!missing.iter().any(|m| m.field == Some("dport")));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_size_check_names_a_field_the_programs_read() {
        // The table's slots are distinct fields (a copy-paste slip would check one twice).
        let mut o = Offsets::default();
        let mut seen = std::collections::HashSet::new();
        for (i, (tp, field, slot, _)) in READ_SIZES.iter().enumerate() {
            assert!(seen.insert((tp, field)), "{tp} {field} twice");
            *slot(&mut o) = FieldOffset {
                offset: i as u16 + 1,
                size: 3,
            };
        }
        let m = check_sizes(&mut o);
        assert_eq!(m.len(), READ_SIZES.len(), "each slot distinct");
        assert_eq!(
            m[3].to_string(),
            "sock/inet_sock_set_state: field 'sport' is 3 bytes on this kernel, but the programs read [2] bytes"
        );
    }

    #[test]
    fn this_kernels_formats() {
        let tfs = Tracefs::find_or_mount();
        let why_not = match &tfs {
            Err(e) => Some(e.to_string()),
            Ok(t) if !t.exists("sock", "inet_sock_set_state") => {
                Some("no sock/inet_sock_set_state tracepoint".to_owned())
            }
            Ok(_) => None,
        };
        if !crate::kernel::can_read_kernel("tracefs", why_not) {
            return;
        }
        let tfs = tfs.unwrap();
        let (o, _) = offsets(&tfs).unwrap();
        assert!(o.iss_skaddr.present() && o.iss_newstate.present());
        assert_eq!(o.sys_args0.offset, 16);
    }

    /// Linux 6.18's tcp_send_reset (print fmt trimmed: the state list first, then the reasons).
    const TSR_618: &str = "name: tcp_send_reset
ID: 2280
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;

print fmt: \"skbaddr=%p state=%s reason=%s\", REC->skbaddr, REC->state ? __print_symbolic(REC->state, { TCP_ESTABLISHED, \"TCP_ESTABLISHED\" }, { TCP_CLOSE, \"TCP_CLOSE\" }) : \"UNKNOWN\", __print_symbolic(REC->reason, { 0, \"NOT_SPECIFIED\" }, { 1, \"NO_SOCKET\" }, { 2, \"TCP_INVALID_ACK_SEQUENCE\" }, { 10, \"INVALID_SYN\" }, { 11, \"TCP_ABORT_ON_CLOSE\" }, { 12, \"TCP_ABORT_ON_LINGER\" }, { 14, \"TCP_STATE\" }, { 16, \"TCP_DISCONNECT_WITH_DATA\" }, { 17, \"MPTCP_RST_EUNSPEC\" }, { 24, \"ERROR\" }, { 25, \"MAX\" })
";

    #[test]
    fn reset_reasons_are_mapped_by_name_not_number() {
        use tracer_common::tcp::{RESET_REASON_UNRECOGNISED, RESET_REASONS, reset_reason_code};
        let f = parse_format(TSR_618).unwrap();
        assert_eq!(
            f.field("reason"),
            FieldOffset {
                offset: 28,
                size: 4
            }
        );
        let syms = f.symbols("reason");
        assert_eq!(syms.len(), 11, "{syms:?}");
        assert_eq!(syms[1], (1, "NO_SOCKET".to_owned()));
        // The state list (enum constants, not numbers) is not taken for the reasons.
        assert!(f.symbols("state").is_empty());
        let m = reason_map(&f);
        let name = |kernel: u32| RESET_REASONS.get(m.get(kernel) as usize).copied();
        assert_eq!(m.get(0), 0);
        assert_eq!(name(1), Some("NO_SOCKET"));
        assert_eq!(name(11), Some("TCP_ABORT_ON_CLOSE"));
        assert_eq!(name(16), Some("TCP_DISCONNECT_WITH_DATA"));
        assert_eq!(name(24), Some("ERROR"));
        // MAX is no reason tracer knows; a value past the table neither.
        assert_eq!(m.get(25), RESET_REASON_UNRECOGNISED);
        assert_eq!(m.get(1000), RESET_REASON_UNRECOGNISED);

        // 6.10 numbered the MPTCP reasons from 11, where 6.18 has TCP_ABORT_ON_CLOSE: the
        // same kernel number must mean what that kernel's names say.
        let old = TSR_618.replace(
            "{ 11, \"TCP_ABORT_ON_CLOSE\" }",
            "{ 11, \"MPTCP_RST_EUNSPEC\" }",
        );
        let m = reason_map(&parse_format(&old).unwrap());
        assert_eq!(m.get(11), reset_reason_code("MPTCP_RST_EUNSPEC").unwrap());
        assert_ne!(m.get(11), reset_reason_code("TCP_ABORT_ON_CLOSE").unwrap());

        // No names at all: every reason unknown, so the fallback rules apply.
        let bare = TSR_618.split("print fmt").next().unwrap();
        assert_eq!(
            reason_map(&parse_format(bare).unwrap()),
            ReasonMap::default()
        );
    }
}
