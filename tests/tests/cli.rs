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
