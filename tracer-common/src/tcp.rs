//! TCP lifecycle, resets, accept results and socket fd accounting.

/// Kernel TCP states (`include/net/tcp_states.h`).
pub mod state {
    pub const ESTABLISHED: u16 = 1;
    pub const SYN_SENT: u16 = 2;
    pub const SYN_RECV: u16 = 3;
    pub const FIN_WAIT1: u16 = 4;
    pub const FIN_WAIT2: u16 = 5;
    pub const TIME_WAIT: u16 = 6;
    pub const CLOSE: u16 = 7;
    pub const CLOSE_WAIT: u16 = 8;
    pub const LAST_ACK: u16 = 9;
    pub const LISTEN: u16 = 10;
    pub const CLOSING: u16 = 11;
    pub const NEW_SYN_RECV: u16 = 12;
}

/// `sock/inet_sock_set_state` for TCP. The header is the task that happened to run (often a
/// softirq); `owner_tgid` is the process that owns the socket, when known (0 otherwise).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpState {
    pub skaddr: u64,
    pub old_state: u16,
    pub new_state: u16,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    /// [`STATE_FLAG_MODEL`] or 0. Was padding (always 0) in dumps of earlier versions.
    pub flags: u16,
    pub owner_tgid: u32,
    /// IPv4 addresses use the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
/// [`TcpState::flags`]: the kernel also keeps the connection model ([`ConnOpen`],
/// [`ConnClose`], [`ConnStatus`]), so this state change is informational: analyses take
/// connections from the model records, not from state changes (which they do for dumps written
/// before the model existed, whose state records have no flag).
pub const STATE_FLAG_MODEL: u16 = 1;

/// Result of accept()/accept4(): `ret` is the new fd, or a negative errno.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpAccept {
    pub ret: i32,
    pub listen_fd: i32,
    /// The accepted socket (0 on failure or when it could not be resolved).
    pub sk: u64,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

pub const RESET_SENT: u8 = 0;
pub const RESET_RECEIVED: u8 = 1;

/// `tcp/tcp_send_reset` and `tcp/tcp_receive_reset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpReset {
    /// 0 when the reset answers a packet that has no socket.
    pub sk: u64,
    pub direction: u8,
    /// Why the kernel sent it, in tracer's own stable numbering ([`RESET_REASONS`]), not the
    /// kernel's (`enum sk_rst_reason` was renumbered between versions): the collector maps the
    /// kernel's numbers by name at start-up ([`crate::config::ReasonMap`]). 0 = not given (a
    /// kernel before 6.10, a received reset, or NOT_SPECIFIED); was padding (always 0) in dumps
    /// of earlier versions.
    pub reason: u8,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub owner_tgid: u32,
    /// TCP state of the socket (send side; 0 when unknown).
    pub state: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Names of [`TcpReset::reason`] values: the index is tracer's code, frozen once given (the
/// order is Linux 6.18's `enum sk_rst_reason`; a reason added by a later kernel is appended
/// here, never inserted). A kernel reason whose name is not in this table is recorded as
/// [`RESET_REASON_UNRECOGNISED`].
pub const RESET_REASONS: [&str; 25] = [
    "NOT_SPECIFIED",
    "NO_SOCKET",
    "TCP_INVALID_ACK_SEQUENCE",
    "TCP_RFC7323_PAWS",
    "TCP_TOO_OLD_ACK",
    "TCP_ACK_UNSENT_DATA",
    "TCP_FLAGS",
    "TCP_OLD_ACK",
    "TCP_ABORT_ON_DATA",
    "TCP_TIMEWAIT_SOCKET",
    "INVALID_SYN",
    "TCP_ABORT_ON_CLOSE",
    "TCP_ABORT_ON_LINGER",
    "TCP_ABORT_ON_MEMORY",
    "TCP_STATE",
    "TCP_KEEPALIVE_TIMEOUT",
    "TCP_DISCONNECT_WITH_DATA",
    "MPTCP_RST_EUNSPEC",
    "MPTCP_RST_EMPTCP",
    "MPTCP_RST_ERESOURCE",
    "MPTCP_RST_EPROHIBIT",
    "MPTCP_RST_EWQ2BIG",
    "MPTCP_RST_EBADPERF",
    "MPTCP_RST_EMIDDLEBOX",
    "ERROR",
];
/// The kernel gave a reason this build of tracer has no name for.
pub const RESET_REASON_UNRECOGNISED: u8 = 255;

/// Tracer's code for a kernel reset reason name (`None`: not in [`RESET_REASONS`]).
pub fn reset_reason_code(name: &str) -> Option<u8> {
    let name = name.strip_prefix("SK_RST_REASON_").unwrap_or(name);
    RESET_REASONS
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u8)
}

/// The name of a [`TcpReset::reason`] (`None` for 0, not given).
pub fn reset_reason_name(code: u8) -> Option<&'static str> {
    match code {
        0 => None,
        RESET_REASON_UNRECOGNISED => Some("UNRECOGNISED"),
        c => RESET_REASONS
            .get(c as usize)
            .copied()
            .or(Some("UNRECOGNISED")),
    }
}

/// socket() result: `fd` is the new fd or a negative errno.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOpen {
    pub fd: i32,
    pub family: u16,
    pub sock_type: u16,
    pub protocol: i32,
    pub _pad: u32,
}

/// close() of an fd this tracer saw being opened as a socket (by socket() or accept()).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketClose {
    pub fd: i32,
    pub family: u16,
    pub sock_type: u16,
}

/// dup(), dup2(), dup3() or fcntl(F_DUPFD/F_DUPFD_CLOEXEC) of an fd this tracer saw being
/// opened as a socket: `newfd` is one more fd for the same socket. Its close() is a
/// `socket_close` (one fd fewer), never the connection's close.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdDup {
    pub oldfd: i32,
    pub newfd: i32,
    pub family: u16,
    pub sock_type: u16,
    /// [`DUP_REPLACED`]: `newfd` was itself a socket fd, closed by dup2()/dup3() first.
    pub flags: u32,
}
/// [`FdDup::flags`]: the socket fd `newfd` named before was closed by the dup.
pub const DUP_REPLACED: u32 = 1;

/// Generations of forks searched (through the FORKED_FROM map) for the socket behind an fd a
/// process inherited: enough for a daemon's fork, setsid, fork. The collector's sweep of the
/// kernel's per-process maps keeps what such a search may still need.
pub const FORK_DEPTH: usize = 3;

/// First sighting (or change) of the process that sends or receives on a TCP socket. The
/// header is the owner; `prev_tgid` is the previous owner (0 if none).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOwner {
    pub sk: u64,
    pub prev_tgid: u32,
    pub _pad: u32,
}

/// connect() result on an inet socket: `ret` is 0 or a negative errno (-EINPROGRESS for
/// non-blocking sockets).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConnect {
    pub fd: i32,
    pub ret: i32,
    pub family: u16,
    pub dport: u16,
    pub _pad: u32,
    pub daddr: [u8; 16],
}

/// listen() on a socket fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpListen {
    pub fd: i32,
    pub backlog: i32,
}

/// Who opened a connection: this host's process called connect() (active) or accept()ed it
/// (passive).
pub const ROLE_UNKNOWN: u8 = 0;
pub const ROLE_ACTIVE: u8 = 1;
pub const ROLE_PASSIVE: u8 = 2;

/// A TCP connection became a process's: connect() returned (active; `ret` is 0, -EINPROGRESS
/// or the error) or accept() returned it (passive; `ret` 0). The header is the owner. One of
/// the (at most) two records a short connection costs on each end, with [`ConnClose`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnOpen {
    pub sk: u64,
    pub fd: i32,
    pub ret: i32,
    pub role: u8,
    pub _pad: u8,
    pub family: u16,
    /// Local and remote port; IPv4 addresses use the first 4 bytes.
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// close() of a connection's fd, with what the kernel counted over its life. `state` is the
/// TCP state when close() was called: ESTABLISHED means this end closed first, CLOSE_WAIT the
/// peer did, CLOSE that it was reset or never connected. Times are boot-clock ns (0: never).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnClose {
    pub sk: u64,
    /// When the connection was opened (connect/accept), 0 if before the tracer started.
    pub open_ns: u64,
    /// The first send still without a reply (0: none).
    pub wait_ns: u64,
    pub last_recv_ns: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub fd: i32,
    pub state: u8,
    pub role: u8,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// [`ConnStatus::status`] values.
pub mod status {
    /// The peer closed and the owner has not, since `since_ns`.
    pub const CLOSE_WAIT: u8 = 1;
    /// An active connection without an answer since `since_ns`: still in SYN_SENT, or it sent
    /// and has received nothing since.
    pub const UNANSWERED: u8 = 2;
    /// A status reported earlier no longer holds (answered, closed, or gone).
    pub const CLEARED: u8 = 3;
}

/// A connection's notable condition, found by the collector's periodic read of the kernel's
/// connection map (never written by the kernel itself) and stored in dumps like every record,
/// so replay sees what live saw. The header is the owner (tgid 0 when unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnStatus {
    pub sk: u64,
    pub since_ns: u64,
    pub open_ns: u64,
    pub last_recv_ns: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub status: u8,
    /// TCP state when read.
    pub state: u8,
    pub role: u8,
    pub _pad: u8,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad2: u16,
    pub _pad3: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// [`ConnInfo::flags`].
pub const CONN_ANNOUNCED: u8 = 1;
pub const CONN_ALLOWED: u8 = 2;
pub const CONN_CLOSED: u8 = 4;

/// The kernel's per-connection state (map `CONNS`, keyed by the `struct sock` address), read
/// by the collector to find connections that sit in CLOSE_WAIT or wait for an answer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub owner_tgid: u32,
    pub fd: i32,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
    pub open_ns: u64,
    pub wait_ns: u64,
    pub last_recv_ns: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// When CLOSE_WAIT was entered (the only state whose time the collector reads; set at open
    /// too, and otherwise left as it was).
    pub state_ns: u64,
    pub state: u8,
    pub role: u8,
    /// [`CONN_ANNOUNCED`] (the owner was told of it in a [`ConnOpen`]), [`CONN_ALLOWED`] (its
    /// owner passes the filters), [`CONN_CLOSED`] (its fd was closed).
    pub flags: u8,
    pub _pad: u8,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad2: u16,
    pub _pad3: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
