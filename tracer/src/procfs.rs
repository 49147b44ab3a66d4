//! Reading processes from /proc: the snapshot at start, and facts about a process the kernel
//! records do not carry (limits, cgroup and its memory limit, open fds and sockets).
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::event::ProcInfo;

fn read(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// `(ppid, comm)` from /proc/PID/stat (comm may contain spaces and parentheses).
fn parse_stat(stat: &str) -> Option<(u32, String)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, comm))
}

/// PF_EXITING in /proc/PID/stat's flags: the process is in do_exit().
const PF_EXITING: u64 = 0x4;

/// Whether a stat line is of a process that is exiting or dead (state Z or X, or PF_EXITING
/// set): its fds are being closed or gone, so counting them says nothing of what it held.
fn exiting(stat: &str) -> bool {
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else {
        return true;
    };
    let mut f = rest.split_whitespace();
    let state = f.next().unwrap_or("");
    // ppid, pgrp, session, tty_nr, tpgid, then flags.
    let flags: u64 = f.nth(5).and_then(|v| v.parse().ok()).unwrap_or(0);
    matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0
}

fn parse_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Soft "Max open files" from /proc/PID/limits.
pub fn parse_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// The memory cgroup of a process from /proc/PID/cgroup: the v1 `memory` controller's path
/// when there is one (hybrid hosts), else the v2 unified path.
pub fn parse_mem_cgroup(cgroup: &str) -> Option<(CgroupVersion, String)> {
    let mut v2 = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.split(',').any(|c| c == "memory") {
            return Some((CgroupVersion::V1, path.to_owned()));
        }
        if id == "0" && ctrls.is_empty() {
            v2 = Some((CgroupVersion::V2, path.to_owned()));
        }
    }
    v2
}

/// The memory cgroup path of a live process (see [`parse_mem_cgroup`]), read from /proc alone.
pub fn mem_cgroup_of(pid: u32) -> Option<String> {
    parse_mem_cgroup(&read(Path::new(&format!("/proc/{pid}/cgroup")))?).map(|(_, p)| p)
}

/// The hierarchy holding the memory controller, from /proc/cgroups: a cgroup v1 hierarchy id,
/// or 0 (cgroup v2) when memory is on v2, disabled or unknown. Matches [`parse_mem_cgroup`],
/// which names the v2 path when no v1 hierarchy has memory.
pub fn memory_hierarchy() -> u32 {
    read("/proc/cgroups").map_or(0, |s| parse_memory_hierarchy(&s))
}

/// See [`memory_hierarchy`]: `#subsys_name hierarchy num_cgroups enabled` lines.
pub fn parse_memory_hierarchy(cgroups: &str) -> u32 {
    cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["memory", h, _, "1"] => h.parse().ok(),
                _ => None,
            }
        })
        .unwrap_or(0)
}

/// The cgroup v2 path of a process from /proc/PID/cgroup (the `0::` line).
pub fn parse_v2_cgroup(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Where cgroup hierarchies are mounted, from /proc/self/mountinfo.
#[derive(Clone, Debug, Default)]
pub struct CgroupMounts {
    pub v1_memory: Option<PathBuf>,
    pub v2: Option<PathBuf>,
}

impl CgroupMounts {
    pub fn read() -> CgroupMounts {
        read("/proc/self/mountinfo")
            .map(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    pub fn parse(mountinfo: &str) -> CgroupMounts {
        let mut m = CgroupMounts::default();
        for line in mountinfo.lines() {
            // ... mount_point options - fstype source super_options
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split_whitespace().nth(4);
            let mut r = right.split_whitespace();
            let fstype = r.next();
            let _source = r.next();
            let super_opts = r.next().unwrap_or("");
            match (fstype, mount_point) {
                (Some("cgroup2"), Some(mp)) if m.v2.is_none() => m.v2 = Some(mp.into()),
                (Some("cgroup"), Some(mp)) if super_opts.split(',').any(|o| o == "memory") => {
                    m.v1_memory = Some(mp.into())
                }
                _ => {}
            }
        }
        m
    }

    /// The ids (directory inodes) of cgroup v2 `path` and its ancestors, the root's first;
    /// empty when there is no cgroup v2 or a directory is gone (the cgroup was removed).
    pub fn v2_ancestry(&self, path: &str) -> Vec<u64> {
        let Some(root) = self.v2.as_ref() else {
            return Vec::new();
        };
        let mut dir = root.clone();
        let mut ids = Vec::new();
        for part in std::iter::once("").chain(path.split('/').filter(|p| !p.is_empty())) {
            dir.push(part);
            match fs::metadata(&dir) {
                Ok(m) if m.is_dir() => ids.push(m.ino()),
                _ => return Vec::new(),
            }
        }
        ids
    }

    /// The effective memory limit of a cgroup: the smallest limit set on it or an ancestor.
    pub fn mem_limit(&self, version: CgroupVersion, path: &str) -> Option<u64> {
        let (root, file) = match version {
            CgroupVersion::V1 => (self.v1_memory.as_ref()?, "memory.limit_in_bytes"),
            CgroupVersion::V2 => (self.v2.as_ref()?, "memory.max"),
        };
        let mut best: Option<u64> = None;
        let mut dir = root.join(path.trim_start_matches('/'));
        loop {
            if let Some(v) = read(dir.join(file)).and_then(|s| parse_limit(&s)) {
                best = Some(best.map_or(v, |b| b.min(v)));
            }
            if dir == *root || !dir.pop() || !dir.starts_with(root) {
                break;
            }
        }
        best
    }
}

/// A memory limit file's value; None for "max" or the v1 "unlimited" sentinel.
pub fn parse_limit(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return None;
    }
    let v: u64 = s.parse().ok()?;
    // cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages, about 2^63.
    if v >= 1 << 62 { None } else { Some(v) }
}

/// Counts open fds and socket fds of a process.
fn count_fds(pid: u32) -> (Option<u32>, Option<u32>) {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (None, None);
    };
    let (mut fds, mut socks) = (0u32, 0u32);
    for e in dir.flatten() {
        fds += 1;
        if fs::read_link(e.path())
            .is_ok_and(|l| l.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
        {
            socks += 1;
        }
    }
    (Some(fds), Some(socks))
}

/// Everything /proc says about one process; None when it is gone (or a kernel thread's
/// details cannot be read, in which case the stat line still gives comm and ppid).
pub fn read_proc(pid: u32, mounts: &CgroupMounts) -> Option<ProcInfo> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let stat = read(base.join("stat"))?;
    let (ppid, comm) = parse_stat(&stat)?;
    let uid = read(base.join("status"))
        .as_deref()
        .and_then(parse_uid)
        .unwrap_or(0);
    let cmdline = fs::read(base.join("cmdline"))
        .map(|b| crate::event::split_args(&b))
        .unwrap_or_default();
    let exe = fs::read_link(base.join("exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cgroups = read(base.join("cgroup")).unwrap_or_default();
    let cgroup_v2_path = parse_v2_cgroup(&cgroups).unwrap_or("").to_owned();
    let cgroup_v2 = match mounts.v2 {
        Some(_) if !cgroup_v2_path.is_empty() => mounts.v2_ancestry(&cgroup_v2_path),
        _ => Vec::new(),
    };
    let workload = crate::attribution::Workload::from_proc_cgroup(&cgroups);
    let (cgroup, mem_limit) = match parse_mem_cgroup(&cgroups) {
        Some((v, path)) => {
            let limit = mounts.mem_limit(v, &path);
            (path, limit)
        }
        None => (String::new(), None),
    };
    let nofile_limit = read(base.join("limits")).as_deref().and_then(parse_nofile);
    let fds_read_ns = Some(crate::host::boot_ns());
    // A process that exits while its fds are counted has closed some of them already: no
    // count then (checked again afterwards), rather than a low one taken as the truth.
    let (open_fds, open_sockets) = if exiting(&stat) {
        (None, None)
    } else {
        let counted = count_fds(pid);
        match read(base.join("stat")) {
            Some(s) if !exiting(&s) => counted,
            _ => (None, None),
        }
    };
    Some(ProcInfo {
        pid,
        ppid,
        uid,
        comm,
        exe,
        cmdline,
        cgroup,
        mem_limit,
        cgroup_v2_path,
        cgroup_v2,
        nofile_limit,
        previous_comm: None,
        forked_by: None,
        open_fds,
        open_sockets,
        fds_read_ns,
        workload,
    })
}

/// Every process on the host, in pid order.
pub fn snapshot(mounts: &CgroupMounts) -> Vec<ProcInfo> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids.into_iter()
        .filter_map(|p| read_proc(p, mounts))
        .collect()
}

/// `(pid, ppid)` of every process, cheaply (stat only).
pub fn parent_map() -> Vec<(u32, u32)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let (ppid, _) = parse_stat(&read(e.path().join("stat"))?)?;
            Some((pid, ppid))
        })
        .collect()
}

/// A cgroup v2 directory for `--cgroup`: its id (the directory's inode, what
/// bpf_get_current_cgroup_id returns) and its depth below the hierarchy root.
pub fn cgroup_v2_id(mounts: &CgroupMounts, arg: &str) -> Result<(u64, u32), String> {
    let root = mounts
        .v2
        .as_ref()
        .ok_or("no cgroup v2 hierarchy is mounted on this host; --cgroup needs one")?;
    let path = if Path::new(arg).is_absolute() && Path::new(arg).starts_with(root) {
        PathBuf::from(arg)
    } else {
        root.join(arg.trim_start_matches('/'))
    };
    let meta = fs::metadata(&path).map_err(|e| format!("cgroup {}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Err(format!("cgroup {} is not a directory", path.display()));
    }
    let level = path
        .strip_prefix(root)
        .map(|p| p.components().count() as u32)
        .unwrap_or(0);
    Ok((meta.ino(), level))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        assert_eq!(
            parse_stat("42 (my (odd) proc) S 7 42 42 0"),
            Some((7, "my (odd) proc".into()))
        );
        assert_eq!(parse_stat("garbage"), None);
        // pid (comm) state ppid pgrp session tty_nr tpgid flags ...
        assert!(!exiting("42 (my (odd) proc) S 7 42 42 0 -1 4194560 12 0"));
        assert!(
            exiting("42 (nginx) S 7 42 42 0 -1 4194564 12 0"),
            "PF_EXITING"
        );
        assert!(exiting("42 (nginx) Z 7 42 42 0 -1 4227084 12 0"), "zombie");
        assert!(exiting("garbage"));
    }

    #[test]
    fn limits_and_cgroups() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_nofile(limits), Some(1024));
        assert_eq!(
            parse_mem_cgroup("12:memory:/user/a\n0::/init.scope\n"),
            Some((CgroupVersion::V1, "/user/a".into()))
        );
        assert_eq!(
            parse_mem_cgroup("0::/system.slice/x.service\n"),
            Some((CgroupVersion::V2, "/system.slice/x.service".into()))
        );
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712"), None);
        assert_eq!(parse_limit("67108864"), Some(64 << 20));
    }

    #[test]
    fn memory_hierarchy_from_proc_cgroups() {
        let v1 = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\n\
                  memory\t4\t64\t1\npids\t8\t1\t1\n";
        assert_eq!(parse_memory_hierarchy(v1), 4);
        let v2 = "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t90\t1\n";
        assert_eq!(parse_memory_hierarchy(v2), 0);
        let off = "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t4\t1\t0\n";
        assert_eq!(parse_memory_hierarchy(off), 0, "disabled: not on v1");
        assert_eq!(parse_memory_hierarchy(""), 0);
    }

    #[test]
    fn mountinfo() {
        let mi = "35 24 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                  36 24 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n";
        let m = CgroupMounts::parse(mi);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            m.v1_memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
    }

    #[test]
    fn reads_this_process() {
        let m = CgroupMounts::read();
        let me = read_proc(std::process::id(), &m).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.nofile_limit.is_some());
        assert!(me.open_fds.unwrap() >= 3);
        if let Some(v2) = &m.v2 {
            // The header's cgroup id of this process is the last one.
            let root = fs::metadata(v2).unwrap().ino();
            assert_eq!(me.cgroup_v2.first(), Some(&root), "{me:?}");
            let dir = v2.join(me.cgroup_v2_path.trim_start_matches('/'));
            assert_eq!(me.cgroup_v2.last(), Some(&fs::metadata(dir).unwrap().ino()));
        }
    }

    #[test]
    fn v2_path_from_proc_cgroup() {
        assert_eq!(
            parse_v2_cgroup("12:memory:/user/a\n0::/init.scope\n"),
            Some("/init.scope")
        );
        assert_eq!(parse_v2_cgroup("12:memory:/user/a\n"), None);
    }
}
