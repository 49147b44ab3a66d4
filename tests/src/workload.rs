//! A child process running the `workload` binary (see src/bin/workload.rs): it reports what it
//! did as JSON lines on stdout and takes commands on stdin.
use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::tracer::EVENT_TIMEOUT;

/// `Command` for the workload binary; tests pass `env!("CARGO_BIN_EXE_workload")` (or use the
/// [`workload!`](crate::workload) macro, which does).
pub fn command<S: AsRef<std::ffi::OsStr>>(bin: &str, args: &[S]) -> Command {
    let mut c = Command::new(bin);
    c.args(args);
    c
}

/// `workload!("tcp-server", "--bind", addr)` is the workload binary's `Command`.
#[macro_export]
macro_rules! workload {
    ($($arg:expr),* $(,)?) => {
        $crate::workload::command(
            env!("CARGO_BIN_EXE_workload"),
            &[$(::std::string::ToString::to_string(&$arg)),*],
        )
    };
}

pub struct Workload {
    child: Option<Child>,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    /// What it said so far, for failure messages.
    said: Vec<Value>,
}

impl Workload {
    /// Spawns `cmd` with stdin and stdout piped (stderr goes to the test's output).
    pub fn spawn(cmd: &mut Command) -> Workload {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let pid = child.id();
        let out = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"event": "garbage", "line": line}));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Workload {
            stdin: child.stdin.take(),
            child: Some(child),
            pid,
            lines: rx,
            said: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next line whose `"event"` is `event` (earlier lines are kept for messages).
    pub fn expect(&mut self, event: &str) -> Value {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.said.push(v.clone());
                    if v["event"] == event {
                        return v;
                    }
                    if v["event"] == "error" {
                        panic!("workload {} failed: {v}", self.pid);
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "workload {} did not say {event:?} within {EVENT_TIMEOUT:?}; it said {:?}",
                    self.pid, self.said
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    self.child = None;
                    panic!(
                        "workload {} exited ({status:?}) before saying {event:?}; it said {:?}",
                        self.pid, self.said
                    )
                }
            }
        }
    }

    /// Sends one command line on its stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("writing {line:?} to workload {}: {e}", self.pid));
    }

    /// Closes its stdin (workloads waiting for commands then exit).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn signal(&self, sig: i32) {
        assert!(self.child.is_some(), "workload {} already reaped", self.pid);
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        let r = unsafe { libc::kill(self.pid as i32, sig) };
        assert_eq!(
            r,
            0,
            "kill({}, {sig}): {}",
            self.pid,
            std::io::Error::last_os_error()
        );
    }

    /// Reaps it, waiting at most `timeout` (then kills it and fails). Its stdin stays open: a
    /// workload waiting for commands is told to go with [`close_stdin`](Self::close_stdin).
    pub fn wait_within(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("not reaped yet");
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return s,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("workload {} did not exit within {timeout:?}", self.pid);
                }
                Err(e) => panic!("waiting for workload {}: {e}", self.pid),
            }
        }
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.wait_within(EVENT_TIMEOUT)
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
