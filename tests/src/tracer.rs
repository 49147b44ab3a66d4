//! Running the real `tracer live --json` and collecting what it prints.
use std::{
    ffi::OsStr,
    fmt::Write as _,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long the tracer may take to load and attach its programs.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for an event it has just triggered.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the tracer may take to drain and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The line `tracer live` prints on stderr once every program is attached.
const READY_MARK: &str = "tracer: tracing (";

/// The tracer binary: `$TRACER_BIN`, else `<workspace>/target/{release,debug}/tracer`, whichever
/// is newer. Building it is the test command's job (`cargo build -p tracer`).
pub fn tracer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACER_BIN") {
        return PathBuf::from(p);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let candidates: Vec<PathBuf> = ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("tracer"))
        .filter(|p| p.is_file())
        .collect();
    candidates
        .into_iter()
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no tracer binary in {}/{{release,debug}}: run `cargo build -p tracer` first, or set TRACER_BIN",
                target.display()
            )
        })
}

#[derive(Default)]
struct State {
    events: Vec<Value>,
    /// Findings of the live analyses (`severity`, `summary`, `first_seen`...), printed between
    /// the events.
    findings: Vec<Value>,
    stderr: Vec<String>,
    /// Lines on stdout that are not JSON objects: always a bug, reported by `stop`.
    garbage: Vec<String>,
    stdout_done: bool,
    stderr_done: bool,
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

/// A running `tracer live --json`.
pub struct Tracer {
    child: Option<Child>,
    pid: u32,
    args: Vec<String>,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
}

/// What a stopped tracer left behind.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub events: Vec<Value>,
    pub findings: Vec<Value>,
    pub stderr: Vec<String>,
}

impl Stopped {
    /// The summary line printed at exit.
    pub fn summary(&self) -> Option<&str> {
        self.stderr
            .iter()
            .rev()
            .find(|l| l.starts_with("tracer: ") && l.contains(" events in "))
            .map(String::as_str)
    }
}

impl Tracer {
    /// Starts `tracer live --json ARGS...` and returns once it says it is tracing.
    pub fn start<S: AsRef<OsStr>>(args: &[S]) -> Tracer {
        Tracer::start_env(args, &[])
    }

    /// [`Tracer::for_test`] with these environment variables set for the tracer.
    pub fn for_test_env(extra: &[&str], env: &[(&str, &str)]) -> Tracer {
        let pid = std::process::id().to_string();
        let mut args = vec!["--pid", pid.as_str()];
        args.extend_from_slice(extra);
        Tracer::start_env(&args, env)
    }

    pub fn start_env<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Tracer {
        let bin = tracer_bin();
        let mut cmd = Command::new(&bin);
        cmd.arg("live").arg("--json").args(args);
        cmd.envs(env.iter().copied());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let pid = child.id();
        let shared = Arc::new(Shared::default());
        let out = child.stdout.take().expect("stdout piped");
        let err = child.stderr.take().expect("stderr piped");
        let s = shared.clone();
        let stdout_reader = thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut st = s.lock();
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if is_finding(&v) => st.findings.push(v),
                    Ok(v) if v.is_object() => st.events.push(v),
                    _ => st.garbage.push(line),
                }
                s.cond.notify_all();
            }
            s.lock().stdout_done = true;
            s.cond.notify_all();
        });
        let s = shared.clone();
        let stderr_reader = thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                s.lock().stderr.push(line);
                s.cond.notify_all();
            }
            s.lock().stderr_done = true;
            s.cond.notify_all();
        });
        let mut t = Tracer {
            child: Some(child),
            pid,
            args: args
                .iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect(),
            shared,
            readers: vec![stdout_reader, stderr_reader],
        };
        t.wait_ready();
        t
    }

    /// Starts a tracer that follows only this test process and its children
    /// (`--pid <test pid>`), plus `extra` arguments.
    pub fn for_test(extra: &[&str]) -> Tracer {
        let pid = std::process::id().to_string();
        let mut args = vec!["--pid", pid.as_str()];
        args.extend_from_slice(extra);
        Tracer::start(&args)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut st = self.shared.lock();
        loop {
            if st.stderr.iter().any(|l| l.starts_with(READY_MARK)) {
                return;
            }
            let now = Instant::now();
            if st.stderr_done || now >= deadline {
                let stderr = st.stderr.join("\n");
                drop(st);
                let status = self.kill_and_reap();
                panic!(
                    "tracer live --json {} did not become ready within {READY_TIMEOUT:?} (exit: {status:?}); stderr:\n{stderr}",
                    self.args.join(" ")
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

    /// Every finding printed so far.
    pub fn findings(&self) -> Vec<Value> {
        self.shared.lock().findings.clone()
    }

    /// Every event printed so far.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events.clone()
    }

    /// Waits (up to [`EVENT_TIMEOUT`]) for an event matching `pred`; fails the test with every
    /// event seen if none comes.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(what, EVENT_TIMEOUT, pred)
    }

    /// Waits (up to [`EVENT_TIMEOUT`]) for a finding matching `pred`; `None` if none comes.
    pub fn wait_for_finding(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut st = self.shared.lock();
        loop {
            if let Some(v) = st.findings.iter().rev().find(|v| pred(v)) {
                return Some(v.clone());
            }
            let now = Instant::now();
            if now >= deadline || st.stdout_done {
                return None;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Like [`wait_for`](Self::wait_for), but a missing event is `None` (for a test that goes on
    /// checking other things before failing).
    pub fn try_wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        let mut checked = 0;
        loop {
            if let Some(v) = st.events[checked..].iter().find(|v| pred(v)) {
                return Some(v.clone());
            }
            checked = st.events.len();
            let now = Instant::now();
            if now >= deadline || st.stdout_done {
                return None;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits up to `timeout` for a line on the tracer's stderr matching `pred`.
    pub fn wait_for_stderr(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if let Some(l) = st.stderr.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn wait_for_within(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        let mut checked = 0;
        loop {
            if let Some(v) = st.events[checked..].iter().find(|v| pred(v)) {
                return v.clone();
            }
            checked = st.events.len();
            let now = Instant::now();
            if now >= deadline || st.stdout_done {
                let msg = format!(
                    "{} waiting for {what}{}",
                    if st.stdout_done {
                        "tracer's stdout closed".to_owned()
                    } else {
                        format!("timed out after {timeout:?}")
                    },
                    describe(&st.events, &st.stderr)
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

    /// Stops the tracer with SIGTERM (it drains its ring buffers first), reaps it and returns
    /// everything it printed. Fails the test if it does not exit cleanly and in time, or printed
    /// something that is not JSON on stdout.
    pub fn stop(mut self) -> Stopped {
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let st = self.shared.lock();
                    panic!(
                        "tracer did not exit within {STOP_TIMEOUT:?} of SIGTERM{}",
                        describe(&st.events, &st.stderr)
                    );
                }
                Err(e) => panic!("waiting for the tracer: {e}"),
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let st = std::mem::take(&mut *self.shared.lock());
        assert!(
            st.garbage.is_empty(),
            "tracer printed lines that are not JSON objects on stdout: {:?}",
            st.garbage
        );
        assert!(
            status.success(),
            "tracer exited with {status} after SIGTERM{}",
            describe(&st.events, &st.stderr)
        );
        // Shown with a failing test's output: what the tracer itself counted.
        eprintln!("tracer-tests: tracer stderr:\n{}", st.stderr.join("\n"));
        Stopped {
            status,
            events: st.events,
            findings: st.findings,
            stderr: st.stderr,
        }
    }

    fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.kill_and_reap();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// A finding, not an event: findings carry a severity and a first-seen time, events neither.
pub fn is_finding(v: &Value) -> bool {
    v.get("severity").is_some() && v.get("first_seen").is_some()
}

/// The events (the last 300) and stderr, for a failure message.
pub fn describe(events: &[Value], stderr: &[String]) -> String {
    let mut s = String::new();
    let skip = events.len().saturating_sub(300);
    let _ = write!(
        s,
        "\n--- {} events{} ---\n",
        events.len(),
        if skip > 0 {
            format!(" (first {skip} left out)")
        } else {
            String::new()
        }
    );
    for e in &events[skip..] {
        let _ = writeln!(s, "{e}");
    }
    let _ = write!(s, "--- tracer stderr ---\n{}\n", stderr.join("\n"));
    s
}
