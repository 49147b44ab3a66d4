//! TCP: the connection model (conn_open, conn_close with what was counted, conn_status for a
//! socket left in CLOSE_WAIT or a request without answer), every state change with owner
//! attribution under `--tcp-states`, over IPv4 and IPv6; resets in both directions, refused
//! connects, and accept() failing with EMFILE.
//!
//! The server is a `workload tcp-server` child (so that its events are told apart from the
//! client's by pid); the client is this test process.
use std::{
    io::{Read, Write},
    mem,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use serde_json::{Value, json};
use tracer_tests::{
    Checks, EventExt, Tracer, Workload, assert_fields, position, require_root, test_pid, workload,
};

/// The families traced. `process` is needed with `tcp` for now: without it the tracer drops
/// every event of the `--pid` process's children (see filters.rs,
/// `pid_filter_follows_children_without_process_events`).
const TCP: &[&str] = &["--events", "tcp,process"];
/// The same, with every TCP state change too.
const TCP_STATES: &[&str] = &["--events", "tcp,process", "--tcp-states"];

fn is_accept(e: &Value, pid: u32) -> bool {
    e.is("conn_open", pid) && e["role"] == "accept"
}

/// What both ends of one loopback connection really are.
struct Conn {
    server: Workload,
    client: TcpStream,
    /// The server's listening socket.
    listen_fd: i64,
    ip: String,
    port: u64,
    /// The server's accepted socket.
    accepted_fd: i64,
    client_fd: i64,
    client_ip: String,
    client_port: u64,
}

/// Starts a server bound to `bind` and connects to it from this process.
fn connect(bind: &str) -> Conn {
    let mut server = Workload::spawn(&mut workload!("tcp-server", "--bind", bind));
    let l = server.expect("listening");
    let addr: SocketAddr = l["addr"].as_str().unwrap().parse().unwrap();
    let client = TcpStream::connect(addr).expect("connect to the workload server");
    let local = client.local_addr().unwrap();
    let acc = server.expect("accepted");
    // The workload's own view of the connection matches ours.
    assert_eq!(
        acc["peer"],
        json!({"ip": local.ip().to_string(), "port": local.port()})
    );
    assert_eq!(
        acc["local"],
        json!({"ip": addr.ip().to_string(), "port": addr.port()})
    );
    Conn {
        listen_fd: l["fd"].as_i64().unwrap(),
        ip: addr.ip().to_string(),
        port: addr.port() as u64,
        accepted_fd: acc["fd"].as_i64().unwrap(),
        client_fd: client.as_raw_fd() as i64,
        client_ip: local.ip().to_string(),
        client_port: local.port() as u64,
        server,
        client,
    }
}

fn set_linger_zero(fd: i32) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a live linger struct of the stated size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// Whether this kernel's tcp_send_reset says why (6.10+): then sent resets carry `reason`.
fn kernel_gives_reset_reasons() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .filter_map(|r| {
            std::fs::read_to_string(format!("{r}/events/tcp/tcp_send_reset/format")).ok()
        })
        .any(|f| f.contains(" reason;"))
}

/// A sent reset carries the kernel's `reason` `name` where the kernel gives reasons, none
/// elsewhere; a received one never has one.
fn check_reason(k: &mut Checks, e: Option<&Value>, name: Option<&str>) {
    let Some(e) = e else { return };
    match name.filter(|_| kernel_gives_reset_reasons()) {
        Some(n) => k.that(e["reason"] == n, format!("reason {n}: {e}")),
        None => k.that(e.get("reason").is_none(), format!("no reason: {e}")),
    }
}

fn is_state(e: &Value, sport: u64, dport: u64) -> bool {
    e.kind() == "tcp_state" && e["sport"] == sport && e["dport"] == dport
}

/// The default: the kernel keeps each connection's state and counts, and says it opened and
/// closed (two records per end), what it carried, and when it sat in CLOSE_WAIT or waited for an
/// answer (conn_status, from the collector's read of the kernel's map once a second).
fn connection_model(bind: &str, family: &str, env: &[(&str, &str)]) {
    if !require_root() {
        return;
    }
    let me = test_pid();
    // Debug logging: the collector says so if the kernel refused its batch read of the
    // connection map (checked at the end: the entry-by-entry fallback would hide it).
    let mut env = env.to_vec();
    env.push(("TRACER_LOG", "tracer=debug"));
    let t = Tracer::for_test_env(TCP, &env);
    let listener = TcpListener::bind(bind).expect("bind");
    let addr = listener.local_addr().unwrap();
    let port = addr.port() as u64;
    let mut client = TcpStream::connect(addr).expect("connect");
    let cport = client.local_addr().unwrap().port() as u64;
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(b"hello").unwrap();
    let mut buf = [0u8; 16];
    server.read_exact(&mut buf[..5]).unwrap();
    server.write_all(b"world!!").unwrap();
    client.read_exact(&mut buf[..7]).unwrap();
    let (client_fd, server_fd) = (client.as_raw_fd() as i64, server.as_raw_fd() as i64);

    // The client closes, the server does not: after a second its socket is reported.
    drop(client);
    let cw = t.wait_for("the server's socket reported in CLOSE_WAIT", |e| {
        e.is("conn_status", me) && e["status"] == "close_wait" && e["sport"] == port
    });
    assert_fields(
        &cw,
        json!({
            "state": "CLOSE_WAIT", "role": "accept", "dport": cport, "owner_pid": me,
            "family": family, "bytes_in": 5, "bytes_out": 7,
        }),
    );
    assert!(cw.u64_of("for_ms").is_some_and(|ms| ms >= 1000), "{cw}");
    drop(server);
    t.wait_for("the CLOSE_WAIT report cleared", |e| {
        e.is("conn_status", me) && e["status"] == "cleared" && e["sport"] == port
    });

    // A request without an answer, until it gets one.
    let mut asker = TcpStream::connect(addr).expect("connect");
    let aport = asker.local_addr().unwrap().port() as u64;
    let (mut silent, _) = listener.accept().expect("accept");
    asker.write_all(b"SELECT 1;").unwrap();
    let un = t.wait_for("the unanswered request", |e| {
        e.is("conn_status", me) && e["status"] == "unanswered" && e["sport"] == aport
    });
    assert_fields(
        &un,
        json!({"state": "ESTABLISHED", "role": "connect", "dport": port, "bytes_out": 9, "bytes_in": 0}),
    );
    silent.write_all(b"1\n").unwrap();
    asker.read_exact(&mut buf[..2]).unwrap();
    t.wait_for("the answered request cleared", |e| {
        e.is("conn_status", me) && e["status"] == "cleared" && e["sport"] == aport
    });
    drop(asker);
    drop(silent);
    t.wait_for("the asker's conn_close", |e| {
        e.is("conn_close", me) && e["sport"] == aport
    });
    drop(listener);
    let stopped = t.stop();
    assert!(
        !stopped
            .stderr
            .iter()
            .any(|l| l.contains("batch lookup refused")),
        "the connection map was read entry by entry, not in batches:\n{}",
        stopped.stderr.join("\n")
    );
    let ev = stopped.events;
    let mut k = Checks::new();
    k.find_with(
        "the client's conn_open",
        &ev,
        |e| e.is("conn_open", me) && e["sport"] == cport,
        json!({"role": "connect", "fd": client_fd, "family": family, "daddr": addr.ip().to_string(), "dport": port}),
    );
    k.find_with(
        "the server's conn_open",
        &ev,
        |e| e.is("conn_open", me) && e["sport"] == port && e["dport"] == cport,
        json!({"role": "accept", "fd": server_fd, "family": family, "saddr": addr.ip().to_string()}),
    );
    k.find_with(
        "the client's conn_close",
        &ev,
        |e| e.is("conn_close", me) && e["sport"] == cport,
        json!({
            "role": "connect", "fd": client_fd, "state": "ESTABLISHED", "closed_first": "local",
            "bytes_in": 7, "bytes_out": 5, "dport": port,
        }),
    );
    if let Some(sc) = k.find_with(
        "the server's conn_close",
        &ev,
        |e| e.is("conn_close", me) && e["sport"] == port && e["dport"] == cport,
        json!({
            "role": "accept", "fd": server_fd, "state": "CLOSE_WAIT", "closed_first": "peer",
            "bytes_in": 5, "bytes_out": 7,
        }),
    ) {
        k.that(
            sc.u64_of("duration_ms").is_some_and(|ms| ms >= 1000),
            format!("open for over a second: {sc}"),
        );
    }
    // Two records per end of a connection, nothing for each state change, nor a socket_open
    // for a connected socket.
    let of_first = |e: &&Value| {
        (e["sport"] == cport && e["dport"] == port) || (e["sport"] == port && e["dport"] == cport)
    };
    let first: Vec<&Value> = ev.iter().filter(of_first).collect();
    let lifecycle: Vec<&Value> = first
        .iter()
        .copied()
        .filter(|e| matches!(e.kind(), "conn_open" | "conn_close"))
        .collect();
    k.that(
        lifecycle.len() == 4,
        format!(
            "4 lifecycle records for one connection, got {}: {lifecycle:?}",
            lifecycle.len()
        ),
    );
    k.that(
        !first.iter().any(|e| e.kind() == "tcp_state"),
        "no tcp_state records by default",
    );
    k.that(
        !ev.iter()
            .any(|e| e.is("socket_open", me) && e["fd"] == client_fd),
        "no socket_open for a connected TCP socket",
    );
    k.finish(&ev);
}

#[test]
fn connection_model_ipv4() {
    connection_model("127.0.0.1:0", "inet", &[]);
}

#[test]
fn connection_model_ipv6() {
    connection_model("[::1]:0", "inet6", &[]);
}

/// The same through the classic tracepoints (the fallbacks where the kernel has no BTF).
const CLASSIC: &[(&str, &str)] = &[("TRACER_CLASSIC_TRACEPOINTS", "1")];

#[test]
fn connection_model_classic_tracepoints_ipv4() {
    connection_model("127.0.0.1:0", "inet", CLASSIC);
}

#[test]
fn connection_model_classic_tracepoints_ipv6() {
    connection_model("[::1]:0", "inet6", CLASSIC);
}

/// `--tcp-states`: every state change, each attributed to its socket's owner.
fn lifecycle_states(bind: &str, family: &str, env: &[(&str, &str)]) {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let t = Tracer::for_test_env(TCP_STATES, env);
    let mut c = connect(bind);
    let sp = c.server.pid();
    let (port, cport) = (c.port, c.client_port);
    t.wait_for("the server's conn_open", |e| is_accept(e, sp));

    // The client closes, the server does not: the server's socket sits in CLOSE_WAIT.
    drop(c.client);
    t.wait_for("the server's socket going to CLOSE_WAIT", |e| {
        is_state(e, port, cport) && e["new_state"] == "CLOSE_WAIT"
    });
    c.server.send("close");
    c.server.expect("closed");
    c.server.send("exit");
    assert!(c.server.wait().success());
    t.wait_for("the server's exit", |e| e.is("exit", sp));
    let ev = t.stop().events;
    let mut k = Checks::new();

    // The server: socket(), listen(), LISTEN, accept().
    k.find_with(
        "the server's socket_open",
        &ev,
        |e| e.is("socket_open", sp) && e["fd"] == c.listen_fd,
        json!({"family": family, "sock_type": 1, "comm": "workload", "ppid": me}),
    );
    k.find_with(
        "the server's tcp_listen",
        &ev,
        |e| e.is("tcp_listen", sp),
        json!({"fd": c.listen_fd, "backlog": 16}),
    );
    k.find_with(
        "the listening socket's CLOSE -> LISTEN",
        &ev,
        |e| e.kind() == "tcp_state" && e["new_state"] == "LISTEN" && e["sport"] == port,
        json!({"old_state": "CLOSE", "family": family, "saddr": c.ip, "owner_pid": sp}),
    );
    k.find_with(
        "the server's conn_open",
        &ev,
        |e| is_accept(e, sp),
        json!({
            "comm": "workload", "ppid": me, "fd": c.accepted_fd,
            "family": family, "saddr": c.ip, "sport": port, "daddr": c.client_ip, "dport": cport,
        }),
    );

    // The client (this process): connect(), SYN_SENT -> ESTABLISHED.
    if let Some(conn) = k.find_with(
        "the client's conn_open",
        &ev,
        |e| e.is("conn_open", me) && e["role"] == "connect",
        json!({"fd": c.client_fd, "saddr": c.client_ip, "sport": cport, "daddr": c.ip, "dport": port}),
    ) {
        k.that(
            conn.get("error").is_none(),
            format!("connect succeeded: {conn}"),
        );
    }
    k.find_with(
        "the client's SYN_SENT -> ESTABLISHED",
        &ev,
        |e| is_state(e, cport, port) && e["new_state"] == "ESTABLISHED",
        json!({
            "old_state": "SYN_SENT", "family": family, "saddr": c.client_ip,
            "daddr": c.ip, "owner_pid": me,
        }),
    );
    // The server's end becomes ESTABLISHED too; before accept() its owner cannot be known yet.
    if let Some(e) = k.find("the server's end becoming ESTABLISHED", &ev, |e| {
        is_state(e, port, cport) && e["new_state"] == "ESTABLISHED"
    }) {
        k.that(
            e["owner_pid"].is_null() || e["owner_pid"] == sp,
            format!("owner of the server's end before accept: {e}"),
        );
    }

    // Every state change of the client's socket is attributed to this process, including
    // those that ran in softirq on behalf of whatever task was current.
    let client_states: Vec<&Value> = ev.iter().filter(|e| is_state(e, cport, port)).collect();
    for e in &client_states {
        k.that(
            e["owner_pid"] == me,
            format!("client socket owned by {me}: {e}"),
        );
    }
    k.that(
        client_states
            .iter()
            .any(|e| e["old_state"] == "ESTABLISHED" && e["new_state"] == "FIN_WAIT1"),
        "client's ESTABLISHED -> FIN_WAIT1 on close",
    );
    // Every state change of the server's accepted socket after accept() is the server's.
    let accepted_at = position(&ev, |e| is_accept(e, sp)).unwrap_or(0);
    let server_states: Vec<&Value> = ev[accepted_at..]
        .iter()
        .filter(|e| is_state(e, port, cport))
        .collect();
    for e in &server_states {
        k.that(
            e["owner_pid"] == sp,
            format!("accepted socket owned by {sp}: {e}"),
        );
    }
    // CLOSE_WAIT: the peer closed, the server had not (yet).
    k.find_with(
        "the server's ESTABLISHED -> CLOSE_WAIT",
        &ev,
        |e| is_state(e, port, cport) && e["new_state"] == "CLOSE_WAIT",
        json!({
            "old_state": "ESTABLISHED", "family": family, "saddr": c.ip,
            "daddr": c.client_ip, "owner_pid": sp,
        }),
    );
    for (old, new) in [("CLOSE_WAIT", "LAST_ACK"), ("LAST_ACK", "CLOSE")] {
        k.that(
            server_states
                .iter()
                .any(|e| e["old_state"] == old && e["new_state"] == new),
            format!("server's {old} -> {new}"),
        );
    }

    // close() of both sockets; CLOSE_WAIT came before the server's close.
    k.find_with(
        "the client's conn_close",
        &ev,
        |e| e.is("conn_close", me) && e["fd"] == c.client_fd,
        json!({"family": family, "state": "ESTABLISHED", "closed_first": "local"}),
    );
    k.find_with(
        "the server's conn_close",
        &ev,
        |e| e.is("conn_close", sp) && e["fd"] == c.accepted_fd,
        json!({"family": family, "state": "CLOSE_WAIT", "closed_first": "peer"}),
    );
    let cw_at = position(&ev, |e| {
        is_state(e, port, cport) && e["new_state"] == "CLOSE_WAIT"
    });
    let sclose_at = position(&ev, |e| e.is("conn_close", sp) && e["fd"] == c.accepted_fd);
    k.that(
        matches!((cw_at, sclose_at), (Some(a), Some(b)) if a < b),
        "CLOSE_WAIT before the server's close()",
    );
    // The listening socket goes away with the process (no close() call), after its exit
    // event: still the server's.
    k.find_with(
        "the listening socket's LISTEN -> CLOSE when the server exits",
        &ev,
        |e| {
            e.kind() == "tcp_state"
                && e["old_state"] == "LISTEN"
                && e["new_state"] == "CLOSE"
                && e["sport"] == port
        },
        json!({"family": family, "saddr": c.ip, "owner_pid": sp}),
    );
    k.finish(&ev);
}

#[test]
fn every_state_change_ipv4() {
    lifecycle_states("127.0.0.1:0", "inet", &[]);
}

#[test]
fn every_state_change_ipv6() {
    lifecycle_states("[::1]:0", "inet6", &[]);
}

#[test]
fn every_state_change_classic_tracepoints_ipv4() {
    lifecycle_states("127.0.0.1:0", "inet", CLASSIC);
}

/// The client aborts (SO_LINGER 0): it sends a RST, the server's socket receives it.
fn client_abort(bind: &str, family: &str) {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let t = Tracer::for_test(TCP_STATES);
    let mut c = connect(bind);
    let sp = c.server.pid();
    let (port, cport) = (c.port, c.client_port);
    t.wait_for("the server's conn_open", |e| is_accept(e, sp));

    set_linger_zero(c.client_fd as i32);
    drop(c.client);
    t.wait_for("the server's socket closing on the RST", |e| {
        is_state(e, port, cport) && e["new_state"] == "CLOSE"
    });
    c.server.send("exit");
    assert!(c.server.wait().success());
    t.wait_for("the server's exit", |e| e.is("exit", sp));
    let ev = t.stop().events;
    let mut k = Checks::new();
    let sent = k.find_with(
        "the RST sent by the client (this process)",
        &ev,
        |e| e.kind() == "tcp_reset" && e["direction"] == "sent",
        json!({
            "pid": me, "family": family, "saddr": c.client_ip, "sport": cport,
            "daddr": c.ip, "dport": port, "owner_pid": me,
            // SO_LINGER 0: tcp_disconnect() closes the socket, then resets it.
            "cause": "abort_on_close",
        }),
    );
    check_reason(&mut k, sent, Some("TCP_STATE"));
    let received = k.find_with(
        "the RST received by the server's socket",
        &ev,
        |e| e.kind() == "tcp_reset" && e["direction"] == "received",
        json!({
            "family": family, "saddr": c.ip, "sport": port, "daddr": c.client_ip,
            "dport": cport, "owner_pid": sp, "cause": "received",
        }),
    );
    check_reason(&mut k, received, None);
    k.find_with(
        "the server's socket closing on the RST",
        &ev,
        |e| is_state(e, port, cport) && e["new_state"] == "CLOSE",
        json!({"old_state": "ESTABLISHED", "owner_pid": sp}),
    );
    k.find_with(
        "the client's socket closing on abort",
        &ev,
        |e| is_state(e, cport, port) && e["new_state"] == "CLOSE",
        json!({"old_state": "ESTABLISHED", "owner_pid": me}),
    );
    k.that(
        ev.iter().filter(|e| e.kind() == "tcp_reset").count() == 2,
        "exactly one RST sent and one received",
    );
    k.finish(&ev);
}

#[test]
fn client_abort_resets_ipv4() {
    client_abort("127.0.0.1:0", "inet");
}

#[test]
fn client_abort_resets_ipv6() {
    client_abort("[::1]:0", "inet6");
}

/// The server aborts (SO_LINGER 0): the server sends the RST, this process receives it.
fn server_abort(bind: &str, family: &str) {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let t = Tracer::for_test(TCP_STATES);
    let mut c = connect(bind);
    let sp = c.server.pid();
    let (port, cport) = (c.port, c.client_port);
    t.wait_for("the server's conn_open", |e| is_accept(e, sp));

    c.server.send("abort");
    c.server.expect("aborted");
    t.wait_for("this process receiving the RST", |e| {
        e.kind() == "tcp_reset" && e["direction"] == "received"
    });
    let mut buf = [0u8; 16];
    let err = c
        .client
        .read(&mut buf)
        .expect_err("the connection was reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    c.server.send("exit");
    assert!(c.server.wait().success());
    t.wait_for("the server's exit", |e| e.is("exit", sp));
    let ev = t.stop().events;
    let mut k = Checks::new();
    let sent = k.find_with(
        "the RST sent by the server",
        &ev,
        |e| e.kind() == "tcp_reset" && e["direction"] == "sent",
        json!({
            "pid": sp, "family": family, "saddr": c.ip, "sport": port,
            "daddr": c.client_ip, "dport": cport, "owner_pid": sp,
            "cause": "abort_on_close",
        }),
    );
    check_reason(&mut k, sent, Some("TCP_STATE"));
    k.find_with(
        "the RST received by this process's socket",
        &ev,
        |e| e.kind() == "tcp_reset" && e["direction"] == "received",
        json!({
            "family": family, "saddr": c.client_ip, "sport": cport, "daddr": c.ip,
            "dport": port, "owner_pid": me, "cause": "received",
        }),
    );
    k.find_with(
        "the client's socket closing on the RST",
        &ev,
        |e| is_state(e, cport, port) && e["new_state"] == "CLOSE",
        json!({"old_state": "ESTABLISHED", "owner_pid": me}),
    );
    k.find_with(
        "the server's socket closing on abort",
        &ev,
        |e| is_state(e, port, cport) && e["new_state"] == "CLOSE",
        json!({"old_state": "ESTABLISHED", "owner_pid": sp}),
    );
    k.finish(&ev);
}

#[test]
fn server_abort_resets_ipv4() {
    server_abort("127.0.0.1:0", "inet");
}

#[test]
fn server_abort_resets_ipv6() {
    server_abort("[::1]:0", "inet6");
}

/// The server close()s a connection that holds data it never read: the kernel resets it
/// (RFC 2525), the server's own doing (`abort_on_close`); this process receives the RST.
fn close_with_unread_data(bind: &str, family: &str) {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let t = Tracer::for_test(TCP_STATES);
    let mut c = connect(bind);
    let sp = c.server.pid();
    let (port, cport) = (c.port, c.client_port);
    t.wait_for("the server's conn_open", |e| is_accept(e, sp));
    c.client.write_all(b"never read by the server").unwrap();
    // Loopback queues the bytes on the server's socket before write() returns.
    c.server.send("close");
    c.server.expect("closed");
    t.wait_for("this process receiving the RST", |e| {
        e.kind() == "tcp_reset" && e["direction"] == "received"
    });
    let mut buf = [0u8; 16];
    let err = c
        .client
        .read(&mut buf)
        .expect_err("the connection was reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    c.server.send("exit");
    assert!(c.server.wait().success());
    t.wait_for("the server's exit", |e| e.is("exit", sp));
    let ev = t.stop().events;
    let mut k = Checks::new();
    let sent = k.find_with(
        "the RST the server's close() sent",
        &ev,
        |e| e.kind() == "tcp_reset" && e["direction"] == "sent",
        json!({
            "pid": sp, "family": family, "saddr": c.ip, "sport": port,
            "daddr": c.client_ip, "dport": cport, "owner_pid": sp,
            "cause": "abort_on_close",
        }),
    );
    check_reason(&mut k, sent, Some("TCP_ABORT_ON_CLOSE"));
    k.find_with(
        "the RST received by this process's socket",
        &ev,
        |e| e.kind() == "tcp_reset" && e["direction"] == "received",
        json!({
            "family": family, "saddr": c.client_ip, "sport": cport, "daddr": c.ip,
            "dport": port, "owner_pid": me, "cause": "received",
        }),
    );
    k.find_with(
        "the server's close() of its connection",
        &ev,
        |e| e.is("conn_close", sp) && e["fd"] == c.accepted_fd,
        json!({"family": family, "state": "ESTABLISHED"}),
    );
    k.that(
        ev.iter().filter(|e| e.kind() == "tcp_reset").count() == 2,
        "exactly one RST sent and one received",
    );
    k.finish(&ev);
}

#[test]
fn close_with_unread_data_resets_ipv4() {
    close_with_unread_data("127.0.0.1:0", "inet");
}

#[test]
fn close_with_unread_data_resets_ipv6() {
    close_with_unread_data("[::1]:0", "inet6");
}

/// 40 connections closed with unread data by this process (a load generator's way) make no
/// reset_storm; 40 connects refused by a closed port do, with their causes.
#[test]
fn resets_on_close_are_no_storm_refused_connects_are() {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test(TCP);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    for _ in 0..40 {
        let mut c = TcpStream::connect(addr).unwrap();
        let (a, _) = l.accept().unwrap();
        c.write_all(b"unread").unwrap();
        // The bytes are queued on `a` (loopback); closing it unread resets the connection.
        drop(a);
        drop(c);
    }
    let (_holder, port) = bound_not_listening();
    for _ in 0..40 {
        let err = TcpStream::connect(("127.0.0.1", port)).expect_err("nobody listens there");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    // The resets end in well under a second; the report at exit has the findings.
    let refusals = |ev: &[Value]| {
        ev.iter()
            .filter(|e| {
                e.kind() == "tcp_reset" && e["direction"] == "received" && e["dport"] == port
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while refusals(&t.events()) < 40 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let stopped = t.stop();
    let storm = stopped
        .findings
        .iter()
        .rev()
        .find(|f| f.kind() == "reset_storm" && f["port"] == port);
    let ev = &stopped.events;
    let mut k = Checks::new();
    let aborts = ev
        .iter()
        .filter(|e| e.kind() == "tcp_reset" && e["cause"] == "abort_on_close")
        .count();
    k.that(aborts == 40, format!("40 abort_on_close resets: {aborts}"));
    let storms: Vec<&Value> = stopped
        .findings
        .iter()
        .filter(|f| f.kind() == "reset_storm")
        .collect();
    k.that(
        !storms.iter().any(|f| f["port"] == addr.port()),
        format!("no reset_storm on the port closed with unread data: {storms:?}"),
    );
    match storm {
        None => k.that(
            false,
            format!("a reset_storm on the refused port {port}: {storms:?}"),
        ),
        Some(f) => {
            let causes = &f["causes"];
            k.that(
                causes.get("abort_on_close").is_none(),
                format!("abort_on_close not counted: {f}"),
            );
            let n = causes["received"].as_u64().unwrap_or(0)
                + causes["no_socket"].as_u64().unwrap_or(0);
            k.that(
                n >= 20,
                format!("the refusals' resets counted by cause: {f}"),
            );
        }
    }
    k.finish(ev);
}

/// A TCP socket bound to a loopback port but not listening: connecting to it is refused.
fn bound_not_listening() -> (OwnedFd, u16) {
    // SAFETY: plain syscalls on a fresh socket and zeroed, correctly sized address structs.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sin: libc::sockaddr_in = mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let r = libc::bind(
            fd.as_raw_fd(),
            &sin as *const _ as *const libc::sockaddr,
            len,
        );
        assert_eq!(r, 0);
        let mut len = len;
        let r = libc::getsockname(
            fd.as_raw_fd(),
            &mut sin as *mut _ as *mut libc::sockaddr,
            &mut len,
        );
        assert_eq!(r, 0);
        (fd, u16::from_be(sin.sin_port))
    }
}

#[test]
fn refused_connect() {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let (_holder, port) = bound_not_listening();
    let t = Tracer::for_test(TCP);
    let err = TcpStream::connect(("127.0.0.1", port)).expect_err("nobody listens there");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let conn = t.wait_for("the refused conn_open", |e| e.is("conn_open", me));
    assert_fields(
        &conn,
        json!({"role": "connect", "error": "ECONNREFUSED", "daddr": "127.0.0.1", "dport": port}),
    );
    let rst = t.wait_for("the RST received by the connecting socket", |e| {
        e.kind() == "tcp_reset" && e["direction"] == "received"
    });
    assert_fields(
        &rst,
        json!({
            "family": "inet", "daddr": "127.0.0.1", "dport": port, "owner_pid": me,
            "cause": "received",
        }),
    );
    let ev = t.stop().events;
    // 6.1 traces no reset sent for a packet without a socket; where one is, it says so.
    let sent: Vec<&Value> = ev
        .iter()
        .filter(|e| e.kind() == "tcp_reset" && e["direction"] == "sent" && e["sport"] == port)
        .collect();
    assert!(sent.len() <= 1, "{sent:?}");
    let mut k = Checks::new();
    for e in sent {
        k.fields(
            "the RST sent for the SYN (no socket)",
            e,
            json!({"saddr": "127.0.0.1", "owner_pid": null, "cause": "no_socket"}),
        );
        check_reason(&mut k, Some(e), Some("NO_SOCKET"));
    }
    k.finish(&ev);
}

/// accept() fails with EMFILE once the process has used up RLIMIT_NOFILE (the restarted Node
/// service incident); socket() fails the same way.
fn emfile(bind: &str, family: &str) {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test(TCP);
    let mut w = Workload::spawn(&mut workload!(
        "accept-emfile",
        "--bind",
        bind,
        "--nofile",
        16,
        "--sync"
    ));
    let wp = w.pid();
    w.expect("listening");
    // Once the tracer has printed an event of this process it has read its /proc facts (the
    // limit of 16 set at start-up); then the burst of socket()s, open()s and accept().
    t.wait_for("the workload's tcp_listen", |e| e.is("tcp_listen", wp));
    w.send("go");
    let truth = w.expect("emfile");
    assert_eq!(truth["accept_errno"], libc::EMFILE, "workload: {truth}");
    assert_eq!(truth["socket_errno"], libc::EMFILE, "workload: {truth}");
    // The analysis flags the exhaustion while the process is stuck at its limit.
    let finding = t.wait_for_finding(|f| f.kind() == "fd_exhaustion" && f["pid"] == wp);
    w.close_stdin();
    assert!(w.wait().success());
    let acc = t.wait_for("the failed tcp_accept", |e| {
        e.is("tcp_accept", wp) && e.get("error").is_some()
    });
    assert_fields(
        &acc,
        json!({
            "error": "EMFILE", "listen_fd": truth["listen_fd"], "family": family,
            "saddr": truth["ip"], "sport": truth["port"], "comm": "workload",
        }),
    );
    assert!(acc.get("fd").is_none(), "no fd on failure: {acc}");
    let sock = t.wait_for("the failed socket_open", |e| {
        e.is("socket_open", wp) && e.get("error").is_some()
    });
    assert_fields(
        &sock,
        json!({"error": "EMFILE", "family": "inet", "sock_type": 1}),
    );
    let stopped = t.stop();
    let ev = stopped.events;
    let mut k = Checks::new();
    // The connection that got queued: connect() succeeded from the workload itself.
    k.find_with(
        "the workload's conn_open",
        &ev,
        |e| e.is("conn_open", wp) && e["role"] == "connect",
        json!({"fd": truth["client_fd"], "daddr": truth["ip"], "dport": truth["port"]}),
    );
    match finding {
        Some(f) => {
            k.fields(
                "the fd_exhaustion finding",
                &f,
                json!({"comm": "workload", "fd_limit": 16, "severity": "critical"}),
            );
            k.that(
                f.u64_of("errors").unwrap_or(0) >= 1,
                format!("accept()/socket() failures counted: {f}"),
            );
            k.that(
                f.u64_of("open_fds").is_some_and(|n| n <= 16),
                format!("open_fds within the limit of 16: {f}"),
            );
        }
        None => k.that(false, "the fd_exhaustion finding: none"),
    }
    k.finish(&ev);
}

#[test]
fn accept_emfile_ipv4() {
    emfile("127.0.0.1:0", "inet");
}

#[test]
fn accept_emfile_ipv6() {
    emfile("[::1]:0", "inet6");
}
