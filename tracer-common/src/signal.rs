//! Signals, from `signal/signal_generate`: the header is the sender (the current task).

/// `si_code` of a signal sent by the kernel itself (SI_KERNEL).
pub const SI_KERNEL: i32 = 0x80;
pub const SIGCHLD: i32 = 17;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal {
    pub sig: i32,
    pub code: i32,
    /// `TRACE_SIGNAL_*`: 0 delivered, 1 ignored, 2 already pending, 3 overflow, 4 lose info.
    pub result: i32,
    pub target_pid: i32,
    /// Non-zero when the signal is for the whole thread group.
    pub group: i32,
    pub errno: i32,
    pub target_comm: [u8; 16],
}
