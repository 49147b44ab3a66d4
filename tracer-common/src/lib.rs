//! Record types shared by the eBPF programs (`tracer-ebpf`) and the collector (`tracer`).
//!
//! Every ring-buffer record is an [`Header`] followed by one payload type, chosen by
//! [`Header::kind`]. These layouts are also the on-disk format of dumps: a kind id is never
//! reused and a payload never changes shape; a new field means a new kind.
//! All types are `#[repr(C)]` with explicit padding so the kernel and userspace agree byte
//! for byte (checked by the `layout` tests).
#![no_std]

pub mod config;
pub mod filter;
pub mod memory;
pub mod oom;
pub mod process;
pub mod prog;
pub mod signal;
pub mod tcp;

/// The kind table: every record kind, once. Each kernel kind is `Variant = id, "name", Family,
/// payload type, storage` (storage says how the collector keeps the decoded payload: `inline`,
/// `boxed` for large ones, or `custom` when it turns the payload into another type); each
/// collector kind (records the collector writes itself, never the kernel) is
/// `Variant = id, "name"`.
///
/// Everything else about kinds follows from this table: [`Kind`] and [`CollectorKind`], their
/// names, families, `ALL`, [`Payload`] for each payload type, and the compile-time checks
/// (ids unique, kernel ids below [`MAX_KIND`], collector ids at or above it, payloads without
/// implicit padding). The collector's `Body` and decoder are generated from it too (`tracer`'s
/// `event.rs`, through [`kind_table!`]). Ids are stable forever: a dump written today decodes
/// next year, so an id is never renumbered or reused, and a payload never changes shape.
///
/// Adding a kind: one entry here, its kernel program, and its rendering.
#[macro_export]
macro_rules! kind_table {
    ($($then:tt)+) => {
        $($then)+! {
            kernel {
                TcpState = 1, "tcp_state", Tcp, $crate::tcp::TcpState, inline;
                TcpAccept = 2, "tcp_accept", Tcp, $crate::tcp::TcpAccept, inline;
                TcpReset = 3, "tcp_reset", Tcp, $crate::tcp::TcpReset, inline;
                SocketOpen = 4, "socket_open", Tcp, $crate::tcp::SocketOpen, inline;
                SocketClose = 5, "socket_close", Tcp, $crate::tcp::SocketClose, inline;
                SockOwner = 6, "sock_owner", Tcp, $crate::tcp::SockOwner, inline;
                TcpConnect = 7, "tcp_connect", Tcp, $crate::tcp::TcpConnect, inline;
                TcpListen = 8, "tcp_listen", Tcp, $crate::tcp::TcpListen, inline;
                ConnOpen = 9, "conn_open", Tcp, $crate::tcp::ConnOpen, inline;
                ConnClose = 10, "conn_close", Tcp, $crate::tcp::ConnClose, boxed;
                ConnStatus = 11, "conn_status", Tcp, $crate::tcp::ConnStatus, boxed;
                FdDup = 12, "fd_dup", Tcp, $crate::tcp::FdDup, inline;
                Signal = 20, "signal", Signal, $crate::signal::Signal, inline;
                Fork = 21, "fork", Process, $crate::process::Fork, inline;
                Exec = 22, "exec", Process, $crate::process::Exec, custom;
                Exit = 23, "exit", Process, $crate::process::Exit, inline;
                Rlimit = 24, "rlimit", Process, $crate::process::Rlimit, inline;
                Rename = 25, "rename", Process, $crate::process::Rename, inline;
                CgroupAttach = 26, "cgroup_attach", Process, $crate::process::CgroupAttach, custom;
                OomKill = 40, "oom_kill", Oom, $crate::oom::OomKill, inline;
                Mmap = 60, "mmap", Memory, $crate::memory::Mmap, inline;
                Munmap = 61, "munmap", Memory, $crate::memory::Munmap, inline;
                Brk = 62, "brk", Memory, $crate::memory::Brk, inline;
                MemSample = 63, "mem_sample", Memory, $crate::memory::MemSample, inline;
            }
            collector {
                /// A process's facts read from /proc (JSON payload).
                ProcInfo = 200, "proc_info";
                /// Cumulative records lost in the kernel, per kind (JSON payload).
                Drops = 201, "drops";
                /// The collector's clock: one a second live, so analyses are evaluated on a
                /// quiet host too, and replay does the same (empty payload).
                Tick = 202, "tick";
                /// Records the recorder received but could not store (disk full, write errors,
                /// queue full), written when writing works again (JSON payload).
                RecorderGap = 203, "recorder_gap";
            }
        }
    };
}

/// Size of the per-kind drop counter array: every kernel kind id is below it, every collector
/// kind id at or above it (checked at compile time).
pub const MAX_KIND: u32 = 64;

/// Whether a record kind id belongs to the collector (written by userspace, never the kernel).
pub const fn is_collector_kind(id: u16) -> bool {
    id as u32 >= MAX_KIND
}

#[doc(hidden)]
#[macro_export]
macro_rules! define_kinds {
    (
        kernel { $( $k:ident = $kid:literal, $kname:literal, $fam:ident, $ty:ty, $store:ident; )* }
        collector { $( $(#[$cdoc:meta])* $c:ident = $cid:literal, $cname:literal; )* }
    ) => {
        /// Kernel event kinds (see [`kind_table!`]). Grouped by family; never renumbered,
        /// never reused.
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind {
            $( $k = $kid, )*
        }

        impl Kind {
            pub const ALL: [Kind; [$(Kind::$k),*].len()] = [$(Kind::$k),*];

            pub const fn from_u16(v: u16) -> Option<Kind> {
                match v {
                    $( $kid => Some(Kind::$k), )*
                    _ => None,
                }
            }

            /// The name used in JSON output (`kind` field) and on the command line.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Kind::$k => $kname, )*
                }
            }

            pub const fn family(self) -> Family {
                match self {
                    $( Kind::$k => Family::$fam, )*
                }
            }

            /// The payload's size in bytes, as the record header's `payload_len` says.
            pub const fn payload_len(self) -> usize {
                match self {
                    $( Kind::$k => core::mem::size_of::<$ty>(), )*
                }
            }
        }

        $(
            impl Payload for $ty {
                const KIND: Kind = Kind::$k;
            }
            // No implicit padding: a payload is a multiple of 8 bytes, so Record<T> is the
            // header followed by exactly the payload (kernel and userspace agree byte for byte).
            const _: () = assert!(
                core::mem::size_of::<$ty>() % 8 == 0
                    && core::mem::size_of::<Record<$ty>>() == HEADER_LEN + core::mem::size_of::<$ty>()
                    && core::mem::size_of::<$ty>() <= u16::MAX as usize,
                concat!("payload of ", $kname, " has implicit padding or is too large")
            );
        )*

        /// Record kinds the collector writes itself (see [`kind_table!`]).
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum CollectorKind {
            $( $(#[$cdoc])* $c = $cid, )*
        }

        impl CollectorKind {
            pub const ALL: [CollectorKind; [$(CollectorKind::$c),*].len()] =
                [$(CollectorKind::$c),*];

            pub const fn from_u16(v: u16) -> Option<CollectorKind> {
                match v {
                    $( $cid => Some(CollectorKind::$c), )*
                    _ => None,
                }
            }

            pub const fn name(self) -> &'static str {
                match self {
                    $( CollectorKind::$c => $cname, )*
                }
            }
        }

        /// Every id of the table, kernel kinds first.
        const ALL_IDS: &[u16] = &[$($kid,)* $($cid,)*];
        const _: () = {
            let mut i = 0;
            while i < ALL_IDS.len() {
                let mut j = i + 1;
                while j < ALL_IDS.len() {
                    assert!(ALL_IDS[i] != ALL_IDS[j], "a kind id is used twice");
                    j += 1;
                }
                i += 1;
            }
            $( assert!(!is_collector_kind($kid) && $kid != 0, concat!($kname, ": a kernel kind id must be 1..MAX_KIND")); )*
            $( assert!(is_collector_kind($cid), concat!($cname, ": a collector kind id must be at least MAX_KIND")); )*
        };
    };
}

kind_table!(define_kinds);

/// The stable name of a record kind id, kernel or collector.
pub const fn kind_name(id: u16) -> Option<&'static str> {
    if let Some(k) = Kind::from_u16(id) {
        return Some(k.name());
    }
    match CollectorKind::from_u16(id) {
        Some(c) => Some(c.name()),
        None => None,
    }
}

impl Kind {
    /// Critical kinds go to their own ring buffer so a flood of bulk events cannot crowd them out.
    pub fn is_critical(self) -> bool {
        matches!(
            self.family(),
            Family::Signal | Family::Process | Family::Oom
        )
    }
}

/// Event families, selectable with `--events`. The discriminant is the bit in
/// [`config::Config::families`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Tcp = 0,
    Signal = 1,
    Process = 2,
    Oom = 3,
    Memory = 4,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Tcp,
        Family::Signal,
        Family::Process,
        Family::Oom,
        Family::Memory,
    ];

    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Tcp => "tcp",
            Family::Signal => "signal",
            Family::Process => "process",
            Family::Oom => "oom",
            Family::Memory => "memory",
        }
    }
}

pub const COMM_LEN: usize = 16;

/// Fixed header of every record (56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// A [`Kind`] id.
    pub kind: u16,
    /// Size of the payload that follows, in bytes.
    pub payload_len: u16,
    pub cpu: u32,
    /// `bpf_ktime_get_boot_ns()`: nanoseconds since boot, suspend included.
    pub ts_ns: u64,
    /// Process id (thread group id) of the task the event is attributed to.
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    pub uid: u32,
    pub _pad: u32,
    /// cgroup v2 id (inode of the cgroup directory) of the task.
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

pub const HEADER_LEN: usize = core::mem::size_of::<Header>();

/// A complete record as the kernel writes it into a ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Record<T> {
    pub header: Header,
    pub payload: T,
}

/// Implemented by every payload type: ties it to its kind id.
pub trait Payload: Copy {
    const KIND: Kind;
}

/// Address family values as the kernel reports them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type here is #[repr(C)], Copy, made of integers and byte arrays only, with
    // all padding spelled out as fields (checked by the layout tests).
    unsafe impl aya::Pod for config::Config {}
    unsafe impl aya::Pod for config::Offsets {}
    unsafe impl aya::Pod for config::TaskOffsets {}
    unsafe impl aya::Pod for config::FieldOffset {}
    unsafe impl aya::Pod for tcp::ConnInfo {}
}

#[cfg(test)]
mod layout {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn header_is_56_bytes_without_padding() {
        assert_eq!(size_of::<Header>(), 56);
        assert_eq!(align_of::<Header>(), 8);
    }

    #[test]
    fn conn_info_has_no_tail_padding() {
        // Payloads are checked at compile time by the kind table; ConnInfo is a map value.
        assert_eq!(size_of::<tcp::ConnInfo>() % 8, 0);
    }

    #[test]
    fn config_has_no_implicit_padding() {
        assert_eq!(size_of::<filter::FilterRule>(), 32);
        assert_eq!(
            core::mem::offset_of!(config::Config, filter),
            8,
            "the rule follows self_tgid and families"
        );
        assert_eq!(size_of::<config::Config>(), 80);
    }

    #[test]
    fn kind_ids_and_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_u16(k as u16), Some(k));
            assert!((k as u32) < MAX_KIND && !is_collector_kind(k as u16));
            assert_eq!(kind_name(k as u16), Some(k.name()));
            assert_eq!(<tcp::TcpState as Payload>::KIND, Kind::TcpState);
        }
        for c in CollectorKind::ALL {
            assert_eq!(CollectorKind::from_u16(c as u16), Some(c));
            assert!(is_collector_kind(c as u16));
            assert_eq!(kind_name(c as u16), Some(c.name()));
        }
        let names: [&str; Kind::ALL.len() + CollectorKind::ALL.len()] = core::array::from_fn(|i| {
            Kind::ALL.get(i).map_or_else(
                || CollectorKind::ALL[i - Kind::ALL.len()].name(),
                |k| k.name(),
            )
        });
        for (i, a) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(a), "{a} named twice");
        }
        assert_eq!(Kind::from_u16(0), None);
        assert_eq!(Kind::from_u16(9999), None);
        assert_eq!(kind_name(199), None);
        // Ids are stable forever: dumps written before the table existed use these.
        assert_eq!(Kind::MemSample as u16, 63);
        assert_eq!(CollectorKind::ProcInfo as u16, 200);
        assert_eq!(CollectorKind::Drops as u16, 201);
        assert_eq!(CollectorKind::Tick as u16, 202);
        assert_eq!(CollectorKind::RecorderGap as u16, 203);
        assert_eq!(Kind::Exec.payload_len(), size_of::<process::Exec>());
    }
}
