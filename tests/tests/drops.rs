//! A flood of bulk events (TCP, memory) into a tiny ring buffer loses records, counted per
//! kind and reported, while signals and exits, on their own ring buffer, all arrive.
use std::{
    net::UdpSocket,
    os::unix::process::ExitStatusExt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tracer_tests::{EventExt, Tracer, Workload, require_root, workload};

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
