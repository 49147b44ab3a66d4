//! Helpers for the flight-recorder and incident tests: a pinned copy of the tracer binary,
//! `tracer record` running as a child (stopped cleanly or killed with SIGKILL), one-shot tracer
//! commands with a deadline, dump directories and their segment files, `tracer demo` runs, and
//! loopback connection churn.
use std::{
    ffi::OsStr,
    fmt::Write as _,
    io::{self, BufRead, BufReader, Read},
    net::{SocketAddr, TcpListener, TcpStream},
    os::{
        fd::AsRawFd,
        unix::{
            fs::{MetadataExt, PermissionsExt},
            process::CommandExt,
        },
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::tracer::{READY_TIMEOUT, is_finding, tracer_bin};

/// How long `tracer record` may take to drain, write its last blocks and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// What `tracer live` and `tracer record` print on stderr once every program is attached.
const READY_MARK: &str = "tracer: tracing (";
/// What `tracer record` prints on stderr once its dump directory is open.
const RECORDING_MARK: &str = "tracer: recording to ";

/// A directory of this test's own (mode 0700), removed with everything in it when dropped
/// (kept when the test fails and `TRACER_TESTS_KEEP` is set).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("tracer-tests-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("TRACER_TESTS_KEEP").is_some() {
            eprintln!(
                "tracer-tests: kept {} (TRACER_TESTS_KEEP)",
                self.0.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private copy of the tracer binary. Other people rebuild `target/debug/tracer` while the
/// tests run; a test that compares what one command wrote with what another read must run one
/// and the same build throughout.
pub struct Bin {
    _dir: TempDir,
    path: PathBuf,
}

impl Bin {
    pub fn pinned() -> Bin {
        let src = tracer_bin();
        let dir = TempDir::new("bin");
        let path = dir.join("tracer");
        std::fs::copy(&src, &path)
            .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", src.display(), path.display()));
        Bin { _dir: dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `tracer ARGS...` to completion, failing the test if it takes longer than `timeout`
    /// (it is then killed by pid).
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S], timeout: Duration) -> Output {
        run_bounded(Command::new(&self.path).args(args), timeout)
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// Its stdout, line by line.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lines().map(str::to_owned).collect()
    }

    /// Fails the test unless it exited 0, showing its stderr.
    #[track_caller]
    pub fn ok(self) -> Output {
        assert!(
            self.status.success(),
            "`{}` exited with {}; stderr:\n{}",
            self.command,
            self.status,
            self.stderr
        );
        self
    }

    /// Its stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` did not print one JSON document ({e}); stdout:\n{}\nstderr:\n{}",
                self.command,
                clip(&self.stdout, 4000),
                self.stderr
            )
        })
    }
}

/// The first `n` characters of `s`, for messages.
pub fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}… ({} more bytes)", &s[..i], s.len() - i),
        None => s.to_owned(),
    }
}

fn describe_cmd(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with its output captured, killing it (by pid) and failing after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let command = describe_cmd(cmd);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = err.join().unwrap_or_default();
                panic!("`{command}` did not finish within {timeout:?}; stderr:\n{stderr}");
            }
            Err(e) => panic!("waiting for `{command}`: {e}"),
        }
    };
    Output {
        command,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

#[derive(Default)]
struct State {
    /// Lines on stdout, each with the moment it was read.
    out: Vec<(Instant, String)>,
    err: Vec<String>,
    out_done: bool,
    err_done: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running `tracer record -o DIR ...`.
pub struct Recording {
    child: Option<Child>,
    pid: u32,
    command: String,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
}

/// What a recorder printed before it ended.
#[derive(Debug)]
pub struct Recorded {
    pub status: ExitStatus,
    /// Whole lines of stdout, in order, with the moment each was read by the test.
    pub lines: Vec<(Instant, String)>,
    /// A last line cut short (by SIGKILL), if any.
    pub partial: Option<String>,
    pub stderr: Vec<String>,
}

impl Recorded {
    pub fn texts(&self) -> Vec<String> {
        self.lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// The recorder's summary line (`recorded N events in ...`).
    pub fn summary(&self) -> Option<&str> {
        self.stderr
            .iter()
            .find(|l| l.starts_with("recorded "))
            .map(String::as_str)
    }
}

impl Recording {
    /// Starts `tracer record -o DIR ARGS...` and returns once it is attached and recording.
    pub fn start<S: AsRef<OsStr>>(bin: &Bin, dir: &Path, args: &[S]) -> Recording {
        Recording::start_with_umask(bin, dir, args, None)
    }

    /// Like [`start`](Self::start), with the recorder's umask set to `umask`.
    pub fn start_with_umask<S: AsRef<OsStr>>(
        bin: &Bin,
        dir: &Path,
        args: &[S],
        umask: Option<libc::mode_t>,
    ) -> Recording {
        let mut cmd = Command::new(bin.path());
        cmd.arg("record").arg("-o").arg(dir).args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(mask) = umask {
            // SAFETY: umask is async-signal-safe and touches no memory.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
        let command = describe_cmd(&cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
        let pid = child.id();
        let shared = Arc::new(Shared::default());
        let out = child.stdout.take().expect("stdout piped");
        let err = child.stderr.take().expect("stderr piped");
        let s = shared.clone();
        let out_reader = thread::spawn(move || {
            let mut r = BufReader::new(out);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        s.lock().out.push((Instant::now(), line));
                        s.cond.notify_all();
                    }
                }
            }
            s.lock().out_done = true;
            s.cond.notify_all();
        });
        let s = shared.clone();
        let err_reader = thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                s.lock().err.push(line);
                s.cond.notify_all();
            }
            s.lock().err_done = true;
            s.cond.notify_all();
        });
        let mut r = Recording {
            child: Some(child),
            pid,
            command,
            shared,
            readers: vec![out_reader, err_reader],
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut st = self.shared.lock();
        loop {
            let ready = st.err.iter().any(|l| l.starts_with(READY_MARK))
                && st.err.iter().any(|l| l.starts_with(RECORDING_MARK));
            if ready {
                return;
            }
            let now = Instant::now();
            if st.err_done || now >= deadline {
                let stderr = st.err.join("\n");
                drop(st);
                let status = self.child.take().map(|mut c| {
                    let _ = c.kill();
                    c.wait()
                });
                panic!(
                    "`{}` did not start recording within {READY_TIMEOUT:?} (exit: {status:?}); stderr:\n{stderr}",
                    self.command
                );
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits up to `timeout` for a JSON line on stdout matching `pred`; fails the test with
    /// everything printed so far if none comes.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        let mut checked = 0;
        loop {
            for (_, l) in &st.out[checked..] {
                if let Ok(v) = serde_json::from_str::<Value>(l)
                    && pred(&v)
                {
                    return v;
                }
            }
            checked = st.out.len();
            let now = Instant::now();
            if now >= deadline || st.out_done {
                let lines: Vec<&str> = st.out.iter().map(|(_, l)| l.trim_end()).collect();
                let skip = lines.len().saturating_sub(200);
                let msg = format!(
                    "waiting for {what}: {} after {timeout:?}\n--- stdout ({} lines, last {}) ---\n{}\n--- stderr ---\n{}",
                    if st.out_done {
                        "stdout closed"
                    } else {
                        "timed out"
                    },
                    lines.len(),
                    lines.len() - skip,
                    lines[skip..].join("\n"),
                    st.err.join("\n")
                );
                drop(st);
                panic!("{msg}");
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stops the recorder with SIGTERM and returns what it printed; fails the test if it does
    /// not exit 0 in time.
    pub fn stop(self) -> Recorded {
        let r = self.end(libc::SIGTERM);
        assert!(
            r.status.success(),
            "tracer record exited with {} after SIGTERM; stderr:\n{}",
            r.status,
            r.stderr.join("\n")
        );
        assert!(
            r.partial.is_none(),
            "tracer record's stdout ends in a line cut short: {:?}",
            r.partial
        );
        r
    }

    /// Kills the recorder with SIGKILL (as a crash would) and returns what it printed.
    pub fn kill(self) -> Recorded {
        self.end(libc::SIGKILL)
    }

    fn end(mut self, sig: i32) -> Recorded {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(self.pid as i32, sig) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let stderr = self.shared.lock().err.join("\n");
                    panic!(
                        "tracer record did not exit within {STOP_TIMEOUT:?} of signal {sig}; stderr:\n{stderr}"
                    );
                }
                Err(e) => panic!("waiting for tracer record: {e}"),
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let mut st = std::mem::take(&mut *self.shared.lock());
        let partial = match st.out.last() {
            Some((_, l)) if !l.ends_with('\n') => st.out.pop().map(|(_, l)| l),
            _ => None,
        };
        let lines = st
            .out
            .into_iter()
            .map(|(t, l)| (t, l.trim_end_matches('\n').to_owned()))
            .collect();
        // Shown with a failing test's output.
        eprintln!("tracer-tests: tracer record stderr:\n{}", st.err.join("\n"));
        Recorded {
            status,
            lines,
            partial,
            stderr: st.err,
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// A segment file of a dump directory.
#[derive(Clone, Debug)]
pub struct Segment {
    pub path: PathBuf,
    pub size: u64,
    pub mode: u32,
    /// The sequence number in its name (`tracer-00000042-….tdump`).
    pub seq: u64,
}

/// The `*.tdump` files in `dir`, in sequence order. Files that vanish while being listed (a
/// recorder deleting old segments) are left out.
pub fn segments(dir: &Path) -> Vec<Segment> {
    let mut v: Vec<Segment> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path.file_name()?.to_str()?.to_owned();
            if !name.ends_with(".tdump") {
                return None;
            }
            let md = std::fs::symlink_metadata(&path).ok()?;
            let seq = name
                .strip_prefix("tracer-")?
                .split('-')
                .next()?
                .parse()
                .ok()?;
            Some(Segment {
                path,
                size: md.len(),
                mode: md.mode() & 0o7777,
                seq,
            })
        })
        .collect();
    v.sort_by_key(|s| s.seq);
    v
}

/// Every entry of `dir` with its permission bits, for messages.
pub fn listing(dir: &Path) -> String {
    let mut s = String::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut names: Vec<_> = rd.flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            if let Ok(md) = e.metadata() {
                let _ = writeln!(
                    s,
                    "  {:o} {:>9} {}",
                    md.permissions().mode() & 0o7777,
                    md.len(),
                    e.file_name().to_string_lossy()
                );
            }
        }
    }
    s
}

/// The permission bits of `p`.
pub fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// Output lines that are findings (`severity` + `first_seen`), not events.
pub fn is_finding_line(line: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| is_finding(&v))
}

/// Where two line sequences first differ, with a few lines of context, for messages.
pub fn first_difference(a_name: &str, a: &[String], b_name: &str, b: &[String]) -> String {
    let i = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    if i == a.len() && i == b.len() {
        return "identical".into();
    }
    let mut s = format!(
        "{a_name} has {} lines, {b_name} {}; the first {i} are equal",
        a.len(),
        b.len()
    );
    let from = i.saturating_sub(2);
    for (name, v) in [(a_name, a), (b_name, b)] {
        let _ = write!(s, "\n--- {name} from line {from} ---");
        for (n, l) in v.iter().enumerate().skip(from).take(6) {
            let mark = if n == i { ">>" } else { "  " };
            let _ = write!(s, "\n{mark} {n}: {}", clip(l, 600));
        }
    }
    s
}

/// The thresholds `tracer demo` uses, from the library, so the tests follow the demo.
pub fn demo_thresholds() -> Vec<String> {
    tracer::demo::DEMO_THRESHOLDS
        .iter()
        .map(|t| (*t).to_owned())
        .collect()
}

/// The `--threshold k=v` arguments of [`demo_thresholds`].
pub fn demo_threshold_args() -> Vec<String> {
    demo_thresholds()
        .into_iter()
        .flat_map(|t| ["--threshold".to_owned(), t])
        .collect()
}

/// Every event of a dump, without findings (`tracer replay --json --no-findings`); a line that
/// is not JSON fails the test.
pub fn dump_events(bin: &Bin, dir: &Path) -> Vec<Value> {
    let out = bin
        .run(
            &[
                "replay".as_ref(),
                dir.as_os_str(),
                "--json".as_ref(),
                "--no-findings".as_ref(),
            ],
            Duration::from_secs(60),
        )
        .ok();
    out.lines()
        .iter()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("replay printed a line that is not JSON ({e}): {l}"))
        })
        .collect()
}

/// A finished `tracer demo --json`.
#[derive(Debug)]
pub struct DemoRun {
    pub output: Output,
    /// The NEW/UPDATED finding lines, in order.
    pub updates: Vec<Value>,
    /// The report document (the last line).
    pub report: Value,
}

/// Runs `tracer demo --only INCIDENT --record DIR --json --seconds N` and parses what it
/// printed: finding lines (each with an `update` key), then the report on one line.
pub fn run_demo(bin: &Bin, incident: &str, seconds: u64, dir: &Path) -> DemoRun {
    let secs = seconds.to_string();
    let args: Vec<&OsStr> = vec![
        "demo".as_ref(),
        "--only".as_ref(),
        incident.as_ref(),
        "--record".as_ref(),
        dir.as_os_str(),
        "--json".as_ref(),
        "--seconds".as_ref(),
        secs.as_ref(),
    ];
    // The demo stops tracing when its workloads end, at the latest 10 s after their time.
    let output = bin.run(&args, Duration::from_secs(seconds + 40)).ok();
    let lines = output.lines();
    let (last, rest) = lines
        .split_last()
        .unwrap_or_else(|| panic!("tracer demo printed nothing; stderr:\n{}", output.stderr));
    let parse = |l: &str| {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| {
            panic!(
                "tracer demo --json printed a line that is not JSON ({e}): {}\nstderr:\n{}",
                clip(l, 2000),
                output.stderr
            )
        })
    };
    let updates: Vec<Value> = rest.iter().map(|l| parse(l)).collect();
    for u in &updates {
        assert!(
            u.get("update")
                .and_then(Value::as_str)
                .is_some_and(|s| s == "new" || s == "updated")
                && is_finding(u),
            "a line before the report is not a NEW/UPDATED finding: {u}"
        );
    }
    let report = parse(last);
    assert!(
        report.get("findings").is_some_and(Value::is_array)
            && report.get("stats").is_some()
            && report.get("timeline").is_some(),
        "the last line of tracer demo --json is not the report document: {}",
        clip(last, 2000)
    );
    DemoRun {
        output,
        updates,
        report,
    }
}

/// Sets SO_LINGER {on, 0}: close() then sends a RST and leaves no TIME_WAIT behind (a flood of
/// connections would otherwise run out of ephemeral ports).
pub fn linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a live linger struct of the stated size, on a live socket.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// One loopback connection opened, accepted and aborted inside this process: a dozen events.
pub fn churn_once(l: &TcpListener, addr: SocketAddr) {
    let c = TcpStream::connect(addr).expect("connect to our own listener");
    let (s, _) = l.accept().expect("accept our own connection");
    linger_zero(&c);
    drop(c);
    drop(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_thresholds_are_what_report_accepts() {
        let t = demo_thresholds();
        assert_eq!(demo_threshold_args().len(), 2 * t.len());
        let args = tracer::analysis::config::AnalysisArgs {
            config: None,
            thresholds: t,
        };
        let c = args.load().expect("report accepts the demo's thresholds");
        let defaults = tracer::analysis::config::AnalysisArgs::default().load();
        assert_ne!(
            c,
            defaults.unwrap(),
            "the demo's thresholds are not the defaults"
        );
    }

    #[test]
    fn first_difference_points_at_the_line() {
        let a: Vec<String> = ["x", "y", "z"].map(String::from).to_vec();
        let b: Vec<String> = ["x", "Y"].map(String::from).to_vec();
        let d = first_difference("a", &a, "b", &b);
        assert!(
            d.starts_with("a has 3 lines, b 2; the first 1 are equal"),
            "{d}"
        );
        assert!(d.contains(">> 1: Y"), "{d}");
        assert_eq!(first_difference("a", &a, "b", &a), "identical");
    }
}
