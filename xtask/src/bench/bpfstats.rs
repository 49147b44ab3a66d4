//! Kernel-side cost of each eBPF program of a tracer process: run count and run time from the
//! kernel's BPF statistics (enabled with BPF_ENABLE_STATS for as long as a returned fd is
//! open), read from /proc/PID/fdinfo, names from BPF_OBJ_GET_INFO_BY_FD.
use std::{
    collections::BTreeMap,
    os::fd::{FromRawFd, OwnedFd},
};

use anyhow::bail;
use serde::Serialize;

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
/// `name` in `struct bpf_map_info`, and the part of it read.
const MAP_INFO_NAME: usize = 24;
const MAP_INFO_LEN: usize = 40;
/// Hash, per-CPU hash, LRU hash, LRU per-CPU hash: the maps keyed by pid or socket.
const HASH_MAP_TYPES: [u64; 4] = [1, 5, 9, 10];
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;
/// Offsets in `struct bpf_prog_info` (stable UAPI).
const INFO_NAME: usize = 64;
const INFO_LEN: usize = 232;

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> libc::c_long {
    // SAFETY: attr is a zero-padded buffer at least as large as the command's union member.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) }
}

/// Turns on run-time statistics for every BPF program until the fd is closed.
pub fn enable() -> anyhow::Result<OwnedFd> {
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&BPF_STATS_RUN_TIME.to_ne_bytes());
    let fd = bpf(BPF_ENABLE_STATS, &mut attr);
    if fd < 0 {
        bail!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// An fd for a program or map id (`cmd` GET_FD_BY_ID).
fn fd_by_id(cmd: libc::c_long, id: u32) -> Option<OwnedFd> {
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(cmd, &mut attr);
    if fd < 0 {
        return None;
    }
    // SAFETY: a new fd owned by nobody else; closed on drop.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The NUL-padded name at `at` of the object's info (BPF_OBJ_GET_INFO_BY_FD).
fn obj_name(fd: &OwnedFd, info: &mut [u8], at: usize) -> Option<String> {
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(std::os::fd::AsRawFd::as_raw_fd(fd) as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) < 0 {
        return None;
    }
    let name = &info[at..at + 16];
    let end = name.iter().position(|b| *b == 0).unwrap_or(16);
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

fn prog_name(id: u32) -> Option<String> {
    let fd = fd_by_id(BPF_PROG_GET_FD_BY_ID, id)?;
    obj_name(&fd, &mut [0u8; INFO_LEN], INFO_NAME)
}

/// One hash map of a process: its name, entries now, and capacity.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MapFill {
    pub name: String,
    pub entries: u64,
    pub max_entries: u64,
}

/// The hash maps the process holds an fd of, with their entry counts, by name.
pub fn map_fills(pid: u32) -> Vec<MapFill> {
    let mut out: BTreeMap<u64, MapFill> = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    for e in rd.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let get = |k: &str| -> Option<u64> {
            text.lines().find_map(|l| {
                let v = l.strip_prefix(k)?.strip_prefix(':')?;
                v.trim().parse().ok()
            })
        };
        let (Some(ty), Some(id), Some(key_size), Some(max)) = (
            get("map_type"),
            get("map_id"),
            get("key_size"),
            get("max_entries"),
        ) else {
            continue;
        };
        if !HASH_MAP_TYPES.contains(&ty) || out.contains_key(&id) {
            continue;
        }
        let Some(fd) = fd_by_id(BPF_MAP_GET_FD_BY_ID, id as u32) else {
            continue;
        };
        let name = obj_name(&fd, &mut [0u8; MAP_INFO_LEN], MAP_INFO_NAME)
            .unwrap_or_else(|| format!("map{id}"));
        out.insert(
            id,
            MapFill {
                name,
                entries: count_keys(&fd, key_size as usize, max),
                max_entries: max,
            },
        );
    }
    let mut v: Vec<MapFill> = out.into_values().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Keys in a hash map, walked with BPF_MAP_GET_NEXT_KEY (at most `max` + 1: a map changing
/// under the walk can restart it).
fn count_keys(fd: &OwnedFd, key_size: usize, max: u64) -> u64 {
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut n = 0u64;
    let mut first = true;
    while n <= max {
        let mut attr = [0u8; 24];
        attr[..4].copy_from_slice(&(std::os::fd::AsRawFd::as_raw_fd(fd) as u32).to_ne_bytes());
        let k = if first { 0 } else { key.as_ptr() as u64 };
        attr[8..16].copy_from_slice(&k.to_ne_bytes());
        attr[16..24].copy_from_slice(&(next.as_mut_ptr() as u64).to_ne_bytes());
        if bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) < 0 {
            break;
        }
        first = false;
        n += 1;
        std::mem::swap(&mut key, &mut next);
    }
    n
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// Statistics of every BPF program the process holds an fd of, by program id.
pub fn snapshot(pid: u32) -> BTreeMap<u32, Counters> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if let Some((id, c)) = parse_fdinfo(&text) {
            out.insert(id, c);
        }
    }
    out
}

/// `prog_id`, `run_time_ns` and `run_cnt` from a BPF program fd's fdinfo. Link fds name their
/// program too but carry no counters: they are skipped.
pub fn parse_fdinfo(text: &str) -> Option<(u32, Counters)> {
    let get = |k: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let v = l.strip_prefix(k)?.strip_prefix(':')?;
            v.trim().parse().ok()
        })
    };
    let id = get("prog_id")? as u32;
    Some((
        id,
        Counters {
            run_cnt: get("run_cnt")?,
            run_time_ns: get("run_time_ns")?,
        },
    ))
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ProgCost {
    pub name: String,
    pub runs_per_s: f64,
    pub avg_ns: f64,
    /// Share of one CPU spent in this program.
    pub cpu_pct: f64,
}

/// Per-program cost between two snapshots taken `secs` apart; programs with the same name
/// (one per attach point) are summed. Sorted by CPU, most expensive first.
pub fn costs(
    before: &BTreeMap<u32, Counters>,
    after: &BTreeMap<u32, Counters>,
    secs: f64,
) -> Vec<ProgCost> {
    let mut by_name: BTreeMap<String, Counters> = BTreeMap::new();
    for (id, a) in after {
        let b = before.get(id).copied().unwrap_or_default();
        let name = prog_name(*id).unwrap_or_else(|| format!("prog{id}"));
        let c = by_name.entry(name).or_default();
        c.run_cnt += a.run_cnt.saturating_sub(b.run_cnt);
        c.run_time_ns += a.run_time_ns.saturating_sub(b.run_time_ns);
    }
    let mut v: Vec<ProgCost> = by_name
        .into_iter()
        .filter(|(_, c)| c.run_cnt > 0)
        .map(|(name, c)| ProgCost {
            name,
            runs_per_s: c.run_cnt as f64 / secs,
            avg_ns: c.run_time_ns as f64 / c.run_cnt as f64,
            cpu_pct: c.run_time_ns as f64 / 1e9 / secs * 100.0,
        })
        .collect();
    v.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_a_program() {
        let t = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t5\n\
                 prog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\nprog_id:\t42\n\
                 run_time_ns:\t12345\nrun_cnt:\t10\nrecursion_misses:\t0\n";
        let (id, c) = parse_fdinfo(t).unwrap();
        assert_eq!(id, 42);
        assert_eq!(c.run_cnt, 10);
        assert_eq!(c.run_time_ns, 12345);
        assert!(parse_fdinfo("pos:\t0\nflags:\t02\nmap_type:\t27\n").is_none());
        let link = "pos:\t0\nlink_type:\tperf\nlink_id:\t7\nprog_tag:\t0123\nprog_id:\t42\n";
        assert!(parse_fdinfo(link).is_none());
    }
}
