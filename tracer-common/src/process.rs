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
