//! Memory: large mappings, brk moves, and per-process RSS / mapped-bytes samples aggregated in
//! the kernel.
use crate::{Kind, Payload};

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;
pub const MAP_SHARED: u32 = 0x01;
pub const MAP_ANONYMOUS: u32 = 0x20;

/// mmap() of at least the large-mapping threshold, or any failed mmap().
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mmap {
    /// The mapped address, or a negative errno.
    pub ret: i64,
    pub len: u64,
    pub prot: u32,
    pub flags: u32,
    pub fd: i32,
    pub _pad: u32,
}
impl Payload for Mmap {
    const KIND: Kind = Kind::Mmap;
}

/// munmap() of at least the large-mapping threshold.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Munmap {
    pub addr: u64,
    pub len: u64,
}
impl Payload for Munmap {
    const KIND: Kind = Kind::Munmap;
}

/// The program break moved by at least the large-mapping threshold since the last brk event of
/// this process (or since it was first seen).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Brk {
    pub brk: u64,
    pub prev: u64,
}
impl Payload for Brk {
    const KIND: Kind = Kind::Brk;
}

/// RSS or mapped bytes of a process moved by the sample threshold since its last sample.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemSample {
    pub rss_bytes: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    pub swap_bytes: u64,
    /// `mm->total_vm` in bytes (0 when unknown).
    pub mapped_bytes: u64,
}
impl Payload for MemSample {
    const KIND: Kind = Kind::MemSample;
}
