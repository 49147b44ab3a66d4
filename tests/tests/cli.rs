//! The binary's error paths: bad arguments, missing privileges. Most need no root.
use std::{
    io::Read,
    path::Path,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use tracer_tests::{require_root, test_pid, tracer::tracer_bin};

/// Runs `cmd` to completion (at most `timeout`, then kills it and fails), capturing output.
fn run(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

fn tracer(args: &[&str]) -> Output {
    run(
        Command::new(tracer_bin()).args(args),
        Duration::from_secs(30),
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// No panic message or backtrace: bad input gets a clear message.
fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "a panic instead of a message:\n{stderr}"
    );
}

#[test]
fn unknown_event_family_is_named() {
    let o = tracer(&["live", "--events", "tcp,disk"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "exit status {}", o.status);
    assert_eq!(err.trim_end().lines().count(), 1, "one line:\n{err}");
    assert!(err.contains("'disk'"), "names the bad value:\n{err}");
    assert_no_panic(&err);
    assert!(o.stdout.is_empty(), "nothing on stdout");
}

#[test]
fn unknown_subcommand_exits_2() {
    let o = tracer(&["bogus"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bogus"), "{err}");
    assert_no_panic(&err);
}

#[test]
fn bad_duration_exits_2() {
    let o = tracer(&["live", "--duration", "soon"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("soon"), "names the bad value:\n{err}");
    assert_no_panic(&err);
}

#[test]
fn comm_longer_than_the_kernels_is_refused() {
    let o = tracer(&["live", "--comm", "a-very-long-process-name"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("a-very-long-process-name") && err.contains("15"),
        "{err}"
    );
    assert_no_panic(&err);
}

/// Without privileges `tracer live` says to use sudo, and exits non-zero without a panic.
#[test]
fn non_root_is_told_to_use_sudo() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let bin = tracer_bin();
    let mut cmd = if !root {
        Command::new(&bin)
    } else if Path::new("/usr/bin/setpriv").exists() || Path::new("/bin/setpriv").exists() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(&bin);
        c
    } else if Path::new("/usr/sbin/runuser").exists() || Path::new("/sbin/runuser").exists() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(&bin);
        c
    } else {
        assert!(
            !tracer_tests::servers::in_ci(),
            "CI=true but neither setpriv nor runuser is there to drop root"
        );
        eprintln!("SKIP non_root_is_told_to_use_sudo: neither setpriv nor runuser to drop root");
        return;
    };
    let o = run(cmd.args(["live", "--json"]), Duration::from_secs(30));
    let err = text(&o.stderr);
    assert!(!o.status.success(), "exit status {}: {err}", o.status);
    assert!(err.contains("sudo"), "says to use sudo:\n{err}");
    assert_no_panic(&err);
    assert!(
        o.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&o.stdout)
    );
}

/// `--duration` ends the session by itself, cleanly, with the summary on stderr.
#[test]
fn duration_ends_the_session() {
    if !require_root() {
        return;
    }
    let pid = test_pid().to_string();
    let started = Instant::now();
    let o = tracer(&["live", "--json", "--pid", &pid, "--duration", "1s"]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "exit status {}: {err}", o.status);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        err.lines().any(|l| l.starts_with("tracer: tracing (")),
        "the ready line:\n{err}"
    );
    assert!(
        err.lines().any(|l| l.contains(" events in ")),
        "the summary line:\n{err}"
    );
    for line in text(&o.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
    }
}

/// `tracer doctor` as root: every probe of the table attached (or a standby fallback), exit 0.
#[test]
fn doctor_reports_every_probe_and_succeeds_as_root() {
    if !require_root() {
        return;
    }
    let o = tracer(&["doctor"]);
    let out = text(&o.stdout);
    assert!(
        o.status.success(),
        "exit status {}:\n{out}\n{}",
        o.status,
        text(&o.stderr)
    );
    for probe in [
        "tp_btf inet_sock_set_state",
        "tp_btf sock_recv_length",
        "tp_btf sock_send_length",
        "tcp/tcp_send_reset",
        "tcp/tcp_receive_reset",
        "syscalls/sys_exit_accept4",
        "tp_btf signal_generate",
        "tp_btf sched_process_fork",
        "oom/mark_victim",
        "tp_btf rss_stat",
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(probe))
            .unwrap_or_else(|| panic!("doctor does not list {probe}:\n{out}"));
        assert!(line.contains("attached"), "{probe} not attached: {line}");
    }
    // The classic tracepoints the BTF ones replace stand by.
    for probe in [
        "sock/inet_sock_set_state",
        "sock/sock_recv_length",
        "kmem/rss_stat",
        "syscalls/sys_enter_mmap",
    ] {
        let line = out.lines().find(|l| l.contains(probe)).unwrap_or_else(|| {
            panic!(
                "doctor does not list {probe}:
{out}"
            )
        });
        assert!(line.contains("standby"), "{probe} not on standby: {line}");
    }
    assert!(out.contains("tracing is possible"), "{out}");
    assert!(
        !out.contains("SKIPPED"),
        "a probe was skipped on the reference kernel:\n{out}"
    );
}

/// Without privileges doctor still runs its checks, says what is missing, and exits non-zero.
#[test]
fn doctor_without_privileges_fails_with_the_reason() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/bin/setpriv").exists() {
        assert!(
            !tracer_tests::servers::in_ci(),
            "CI=true but this test cannot drop root (not root, or no /usr/bin/setpriv)"
        );
        eprintln!("SKIP doctor_without_privileges_fails_with_the_reason: needs root to drop it");
        return;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(tracer_bin())
        .arg("doctor");
    let o = run(&mut cmd, Duration::from_secs(30));
    let out = text(&o.stdout);
    assert!(
        !o.status.success(),
        "doctor succeeded without privileges:\n{out}"
    );
    assert!(out.contains("MISSING: run with sudo"), "{out}");
    assert!(out.contains("tracing is NOT possible"), "{out}");
    assert_no_panic(&text(&o.stderr));
}

/// Files that are not dumps get one clear line and a non-zero exit from every dump command.
#[test]
fn garbage_and_missing_dumps_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("tracer-cli-garbage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.tdump");
    std::fs::write(
        &garbage,
        b"this is not a dump at all, just text\n".repeat(100),
    )
    .unwrap();
    let g = garbage.to_str().unwrap();
    let missing = dir.join("nope.tdump");
    let m = missing.to_str().unwrap();
    for args in [
        vec!["replay", g],
        vec!["replay", "--stats", g],
        vec!["report", "--json", g],
        vec!["export", "--format", "jsonl", g],
        vec!["replay", m],
    ] {
        let o = tracer(&args);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded:\n{err}");
        assert!(
            err.starts_with("error: "),
            "{args:?}: not a one-line error:\n{err}"
        );
        assert_no_panic(&err);
        assert!(o.stdout.is_empty(), "{args:?} printed: {}", text(&o.stdout));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
