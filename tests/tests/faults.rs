//! Faults the recorder must survive and keep the newest minutes through: a full disk (a real
//! 3 MiB tmpfs), a stdout nobody reads, and running with only the privileges it still needs.
use std::{
    ffi::CString,
    io::{BufRead, BufReader},
    net::TcpListener,
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tracer_tests::{
    Checks, EventExt, Workload,
    recorder_util::{Bin, Recording, TempDir, churn_once, dump_events, listing, segments},
    require_root, test_pid, workload,
};

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// A tmpfs of `size` mounted by the test on a directory of its own, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&at).expect("create the mount point");
        let c = |s: &str| CString::new(s).expect("no NUL");
        let (src, fs, opts) = (
            c("tracer-test"),
            c("tmpfs"),
            c(&format!("size={size},mode=0700")),
        );
        let target = c(at.to_str().expect("utf-8 path"));
        // SAFETY: every pointer is a live NUL-terminated string for the duration of the call.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            r,
            0,
            "mount a {size} tmpfs on {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        );
        Tmpfs(at)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.to_str().unwrap_or_default()).unwrap_or_default();
        // SAFETY: a live NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The number before `marker` in the recorder's summary line, if the line says it.
/// `tracer replay DIR --stats --json`, parsed.
fn replay_stats(bin: &Bin, dir: &std::path::Path) -> Value {
    bin.run(
        &[
            "replay".as_ref(),
            dir.as_os_str(),
            "--stats".as_ref(),
            "--json".as_ref(),
        ],
        TOOL_TIMEOUT,
    )
    .ok()
    .json()
}

fn summary_count(summary: &str, marker: &str) -> Option<u64> {
    summary
        .split(marker)
        .next()?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// `tracer record` on a 3 MiB tmpfs with the default 1 GiB `--max-size`, under a steady
/// loopback connection workload that fills it several times over: the recorder keeps running,
/// deletes its own oldest segments to keep the newest events, and its exit line and the dump
/// agree on what was not recorded.
#[test]
fn a_full_disk_keeps_the_newest_events() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let bin = Bin::pinned();
    let tmp = TempDir::new("full-disk");
    let fs = Tmpfs::mount(tmp.join("mnt"), "3m");
    let dir = fs.path().join("dump");
    let pid = test_pid().to_string();
    let rec = Recording::start(&bin, &dir, &["--pid", &pid]);
    let mut oldest = Workload::spawn(&mut workload!("exit", "--code", 66));
    assert_eq!(oldest.wait().code(), Some(66));

    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let addr = l.local_addr().expect("its address");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut connections = 0u64;
    // Until the disk has been full and the first segment (with the first marker) has gone to
    // make room: a 3 MiB disk holds about 400k records, some 30k connections' worth.
    loop {
        for _ in 0..200 {
            churn_once(&l, addr);
        }
        connections += 200;
        if segments(&dir).first().is_some_and(|s| s.seq >= 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no segment deleted on the full disk after {connections} connections:\n{}",
            listing(&dir)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut newest = Workload::spawn(&mut workload!("exit", "--code", 77));
    assert_eq!(newest.wait().code(), Some(77));
    let recorded = rec.stop();
    let summary = recorded.summary().unwrap_or_default().to_owned();

    let mut k = Checks::new();
    k.that(
        !recorded.stderr.iter().any(|l| l.contains("panicked")),
        format!("the recorder panicked:\n{}", recorded.stderr.join("\n")),
    );
    k.that(
        summary_count(&summary, " old segment file(s) deleted to keep the newest")
            .is_some_and(|n| n > 0),
        format!("the exit line says the full disk cost old segments: {summary:?}"),
    );
    let not_recorded = summary_count(&summary, " events NOT recorded").unwrap_or(0);
    let replay = bin.run(
        &[
            "replay".as_ref(),
            dir.as_os_str(),
            "--json".as_ref(),
            "--no-findings".as_ref(),
            "--events".as_ref(),
            "process".as_ref(),
        ],
        TOOL_TIMEOUT,
    );
    let ev: Vec<Value> = replay
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    k.that(
        replay.status.success() && !replay.stderr.contains("panicked"),
        format!(
            "replay of the dump left on a full disk exits 0, got {}; stderr:\n{}",
            replay.status, replay.stderr
        ),
    );
    k.find_with(
        "the marker made just before stopping (exit 77): the newest events are kept",
        &ev,
        |e| e.is("exit", newest.pid()),
        json!({"exit_code": 77}),
    );
    k.that(
        !ev.iter().any(|e| e.pid() == oldest.pid()),
        "the marker made before the disk filled (exit 66) went with the oldest segments",
    );
    let stats = replay_stats(&bin, &dir);
    k.that(
        stats["corrupt_blocks"] == 0 && stats["truncated"] == 0,
        format!("the dump is intact: {stats}"),
    );
    k.that(
        stats["size_bytes"].as_u64().is_some_and(|b| b <= 3 << 20),
        format!("the dump fits the 3 MiB disk: {stats}"),
    );
    k.that(
        stats["recorder_lost_total"].as_u64() == Some(not_recorded),
        format!(
            "the dump's loss ({}) is the exit line's ({not_recorded} NOT recorded): {summary}",
            stats["recorder_lost_total"]
        ),
    );
    k.that(
        (not_recorded == 0) == stats["recorder_gap_first"].is_null(),
        format!("a gap's span is given when something was lost: {stats}"),
    );
    eprintln!(
        "tracer-tests: {connections} connections; {} events in the dump, {}..{}; summary: \
         {summary}; {:?}",
        stats["events"],
        stats["first"],
        stats["last"],
        started.elapsed()
    );
    k.finish(&ev[ev.len().saturating_sub(20)..]);
}

/// Lines a child wrote on stderr, read by a thread as they come.
struct Stderr(Arc<Mutex<Vec<String>>>);

impl Stderr {
    fn read(child: &mut Child) -> Stderr {
        let err = child.stderr.take().expect("stderr piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Stderr(lines)
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn wait_for(&self, mark: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.lines().iter().any(|l| l.contains(mark)) {
            assert!(
                Instant::now() < deadline,
                "no {mark:?} on stderr in {timeout:?}:\n{}",
                self.lines().join("\n")
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `tracer record --print --json` with stdout a pipe that nobody reads (the read end stays open
/// and is never read, as `| less` paused): 25,000 loopback connections, then SIGINT. The
/// collector exits promptly, its totals count the lines it could not print, and the recording
/// made meanwhile lost nothing.
#[test]
fn a_stdout_nobody_reads_blocks_neither_draining_nor_recording() {
    if !require_root() {
        return;
    }
    const CONNECTIONS: u64 = 25_000;
    let bin = Bin::pinned();
    let tmp = TempDir::new("blocked-reader");
    let dir = tmp.join("dump");
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints, as pipe2 wants.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just returned these two fds, owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let pid = test_pid().to_string();
    let mut child = Command::new(bin.path())
        .args(["record", "--print", "--json", "--pid", &pid, "-o"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tracer record");
    let err = Stderr::read(&mut child);
    err.wait_for("tracer: tracing (", Duration::from_secs(60));

    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let addr = l.local_addr().expect("its address");
    let churn_started = Instant::now();
    for i in 0..CONNECTIONS {
        churn_once(&l, addr);
        if i % 500 == 499 {
            // A busy host, not a ring-buffer overflow.
            thread::sleep(Duration::from_millis(5));
        }
    }
    let churn = churn_started.elapsed();
    // Time for the last records to be drained before the stop.
    thread::sleep(Duration::from_secs(1));
    let stopped = Instant::now();
    // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for tracer") {
            break s;
        }
        if stopped.elapsed() > Duration::from_secs(30) {
            // SAFETY: as above.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "tracer record did not exit within 30 s of SIGINT with its stdout unread:\n{}",
                err.lines().join("\n")
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let exit_time = stopped.elapsed();
    thread::sleep(Duration::from_millis(200));
    drop(read_end);
    let stderr = err.lines();
    let find = |p: &str| {
        stderr
            .iter()
            .find(|l| l.starts_with(p))
            .cloned()
            .unwrap_or_default()
    };
    let totals = find("tracer: ");
    let totals = stderr
        .iter()
        .rev()
        .find(|l| l.contains(" events in "))
        .cloned()
        .unwrap_or(totals);
    let recorded = find("recorded ");
    let events = summary_count(&totals, " events in ").unwrap_or(0);
    let unprinted = summary_count(&totals, " lines NOT printed").unwrap_or(0);

    let mut k = Checks::new();
    k.that(
        status.success(),
        format!("tracer record exits 0 after SIGINT, got {status}"),
    );
    k.that(
        exit_time < Duration::from_secs(10),
        format!("it exits promptly with its stdout unread: {exit_time:?}"),
    );
    k.that(
        events >= 3 * CONNECTIONS,
        format!("the rings were drained: {events} events for {CONNECTIONS} connections: {totals}"),
    );
    k.that(
        // A pipe holds 64 KiB: a few hundred lines at most were printed.
        unprinted > 0 && unprinted + 1000 >= events,
        format!("the totals count the lines stdout did not take: {totals}"),
    );
    k.that(
        !recorded.contains("NOT recorded")
            && summary_count(&recorded, " events in ").is_some_and(|n| n >= events),
        format!("the recording lost nothing to the blocked stdout: {recorded} (live: {totals})"),
    );
    let stats = replay_stats(&bin, &dir);
    k.that(
        stats["events"].as_u64().is_some_and(|n| n + 1000 >= events) && stats["recorder_lost"] == 0,
        format!("the dump holds every event the collector took: {stats} ({totals})"),
    );
    eprintln!(
        "tracer-tests: {CONNECTIONS} connections in {churn:?}, exit {exit_time:?} after SIGINT; \
         {totals}; {recorded}"
    );
    k.finish(&[]);
}

/// A `Cap...:` or other field of /proc/PID/status.
fn status_field(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read its status");
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Once attached, the recorder runs with no_new_privs and only CAP_DAC_READ_SEARCH,
/// CAP_SYS_PTRACE and CAP_BPF (effective, permitted and bounding), and still records.
#[test]
fn the_recorder_keeps_only_the_capabilities_it_uses() {
    if !require_root() {
        return;
    }
    const KEPT: u64 = 1 << 2 | 1 << 19 | 1 << 39;
    let bin = Bin::pinned();
    let tmp = TempDir::new("privileges");
    let dir = tmp.join("dump");
    let pid = test_pid().to_string();
    let rec = Recording::start(&bin, &dir, &["--pid", &pid]);
    let rpid = rec.pid();
    // The drop follows the ready line closely: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_field(rpid, "NoNewPrivs") != "1" && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let caps = |f: &str| u64::from_str_radix(&status_field(rpid, f), 16).expect("hex caps");
    let mut k = Checks::new();
    k.that(
        status_field(rpid, "NoNewPrivs") == "1",
        "the recorder sets no_new_privs",
    );
    for f in ["CapEff", "CapPrm", "CapBnd"] {
        k.that(
            caps(f) == KEPT,
            format!("{f} of the recorder is {:#x}, not {KEPT:#x}", caps(f)),
        );
    }
    k.that(
        caps("CapInh") == 0 && caps("CapAmb") == 0,
        "no inheritable or ambient capabilities",
    );

    // Still recording after the drop: a process and a connection of ours.
    let mut marker = Workload::spawn(&mut workload!("exit", "--code", 77));
    assert_eq!(marker.wait().code(), Some(77));
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let addr = l.local_addr().expect("its address");
    for _ in 0..20 {
        churn_once(&l, addr);
    }
    // Two ticks of the connection scanner, a map read.
    thread::sleep(Duration::from_millis(2500));
    let recorded = rec.stop();
    let ev = dump_events(&bin, &dir);
    k.find_with(
        "the marker process's exit, recorded after the drop",
        &ev,
        |e| e.is("exit", marker.pid()),
        json!({"exit_code": 77}),
    );
    let opens = ev.iter().filter(|e| e["kind"] == "conn_open").count();
    k.that(
        opens >= 40,
        format!("the 20 connections after the drop are recorded: {opens} conn_open"),
    );
    let complaints: Vec<&String> = recorded
        .stderr
        .iter()
        .filter(|l| l.contains("ermission") || l.contains("not permitted") || l.contains("cannot"))
        .collect();
    k.that(
        complaints.is_empty(),
        format!("nothing the recorder still does is refused: {complaints:?}"),
    );
    k.finish(&ev[ev.len().saturating_sub(20)..]);
}
