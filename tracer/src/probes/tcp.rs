use super::{Attach::Tracepoint, ProbeSpec};
use tracer_common::Family::Tcp;

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        program: "inet_sock_set_state",
        attach: Tracepoint("sock", "inet_sock_set_state"),
        family: Tcp,
        what: "TCP state changes",
    },
    ProbeSpec {
        program: "tcp_send_reset",
        attach: Tracepoint("tcp", "tcp_send_reset"),
        family: Tcp,
        what: "resets sent",
    },
    ProbeSpec {
        program: "tcp_receive_reset",
        attach: Tracepoint("tcp", "tcp_receive_reset"),
        family: Tcp,
        what: "resets received",
    },
    ProbeSpec {
        program: "sock_recv_length",
        attach: Tracepoint("sock", "sock_recv_length"),
        family: Tcp,
        what: "socket owners (recv)",
    },
    ProbeSpec {
        program: "sock_send_length",
        attach: Tracepoint("sock", "sock_send_length"),
        family: Tcp,
        what: "socket owners (send)",
    },
    ProbeSpec {
        program: "sys_enter_accept",
        attach: Tracepoint("syscalls", "sys_enter_accept"),
        family: Tcp,
        what: "accept()",
    },
    ProbeSpec {
        program: "sys_exit_accept",
        attach: Tracepoint("syscalls", "sys_exit_accept"),
        family: Tcp,
        what: "accept() results",
    },
    ProbeSpec {
        program: "sys_enter_accept4",
        attach: Tracepoint("syscalls", "sys_enter_accept4"),
        family: Tcp,
        what: "accept4()",
    },
    ProbeSpec {
        program: "sys_exit_accept4",
        attach: Tracepoint("syscalls", "sys_exit_accept4"),
        family: Tcp,
        what: "accept4() results",
    },
    ProbeSpec {
        program: "sys_enter_socket",
        attach: Tracepoint("syscalls", "sys_enter_socket"),
        family: Tcp,
        what: "socket()",
    },
    ProbeSpec {
        program: "sys_exit_socket",
        attach: Tracepoint("syscalls", "sys_exit_socket"),
        family: Tcp,
        what: "socket() results",
    },
    ProbeSpec {
        program: "sys_enter_close",
        attach: Tracepoint("syscalls", "sys_enter_close"),
        family: Tcp,
        what: "socket closes",
    },
    ProbeSpec {
        program: "sys_enter_connect",
        attach: Tracepoint("syscalls", "sys_enter_connect"),
        family: Tcp,
        what: "connect()",
    },
    ProbeSpec {
        program: "sys_exit_connect",
        attach: Tracepoint("syscalls", "sys_exit_connect"),
        family: Tcp,
        what: "connect() results",
    },
    ProbeSpec {
        program: "sys_enter_listen",
        attach: Tracepoint("syscalls", "sys_enter_listen"),
        family: Tcp,
        what: "listen()",
    },
];
