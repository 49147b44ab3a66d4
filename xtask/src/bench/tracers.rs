//! The tracers under test: tracer itself (`record`, or `live` while `record` does not exist)
//! and bpftrace running bench/equivalent.bt. Each is attached before a workload run and
//! detached after it; what it saw (events, lost records, CPU) comes back in a [`Detached`].
use std::{
    collections::BTreeMap,
    io::BufRead,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::Serialize;

use super::procs::{self, Captured, Guard};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Untraced,
    Tracer,
    Bpftrace,
    /// bpftrace attached to the same tracepoints with empty programs: the cost of the hooks
    /// themselves, a floor under any tracer built on them. All classic tracepoints (bpftrace
    /// 0.17 has no raw or BTF tracepoints).
    Floor,
    /// tracer's own attach set (BTF tracepoints where it has them) with every family off in
    /// the kernel (`TRACER_HOOKS_ONLY`): each program stops at its first check. The floor
    /// under tracer as it attaches.
    TracerHooks,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::Untraced,
        Mode::Tracer,
        Mode::Bpftrace,
        Mode::Floor,
        Mode::TracerHooks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Tracer => "tracer",
            Mode::Bpftrace => "bpftrace",
            Mode::Floor => "floor",
            Mode::TracerHooks => "tracer-hooks",
        }
    }
}

/// How tracer is run: `record -o DIR` (the flight recorder) when this build has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TracerCmd {
    Record,
    Live,
}

/// Where the tracers are and where they write.
pub struct Env {
    pub tracer: PathBuf,
    pub tracer_cmd: TracerCmd,
    pub bpftrace_script: PathBuf,
    pub floor_script: PathBuf,
    pub tmp: PathBuf,
}

/// Kinds whose loss the product promises never happens.
pub const CRITICAL_KINDS: [&str; 5] = ["signal", "fork", "exec", "exit", "oom_kill"];

/// What a tracer saw during one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Detached {
    /// Events the tracer delivered (tracer: its summary; bpftrace: printed lines).
    pub events: u64,
    /// Records lost in the kernel (ring/perf buffer full) or not written.
    pub lost: u64,
    pub lost_critical: u64,
    pub lost_by_kind: BTreeMap<String, u64>,
    /// CPU seconds the tracer used between [`Attached::mark`] and the stop.
    pub cpu_s: f64,
    pub wall_s: f64,
    /// Size of what it wrote (dump directory or bpftrace output file).
    pub output_bytes: u64,
    pub summary: String,
}

pub struct Attached {
    mode: Mode,
    guard: Guard,
    stderr: Captured,
    output: PathBuf,
    cpu_start: f64,
    start: Instant,
    keep_output: bool,
}

/// Attaches `mode`'s tracer (nothing for untraced) and returns once it is tracing.
pub fn attach(mode: Mode, env: &Env, tag: &str) -> anyhow::Result<Option<Attached>> {
    match mode {
        Mode::Untraced => Ok(None),
        Mode::Tracer | Mode::TracerHooks => spawn_tracer(env, tag, false, mode).map(Some),
        Mode::Bpftrace => attach_bpftrace(env, tag, &env.bpftrace_script, mode).map(Some),
        Mode::Floor => attach_bpftrace(env, tag, &env.floor_script, mode).map(Some),
    }
}

pub fn attach_tracer(env: &Env, tag: &str, keep_output: bool) -> anyhow::Result<Attached> {
    spawn_tracer(env, tag, keep_output, Mode::Tracer)
}

fn spawn_tracer(env: &Env, tag: &str, keep_output: bool, mode: Mode) -> anyhow::Result<Attached> {
    let output = env.tmp.join(format!("dump-{tag}"));
    let _ = std::fs::remove_dir_all(&output);
    let mut cmd = Command::new(&env.tracer);
    if mode == Mode::TracerHooks {
        cmd.env("TRACER_HOOKS_ONLY", "1");
    }
    match env.tracer_cmd {
        TracerCmd::Record => {
            cmd.arg("record").arg("-o").arg(&output);
        }
        TracerCmd::Live => {
            cmd.arg("live");
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = Guard::spawn("tracer", &mut cmd, libc::SIGTERM)?;
    let (tx, rx) = mpsc::channel();
    let stderr = guard.capture_stderr(move |line| {
        if line.contains("tracing (") {
            let _ = tx.send(());
        }
    });
    wait_until(&mut guard, Duration::from_secs(120), || {
        rx.try_recv().is_ok()
    })
    .with_context(|| format!("tracer did not start: {}", stderr.text()))?;
    Attached::new(mode, guard, stderr, output, keep_output)
}

fn attach_bpftrace(env: &Env, tag: &str, script: &Path, mode: Mode) -> anyhow::Result<Attached> {
    let output = env.tmp.join(format!("bpftrace-{tag}.out"));
    let _ = std::fs::remove_file(&output);
    let mut cmd = Command::new("bpftrace");
    cmd.arg("-o")
        .arg(&output)
        .arg(script)
        // bpftrace's maps are plain hashes of 4096 keys by default; tracer's hold 131072 sockets.
        .env("BPFTRACE_MAP_KEYS_MAX", "262144")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = Guard::spawn("bpftrace", &mut cmd, libc::SIGINT)?;
    let stderr = guard.capture_stderr(|_| {});
    let pid = guard.pid();
    // Its output to a file is fully buffered, so "ready" (printed by BEGIN, once every probe is
    // attached) may sit in the buffer: also ready when it holds one perf event fd per probe
    // announced in "Attaching N probes...".
    wait_until(&mut guard, Duration::from_secs(120), || {
        let Ok(head) = std::fs::read(&output) else {
            return false;
        };
        head.windows(6).any(|w| w == b"ready\n")
            || attaching(&head).is_some_and(|n| perf_event_fds(pid) >= n)
    })
    .with_context(|| format!("bpftrace did not start: {}", stderr.text()))?;
    // BEGIN runs right after the last attach.
    std::thread::sleep(Duration::from_millis(200));
    Attached::new(mode, guard, stderr, output, false)
}

/// N from bpftrace's first line, "Attaching N probes...".
fn attaching(out: &[u8]) -> Option<usize> {
    let line = out.split(|b| *b == b'\n').next()?;
    let rest = line.strip_prefix(b"Attaching ")?;
    std::str::from_utf8(rest)
        .ok()?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// perf event fds a process holds (bpftrace attaches each tracepoint through one).
fn perf_event_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().contains("perf_event"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn wait_until(
    guard: &mut Guard,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(st) = guard.try_wait()? {
            bail!("{} exited ({st})", guard.name);
        }
        if Instant::now() >= deadline {
            bail!("{} not ready after {timeout:?}", guard.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Attached {
    fn new(
        mode: Mode,
        guard: Guard,
        stderr: Captured,
        output: PathBuf,
        keep_output: bool,
    ) -> anyhow::Result<Self> {
        let cpu_start = procs::cpu_seconds(guard.pid())?;
        Ok(Attached {
            mode,
            guard,
            stderr,
            output,
            cpu_start,
            start: Instant::now(),
            keep_output,
        })
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn output(&self) -> &Path {
        &self.output
    }

    /// Starts the measured window (CPU and wall time) now, after start-up costs.
    pub fn mark(&mut self) -> anyhow::Result<()> {
        self.cpu_start = procs::cpu_seconds(self.pid())?;
        self.start = Instant::now();
        Ok(())
    }

    /// Stops the tracer and reads what it saw.
    pub fn detach(mut self) -> anyhow::Result<Detached> {
        let cpu_s = procs::cpu_seconds(self.pid())? - self.cpu_start;
        let wall_s = self.start.elapsed().as_secs_f64();
        let status = self.guard.stop()?;
        // Let the stderr thread read the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let err = self.stderr.lines();
        let mut d = match self.mode {
            Mode::Tracer | Mode::TracerHooks => {
                if !status.success() {
                    bail!("tracer exited with {status}: {}", err.join("\n"));
                }
                let mut d = parse_tracer_summary(&err);
                d.output_bytes = if self.output.is_dir() {
                    procs::dir_bytes(&self.output)
                } else {
                    0
                };
                d
            }
            Mode::Bpftrace | Mode::Floor => {
                let d = count_bpftrace_output(&self.output, &err)?;
                if d.events == 0 && !status.success() {
                    bail!("bpftrace exited with {status}: {}", err.join("\n"));
                }
                d
            }
            Mode::Untraced => Detached::default(),
        };
        d.cpu_s = cpu_s;
        d.wall_s = wall_s;
        if !self.keep_output {
            let _ = std::fs::remove_dir_all(&self.output);
            let _ = std::fs::remove_file(&self.output);
        }
        Ok(d)
    }
}

/// Reads tracer's exit lines: `tracer: N events in Ts (...); no records lost` or
/// `...; LOST N records (ring buffer full): kind n, kind n`, and from `record` also
/// `...; N events NOT recorded (...)`.
pub fn parse_tracer_summary(lines: &[String]) -> Detached {
    let mut d = Detached::default();
    for line in lines {
        if let Some(rest) = line.strip_prefix("tracer: ")
            && let Some(n) = rest
                .split_whitespace()
                .next()
                .and_then(|w| w.parse::<u64>().ok())
            && rest.split_whitespace().nth(1) == Some("events")
        {
            d.events = n;
            d.summary = line.clone();
        }
        if let Some(i) = line.find("LOST ") {
            let rest = &line[i + 5..];
            d.lost += first_number(rest).unwrap_or(0);
            if let Some(j) = rest.find("): ") {
                for part in rest[j + 3..].split([',', ';']) {
                    let mut w = part.split_whitespace();
                    if let (Some(k), Some(n)) =
                        (w.next(), w.next().and_then(|n| n.parse::<u64>().ok()))
                    {
                        *d.lost_by_kind.entry(k.to_owned()).or_insert(0) += n;
                    }
                }
            }
        }
        if let Some(i) = line.find(" events NOT recorded") {
            let n = line[..i]
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            d.lost += n;
            *d.lost_by_kind.entry("not_recorded".into()).or_insert(0) += n;
        }
        if line.starts_with("recorded ") || line.contains(": recorded ") {
            if !d.summary.is_empty() {
                d.summary.push_str(" | ");
            }
            d.summary.push_str(line.trim());
        }
    }
    d.lost_critical = CRITICAL_KINDS
        .iter()
        .filter_map(|k| d.lost_by_kind.get(*k))
        .sum();
    d
}

fn first_number(s: &str) -> Option<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())?
        .parse()
        .ok()
}

/// bpftrace's output: one line per record, plus `Attaching N probes...`, `ready` and, when its
/// perf buffer overflowed, `Lost N events` lines.
fn count_bpftrace_output(path: &Path, stderr: &[String]) -> anyhow::Result<Detached> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = f.metadata()?.len();
    let mut d = Detached {
        output_bytes: bytes,
        ..Detached::default()
    };
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut line = Vec::new();
    let count_lost = |l: &[u8], d: &mut Detached| {
        if let Some(rest) = l.strip_prefix(b"Lost ") {
            let n = first_number(&String::from_utf8_lossy(rest)).unwrap_or(0);
            d.lost += n;
            *d.lost_by_kind.entry("perf_buffer".into()).or_insert(0) += n;
            return true;
        }
        false
    };
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let l = line.trim_ascii();
        if l.is_empty() || l == b"ready" || l.starts_with(b"Attaching ") {
            continue;
        }
        if !count_lost(l, &mut d) {
            d.events += 1;
        }
    }
    for l in stderr {
        count_lost(l.trim().as_bytes(), &mut d);
    }
    d.summary = format!("{} lines, {} lost", d.events, d.lost);
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    fn tracepoints(file: &str) -> std::collections::BTreeSet<String> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../bench")
            .join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("tracepoint:"))
            .map(|l| l.trim_end_matches([',', ' ', '{', '}']).to_owned())
            .collect()
    }

    #[test]
    fn floor_attaches_what_the_equivalent_script_attaches() {
        let eq = tracepoints("equivalent.bt");
        assert_eq!(eq.len(), 41, "{eq:?}");
        assert_eq!(eq, tracepoints("floor.bt"));
    }

    #[test]
    fn bpftrace_probe_count() {
        assert_eq!(attaching(b"Attaching 28 probes...\nready\n"), Some(28));
        assert_eq!(attaching(b"Attaching 1 probe...\n"), Some(1));
        assert_eq!(attaching(b"ready\n"), None);
        assert_eq!(attaching(b""), None);
    }

    #[test]
    fn tracer_summary_without_loss() {
        let d = parse_tracer_summary(&lines(&[
            "tracer: tracing (26 probes attached); Ctrl-C to stop",
            "tracer: 31 events in 2.0s (exec 2, exit 1, fork 1); no records lost",
        ]));
        assert_eq!(d.events, 31);
        assert_eq!(d.lost, 0);
        assert_eq!(d.lost_critical, 0);
    }

    #[test]
    fn tracer_summary_with_loss_per_kind() {
        let d = parse_tracer_summary(&lines(&[
            "tracer: 1000 events in 2.0s (mmap 500, munmap 500); LOST 70 records (ring buffer \
             full): mmap 40, munmap 20, signal 10",
            "tracer: recorded 1000 events in 1 new segment file(s), 9000 bytes (9.0 bytes/event) \
             in /tmp/x; 1 segment file(s), 9000 bytes on disk; 0 old segment file(s) deleted; \
             5 events NOT recorded (0 write errors, 5 writer too slow)",
        ]));
        assert_eq!(d.events, 1000);
        assert_eq!(d.lost, 75);
        assert_eq!(d.lost_by_kind["mmap"], 40);
        assert_eq!(d.lost_by_kind["not_recorded"], 5);
        assert_eq!(d.lost_critical, 10);
    }
}
