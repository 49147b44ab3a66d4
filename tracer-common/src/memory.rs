//! Memory: large mappings, brk moves, and per-process RSS / mapped-bytes samples aggregated in
//! the kernel.

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

/// munmap() of at least the large-mapping threshold.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Munmap {
    pub addr: u64,
    pub len: u64,
}

/// The program break moved by at least the large-mapping threshold since the last brk event of
/// this process (or since it was first seen).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Brk {
    pub brk: u64,
    pub prev: u64,
}

/// A memory sample is due when RSS (or mapped bytes) moved by 1/32 of its current value
/// (`>> SAMPLE_SHIFT`, no division in the kernel): the last sample is then within ~3% of the
/// process's real figure, whatever its size...
pub const SAMPLE_SHIFT: u32 = 5;
/// ...but by at least 1 MiB: a small program (a shell, a cron job: 1-4 MiB) sends a few
/// samples in its life, not dozens, and a 32 MiB process is still within 3%...
pub const SAMPLE_MIN_BYTES: u64 = 1 << 20;

/// ...and by at most `max` (the configured `--mem-threshold`, 16 MiB by default, reached at
/// 512 MiB of RSS), so a large process sends no more samples than with a fixed step.
#[inline(always)]
pub const fn sample_step(value: u64, max: u64) -> u64 {
    let s = value >> SAMPLE_SHIFT;
    let s = if s < SAMPLE_MIN_BYTES {
        SAMPLE_MIN_BYTES
    } else {
        s
    };
    if s > max { max } else { s }
}

/// RSS or mapped bytes of a process moved by the sample step ([`sample_step`]) since its last
/// sample.
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_step_is_a_thirty_second_of_the_value_within_its_bounds() {
        assert_eq!(sample_step(0, 16 * MIB), MIB);
        assert_eq!(sample_step(20 * MIB, 16 * MIB), MIB);
        assert_eq!(sample_step(64 * MIB, 16 * MIB), 2 * MIB);
        assert_eq!(sample_step(100 * MIB, 16 * MIB), 100 * MIB / 32);
        assert_eq!(sample_step(512 * MIB, 16 * MIB), 16 * MIB);
        assert_eq!(sample_step(15 << 30, 16 * MIB), 16 * MIB);
        // A configured maximum below the minimum wins.
        assert_eq!(sample_step(64 * MIB, 4096), 4096);
    }
}
