//! Memory cgroups for the tests that allocate memory: every such test runs its allocator inside
//! a child cgroup of this process's own memory cgroup, with a small limit and no swap, so that a
//! runaway test can never take the machine down (see KERNEL-FACTS.md, "Memory cgroups").
//!
//! The reference machines have the memory controller on the v1 hierarchy only (cgroup v2 is
//! mounted without it); v2 is supported too, for hosts where the controller lives there.
use std::{
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// One line of /proc/self/mountinfo, reduced to what matters here.
struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    super_opts: String,
}

fn mounts() -> Vec<Mount> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional...] - fstype source super
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: unescape(l.get(3)?),
                point: PathBuf::from(unescape(l.get(4)?)),
                fstype: (*r.first()?).to_owned(),
                super_opts: r.get(2).copied().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `mount point / (cgroup path relative to the mount's root)`.
fn under_mount(m: &Mount, cgroup_path: &str) -> PathBuf {
    let rel = match cgroup_path.strip_prefix(m.root.trim_end_matches('/')) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => cgroup_path,
    }
    .trim_start_matches('/');
    m.point.join(rel)
}

/// This process's memory cgroup directory: the v1 memory hierarchy if it is mounted, else the
/// cgroup v2 directory if the memory controller is available there.
pub fn current_memory_cgroup() -> Option<(Version, PathBuf)> {
    let cg = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = mounts();
    for line in cg.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        if ctrls.split(',').any(|c| c == "memory")
            && let Some(m) = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.super_opts.split(',').any(|o| o == "memory"))
        {
            return Some((Version::V1, under_mount(m, path)));
        }
    }
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
        let dir = under_mount(m, path);
        let ctrls = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        if ctrls.split_whitespace().any(|c| c == "memory") {
            return Some((Version::V2, dir));
        }
    }
    None
}

fn read_limit(version: Version, dir: &Path) -> Option<u64> {
    let file = match version {
        Version::V1 => "memory.limit_in_bytes",
        Version::V2 => "memory.max",
    };
    let s = fs::read_to_string(dir.join(file)).ok()?;
    s.trim().parse().ok() // "max" (v2) means no limit
}

/// The memory limit of this process's own memory cgroup, if it has one. Workloads that allocate
/// check it and refuse to run without a limit.
pub fn current_memory_limit() -> Option<u64> {
    let (v, dir) = current_memory_cgroup()?;
    read_limit(v, &dir)
}

/// A child memory cgroup with a limit; removed (after killing whatever is left in it) on drop.
pub struct MemCgroup {
    path: PathBuf,
    version: Version,
    limit: u64,
}

static SERIAL: AtomicU32 = AtomicU32::new(0);

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    fs::write(dir.join(file), value)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {value} to {file}: {e}")))
}

impl MemCgroup {
    /// Creates a child of this process's memory cgroup limited to `limit` bytes of memory and
    /// no swap.
    pub fn create(limit: u64) -> io::Result<MemCgroup> {
        let (version, parent) = current_memory_cgroup().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no memory cgroup controller (v1 memory hierarchy or v2 memory) for this process",
            )
        })?;
        if version == Version::V2 {
            let sub = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
            if !sub.split_whitespace().any(|c| c == "memory") {
                // Fails (EBUSY) if the parent itself holds processes: the v2 "no internal
                // processes" rule. Nothing sensible to do about that here.
                write(&parent, "cgroup.subtree_control", "+memory")?;
            }
        }
        let name = format!(
            "tracer-test-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let path = parent.join(name);
        fs::create_dir(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
        let cg = MemCgroup {
            path,
            version,
            limit,
        };
        // On error `cg` is dropped, which removes the directory again.
        match version {
            Version::V1 => {
                write(&cg.path, "memory.limit_in_bytes", &limit.to_string())?;
                // memsw = memory + swap; equal to the memory limit means no swap. It must not be
                // set below memory.limit_in_bytes, hence the order.
                if cg.path.join("memory.memsw.limit_in_bytes").exists() {
                    write(&cg.path, "memory.memsw.limit_in_bytes", &limit.to_string())?;
                }
            }
            Version::V2 => {
                write(&cg.path, "memory.max", &limit.to_string())?;
                if cg.path.join("memory.swap.max").exists() {
                    write(&cg.path, "memory.swap.max", "0")?;
                }
            }
        }
        if read_limit(version, &cg.path) != Some(limit) {
            return Err(io::Error::other(format!(
                "{}: the limit did not stick (read back {:?}, want {limit})",
                cg.path.display(),
                read_limit(version, &cg.path)
            )));
        }
        Ok(cg)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Makes `cmd` move its child into this cgroup before exec, so that everything the program
    /// ever allocates is charged here.
    pub fn enter<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        enter(&self.path, cmd)
    }

    /// Moves running process `pid` into this cgroup (as its parent, the way runc or systemd
    /// move a process after fork).
    pub fn add(&self, pid: u32) -> io::Result<()> {
        write(&self.path, "cgroup.procs", &pid.to_string())
    }

    /// The processes in the cgroup now.
    pub fn procs(&self) -> Vec<u32> {
        procs_of(&self.path)
    }

    /// How many processes the OOM killer killed in this cgroup.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        fs::read_to_string(self.path.join(file))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

/// Makes `cmd` move its child into cgroup directory `dir` before exec.
fn enter<'a>(dir: &Path, cmd: &'a mut Command) -> &'a mut Command {
    let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
        .expect("cgroup path has no NUL");
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // calls (open, getpid, write, close) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut buf = [0u8; 16];
            let n = format_u32(libc::getpid() as u32, &mut buf);
            let r = libc::write(fd, buf.as_ptr().cast(), n);
            let err = io::Error::last_os_error();
            libc::close(fd);
            if r < 0 { Err(err) } else { Ok(()) }
        })
    }
}

fn procs_of(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills what is left in a test's cgroup (only that test's children can be there: the tests
/// reap them first, this is for a test that failed half-way) and removes the directory.
fn remove(dir: &Path) {
    for pid in procs_of(dir) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() >= deadline => {
                eprintln!(
                    "tracer-tests: could not remove cgroup {}: {e}",
                    dir.display()
                );
                return;
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A cgroup v2 directory for the `--cgroup` tests: no controllers, no limits, created below
/// this process's own cgroup v2 (or below another [`Cgroup2`]); whatever is left in it is
/// killed and the directory removed on drop (drop children first).
pub struct Cgroup2 {
    path: PathBuf,
    /// The path below the cgroup2 mount, as `--cgroup` takes it.
    rel: String,
}

impl Cgroup2 {
    /// A new child of this process's own cgroup v2.
    pub fn create(name: &str) -> io::Result<Cgroup2> {
        let cg = fs::read_to_string("/proc/self/cgroup")?;
        let own = cg
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "no cgroup v2 line in /proc/self/cgroup",
                )
            })?
            .to_owned();
        let mounts = mounts();
        let m = mounts
            .iter()
            .find(|m| m.fstype == "cgroup2")
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "cgroup v2 is not mounted"))?;
        let parent = Cgroup2 {
            path: under_mount(m, &own),
            rel: own.trim_end_matches('/').to_owned(),
        };
        let child = parent.child(name);
        // The parent is this process's own cgroup: not ours to remove.
        std::mem::forget(parent);
        child
    }

    /// A new child of this cgroup, named `NAME-PID-SERIAL`.
    pub fn child(&self, name: &str) -> io::Result<Cgroup2> {
        let name = format!(
            "{name}-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.path.join(&name);
        fs::create_dir(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
        Ok(Cgroup2 {
            path,
            rel: format!("{}/{name}", self.rel),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path below the cgroup2 mount (`/a/b`).
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// The cgroup id (the directory's inode), as the tracer reports it.
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&self.path).map(|m| m.ino()).unwrap_or(0)
    }

    /// Makes `cmd` move its child into this cgroup before exec.
    pub fn enter<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        enter(&self.path, cmd)
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

/// Decimal digits of `v` into `buf` without allocating (used between fork and exec).
fn format_u32(mut v: u32, buf: &mut [u8; 16]) -> usize {
    let mut tmp = [0u8; 10];
    let mut n = 0;
    loop {
        tmp[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        buf[i] = tmp[n - 1 - i];
    }
    n
}

/// A cgroup at a path that names a workload the way systemd, docker or the kubelet would
/// (`system.slice/tracer-test-x.service`, `system.slice/docker-<id>.scope`, a kubepods pod
/// path), on the cgroup v2 hierarchy (the unified one of a hybrid host), else on the v1
/// `name=systemd` hierarchy. No controller is enabled: it only names its processes. Created
/// by the test, its processes killed and its directories removed (deepest first) when dropped.
pub struct NamedCgroup {
    /// The directories this created, outermost first.
    created: Vec<PathBuf>,
    path: PathBuf,
    /// As /proc/PID/cgroup shows it.
    pub rel: String,
}

impl NamedCgroup {
    pub fn create(rel: &str) -> io::Result<NamedCgroup> {
        let ms = mounts();
        let root = ms
            .iter()
            .find(|m| m.fstype == "cgroup2" && m.root == "/")
            .or_else(|| {
                ms.iter().find(|m| {
                    m.fstype == "cgroup"
                        && m.root == "/"
                        && m.super_opts.split(',').any(|o| o == "name=systemd")
                })
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "neither a cgroup2 nor a name=systemd hierarchy is mounted",
                )
            })?
            .point
            .clone();
        let mut cg = NamedCgroup {
            created: Vec::new(),
            path: root.clone(),
            rel: format!("/{}", rel.trim_matches('/')),
        };
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            cg.path.push(part);
            match fs::create_dir(&cg.path) {
                Ok(()) => cg.created.push(cg.path.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("creating {}: {e}", cg.path.display()),
                    ));
                }
            }
        }
        Ok(cg)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `cmd` move its child in before exec (in addition to any other cgroup it enters).
    pub fn enter<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let procs = CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes())
            .expect("cgroup path has no NUL");
        // SAFETY: as in MemCgroup::enter: only async-signal-safe calls on memory prepared
        // before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if r < 0 { Err(err) } else { Ok(()) }
            })
        }
    }

    pub fn procs(&self) -> Vec<u32> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for NamedCgroup {
    fn drop(&mut self) {
        for pid in self.procs() {
            // SAFETY: kill has no memory preconditions; only this test's children are here.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for dir in self.created.iter().rev() {
            let has_children = fs::read_dir(dir)
                .map(|d| d.flatten().any(|e| e.path().is_dir()))
                .unwrap_or(false);
            if has_children {
                // Another test cgroup still lives below (a shared system.slice): whoever
                // created it removes it; the last one out cannot, and leaves it empty.
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        eprintln!(
                            "tracer-tests: could not remove cgroup {}: {e}",
                            dir.display()
                        );
                        break;
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_pids() {
        let mut b = [0u8; 16];
        let n = format_u32(0, &mut b);
        assert_eq!(&b[..n], b"0");
        let n = format_u32(4_194_304, &mut b);
        assert_eq!(&b[..n], b"4194304");
    }

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn joins_below_the_mount_root() {
        let m = Mount {
            root: "/".into(),
            point: "/sys/fs/cgroup/memory".into(),
            fstype: "cgroup".into(),
            super_opts: "rw,memory".into(),
        };
        assert_eq!(
            under_mount(&m, "/a/b"),
            PathBuf::from("/sys/fs/cgroup/memory/a/b")
        );
        let m = Mount {
            root: "/a".into(),
            ..m
        };
        assert_eq!(
            under_mount(&m, "/a/b"),
            PathBuf::from("/sys/fs/cgroup/memory/b")
        );
    }
}
