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
pub mod signal;
pub mod tcp;

/// Stable event kind ids. Grouped by family; never renumbered, never reused.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    TcpState = 1,
    TcpAccept = 2,
    TcpReset = 3,
    SocketOpen = 4,
    SocketClose = 5,
    SockOwner = 6,
    TcpConnect = 7,
    TcpListen = 8,
    ConnOpen = 9,
    ConnClose = 10,
    ConnStatus = 11,
    Signal = 20,
    Fork = 21,
    Exec = 22,
    Exit = 23,
    Rlimit = 24,
    Rename = 25,
    OomKill = 40,
    Mmap = 60,
    Munmap = 61,
    Brk = 62,
    MemSample = 63,
}

/// Size of the per-kind drop counter array; every kind id is below it.
pub const MAX_KIND: u32 = 64;

impl Kind {
    pub const ALL: [Kind; 22] = [
        Kind::TcpState,
        Kind::TcpAccept,
        Kind::TcpReset,
        Kind::SocketOpen,
        Kind::SocketClose,
        Kind::SockOwner,
        Kind::TcpConnect,
        Kind::TcpListen,
        Kind::ConnOpen,
        Kind::ConnClose,
        Kind::ConnStatus,
        Kind::Signal,
        Kind::Fork,
        Kind::Exec,
        Kind::Exit,
        Kind::Rlimit,
        Kind::Rename,
        Kind::OomKill,
        Kind::Mmap,
        Kind::Munmap,
        Kind::Brk,
        Kind::MemSample,
    ];

    pub fn from_u16(v: u16) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| *k as u16 == v)
    }

    /// The name used in JSON output (`kind` field) and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::TcpState => "tcp_state",
            Kind::TcpAccept => "tcp_accept",
            Kind::TcpReset => "tcp_reset",
            Kind::SocketOpen => "socket_open",
            Kind::SocketClose => "socket_close",
            Kind::SockOwner => "sock_owner",
            Kind::TcpConnect => "tcp_connect",
            Kind::TcpListen => "tcp_listen",
            Kind::ConnOpen => "conn_open",
            Kind::ConnClose => "conn_close",
            Kind::ConnStatus => "conn_status",
            Kind::Signal => "signal",
            Kind::Fork => "fork",
            Kind::Exec => "exec",
            Kind::Exit => "exit",
            Kind::Rlimit => "rlimit",
            Kind::Rename => "rename",
            Kind::OomKill => "oom_kill",
            Kind::Mmap => "mmap",
            Kind::Munmap => "munmap",
            Kind::Brk => "brk",
            Kind::MemSample => "mem_sample",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Kind::TcpState
            | Kind::TcpAccept
            | Kind::TcpReset
            | Kind::SocketOpen
            | Kind::SocketClose
            | Kind::SockOwner
            | Kind::TcpConnect
            | Kind::TcpListen
            | Kind::ConnOpen
            | Kind::ConnClose
            | Kind::ConnStatus => Family::Tcp,
            Kind::Signal => Family::Signal,
            Kind::Fork | Kind::Exec | Kind::Exit | Kind::Rlimit | Kind::Rename => Family::Process,
            Kind::OomKill => Family::Oom,
            Kind::Mmap | Kind::Munmap | Kind::Brk | Kind::MemSample => Family::Memory,
        }
    }

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
    fn payloads_have_no_tail_padding() {
        // A payload's size must be a multiple of 8 so Record<T> has no implicit padding.
        macro_rules! check {
            ($($t:ty),*) => {$(
                assert_eq!(size_of::<$t>() % 8, 0, stringify!($t));
                assert_eq!(size_of::<Record<$t>>(), HEADER_LEN + size_of::<$t>(), stringify!($t));
            )*};
        }
        check!(
            tcp::TcpState,
            tcp::TcpAccept,
            tcp::TcpReset,
            tcp::SocketOpen,
            tcp::SocketClose,
            tcp::SockOwner,
            tcp::TcpConnect,
            tcp::TcpListen,
            tcp::ConnOpen,
            tcp::ConnClose,
            tcp::ConnStatus,
            tcp::ConnInfo,
            signal::Signal,
            process::Fork,
            process::Exec,
            process::Exit,
            process::Rlimit,
            process::Rename,
            oom::OomKill,
            memory::Mmap,
            memory::Munmap,
            memory::Brk,
            memory::MemSample
        );
    }

    #[test]
    fn config_has_no_implicit_padding() {
        assert_eq!(size_of::<filter::FilterRule>(), 32);
        assert_eq!(
            core::mem::offset_of!(config::Config, filter),
            8,
            "the rule follows self_tgid and families"
        );
        assert_eq!(size_of::<config::Config>(), 72);
    }

    #[test]
    fn kind_ids_round_trip_and_are_below_max() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_u16(k as u16), Some(k));
            assert!((k as u32) < MAX_KIND);
        }
        assert_eq!(Kind::from_u16(0), None);
        assert_eq!(Kind::from_u16(9999), None);
    }
}
