//! The flight recorder: `tracer record` writes a dump that `tracer replay` turns back into
//! exactly what was printed live, that survives SIGKILL up to the last flush, that stays within
//! its size bound while rotating, and that only its owner can read.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::process::ExitStatusExt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tracer_tests::{
    Checks, EventExt, Workload,
    recorder_util::{
        Bin, Recorded, Recording, TempDir, churn_once, first_difference, is_finding_line, listing,
        mode_of, segments,
    },
    require_root, test_pid, workload,
};

/// How long a replay or report of a small dump may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the test waits for the recorder to print an event it has just triggered.
const PRINT_TIMEOUT: Duration = Duration::from_secs(10);
/// The recorder's default `--flush-interval`.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What the scripted scenario did, to find it again in the output.
struct Scenario {
    /// The TCP server child, which aborted its connection (RST) and exited.
    server: u32,
    /// The child killed by SIGTERM from this process.
    terminated: u32,
    /// The child of `fork-exit`, which exited with [`FORK_EXIT_CODE`].
    forked: u32,
}

const FORK_EXIT_CODE: i32 = 42;

/// A TCP exchange with a child that aborts the connection, a child killed by SIGTERM, and a
/// fork/exec/exit with a distinctive exit code.
fn scenario() -> Scenario {
    let mut srv = Workload::spawn(&mut workload!("tcp-server", "--bind", "127.0.0.1:0"));
    let port = srv.expect("listening")["port"]
        .as_u64()
        .expect("the server's port") as u16;
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
    srv.expect("accepted");
    c.write_all(b"hello").expect("write to the server");
    srv.send("abort");
    srv.expect("aborted");
    // The server's RST arrives here: the read fails (or sees the end).
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 16];
    let _ = c.read(&mut buf);
    drop(c);
    srv.send("exit");
    srv.close_stdin();
    assert!(srv.wait().success(), "the tcp-server workload exits 0");

    let mut idle = Workload::spawn(&mut workload!("idle", "--secs", 30));
    idle.expect("ready");
    idle.signal(libc::SIGTERM);
    assert_eq!(
        idle.wait().signal(),
        Some(libc::SIGTERM),
        "the idle child dies of SIGTERM"
    );

    let mut fe = Workload::spawn(&mut workload!("fork-exit", "--code", FORK_EXIT_CODE));
    let forked = fe.expect("reaped")["child"]
        .as_u64()
        .expect("the forked child's pid") as u32;
    assert!(fe.wait().success(), "the fork-exit workload exits 0");
    Scenario {
        server: srv.pid(),
        terminated: idle.pid(),
        forked,
    }
}

/// Waits until the recorder has printed the last events of the scenario.
fn wait_for_scenario(rec: &Recording, s: &Scenario) {
    let forked = s.forked;
    rec.wait_for("the forked child's exit", PRINT_TIMEOUT, |e| {
        e.is("exit", forked)
    });
    let t = s.terminated;
    rec.wait_for("the SIGTERMed child's exit", PRINT_TIMEOUT, |e| {
        e.is("exit", t)
    });
    rec.wait_for(
        "the signal_source finding for the SIGTERM",
        PRINT_TIMEOUT,
        |e| e.kind() == "signal_source" && e["target_pid"] == t,
    );
}

/// Checks that the scenario's events are among `lines` (so that equalities are not vacuous).
fn check_scenario(k: &mut Checks, what: &str, lines: &[String], s: &Scenario, me: u32) {
    let ev: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    k.find_with(
        &format!("{what}: the forked child's exit"),
        &ev,
        |e| e.is("exit", s.forked),
        json!({"exit_code": FORK_EXIT_CODE, "comm": "workload"}),
    );
    k.find_with(
        &format!("{what}: the SIGTERM to the idle child"),
        &ev,
        |e| e.kind() == "signal" && e["target_pid"] == s.terminated,
        json!({"pid": me, "signal_name": "SIGTERM"}),
    );
    k.find_with(
        &format!("{what}: the idle child's exit"),
        &ev,
        |e| e.is("exit", s.terminated),
        json!({"signal_name": "SIGTERM"}),
    );
    k.find(&format!("{what}: the server's reset"), &ev, |e| {
        e.kind() == "tcp_reset"
    });
    k.find(&format!("{what}: the server's exec"), &ev, |e| {
        e.is("exec", s.server)
    });
    k.find_with(
        &format!("{what}: the signal_source finding"),
        &ev,
        |e| e.kind() == "signal_source" && e["target_pid"] == s.terminated,
        json!({"sender_pid": me, "signal": "SIGTERM"}),
    );
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The event lines (not findings) of `lines`.
fn event_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !is_finding_line(l))
        .cloned()
        .collect()
}

fn stderr_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("error") || l.contains("warning"))
        .collect()
}

/// `tracer record --print --json`, then `tracer replay --json` of its dump: the same lines,
/// byte for byte and in the same order, events and findings; `--stats` counts those events.
#[test]
fn replay_prints_exactly_what_record_printed() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let bin = Bin::pinned();
    let tmp = TempDir::new("record-replay");
    let dir = tmp.join("dump");
    let me = test_pid();
    let pid = me.to_string();
    let rec = Recording::start(&bin, &dir, &["--pid", &pid, "--print", "--json"]);
    let s = scenario();
    wait_for_scenario(&rec, &s);
    let recorded = rec.stop();
    let live = recorded.texts();

    let replay = bin
        .run(
            &[
                "replay".as_ref(),
                dir.as_os_str(),
                "--json".as_ref(),
                "--pid".as_ref(),
                pid.as_ref(),
            ],
            TOOL_TIMEOUT,
        )
        .ok();
    let replayed = replay.lines();
    let mut k = Checks::new();
    check_scenario(&mut k, "live", &live, &s, me);
    k.that(
        live == replayed,
        format!(
            "replay --json --pid {pid} differs from what record --print --json printed: {}",
            first_difference("live", &live, "replay", &replayed)
        ),
    );
    k.that(
        stderr_warnings(&replay.stderr).is_empty(),
        format!(
            "replay of an intact dump warns:\n{}",
            replay.stderr.trim_end()
        ),
    );

    // --stats counts exactly the events that replay printed, per kind.
    let stats = bin
        .run(
            &[
                "replay".as_ref(),
                dir.as_os_str(),
                "--stats".as_ref(),
                "--json".as_ref(),
                "--pid".as_ref(),
                pid.as_ref(),
            ],
            TOOL_TIMEOUT,
        )
        .ok()
        .json();
    let events = json_lines(&event_lines(&live));
    let mut per_kind: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        *per_kind.entry(e.kind().to_owned()).or_default() += 1;
    }
    k.fields(
        "replay --stats --json",
        &stats,
        json!({
            "events": events.len(),
            "events_per_kind": per_kind,
            "corrupt_blocks": 0,
            "truncated": 0,
            "recorder_lost": 0,
            "warnings": 0,
        }),
    );
    k.that(
        stats["segments"] == 1,
        format!("one segment: {}", stats["segments"]),
    );
    k.that(
        stats["records"].as_u64().unwrap_or(0) >= events.len() as u64,
        format!(
            "records ({}) include at least the {} events",
            stats["records"],
            events.len()
        ),
    );
    eprintln!(
        "tracer-tests: {} lines ({} events) live and in replay; {:?}",
        live.len(),
        events.len(),
        started.elapsed()
    );
    k.finish(&json_lines(&live));
}

/// Connection churn on a thread of this process until `stop` is set, counted in `count`.
fn churn_until(stop: Arc<AtomicBool>, count: Arc<AtomicU64>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
        let addr = l.local_addr().expect("its address");
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..5 {
                churn_once(&l, addr);
            }
            count.fetch_add(5, Ordering::Relaxed);
            // A few thousand connections a second: a busy host, not a ring-buffer overflow.
            thread::sleep(Duration::from_millis(1));
        }
    })
}

/// SIGKILL in the middle of a flood of events: everything the recorder had received more than
/// a flush interval before the kill replays (it printed it, so it had it), replay exits 0, and
/// the report works on what survived. Then a copy cut in the middle of its last block: a
/// warning names the truncated tail, the rest replays, exit 0.
#[test]
fn sigkill_keeps_everything_up_to_the_last_flush() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let bin = Bin::pinned();
    let tmp = TempDir::new("record-kill");
    let dir = tmp.join("dump");
    let me = test_pid();
    let pid = me.to_string();
    let rec = Recording::start(&bin, &dir, &["--pid", &pid, "--print", "--json"]);
    let s = scenario();
    wait_for_scenario(&rec, &s);
    thread::sleep(Duration::from_millis(500));
    // A flood is under way when the recorder dies.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let flood = churn_until(stop.clone(), count.clone());
    thread::sleep(Duration::from_millis(2500));
    let killed_at = Instant::now();
    let recorded: Recorded = rec.kill();
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("the churn thread");
    assert_eq!(
        recorded.status.signal(),
        Some(libc::SIGKILL),
        "the recorder died of SIGKILL"
    );
    let cutoff = killed_at - FLUSH_INTERVAL - Duration::from_millis(500);
    let must_survive: Vec<String> = recorded
        .lines
        .iter()
        .filter(|(t, _)| *t < cutoff)
        .map(|(_, l)| l.clone())
        .collect();
    let live = recorded.texts();

    let replay = bin.run(
        &[
            "replay".as_ref(),
            dir.as_os_str(),
            "--json".as_ref(),
            "--pid".as_ref(),
            pid.as_ref(),
        ],
        TOOL_TIMEOUT,
    );
    let replayed = replay.lines();
    let stats = bin
        .run(
            &[
                "replay".as_ref(),
                dir.as_os_str(),
                "--stats".as_ref(),
                "--json".as_ref(),
            ],
            TOOL_TIMEOUT,
        )
        .json();
    let mut k = Checks::new();
    k.that(
        replay.status.success(),
        format!(
            "replay of a killed recorder's dump exits 0, got {}; stderr:\n{}",
            replay.status, replay.stderr
        ),
    );
    check_scenario(&mut k, "replay after SIGKILL", &replayed, &s, me);
    k.that(
        must_survive.len() <= replayed.len() && replayed[..must_survive.len()] == must_survive[..],
        format!(
            "the {} lines printed more than {:?} before the kill are not all in the replay: {}",
            must_survive.len(),
            killed_at - cutoff,
            first_difference(
                "printed before the cutoff",
                &must_survive,
                "replay",
                &replayed
            )
        ),
    );
    // Past the cutoff, replay and live agree as far as both go (live lost its buffered output,
    // replay what was not flushed).
    let (le, re) = (event_lines(&live), event_lines(&replayed));
    let n = le.len().min(re.len());
    k.that(
        le[..n] == re[..n],
        format!(
            "replayed events differ from the printed ones: {}",
            first_difference("live events", &le[..n], "replayed events", &re[..n])
        ),
    );
    let truncated = stats["truncated"].as_u64().unwrap_or(0);
    k.that(
        stats["corrupt_blocks"] == 0,
        format!("no corrupt block after SIGKILL: {stats}"),
    );
    if truncated > 0 {
        k.that(
            replay.stderr.contains("truncated"),
            format!(
                "the dump has a truncated tail ({truncated}) but replay does not say so:\n{}",
                replay.stderr
            ),
        );
    }

    // The report works on what survived and names the SIGTERM's sender.
    let report = bin
        .run(
            &[
                "report".as_ref(),
                dir.as_os_str(),
                "--json".as_ref(),
                "--pid".as_ref(),
                pid.as_ref(),
            ],
            TOOL_TIMEOUT,
        )
        .ok()
        .json();
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    k.that(
        report["stats"].is_object() && report["timeline"].is_array(),
        "report --json has stats and a timeline",
    );
    k.find_with(
        "report after SIGKILL: the signal_source finding",
        &findings,
        |f| f.kind() == "signal_source" && f["target_pid"] == s.terminated,
        json!({"sender_pid": me, "signal": "SIGTERM", "target_comm": "workload"}),
    );

    // A copy whose last segment is cut inside its last block.
    let cut = tmp.join("cut");
    std::fs::create_dir(&cut).expect("create the copy's directory");
    let segs = segments(&dir);
    assert!(
        !segs.is_empty(),
        "no segment in {}:\n{}",
        dir.display(),
        listing(&dir)
    );
    for sg in &segs {
        std::fs::copy(
            &sg.path,
            cut.join(sg.path.file_name().expect("a file name")),
        )
        .expect("copy a segment");
    }
    let last = cut.join(segs[segs.len() - 1].path.file_name().expect("a file name"));
    let len = std::fs::metadata(&last).expect("stat the copy").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .and_then(|f| f.set_len(len - 10))
        .expect("cut the copy");
    let cut_replay = bin.run(
        &[
            "replay".as_ref(),
            cut.as_os_str(),
            "--json".as_ref(),
            "--pid".as_ref(),
            pid.as_ref(),
        ],
        TOOL_TIMEOUT,
    );
    let cut_stats = bin
        .run(
            &[
                "replay".as_ref(),
                cut.as_os_str(),
                "--stats".as_ref(),
                "--json".as_ref(),
            ],
            TOOL_TIMEOUT,
        )
        .json();
    k.that(
        cut_replay.status.success(),
        format!(
            "replay of a dump with a truncated tail exits 0, got {}; stderr:\n{}",
            cut_replay.status, cut_replay.stderr
        ),
    );
    k.that(
        cut_replay.stderr.contains("truncated"),
        format!(
            "replay of a dump cut 10 bytes short names the truncated tail; stderr:\n{}",
            cut_replay.stderr
        ),
    );
    k.that(
        cut_stats["truncated"] == 1 && cut_stats["corrupt_blocks"] == 0,
        format!("--stats of the cut copy: 1 truncated, 0 corrupt: {cut_stats}"),
    );
    let ce = event_lines(&cut_replay.lines());
    k.that(
        ce.len() < re.len() && ce[..] == re[..ce.len()],
        format!(
            "the cut copy replays a strict prefix of the events: {}",
            first_difference("cut copy", &ce, "whole dump", &re)
        ),
    );
    eprintln!(
        "tracer-tests: {} connections in the flood; {} lines printed, {} before the cutoff, {} replayed ({} from the cut copy); truncated tail after SIGKILL: {truncated}; {:?}",
        count.load(Ordering::Relaxed),
        live.len(),
        must_survive.len(),
        replayed.len(),
        ce.len(),
        started.elapsed()
    );
    k.finish(&json_lines(&replayed[replayed.len().saturating_sub(50)..]));
}

const MAX_SIZE: u64 = 256 << 10;
const SEGMENT_SIZE: u64 = 64 << 10;
/// A segment may exceed `--segment-size` by one block (docs/dump-format.md): blocks hold at most
/// `segment-size / 16`, at least 16 KiB, before compression, stored uncompressed if that is not
/// smaller, after a 48-byte header.
const BLOCK_MAX: u64 = (16 << 10) + 48;

/// Sum of the segment sizes in `dir`; a listing that raced with a deletion is taken again.
fn on_disk(dir: &std::path::Path) -> u64 {
    let total = || segments(dir).iter().map(|s| s.size).sum::<u64>();
    let first = total();
    if first <= MAX_SIZE {
        return first;
    }
    // A segment deleted after it was listed and a new one created before the listing ended
    // would be counted both: look again before calling it a violation.
    thread::sleep(Duration::from_millis(20));
    first.min(total())
}

/// A flood under `--max-size 256K --segment-size 64K`: the segments on disk never total more
/// than 256 KiB, the oldest are deleted (with the marker made before the flood), the newest
/// (a marker made just before stopping) replay, and every segment is 0600.
#[test]
fn rotation_keeps_the_dump_within_max_size() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let bin = Bin::pinned();
    let tmp = TempDir::new("record-rotate");
    let dir = tmp.join("dump");
    let pid = test_pid().to_string();
    let rec = Recording::start(
        &bin,
        &dir,
        &["--pid", &pid, "--max-size", "256K", "--segment-size", "64K"],
    );
    let mut oldest = Workload::spawn(&mut workload!("exit", "--code", 66));
    assert_eq!(oldest.wait().code(), Some(66));

    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let addr = l.local_addr().expect("its address");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut connections = 0u64;
    let mut peak = 0u64;
    let mut polls = 0u64;
    loop {
        for _ in 0..200 {
            churn_once(&l, addr);
        }
        connections += 200;
        polls += 1;
        peak = peak.max(on_disk(&dir));
        let segs = segments(&dir);
        // Seq 1 held the first marker; keep going until a few more have come and gone.
        if segs.first().is_some_and(|s| s.seq >= 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no old segment deleted after {connections} connections in 90 s:\n{}",
            listing(&dir)
        );
    }
    let mut newest = Workload::spawn(&mut workload!("exit", "--code", 77));
    assert_eq!(newest.wait().code(), Some(77));
    let recorded = rec.stop();

    let segs = segments(&dir);
    let total: u64 = segs.iter().map(|s| s.size).sum();
    let ls = listing(&dir);
    let mut k = Checks::new();
    k.that(
        peak <= MAX_SIZE,
        format!("while recording, the segments totalled {peak} bytes > --max-size {MAX_SIZE}"),
    );
    k.that(
        total <= MAX_SIZE,
        format!("after stopping, the segments total {total} bytes > --max-size {MAX_SIZE}:\n{ls}"),
    );
    for sg in &segs {
        k.that(
            sg.size <= SEGMENT_SIZE + BLOCK_MAX,
            format!(
                "{} is {} bytes: more than --segment-size plus one block",
                sg.path.display(),
                sg.size
            ),
        );
        k.that(
            sg.mode == 0o600,
            format!("{} has mode {:o}, not 600", sg.path.display(), sg.mode),
        );
    }
    let seqs: Vec<u64> = segs.iter().map(|s| s.seq).collect();
    k.that(
        seqs.first().is_some_and(|&s| s > 1),
        format!("the first segments were deleted: sequence numbers on disk {seqs:?}"),
    );
    k.that(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        format!("the segments left are the newest, without holes: {seqs:?}"),
    );
    let deleted = recorded
        .summary()
        .and_then(|s| s.split(" old segment file(s) deleted").next())
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    k.that(
        deleted.is_some_and(|d| d > 0),
        format!(
            "the recorder's summary counts deleted segments: {:?}",
            recorded.summary()
        ),
    );

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
    let ev = json_lines(&replay.lines());
    k.that(
        replay.status.success(),
        format!(
            "replay of a rotated dump exits 0, got {}; stderr:\n{}",
            replay.status, replay.stderr
        ),
    );
    k.find_with(
        "the marker made just before stopping (exit 77)",
        &ev,
        |e| e.is("exit", newest.pid()),
        json!({"exit_code": 77}),
    );
    k.that(
        !ev.iter().any(|e| e.pid() == oldest.pid()),
        format!(
            "the marker made before the flood (pid {}, exit 66) was in a deleted segment, yet it replays",
            oldest.pid()
        ),
    );
    let stats = bin
        .run(
            &[
                "replay".as_ref(),
                dir.as_os_str(),
                "--stats".as_ref(),
                "--json".as_ref(),
            ],
            TOOL_TIMEOUT,
        )
        .ok()
        .json();
    k.that(
        stats["corrupt_blocks"] == 0 && stats["truncated"] == 0,
        format!("the rotated dump is intact: {stats}"),
    );
    k.that(
        stats["size_bytes"].as_u64().is_some_and(|b| b <= MAX_SIZE),
        format!("--stats size within --max-size: {stats}"),
    );
    eprintln!(
        "tracer-tests: {connections} connections, {polls} polls, peak {peak} bytes on disk, \
         segments {seqs:?} ({total} bytes), {} events replayed in {:?}; summary: {:?}; {:?}",
        stats["events"],
        replay.elapsed,
        recorded.summary(),
        started.elapsed()
    );
    k.finish(&ev[ev.len().saturating_sub(20)..]);
}

/// The dump directory is created 0700 (with its missing parents), segment files and the lock
/// file 0600, even under umask 0: segments hold command lines.
#[test]
fn dump_is_readable_by_its_owner_only() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let bin = Bin::pinned();
    let tmp = TempDir::new("record-perms");
    let parent = tmp.join("missing");
    let dir = parent.join("dump");
    let pid = test_pid().to_string();
    let rec =
        Recording::start_with_umask(&bin, &dir, &["--pid", &pid, "--print", "--json"], Some(0));
    let mut w = Workload::spawn(&mut workload!("exit", "--code", 5));
    let wp = w.pid();
    assert_eq!(w.wait().code(), Some(5));
    rec.wait_for("the child's exit", PRINT_TIMEOUT, |e| e.is("exit", wp));
    rec.stop();
    let ls = listing(&dir);
    let mut k = Checks::new();
    k.that(
        mode_of(&dir) == 0o700,
        format!("{} has mode {:o}, not 700", dir.display(), mode_of(&dir)),
    );
    k.that(
        mode_of(&parent) & 0o077 == 0,
        format!(
            "the missing parent {} was created with mode {:o}, open to others",
            parent.display(),
            mode_of(&parent)
        ),
    );
    let segs = segments(&dir);
    k.that(!segs.is_empty(), format!("a segment was written:\n{ls}"));
    for sg in &segs {
        k.that(
            sg.mode == 0o600,
            format!("{} has mode {:o}, not 600", sg.path.display(), sg.mode),
        );
    }
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("list the dump")
        .flatten()
        .collect();
    for e in entries {
        let p = e.path();
        let m = mode_of(&p);
        k.that(
            m & 0o077 == 0,
            format!("{} has mode {m:o}: readable by others", p.display()),
        );
    }
    eprintln!(
        "tracer-tests: dump {}:\n{ls}{:?}",
        dir.display(),
        started.elapsed()
    );
    k.finish(&[]);
}
