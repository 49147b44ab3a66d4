//! A flood of bulk events (TCP, memory) into a tiny ring buffer loses records, counted per
//! kind and reported, while signals and exits, on their own ring buffer, all arrive. And the
//! other kernel counters, failed reads per program, stay at 0 under ordinary traffic.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    os::unix::process::ExitStatusExt,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tracer_tests::{EventExt, Tracer, Workload, require_root, tracer::tracer_bin, workload};

#[test]
fn a_bulk_flood_is_counted_and_never_crowds_out_critical_events() {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test(&["--ring-size", "4K", "--events", "tcp,signal,process"]);
    // Flood: socket()+close() as fast as four threads can, each pair two bulk records.
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    drop(UdpSocket::bind("127.0.0.1:0"));
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Meanwhile, five children killed with SIGTERM: ten critical records (signal, exit) plus
    // their forks and execs.
    let mut victims = Vec::new();
    let started = Instant::now();
    for _ in 0..5 {
        let mut w = Workload::spawn(&mut workload!("idle"));
        w.expect("ready");
        w.signal(libc::SIGTERM);
        let status = w.wait();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        victims.push(w.pid());
    }
    while started.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let pairs: u64 = flooders.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    for &v in &victims {
        t.wait_for("the victim's exit", |e| e.is("exit", v));
    }
    let stopped = t.stop();
    let summary = stopped.summary().unwrap_or_default().to_owned();
    for &v in &victims {
        assert!(
            stopped
                .events
                .iter()
                .any(|e| e.kind() == "signal" && e["target_pid"] == v),
            "the SIGTERM to {v} was lost in the flood; summary: {summary}"
        );
        assert!(
            stopped
                .events
                .iter()
                .any(|e| e.is("exit", v) && e["signal_name"] == "SIGTERM"),
            "the exit of {v} was lost in the flood; summary: {summary}"
        );
    }
    // The flood overflowed the 4 KiB ring: the loss is counted per kind and shown.
    assert!(
        pairs > 10_000,
        "the flood was too small to overflow anything: {pairs} sockets"
    );
    assert!(
        summary.contains("LOST")
            && (summary.contains("socket_open") || summary.contains("socket_close")),
        "lost bulk records must be counted per kind in the exit summary: {summary}"
    );
    let lost = summary.split("LOST").nth(1).unwrap_or("");
    for critical in ["signal", "exit", "fork", "exec"] {
        assert!(
            !lost.contains(critical),
            "{critical} records were lost: {summary}"
        );
    }
    let drops = stopped.events.iter().any(|e| e.kind() == "drops");
    let warned = stopped.stderr.iter().any(|l| l.contains("records lost"));
    assert!(
        drops || warned,
        "drops must be reported while running, not only at exit"
    );
}

/// Ordinary traffic: loopback TCP connections (connect, accept, send, receive, close), a dup
/// of a socket fd, and a child killed with SIGTERM, until `stop`.
fn ordinary_traffic(stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut rounds = 0u64;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
        let addr = listener.local_addr().expect("listener address");
        while !stop.load(Ordering::Relaxed) {
            let mut c = TcpStream::connect(addr).expect("connect over loopback");
            let (mut s, _) = listener.accept().expect("accept");
            c.write_all(b"ping").expect("send");
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).expect("receive");
            let dup = s.try_clone().expect("dup a socket fd");
            drop((c, s, dup));
            if rounds.is_multiple_of(50) {
                let mut w = Workload::spawn(&mut workload!("idle"));
                w.expect("ready");
                w.signal(libc::SIGTERM);
                w.wait();
            }
            rounds += 1;
        }
        rounds
    })
}

/// The per-program read-error counters are read, and ordinary traffic leaves them at 0: `tracer
/// doctor` (run during the traffic) says "program errors  0", and `tracer live`'s totals line
/// names no program errors.
#[test]
fn program_error_counters_are_read_and_stay_zero_under_ordinary_traffic() {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = ordinary_traffic(stop.clone());
    let doctor = Command::new(tracer_bin())
        .arg("doctor")
        .output()
        .expect("run tracer doctor");
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let rounds = traffic.join().expect("the traffic thread");
    let stopped = t.stop();
    let out = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.status.success(), "doctor failed:\n{out}");
    assert!(rounds > 10, "too little traffic: {rounds} connections");
    let line = out
        .lines()
        .find(|l| l.starts_with("program errors"))
        .unwrap_or_else(|| panic!("doctor prints no program errors line:\n{out}"));
    assert!(
        line.starts_with("program errors  0 in "),
        "program errors under ordinary traffic: {line}"
    );
    let summary = stopped.summary().unwrap_or_default();
    assert!(
        !summary.contains("program error"),
        "program errors under ordinary traffic: {summary}"
    );
    assert!(
        stopped.events.iter().any(|e| e.kind() == "conn_open"),
        "the traffic was not traced: {summary}"
    );
}

/// A read that fails is counted for its program and named in the exit totals: connect() given
/// an unreadable address fails with EFAULT, and sys_exit_connect's read of that address fails
/// too.
#[test]
fn a_failed_read_is_counted_for_its_program() {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test(&["--events", "tcp,process"]);
    // SAFETY: plain syscalls; the address passed to connect() is deliberately unmapped, which
    // the kernel reports as EFAULT.
    let (fd, ret, errno) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket()");
        let ret = libc::connect(fd, 8 as *const libc::sockaddr, 16);
        let errno = *libc::__errno_location();
        libc::close(fd);
        (fd, ret, errno)
    };
    assert_eq!(
        (ret, errno),
        (-1, libc::EFAULT),
        "connect() to an unmapped address"
    );
    let me = tracer_tests::test_pid();
    t.wait_for("the failed connect's conn_open", |e| {
        e.is("conn_open", me) && e["fd"] == fd
    });
    let stopped = t.stop();
    let summary = stopped.summary().unwrap_or_default();
    assert!(
        summary.contains("1 program error (sys_exit_connect: 1)"),
        "the failed read is not counted: {summary}"
    );
}
