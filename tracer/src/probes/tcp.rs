//! The attach table of the TCP family's kernel-side connection model (state changes, resets,
//! bytes moved): which programs of `tracer-ebpf/src/tcp.rs` attach where. The socket syscalls
//! are in `sockets.rs`.
use super::{
    Attach::{BtfTracepoint, Tracepoint},
    ProbeSpec,
};
use tracer_common::Family::Tcp;

/// The hottest TCP hooks are BTF tracepoints where the kernel has them (no copy into a trace
/// buffer per hit), with the classic tracepoints as fallbacks.
pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        program: "inet_sock_set_state_btf",
        attach: BtfTracepoint("inet_sock_set_state"),
        family: Tcp,
        what: "TCP state changes",
        fallback_for: None,
    },
    ProbeSpec {
        program: "inet_sock_set_state",
        attach: Tracepoint("sock", "inet_sock_set_state"),
        family: Tcp,
        what: "TCP state changes (without BTF)",
        fallback_for: Some("inet_sock_set_state_btf"),
    },
    ProbeSpec {
        program: "tcp_send_reset",
        attach: Tracepoint("tcp", "tcp_send_reset"),
        family: Tcp,
        what: "resets sent",
        fallback_for: None,
    },
    ProbeSpec {
        program: "tcp_receive_reset",
        attach: Tracepoint("tcp", "tcp_receive_reset"),
        family: Tcp,
        what: "resets received",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sock_recv_length_btf",
        attach: BtfTracepoint("sock_recv_length"),
        family: Tcp,
        what: "bytes received, last receive, socket owners",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sock_recv_length",
        attach: Tracepoint("sock", "sock_recv_length"),
        family: Tcp,
        what: "bytes received, last receive, socket owners (without BTF)",
        fallback_for: Some("sock_recv_length_btf"),
    },
    ProbeSpec {
        program: "sock_send_length_btf",
        attach: BtfTracepoint("sock_send_length"),
        family: Tcp,
        what: "bytes sent, requests without answer, socket owners",
        fallback_for: None,
    },
    ProbeSpec {
        program: "sock_send_length",
        attach: Tracepoint("sock", "sock_send_length"),
        family: Tcp,
        what: "bytes sent, requests without answer, socket owners (without BTF)",
        fallback_for: Some("sock_send_length_btf"),
    },
];
