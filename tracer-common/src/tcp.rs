//! TCP lifecycle, resets, accept results and socket fd accounting.
use crate::{Kind, Payload};

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
    pub _pad: u16,
    pub owner_tgid: u32,
    /// IPv4 addresses use the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
impl Payload for TcpState {
    const KIND: Kind = Kind::TcpState;
}

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
impl Payload for TcpAccept {
    const KIND: Kind = Kind::TcpAccept;
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
    pub _pad: u8,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub owner_tgid: u32,
    /// TCP state of the socket (send side; 0 when unknown).
    pub state: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
impl Payload for TcpReset {
    const KIND: Kind = Kind::TcpReset;
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
impl Payload for SocketOpen {
    const KIND: Kind = Kind::SocketOpen;
}

/// close() of an fd this tracer saw being opened as a socket (by socket() or accept()).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketClose {
    pub fd: i32,
    pub family: u16,
    pub sock_type: u16,
}
impl Payload for SocketClose {
    const KIND: Kind = Kind::SocketClose;
}

/// First sighting (or change) of the process that sends or receives on a TCP socket. The
/// header is the owner; `prev_tgid` is the previous owner (0 if none).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOwner {
    pub sk: u64,
    pub prev_tgid: u32,
    pub _pad: u32,
}
impl Payload for SockOwner {
    const KIND: Kind = Kind::SockOwner;
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
impl Payload for TcpConnect {
    const KIND: Kind = Kind::TcpConnect;
}

/// listen() on a socket fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpListen {
    pub fd: i32,
    pub backlog: i32,
}
impl Payload for TcpListen {
    const KIND: Kind = Kind::TcpListen;
}
