//! Socket fds that no socket() or accept() made: inherited through fork, duplicated with
//! dup/dup2/dup3/fcntl(F_DUPFD_CLOEXEC), made in pairs by socketpair(). The tracer's open-socket
//! count of a process (the report's `stats.open_sockets`, and `tracer live`'s report at exit)
//! must equal the `socket:` links in /proc/PID/fd.
use std::{
    collections::BTreeMap,
    net::{TcpListener, UdpSocket},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    Tracer,
    recorder_util::{Bin, Recording, TempDir, dump_events},
    require_root,
    servers::{self, Nginx},
    test_pid,
};

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Open socket fds of `pid`, from /proc.
fn proc_sockets(pid: u32) -> i64 {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"));
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count() as i64
}

/// pid → open sockets, from a report's `stats.open_sockets`.
fn reported(report: &Value) -> BTreeMap<u32, i64> {
    report["stats"]["open_sockets"]
        .as_array()
        .unwrap_or_else(|| panic!("the report has no stats.open_sockets: {report}"))
        .iter()
        .map(|r| {
            (
                r["pid"].as_u64().unwrap() as u32,
                r["sockets"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// pid → open sockets, from the OPEN SOCKETS section of a text report.
fn reported_text(text: &str) -> BTreeMap<u32, i64> {
    text.lines()
        .skip_while(|l| !l.starts_with("OPEN SOCKETS"))
        .skip(2)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(f.len() - 2)?.parse().ok()?))
        })
        .collect()
}

fn report(bin: &Bin, dir: &std::path::Path) -> Value {
    bin.run(
        &["report".as_ref(), dir.as_os_str(), "--json".as_ref()],
        TOOL_TIMEOUT,
    )
    .ok()
    .json()
}

fn check(ok: bool, msg: impl FnOnce() -> String) {
    assert!(ok, "{}", msg());
}

/// dup, dup2, dup3 and fcntl(F_DUPFD_CLOEXEC) of a listening socket, a dup2 onto another
/// socket fd, a socketpair, and a forked child that closes one inherited socket fd: the counts
/// of this process and the child equal /proc's; closing a duplicate is a socket_close, no
/// conn_close.
#[test]
fn dups_socketpairs_and_inherited_sockets_are_counted() {
    if !require_root() {
        return;
    }
    let bin = Bin::pinned();
    let dump = TempDir::new("fds-dump");
    let dir = dump.join("d");
    let me = test_pid();
    let rec = Recording::start(&bin, &dir, &["--pid", &me.to_string()]);

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a listener");
    let l = listener.as_raw_fd();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let u = udp.as_raw_fd();
    let mut pair = [-1i32; 2];
    // SAFETY: plain fd syscalls on fds this test owns; `pair` outlives the call.
    let (d1, d2, d3, d4, closed, rc) = unsafe {
        let d1 = libc::dup(l);
        let d2 = libc::dup2(l, 200);
        let d3 = libc::dup3(l, 201, libc::O_CLOEXEC);
        let d4 = libc::fcntl(l, libc::F_DUPFD_CLOEXEC, 300);
        // Onto the UDP socket's fd: that socket is closed, the count does not change.
        let replaced = libc::dup2(l, u);
        assert_eq!(replaced, u);
        let closed = libc::close(200);
        let rc = libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr());
        (d1, d2, d3, d4, closed, rc)
    };
    assert!(d1 >= 0 && d2 == 200 && d3 == 201 && d4 >= 300 && closed == 0 && rc == 0);

    // A child holding every socket fd of this process, that closes one it inherited.
    let mut sync = [-1i32; 2];
    // SAFETY: pipe fills `sync`; the child only makes async-signal-safe calls before _exit.
    let child = unsafe {
        assert_eq!(libc::pipe(sync.as_mut_ptr()), 0);
        let pid = libc::fork();
        if pid == 0 {
            libc::close(d1);
            libc::write(sync[1], b"x".as_ptr().cast(), 1);
            libc::pause();
            libc::_exit(0);
        }
        assert!(pid > 0, "fork failed");
        let mut b = 0u8;
        assert_eq!(libc::read(sync[0], (&raw mut b).cast(), 1), 1);
        pid as u32
    };
    // Let the recorder see everything, then read /proc at the same moment as the counts.
    std::thread::sleep(Duration::from_millis(1500));
    let (mine, childs) = (proc_sockets(me), proc_sockets(child));
    let recorded = rec.stop();
    // SAFETY: kill/waitpid on the child this test forked, by its pid.
    unsafe {
        libc::kill(child as i32, libc::SIGKILL);
        libc::waitpid(child as i32, std::ptr::null_mut(), 0);
    }
    let counts = reported(&report(&bin, &dir));
    let evs = dump_events(&bin, &dir);
    let of = |kind: &str| -> Vec<&Value> {
        evs.iter()
            .filter(|e| e["kind"] == kind && e["pid"] == me)
            .collect()
    };
    let dups: Vec<(i64, i64, bool)> = of("fd_dup")
        .iter()
        .map(|e| {
            (
                e["oldfd"].as_i64().unwrap(),
                e["newfd"].as_i64().unwrap(),
                e["replaced"].as_bool().unwrap(),
            )
        })
        .collect();
    let want = [
        (l as i64, d1 as i64, false),
        (l as i64, 200, false),
        (l as i64, 201, false),
        (l as i64, d4 as i64, false),
        (l as i64, u as i64, true),
    ];
    let summary = || {
        format!(
            "fd_dup: {dups:?}\nrecorder stderr:\n{}",
            recorded.stderr.join("\n")
        )
    };
    check(dups == want, || format!("want {want:?}\n{}", summary()));
    check(of("socket_close").iter().any(|e| e["fd"] == 200), || {
        format!("no socket_close of the duplicate fd 200\n{}", summary())
    });
    check(!of("conn_close").iter().any(|e| e["fd"] == 200), || {
        "closing a duplicate was taken for the connection's close".into()
    });
    check(
        of("socket_open")
            .iter()
            .filter(|e| e["fd"] == pair[0] || e["fd"] == pair[1])
            .count()
            == 2,
        || format!("socketpair's two fds {pair:?} are not socket_open records"),
    );
    check(
        evs.iter()
            .any(|e| e["kind"] == "socket_close" && e["pid"] == child && e["fd"] == d1),
        || format!("the child's close of inherited fd {d1} is no socket_close"),
    );
    check(counts.get(&me) == Some(&mine), || {
        format!("this process: /proc has {mine} sockets, the report {counts:?}")
    });
    check(counts.get(&child) == Some(&childs), || {
        format!("the child {child}: /proc has {childs} sockets, the report {counts:?}")
    });
    // SAFETY: closing fds this test made.
    unsafe {
        for fd in [d1, d3, d4, pair[0], pair[1], sync[0], sync[1]] {
            libc::close(fd);
        }
    }
}

/// nginx's master and worker: the worker inherits the master's listening socket and channel
/// sockets through fork. Both counts equal /proc's, in `tracer report` on the dump and in
/// `tracer live`'s report at exit.
#[test]
fn nginx_master_and_worker_socket_counts_match_proc() {
    if !require_root() {
        return;
    }
    let nginx_only: Vec<servers::Needed> = servers::needed()
        .into_iter()
        .filter(|n| n.package == "nginx-light")
        .collect();
    if let Err(e) = servers::install_missing(&nginx_only) {
        assert!(!servers::in_ci(), "CI=true and nginx is not available: {e}");
        eprintln!("SKIP: {e}");
        return;
    }
    let bin = Bin::pinned();
    let dump = TempDir::new("fds-nginx-dump");
    let dir = dump.join("d");
    let me = test_pid().to_string();
    let rec = Recording::start(&bin, &dir, &["--pid", &me]);
    let live = Command::new(bin.path())
        .args(["live", "--pid", &me, "--duration", "12s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tracer live");
    let live_pid = live.id();
    // Both attached (live has no ready signal: its programs load within a few seconds).
    std::thread::sleep(Duration::from_secs(4));
    let mut nginx = Nginx::start(1);
    let master = nginx.guard.pid();
    for _ in 0..20 {
        servers::exchange(nginx.port, b"GET / HTTP/1.0\r\n\r\n").expect("nginx answers");
    }
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .expect("read nginx's children");
    let worker: u32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("nginx has a worker");
    std::thread::sleep(Duration::from_millis(1500));
    let (m, w) = (proc_sockets(master), proc_sockets(worker));
    let recorded = rec.stop();
    let out = live
        .wait_with_output()
        .unwrap_or_else(|e| panic!("tracer live (pid {live_pid}): {e}"));
    nginx.guard.stop();
    let counts = reported(&report(&bin, &dir));
    let live_text = String::from_utf8_lossy(&out.stdout);
    let live_counts = reported_text(&live_text);
    let ctx = || {
        format!(
            "master {master}: /proc {m}; worker {worker}: /proc {w}\nreport: {counts:?}\nlive: {live_counts:?}\nrecorder stderr:\n{}\nlive stderr:\n{}",
            recorded.stderr.join("\n"),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    eprintln!(
        "tracer-tests: {}",
        ctx().lines().take(3).collect::<Vec<_>>().join("; ")
    );
    check(m >= 2 && w >= 2, || {
        format!("nginx holds too few sockets\n{}", ctx())
    });
    check(counts.get(&master) == Some(&m), || {
        format!("master\n{}", ctx())
    });
    check(counts.get(&worker) == Some(&w), || {
        format!("worker\n{}", ctx())
    });
    check(live_counts.get(&master) == Some(&m), || {
        format!("live, master\n{}", ctx())
    });
    check(live_counts.get(&worker) == Some(&w), || {
        format!("live, worker\n{}", ctx())
    });
}

/// A process that exits holding socket fds: the kernel closes them without a close() the
/// programs see, so their SOCK_FDS entries outlive it; the collector's sweep of the per-process
/// maps (every `TRACER_SWEEP_SECS`, 30 s by default) deletes them once the process is gone.
#[test]
fn the_socket_fds_of_an_exited_process_are_swept_from_the_kernel() {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test_env(
        &["--events", "tcp,process"],
        &[("TRACER_SWEEP_SECS", "1"), ("TRACER_LOG", "tracer=debug")],
    );
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import os, socket\nkept = [socket.socket() for _ in range(5)]\nprint(os.getpid(), flush=True)\nos._exit(0)",
        ])
        .output()
        .expect("python3");
    assert!(out.status.success(), "python3: {out:?}");
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the child's pid");
    t.wait_for("the child's exit", |e| {
        e["kind"] == "exit" && e["pid"] == pid
    });
    // "swept the per-process maps: N of M socket fds and ...": at least the child's five.
    let deleted = |l: &str| -> Option<u64> {
        l.split("swept the per-process maps: ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse()
            .ok()
    };
    let line = t.wait_for_stderr(Duration::from_secs(15), |l| {
        deleted(l).is_some_and(|n| n >= 5)
    });
    let stopped = t.stop();
    assert!(
        line.is_some(),
        "a sweep deleted the five socket fds of {pid}; the sweeps said:\n{}",
        stopped
            .stderr
            .iter()
            .filter(|l| l.contains("swept"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
