//! Process tree: fork, exec, exit.

/// A new process (not a thread). The header is the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fork {
    pub child_pid: u32,
    pub _pad: u32,
}

pub const EXEC_FILENAME_LEN: usize = 256;
pub const EXEC_ARGS_LEN: usize = 256;

/// exec: the header is the process after exec (new comm).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exec {
    pub old_pid: u32,
    /// Parent process (`real_parent->tgid`), 0 when unknown.
    pub ppid: u32,
    pub filename_len: u16,
    /// Bytes of `args` that are valid: argv joined by NUL, truncated to EXEC_ARGS_LEN.
    pub args_len: u16,
    pub _pad: u32,
    pub filename: [u8; EXEC_FILENAME_LEN],
    pub args: [u8; EXEC_ARGS_LEN],
}

/// `exit_code` is known (read from the task through BTF).
pub const EXIT_CODE_KNOWN: u32 = 1;

/// The last thread of a process exited. `exit_code` is the kernel's wait status: exit status
/// in bits 8..16, or the fatal signal in bits 0..7 (0x80: core dumped).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: i32,
    pub flags: u32,
}

/// `RLIMIT_NOFILE`, the only resource followed.
pub const RLIMIT_NOFILE: u32 = 7;
/// `RLIM_INFINITY`.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// A successful setrlimit()/prlimit64() that set a new limit. The header is the caller; the
/// limit is the target process's (the caller itself unless an operator ran `prlimit --pid`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    /// prlimit64's pid argument, the caller's tgid when it was 0 (or setrlimit).
    pub target_pid: u32,
    /// `RLIMIT_*` number (only [`RLIMIT_NOFILE`] is emitted today).
    pub resource: u32,
    /// New soft and hard limits ([`RLIM_INFINITY`]: unlimited).
    pub soft: u64,
    pub hard: u64,
}

/// A thread-group leader was renamed without exec (prctl PR_SET_NAME, pthread_setname_np on
/// the main thread, a write to /proc/PID/comm). The header is the task that did it (the process
/// itself, or the writer of /proc/PID/comm); its `comm` may be either name.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rename {
    pub target_pid: u32,
    pub _pad: u32,
    pub old_comm: [u8; crate::COMM_LEN],
    pub new_comm: [u8; crate::COMM_LEN],
}

/// Bytes of a cgroup path kept in a [`CgroupAttach`] record (a longer path is cut and flagged
/// [`CGROUP_PATH_TRUNCATED`]). Room for systemd's and Kubernetes' deepest usual paths.
pub const CGROUP_PATH_LEN: usize = 256;
/// The destination hierarchy holds the memory controller: the path is what the process's
/// `cgroup` fact names (its v1 `memory` hierarchy, or cgroup v2 when memory is not on v1).
pub const CGROUP_MEMORY: u32 = 1;
/// The path was longer than [`CGROUP_PATH_LEN`] - 1 bytes and is cut.
pub const CGROUP_PATH_TRUNCATED: u32 = 2;
/// The root of a v1 hierarchy holding no controller, or cgroup v2: `hierarchy` 0 is cgroup v2.
pub const CGROUP_V2_HIERARCHY: u32 = 0;

/// A process (or thread) moved into a cgroup (`cgroup/cgroup_attach_task`): a write to
/// `cgroup.procs` or `tasks` by runc, systemd, a supervisor or the process itself. The header
/// is the task that moved it. Only the cgroup v2 hierarchy and the v1 hierarchy holding the
/// memory controller are reported (on cgroup v1 the tracepoint fires once per hierarchy).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupAttach {
    /// The task moved: the thread-group leader when a whole process moved (`cgroup.procs`),
    /// a thread id when one thread did (`tasks`, `cgroup.threads`).
    pub pid: u32,
    /// The destination's hierarchy id ([`CGROUP_V2_HIERARCHY`] for cgroup v2; for v1 the
    /// `hierarchy` column of /proc/cgroups).
    pub hierarchy: u32,
    /// The destination cgroup's id (on cgroup v2, its directory's inode: what record headers
    /// carry).
    pub cgroup_id: u64,
    /// Its depth below the hierarchy's root (the root is 0).
    pub level: u32,
    /// [`CGROUP_MEMORY`], [`CGROUP_PATH_TRUNCATED`].
    pub flags: u32,
    /// Bytes of `path` that are valid (without the NUL).
    pub path_len: u16,
    pub _pad: [u8; 6],
    /// The moved task's name.
    pub comm: [u8; crate::COMM_LEN],
    /// The destination's path below the hierarchy's root (`/a/b`), NUL-terminated unless cut.
    pub path: [u8; CGROUP_PATH_LEN],
}
