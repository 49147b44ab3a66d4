//! The one decoder from record bytes (as the kernel writes them into a ring buffer, and as a
//! dump stores them) to the typed [`Event`]. All unsafe reading of record bytes is here.
use std::fmt;

// Records are decoded, and stored in dumps, in the byte order the kernel wrote them; the dump
// format promises little-endian (docs/dump-format.md).
#[cfg(target_endian = "big")]
compile_error!(
    "tracer reads kernel records in host byte order and dumps are little-endian: big-endian hosts are not supported"
);

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracer_common::{COMM_LEN, CollectorKind, HEADER_LEN, Header, Kind, process};

/// The address a TCP record carries (`family`, 16 address bytes, port) as a socket address:
/// IPv4 in the first 4 bytes unless the family is AF_INET6.
pub fn socket_addr(family: u16, a: &[u8; 16], port: u16) -> std::net::SocketAddr {
    let ip = if family == tracer_common::AF_INET6 {
        std::net::IpAddr::from(*a)
    } else {
        std::net::IpAddr::from([a[0], a[1], a[2], a[3]])
    };
    std::net::SocketAddr::new(ip, port)
}

/// A process or task name, as the kernel keeps it: up to 16 bytes, NUL padded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Comm(pub [u8; COMM_LEN]);

impl Comm {
    pub fn new(s: &str) -> Comm {
        let mut b = [0u8; COMM_LEN];
        let n = s.len().min(COMM_LEN - 1);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        Comm(b)
    }

    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&c| c == 0).unwrap_or(COMM_LEN);
        &self.0[..end]
    }

    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Comm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Comm::new(&s))
    }
}

/// What the collector knows about a process beyond the kernel's records: read from /proc at
/// start (the snapshot) and when a process is first seen. Stored in dumps so replay knows it too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    #[serde(default)]
    pub exe: String,
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// The process's memory cgroup path (v1 memory controller or v2 unified), if any.
    #[serde(default)]
    pub cgroup: String,
    /// Memory limit of that cgroup, in bytes, when one is set.
    #[serde(default)]
    pub mem_limit: Option<u64>,
    /// The process's cgroup v2 path (below the cgroup2 mount), if the host has cgroup v2.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cgroup_v2_path: String,
    /// The ids of that cgroup and its ancestors (directory inodes, what the kernel puts in
    /// record headers), the root's first: `--cgroup X` in replay passes a record written in
    /// cgroup C when X is C or an ancestor of C, as the kernel decides live. Stored rather than
    /// read at replay time so a dump decides the same on any machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroup_v2: Vec<u64>,
    /// Soft RLIMIT_NOFILE.
    #[serde(default)]
    pub nofile_limit: Option<u64>,
    /// The name before a rename without exec (the process table's, in a dump's snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_comm: Option<String>,
    /// The process that forked it, when seen (the process table's, in a dump's snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_by: Option<u32>,
    /// Open file descriptors and, of those, sockets, when this was read from /proc: the
    /// baseline the kernel's socket open/close accounting is added to.
    #[serde(default)]
    pub open_fds: Option<u32>,
    #[serde(default)]
    pub open_sockets: Option<u32>,
    /// When (boot-time ns) those counts were read: the process's socket opens and closes
    /// recorded up to then are in them already (the read comes after the event that asked
    /// for it). Absent in dumps written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds_read_ns: Option<u64>,
    /// Its systemd unit, container or pod, from its cgroup paths (absent in dumps written
    /// before attribution existed: then derived from `cgroup` on replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<crate::attribution::Workload>,
}

/// Cumulative records lost in the kernel (ring buffer full), per kind name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    pub per_kind: Vec<(String, u64)>,
}

/// What the recorder could not store: `lost` records between `first_ns` and `last_ns` (boot
/// clock, of the records lost), and `lost_total` since the recording started, so the newest
/// gap says the whole run's loss even after retention deleted the segments of older gaps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecorderGap {
    pub lost: u64,
    pub lost_total: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    #[serde(default)]
    pub reason: String,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.per_kind.iter().map(|(_, n)| n).sum()
    }
}

/// How the decoder keeps a kernel payload in [`Body`], per the kind table's storage column.
macro_rules! stored {
    (inline, $ty:ty) => { $ty };
    (boxed, $ty:ty) => { Box<$ty> };
    (custom, $ty:ty) => { Box<<$ty as CustomPayload>::Decoded> };
}

/// Turns a checked payload into what [`Body`] keeps, per the storage column.
macro_rules! store {
    (inline, $p:expr) => {
        $p
    };
    (boxed, $p:expr) => {
        Box::new($p)
    };
    (custom, $p:expr) => {
        Box::new(CustomPayload::decoded($p))
    };
}

/// A kernel payload the decoder turns into another type (the table's `custom` storage).
pub trait CustomPayload: Copy {
    type Decoded;
    fn decoded(self) -> Self::Decoded;
}

impl CustomPayload for process::Exec {
    type Decoded = Exec;
    fn decoded(self) -> Exec {
        let fl = (self.filename_len as usize).min(self.filename.len());
        let al = (self.args_len as usize).min(self.args.len());
        Exec {
            old_pid: self.old_pid,
            ppid: self.ppid,
            filename: lossy(&self.filename[..fl]),
            args: split_args(&self.args[..al]),
        }
    }
}

impl CustomPayload for process::CgroupAttach {
    type Decoded = CgroupAttach;
    fn decoded(self) -> CgroupAttach {
        let n = (self.path_len as usize).min(self.path.len());
        CgroupAttach {
            pid: self.pid,
            hierarchy: self.hierarchy,
            cgroup_id: self.cgroup_id,
            level: self.level,
            memory: self.flags & process::CGROUP_MEMORY != 0,
            truncated: self.flags & process::CGROUP_PATH_TRUNCATED != 0,
            comm: Comm(self.comm),
            path: lossy(&self.path[..n]),
        }
    }
}

/// [`Body`], [`Body::kind`] and the kernel half of [`decode`], from the kind table.
macro_rules! define_body {
    (
        kernel { $( $k:ident = $kid:literal, $kname:literal, $fam:ident, $ty:ty, $store:ident; )* }
        collector { $( $(#[$cdoc:meta])* $c:ident = $cid:literal, $cname:literal; )* }
    ) => {
        /// A decoded record's payload: one variant per kernel kind, then the collector's own.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Body {
            $( $k(stored!($store, $ty)), )*
            ProcInfo(Box<ProcInfo>),
            Drops(Box<Drops>),
            RecorderGap(Box<RecorderGap>),
            /// See [`CollectorKind::Tick`]. Not printed.
            Tick,
        }

        impl Body {
            /// The kernel kind, for records that come from the kernel.
            pub fn kind(&self) -> Option<Kind> {
                match self {
                    $( Body::$k(_) => Some(Kind::$k), )*
                    Body::ProcInfo(_) | Body::Drops(_) | Body::RecorderGap(_) | Body::Tick => None,
                }
            }
        }

        /// Decodes a kernel kind's payload.
        fn decode_kernel(kind: Kind, p: &[u8]) -> Result<Body, DecodeError> {
            let k = kind as u16;
            Ok(match kind {
                $( Kind::$k => Body::$k(store!($store, payload::<$ty>(k, p)?)), )*
            })
        }
    };
}

tracer_common::kind_table!(define_body);

impl Body {
    /// The collector kind, for records the collector writes itself.
    pub fn collector_kind(&self) -> Option<CollectorKind> {
        match self {
            Body::ProcInfo(_) => Some(CollectorKind::ProcInfo),
            Body::Drops(_) => Some(CollectorKind::Drops),
            Body::Tick => Some(CollectorKind::Tick),
            Body::RecorderGap(_) => Some(CollectorKind::RecorderGap),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec {
    pub old_pid: u32,
    /// 0 when unknown.
    pub ppid: u32,
    pub filename: String,
    pub args: Vec<String>,
}

/// A task moved into a cgroup (see [`process::CgroupAttach`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupAttach {
    /// The task moved (a process's pid when the whole process moved).
    pub pid: u32,
    /// 0: cgroup v2; else the v1 hierarchy's id.
    pub hierarchy: u32,
    pub cgroup_id: u64,
    pub level: u32,
    /// The hierarchy holds the memory controller: `path` is the process's memory cgroup.
    pub memory: bool,
    /// `path` was cut to the record's bound.
    pub truncated: bool,
    pub comm: Comm,
    pub path: String,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Nanoseconds since boot (CLOCK_BOOTTIME).
    pub ts_ns: u64,
    pub cpu: u32,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    pub comm: Comm,
    pub body: Body,
}

impl Event {
    /// A record the collector writes itself (tick, drops, recorder gap): stamped with the
    /// collector's own pid and name, so every such record looks alike in a dump.
    pub fn collector(ts_ns: u64, body: Body) -> Event {
        Event {
            ts_ns,
            cpu: 0,
            tgid: std::process::id(),
            tid: std::process::id(),
            uid: 0,
            cgroup_id: 0,
            comm: Comm::new("tracer"),
            body,
        }
    }

    /// The stable name of this event's kind, as in JSON output.
    pub fn kind_name(&self) -> &'static str {
        match self.body.kind() {
            Some(k) => k.name(),
            None => self
                .body
                .collector_kind()
                .map_or("unknown", CollectorKind::name),
        }
    }

    /// The record kind id of this event (kernel or collector kind).
    pub fn kind_id(&self) -> u16 {
        match self.body.kind() {
            Some(k) => k as u16,
            None => self.body.collector_kind().map_or(0, |c| c as u16),
        }
    }
}

/// Events counted per kind: an array indexed by kind id, so counting every event of a live
/// session or a replay costs an increment, not a map lookup by name. Iterates, and serializes,
/// as `{name: count}` in name order, kinds never seen left out.
#[derive(Clone, Debug, PartialEq)]
pub struct KindCounts(Box<[u64; KIND_IDS]>);

/// Kind ids are below this (kernel kinds below `MAX_KIND`, collector kinds from 200).
const KIND_IDS: usize = 256;
const _: () = {
    let mut i = 0;
    while i < CollectorKind::ALL.len() {
        assert!(
            (CollectorKind::ALL[i] as usize) < KIND_IDS,
            "a kind id beyond KindCounts"
        );
        i += 1;
    }
};

impl Default for KindCounts {
    fn default() -> KindCounts {
        KindCounts(Box::new([0; KIND_IDS]))
    }
}

impl KindCounts {
    pub fn add(&mut self, ev: &Event) {
        self.0[ev.kind_id() as usize % KIND_IDS] += 1;
    }

    /// The count of the kind named `name` (0 when never seen or unknown).
    pub fn get(&self, name: &str) -> u64 {
        self.iter().find(|(k, _)| *k == name).map_or(0, |(_, n)| n)
    }

    /// (name, count) of every kind seen, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let mut v: Vec<(&'static str, u64)> = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .filter_map(|(id, n)| Some((tracer_common::kind_name(id as u16)?, *n)))
            .collect();
        v.sort_unstable();
        v.into_iter()
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl Serialize for KindCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    #[error("record of kind {kind} has a {got}-byte payload, expected {want}")]
    BadLength { kind: u16, got: usize, want: usize },
    #[error("record of kind {kind} has an invalid payload: {msg}")]
    BadPayload { kind: u16, msg: String },
}

/// Reads a plain-old-data value from the start of `bytes` (any alignment).
fn read_pod<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: length checked above; T is one of tracer_common's #[repr(C)] integer-only types,
    // for which every bit pattern is valid; read_unaligned handles any alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

fn payload<T: Copy>(kind: u16, p: &[u8]) -> Result<T, DecodeError> {
    // Layouts never change; a longer payload would come from a later version that appended to a
    // new kind, which this version does not know. Be strict.
    if p.len() != size_of::<T>() {
        return Err(DecodeError::BadLength {
            kind,
            got: p.len(),
            want: size_of::<T>(),
        });
    }
    Ok(read_pod(p))
}

fn lossy(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Splits argv as the kernel lays it out (NUL-terminated strings back to back).
pub fn split_args(b: &[u8]) -> Vec<String> {
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    if b.is_empty() {
        return Vec::new();
    }
    b.split(|&c| c == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Zeroes what a record carries beyond its valid lengths: the kernel writes exec file names and
/// arguments, and cgroup paths, into a reserved ring-buffer slot without clearing the rest,
/// which may hold bytes of older records. Done once, as records come in, so no sink and no dump sees them.
pub fn sanitize(raw: &mut [u8]) {
    let u16_at = |p: &[u8], off: usize| u16::from_ne_bytes([p[off], p[off + 1]]) as usize;
    if raw.len() >= HEADER_LEN + size_of::<process::CgroupAttach>()
        && u16::from_ne_bytes([raw[0], raw[1]]) == Kind::CgroupAttach as u16
    {
        let p = &mut raw[HEADER_LEN..];
        let n = u16_at(p, std::mem::offset_of!(process::CgroupAttach, path_len))
            .min(process::CGROUP_PATH_LEN);
        let at = std::mem::offset_of!(process::CgroupAttach, path);
        p[at + n..at + process::CGROUP_PATH_LEN].fill(0);
        return;
    }
    if raw.len() < HEADER_LEN + size_of::<process::Exec>()
        || u16::from_ne_bytes([raw[0], raw[1]]) != Kind::Exec as u16
    {
        return;
    }
    let p = &mut raw[HEADER_LEN..];
    let fl = u16_at(p, std::mem::offset_of!(process::Exec, filename_len))
        .min(process::EXEC_FILENAME_LEN);
    let al = u16_at(p, std::mem::offset_of!(process::Exec, args_len)).min(process::EXEC_ARGS_LEN);
    let f = std::mem::offset_of!(process::Exec, filename);
    let a = std::mem::offset_of!(process::Exec, args);
    p[f + fl..f + process::EXEC_FILENAME_LEN].fill(0);
    p[a + al..a + process::EXEC_ARGS_LEN].fill(0);
}

/// Decodes one record: a [`Header`] then the payload of its kind.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Short(bytes.len()));
    }
    let h: Header = read_pod(bytes);
    let end = HEADER_LEN + h.payload_len as usize;
    if bytes.len() < end {
        return Err(DecodeError::BadLength {
            kind: h.kind,
            got: bytes.len() - HEADER_LEN,
            want: h.payload_len as usize,
        });
    }
    let p = &bytes[HEADER_LEN..end];
    let k = h.kind;
    let json = |e: serde_json::Error| DecodeError::BadPayload {
        kind: k,
        msg: e.to_string(),
    };
    let body = match (Kind::from_u16(k), CollectorKind::from_u16(k)) {
        (Some(kind), _) => decode_kernel(kind, p)?,
        (None, Some(CollectorKind::ProcInfo)) => {
            Body::ProcInfo(Box::new(serde_json::from_slice(p).map_err(json)?))
        }
        (None, Some(CollectorKind::Drops)) => {
            Body::Drops(Box::new(serde_json::from_slice(p).map_err(json)?))
        }
        (None, Some(CollectorKind::Tick)) => Body::Tick,
        (None, Some(CollectorKind::RecorderGap)) => {
            Body::RecorderGap(Box::new(serde_json::from_slice(p).map_err(json)?))
        }
        (None, None) => return Err(DecodeError::UnknownKind(k)),
    };
    Ok(Event {
        ts_ns: h.ts_ns,
        cpu: h.cpu,
        tgid: h.tgid,
        tid: h.pid,
        uid: h.uid,
        cgroup_id: h.cgroup_id,
        comm: Comm(h.comm),
        body,
    })
}

/// Encodes a header for a record of `kind` with a payload of `payload_len` bytes.
pub fn header_bytes(ev_header: &Header) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    // SAFETY: Header is #[repr(C)] with no implicit padding (tracer_common layout tests).
    let src = unsafe {
        std::slice::from_raw_parts((ev_header as *const Header).cast::<u8>(), HEADER_LEN)
    };
    out.copy_from_slice(src);
    out
}

/// Encodes a collector-made record (process info, drop counts) in the same framing as kernel
/// records, so dumps hold one kind of thing. Returns None for kernel events (they are stored as
/// the kernel wrote them).
pub fn encode_user_record(ev: &Event) -> Option<Vec<u8>> {
    let (kind, json) = match &ev.body {
        Body::ProcInfo(p) => (CollectorKind::ProcInfo as u16, proc_info_json(p)?),
        Body::Drops(d) => (CollectorKind::Drops as u16, serde_json::to_vec(d).ok()?),
        Body::Tick => (CollectorKind::Tick as u16, Vec::new()),
        Body::RecorderGap(g) => (
            CollectorKind::RecorderGap as u16,
            serde_json::to_vec(g).ok()?,
        ),
        _ => return None,
    };
    let len = u16::try_from(json.len()).ok()?;
    let h = Header {
        kind,
        payload_len: len,
        cpu: ev.cpu,
        ts_ns: ev.ts_ns,
        tgid: ev.tgid,
        pid: ev.tid,
        uid: ev.uid,
        _pad: 0,
        cgroup_id: ev.cgroup_id,
        comm: ev.comm.0,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + json.len());
    out.extend_from_slice(&header_bytes(&h));
    out.extend_from_slice(&json);
    Some(out)
}

/// A process fact as JSON that fits a record (payload length is a u16): a command line too long
/// for it keeps its first arguments, cut at a character boundary, and says how much was left
/// out, rather than the whole fact being lost.
fn proc_info_json(p: &ProcInfo) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(p).ok()?;
    if json.len() <= usize::from(u16::MAX) {
        return Some(json);
    }
    let mut budget = usize::from(u16::MAX) / 2;
    loop {
        let mut fit = p.clone();
        let mut used = 0;
        let mut kept = Vec::new();
        for arg in &p.cmdline {
            if used + arg.len() > budget {
                let room = budget.saturating_sub(used);
                let cut = (0..=room.min(arg.len()))
                    .rev()
                    .find(|&i| arg.is_char_boundary(i))
                    .unwrap_or(0);
                kept.push(arg[..cut].to_owned());
                used += cut;
                break;
            }
            used += arg.len();
            kept.push(arg.clone());
        }
        let left_out: usize = p.cmdline.iter().map(String::len).sum::<usize>() - used;
        kept.push(format!(
            "[{left_out} more bytes of command line not recorded]"
        ));
        fit.cmdline = kept;
        for s in [&mut fit.exe, &mut fit.cgroup] {
            if s.len() > budget {
                let cut = (0..=budget)
                    .rev()
                    .find(|&i| s.is_char_boundary(i))
                    .unwrap_or(0);
                s.truncate(cut);
            }
        }
        let json = serde_json::to_vec(&fit).ok()?;
        if json.len() <= usize::from(u16::MAX) || budget == 0 {
            return (json.len() <= usize::from(u16::MAX)).then_some(json);
        }
        budget /= 2;
    }
}

/// Test helper and synthetic-event builder: encodes a kernel payload with a header, exactly as
/// the kernel would.
pub fn encode_kernel_record<T: tracer_common::Payload>(h: &EventHeader, payload: &T) -> Vec<u8> {
    let header = Header {
        kind: T::KIND as u16,
        payload_len: size_of::<T>() as u16,
        cpu: h.cpu,
        ts_ns: h.ts_ns,
        tgid: h.tgid,
        pid: h.tid,
        uid: h.uid,
        _pad: 0,
        cgroup_id: h.cgroup_id,
        comm: h.comm.0,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + size_of::<T>());
    out.extend_from_slice(&header_bytes(&header));
    // SAFETY: T is a tracer_common #[repr(C)] payload without implicit padding.
    let p =
        unsafe { std::slice::from_raw_parts((payload as *const T).cast::<u8>(), size_of::<T>()) };
    out.extend_from_slice(p);
    out
}

/// The header fields of an event, for building records in tests and synthetic streams.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub ts_ns: u64,
    pub cpu: u32,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    pub comm: Comm,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{signal, tcp};

    fn hdr() -> EventHeader {
        EventHeader {
            ts_ns: 42,
            cpu: 1,
            tgid: 100,
            tid: 101,
            uid: 0,
            cgroup_id: 7,
            comm: Comm::new("server"),
        }
    }

    #[test]
    fn decodes_a_kernel_record() {
        let sig = signal::Signal {
            sig: 15,
            code: 0,
            result: 0,
            target_pid: 200,
            group: 1,
            errno: 0,
            target_comm: Comm::new("victim").0,
        };
        let ev = decode(&encode_kernel_record(&hdr(), &sig)).unwrap();
        assert_eq!(ev.tgid, 100);
        assert_eq!(ev.tid, 101);
        assert_eq!(ev.comm.to_string(), "server");
        assert_eq!(ev.kind_name(), "signal");
        assert_eq!(ev.body, Body::Signal(sig));
    }

    #[test]
    fn decodes_exec_filename_and_args() {
        let mut e = process::Exec {
            old_pid: 5,
            ppid: 1,
            _pad: 0,
            filename_len: 0,
            args_len: 0,
            filename: [0; process::EXEC_FILENAME_LEN],
            args: [0; process::EXEC_ARGS_LEN],
        };
        let f = b"/usr/bin/sleep";
        e.filename[..f.len()].copy_from_slice(f);
        e.filename_len = f.len() as u16 + 1;
        let a = b"sleep\x0010\x00";
        e.args[..a.len()].copy_from_slice(a);
        e.args_len = a.len() as u16;
        let ev = decode(&encode_kernel_record(&hdr(), &e)).unwrap();
        let Body::Exec(x) = ev.body else {
            panic!("not exec")
        };
        assert_eq!(x.filename, "/usr/bin/sleep");
        assert_eq!(x.args, vec!["sleep", "10"]);
    }

    #[test]
    fn sanitize_clears_stale_bytes_after_exec_strings() {
        let mut e = process::Exec {
            old_pid: 5,
            ppid: 1,
            filename_len: 3,
            args_len: 2,
            _pad: 0,
            filename: [b'x'; process::EXEC_FILENAME_LEN],
            args: [b'y'; process::EXEC_ARGS_LEN],
        };
        e.filename[..3].copy_from_slice(b"/a\0");
        e.args[..2].copy_from_slice(b"a\0");
        let mut raw = encode_kernel_record(&hdr(), &e);
        sanitize(&mut raw);
        let clean: process::Exec = read_pod(&raw[HEADER_LEN..]);
        assert_eq!(&clean.filename[..3], b"/a\0");
        assert!(clean.filename[3..].iter().all(|&b| b == 0));
        assert!(clean.args[2..].iter().all(|&b| b == 0));
        let before = decode(&encode_kernel_record(&hdr(), &e)).unwrap();
        assert_eq!(
            decode(&raw).unwrap(),
            before,
            "sanitizing changes nothing decoded"
        );
    }

    #[test]
    fn decodes_a_cgroup_move_and_clears_what_follows_its_path() {
        let mut c = process::CgroupAttach {
            pid: 4242,
            hierarchy: 4,
            cgroup_id: 99,
            level: 2,
            flags: process::CGROUP_MEMORY,
            path_len: 6,
            _pad: [0; 6],
            comm: Comm::new("runc:[2:INIT]").0,
            path: [b'z'; process::CGROUP_PATH_LEN],
        };
        c.path[..7].copy_from_slice(b"/a/job\0");
        let mut raw = encode_kernel_record(&hdr(), &c);
        sanitize(&mut raw);
        let clean: process::CgroupAttach = read_pod(&raw[HEADER_LEN..]);
        assert!(
            clean.path[6..].iter().all(|&b| b == 0),
            "stale bytes cleared"
        );
        let ev = decode(&raw).unwrap();
        assert_eq!(ev.kind_name(), "cgroup_attach");
        assert_eq!(
            ev.body,
            Body::CgroupAttach(Box::new(CgroupAttach {
                pid: 4242,
                hierarchy: 4,
                cgroup_id: 99,
                level: 2,
                memory: true,
                truncated: false,
                comm: Comm::new("runc:[2:INIT]"),
                path: "/a/job".into(),
            }))
        );
        // A length past the buffer (an untrusted dump) is bounded.
        c.path_len = u16::MAX;
        let Body::CgroupAttach(x) = decode(&encode_kernel_record(&hdr(), &c)).unwrap().body else {
            panic!("not a cgroup move")
        };
        assert_eq!(x.path.len(), 6, "up to the NUL");
    }

    #[test]
    fn rejects_short_unknown_and_mis_sized_records() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Short(10)));
        let mut bad = encode_kernel_record(
            &hdr(),
            &tcp::TcpListen {
                fd: 3,
                backlog: 128,
            },
        );
        bad[0] = 99;
        assert_eq!(decode(&bad), Err(DecodeError::UnknownKind(99)));
        let mut bad = encode_kernel_record(
            &hdr(),
            &tcp::TcpListen {
                fd: 3,
                backlog: 128,
            },
        );
        bad[2] = 4; // payload_len 4 instead of 8
        assert!(matches!(decode(&bad), Err(DecodeError::BadLength { .. })));
        let good = encode_kernel_record(
            &hdr(),
            &tcp::TcpListen {
                fd: 3,
                backlog: 128,
            },
        );
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(DecodeError::BadLength { .. })
        ));
    }

    #[test]
    fn user_records_round_trip() {
        let ev = Event {
            ts_ns: 9,
            cpu: 0,
            tgid: 1,
            tid: 1,
            uid: 0,
            cgroup_id: 0,
            comm: Comm::new("x"),
            body: Body::ProcInfo(Box::new(ProcInfo {
                pid: 1,
                ppid: 0,
                uid: 0,
                comm: "init".into(),
                exe: "/sbin/init".into(),
                cmdline: vec!["/sbin/init".into()],
                cgroup: "/".into(),
                mem_limit: None,
                nofile_limit: Some(1024),
                previous_comm: None,
                forked_by: None,
                open_fds: Some(4),
                open_sockets: Some(1),
                ..ProcInfo::default()
            })),
        };
        let bytes = encode_user_record(&ev).unwrap();
        assert_eq!(decode(&bytes).unwrap(), ev);
        let mut broken = bytes.clone();
        let n = broken.len();
        broken[n - 1] = b'!';
        assert!(matches!(
            decode(&broken),
            Err(DecodeError::BadPayload { .. })
        ));
    }

    #[test]
    fn a_huge_command_line_is_cut_not_lost() {
        let info = ProcInfo {
            pid: 7,
            comm: "java".into(),
            exe: "/usr/bin/java".into(),
            // 3,000 arguments of 40 bytes, some multi-byte and some needing JSON escapes.
            cmdline: (0..3000)
                .map(|i| format!("-Dkey{i}=\"é\u{1}valuevaluevaluevaluevalue"))
                .collect(),
            nofile_limit: Some(64),
            ..ProcInfo::default()
        };
        let ev = Event {
            ts_ns: 1,
            cpu: 0,
            tgid: 7,
            tid: 7,
            uid: 0,
            cgroup_id: 0,
            comm: Comm::new("java"),
            body: Body::ProcInfo(Box::new(info.clone())),
        };
        let bytes = encode_user_record(&ev).expect("cut to fit");
        let Body::ProcInfo(back) = decode(&bytes).unwrap().body else {
            panic!("not a ProcInfo");
        };
        assert_eq!(back.nofile_limit, Some(64), "the limits survive");
        assert_eq!(back.exe, info.exe);
        assert_eq!(
            back.cmdline[..100],
            info.cmdline[..100],
            "first arguments kept whole"
        );
        let note = back.cmdline.last().unwrap();
        assert!(
            note.contains("more bytes of command line not recorded"),
            "{note}"
        );
    }
}
