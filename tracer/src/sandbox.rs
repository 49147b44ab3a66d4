//! Sandboxes for `tracer demo`'s child processes: a memory cgroup with a small limit (v1
//! memory controller when the host has one, else cgroup v2), removed when dropped.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::procfs::{CgroupMounts, CgroupVersion, parse_mem_cgroup};

pub struct MemCgroup {
    pub path: PathBuf,
    version: CgroupVersion,
}

impl MemCgroup {
    /// Creates a child of this process's own memory cgroup with `limit` bytes (no swap).
    pub fn create(name: &str, limit: u64) -> anyhow::Result<MemCgroup> {
        let mounts = CgroupMounts::read();
        let own = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        let (version, own_path) = match parse_mem_cgroup(&own) {
            Some((CgroupVersion::V1, p)) if mounts.v1_memory.is_some() => (CgroupVersion::V1, p),
            _ => match (&mounts.v2, own.lines().find_map(|l| l.strip_prefix("0::"))) {
                (Some(_), Some(p)) => (CgroupVersion::V2, p.to_owned()),
                _ => bail!("no memory cgroup controller found (neither v1 'memory' nor cgroup v2)"),
            },
        };
        let root = match version {
            CgroupVersion::V1 => mounts.v1_memory.clone(),
            CgroupVersion::V2 => mounts.v2.clone(),
        }
        .context("cgroup hierarchy not mounted")?;
        let path = root
            .join(own_path.trim_start_matches('/'))
            .join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        let cg = MemCgroup { path, version };
        match version {
            CgroupVersion::V1 => {
                cg.write("memory.limit_in_bytes", &limit.to_string())?;
                // No swap: the limit is the limit (absent when swap accounting is off).
                if cg.path.join("memory.memsw.limit_in_bytes").exists() {
                    cg.write("memory.memsw.limit_in_bytes", &limit.to_string())?;
                }
            }
            CgroupVersion::V2 => {
                cg.write("memory.max", &limit.to_string())?;
                if cg.path.join("memory.swap.max").exists() {
                    cg.write("memory.swap.max", "0")?;
                }
            }
        }
        Ok(cg)
    }

    fn write(&self, file: &str, value: &str) -> anyhow::Result<()> {
        fs::write(self.path.join(file), value)
            .with_context(|| format!("writing {value} to {}", self.path.join(file).display()))
    }

    /// Moves a process into the cgroup.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// The path as /proc/PID/cgroup shows it (relative to the hierarchy root).
    pub fn relative(&self) -> String {
        let mounts = CgroupMounts::read();
        let root = match self.version {
            CgroupVersion::V1 => mounts.v1_memory,
            CgroupVersion::V2 => mounts.v2,
        };
        match root.and_then(|r| self.path.strip_prefix(r).ok().map(Path::to_path_buf)) {
            Some(p) => format!("/{}", p.display()),
            None => self.path.display().to_string(),
        }
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // The processes are gone by now (the demo stops them by pid); a cgroup with none left
        // is removed with rmdir. Retry briefly while the kernel finishes tearing them down.
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        tracing::warn!("could not remove cgroup {}", self.path.display());
    }
}
