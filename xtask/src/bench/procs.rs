//! Processes the bench starts: a guard that stops each by pid (also on error or panic), and
//! the /proc figures read about them.
use anyhow::{Context, bail};
use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Every child the bench has started and not yet stopped (pid, stop signal), and its temporary
/// directory: what a Ctrl-C or SIGTERM of the bench stops and removes.
static LIVE: Mutex<Vec<(u32, libc::c_int)>> = Mutex::new(Vec::new());
static TEMP: Mutex<Option<PathBuf>> = Mutex::new(None);

fn register(pid: u32, sig: libc::c_int) {
    if let Ok(mut v) = LIVE.lock() {
        v.push((pid, sig));
    }
}

fn unregister(pid: u32) {
    if let Ok(mut v) = LIVE.lock() {
        v.retain(|(p, _)| *p != pid);
    }
}

static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn forward_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed);
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the pipe lives as long as the process.
    unsafe { libc::write(fd, (&raw const b).cast(), 1) };
}

/// Makes SIGINT, SIGTERM and SIGHUP stop every child the bench started (by pid) and remove its
/// temporary directory before exiting. The handler only writes the signal number into a pipe
/// that a thread reads; handlers are reset on exec, so children are unaffected.
pub fn stop_children_on_signal() {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array; sigaction with a handler that only calls write(2).
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return;
        }
        SIGNAL_PIPE.store(fds[1], std::sync::atomic::Ordering::Relaxed);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let read_fd = fds[0];
    std::thread::spawn(move || {
        let mut b = 0u8;
        // SAFETY: reading one byte from our own pipe.
        while unsafe { libc::read(read_fd, (&raw mut b).cast(), 1) } != 1 {}
        let sig = b as libc::c_int;
        eprintln!("bench: got signal {sig}: stopping what the bench started");
        let live = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
        for &(pid, stop) in &live {
            // SAFETY: our own children, by pid.
            unsafe {
                libc::kill(
                    pid as libc::pid_t,
                    if stop != 0 { stop } else { libc::SIGTERM },
                )
            };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left: Vec<u32> = live.iter().map(|(p, _)| *p).collect();
        while !left.is_empty() && Instant::now() < deadline {
            // SAFETY: reaping our own children without blocking.
            left.retain(|&p| unsafe {
                libc::waitpid(p as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) == 0
            });
            std::thread::sleep(Duration::from_millis(50));
        }
        for &p in &left {
            // SAFETY: as above.
            unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
        }
        if let Some(t) = TEMP.lock().ok().and_then(|t| t.clone()) {
            let _ = std::fs::remove_dir_all(t);
        }
        std::process::exit(128 + sig);
    });
}

/// A child process that is stopped by pid when the guard goes: `stop_signal` first, SIGKILL
/// after `grace`. stdin, when piped, is closed first (the `hold-*` workers stop on EOF).
pub struct Guard {
    pub name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stop_signal: libc::c_int,
    grace: Duration,
    stderr: Option<Captured>,
}

/// Lines a child wrote to a pipe, collected by a thread.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Starts a thread that appends every line of `r` and passes each to `on_line`.
    pub fn collect(
        r: impl Read + Send + 'static,
        mut on_line: impl FnMut(&str) + Send + 'static,
    ) -> (Self, JoinHandle<()>) {
        let c = Captured::default();
        let c2 = c.clone();
        let h = std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                on_line(&line);
                if let Ok(mut v) = c2.0.lock() {
                    v.push(line);
                }
            }
        });
        (c, h)
    }
}

impl Guard {
    pub fn spawn(name: &str, cmd: &mut Command, stop_signal: libc::c_int) -> anyhow::Result<Self> {
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let stdin = child.stdin.take();
        register(child.id(), stop_signal);
        Ok(Guard {
            name: name.to_owned(),
            child: Some(child),
            stdin,
            stop_signal,
            grace: Duration::from_secs(20),
            stderr: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// Collects the child's stderr lines in a thread; `on_line` sees each as it comes.
    pub fn capture_stderr(&mut self, on_line: impl FnMut(&str) + Send + 'static) -> Captured {
        let Some(err) = self.child.as_mut().and_then(|c| c.stderr.take()) else {
            return Captured::default();
        };
        let (c, _) = Captured::collect(err, on_line);
        self.stderr = Some(c.clone());
        c
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.as_ref().map(|c| c.text()).unwrap_or_default()
    }

    /// Exit status if the child has exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("{} already stopped", self.name),
        }
    }

    /// Stops the child: closes its stdin, sends the stop signal, waits `grace`, then SIGKILL.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        drop(self.stdin.take());
        let Some(mut child) = self.child.take() else {
            bail!("{} already stopped", self.name);
        };
        let st = Self::stop_child(&mut child, self.stop_signal, self.grace, &self.name);
        unregister(child.id());
        st
    }

    fn stop_child(
        child: &mut Child,
        stop_signal: libc::c_int,
        grace: Duration,
        name: &str,
    ) -> anyhow::Result<ExitStatus> {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        let pid = child.id() as libc::pid_t;
        if stop_signal != 0 {
            // SAFETY: signalling our own, not yet reaped, child by pid.
            unsafe { libc::kill(pid, stop_signal) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("bench: {name} (pid {pid}) did not stop within {grace:?}: SIGKILL");
        child.kill()?;
        Ok(child.wait()?)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// Runs a command to completion (stopped after `timeout`), returning its stdout; fails with its
/// stderr when it exits non-zero.
pub fn run_capture(name: &str, cmd: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut g = Guard::spawn(name, cmd, libc::SIGTERM)?;
    let out = g.take_stdout().context("no stdout")?;
    let (captured, reader) = Captured::collect(out, |_| {});
    g.capture_stderr(|_| {});
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = g.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = g.stop();
            bail!(
                "{name} did not finish within {timeout:?}: {}",
                g.stderr_text()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = reader.join();
    // The stderr thread may still be draining; give it a moment.
    std::thread::sleep(Duration::from_millis(20));
    if !status.success() {
        bail!("{name} failed ({status}): {}", g.stderr_text());
    }
    g.child = None;
    Ok(captured.text())
}

/// user + system CPU seconds a process has used so far (all its threads).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    parse_stat_cpu_ticks(&stat)
        .map(|t| t as f64 / clock_ticks())
        .with_context(|| format!("unexpected /proc/{pid}/stat"))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime (fields 14 and 15) from a /proc/PID/stat line; the command name may hold
/// spaces and parentheses, so fields are counted after its last ')'.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS and VmHWM of a process, in bytes.
pub fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let rss = status_kb(&status, "VmRSS").context("no VmRSS")?;
    let hwm = status_kb(&status, "VmHWM").context("no VmHWM")?;
    Ok((rss * 1024, hwm * 1024))
}

pub fn status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Total size of the regular files under `dir`.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        if let Ok(mut t) = TEMP.lock() {
            *t = Some(p.clone());
        }
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_fields_after_odd_comm() {
        let s = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_cpu_ticks(s), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_values() {
        let s = "Name:\ttracer\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kb(s, "VmRSS"), Some(10240));
        assert_eq!(status_kb(s, "VmHWM"), Some(20480));
        assert_eq!(status_kb(s, "VmSwap"), None);
    }
}
