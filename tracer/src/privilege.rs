//! Least privilege: once the programs are attached and the rings and maps are open, the
//! collector keeps only the capabilities it still uses, and sets no_new_privs, so that a bug in
//! it cannot be turned into full root on the host.
//!
//! What it keeps, and why:
//! - `CAP_BPF`: reading its maps (connection table, drop counts) is a bpf() call on the map's
//!   fd, and kernels before 6.5 refuse every bpf() call without it when unprivileged BPF is
//!   disabled (Debian's default). Reading the rings needs nothing: they are mmap'd.
//! - `CAP_SYS_PTRACE`: /proc/PID/fd (sockets a process holds) and /proc/PID/exe of processes of
//!   other users are guarded by a ptrace access check.
//! - `CAP_DAC_READ_SEARCH`: to read /proc and /sys/fs/cgroup files of other users.
//!
//! Everything else goes from the effective, permitted, inheritable and bounding sets
//! (CAP_SYS_ADMIN, CAP_PERFMON, CAP_DAC_OVERRIDE, CAP_SETUID, CAP_NET_ADMIN, ...). Its own
//! directory needs none: it created it and owns it. The uid stays 0.
use std::io;

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_BPF: u32 = 39;

/// The capabilities kept after attaching.
pub const KEPT: [u32; 3] = [CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_BPF];

/// The kept set as a mask, for comparing with /proc/PID/status's CapEff.
pub fn kept_mask() -> u64 {
    KEPT.iter().fold(0, |m, c| m | 1 << c)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capget() -> io::Result<u64> {
    let mut h = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: a version-3 header and the two data structs it describes, both live and writable.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(d[0].permitted) | u64::from(d[1].permitted) << 32)
}

fn capset(mask: u64) -> io::Result<()> {
    let mut h = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let d = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: a version-3 header and the two data structs it describes, both live.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets no_new_privs and keeps only [`KEPT`] (of what the process has). Returns the
/// capabilities kept.
pub fn drop_after_attach() -> io::Result<u64> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let have = capget()?;
    let keep = have & kept_mask();
    if have & (1 << CAP_SETPCAP) != 0 {
        // The bounding set first, while CAP_SETPCAP is still held: nothing exec'd could get
        // the rest back either.
        for cap in 0..64u32 {
            if keep & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl with integer arguments only. EINVAL past the kernel's last
            // capability ends the loop.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                break;
            }
        }
    }
    // SAFETY: prctl with integer arguments only; fails harmlessly on kernels without ambient.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    capset(keep)?;
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_mask_names_the_three_capabilities() {
        assert_eq!(kept_mask(), 1 << 2 | 1 << 19 | 1 << 39);
    }
}
