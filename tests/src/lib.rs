//! Harness for the privileged end-to-end tests: run the real `tracer live --json` as root,
//! trigger real events with the `workload` binary (or from the test process itself), and
//! assert on the JSON the tracer prints.
//!
//! Every test traces only itself and its children (`--pid <test pid>`), runs single-threaded
//! (`--test-threads=1`), bounds every wait, and stops every process it started, by pid.
//! Tests that allocate memory do it only inside a [`MemCgroup`] with a small limit.
pub mod cgroup;
pub mod http;
pub mod otlp;
pub mod recorder_util;
pub mod servers;
pub mod tracer;
pub mod workload;

use serde_json::Value;

pub use crate::{
    cgroup::MemCgroup,
    tracer::{Stopped, Tracer},
    workload::Workload,
};

/// Whether the tests can load BPF programs. Not root: in CI (`CI=true`) that is a failure, a
/// test that cannot load its programs proves nothing; elsewhere a loud SKIP.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but not running as root: the privileged tests must run as root in CI");
    }
    eprintln!(
        "\n**********************************************************************\n\
         SKIP: not root. These tests load BPF programs; run them as root:\n  \
         cargo build -p tracer && cargo test -p tracer-tests -- --test-threads=1\n\
         **********************************************************************"
    );
    false
}

/// This test process's pid (what `--pid` is given).
pub fn test_pid() -> u32 {
    std::process::id()
}

/// Field access on an event line.
pub trait EventExt {
    fn kind(&self) -> &str;
    /// `pid` (the process the event happened in).
    fn pid(&self) -> u32;
    fn u64_of(&self, key: &str) -> Option<u64>;
    fn i64_of(&self, key: &str) -> Option<i64>;
    fn str_of(&self, key: &str) -> Option<&str>;
    /// A `"0x…"` field as a number.
    fn hex_of(&self, key: &str) -> Option<u64>;
    /// `kind == kind && pid == pid`.
    fn is(&self, kind: &str, pid: u32) -> bool;
}

impl EventExt for Value {
    fn kind(&self) -> &str {
        self["kind"].as_str().unwrap_or("")
    }

    fn pid(&self) -> u32 {
        self["pid"].as_u64().unwrap_or(0) as u32
    }

    fn u64_of(&self, key: &str) -> Option<u64> {
        self[key].as_u64()
    }

    fn i64_of(&self, key: &str) -> Option<i64> {
        self[key].as_i64()
    }

    fn str_of(&self, key: &str) -> Option<&str> {
        self[key].as_str()
    }

    fn hex_of(&self, key: &str) -> Option<u64> {
        parse_hex(self[key].as_str()?)
    }

    fn is(&self, kind: &str, pid: u32) -> bool {
        self.kind() == kind && self.pid() == pid
    }
}

pub fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// Asserts that every field of `want` (a JSON object) has that value in `ev`, naming every
/// mismatch and showing the whole event.
#[track_caller]
pub fn assert_fields(ev: &Value, want: Value) {
    let bad = mismatches(ev, &want);
    assert!(
        bad.is_empty(),
        "event fields differ:\n  {}\nevent: {ev}",
        bad.join("\n  ")
    );
}

fn mismatches(ev: &Value, want: &Value) -> Vec<String> {
    want.as_object()
        .expect("want is a JSON object")
        .iter()
        .filter(|(k, v)| ev.get(k.as_str()) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}: want {v}, got {}",
                ev.get(k.as_str())
                    .map_or("(missing)".to_owned(), |g| g.to_string())
            )
        })
        .collect()
}

/// Collects failed checks, so that one run names every wrong or missing event instead of only
/// the first, then fails once with all of them and the events.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
}

impl Checks {
    pub fn new() -> Checks {
        Checks::default()
    }

    /// `ev` has these field values.
    #[track_caller]
    pub fn fields(&mut self, what: &str, ev: &Value, want: Value) {
        let bad = mismatches(ev, &want);
        if !bad.is_empty() {
            self.fail(format!(
                "{what}: {}
    event: {ev}",
                bad.join("; ")
            ));
        }
    }

    /// The first event matching `pred`, or a failure.
    #[track_caller]
    pub fn find<'a>(
        &mut self,
        what: &str,
        events: &'a [Value],
        pred: impl Fn(&Value) -> bool,
    ) -> Option<&'a Value> {
        let found = events.iter().find(|e| pred(e));
        if found.is_none() {
            self.fail(format!("{what}: no such event"));
        }
        found
    }

    /// The first event matching `pred` has these field values.
    #[track_caller]
    pub fn find_with<'a>(
        &mut self,
        what: &str,
        events: &'a [Value],
        pred: impl Fn(&Value) -> bool,
        want: Value,
    ) -> Option<&'a Value> {
        let found = self.find(what, events, pred);
        if let Some(ev) = found {
            self.fields(what, ev, want);
        }
        found
    }

    #[track_caller]
    pub fn that(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.fail(what.into());
        }
    }

    #[track_caller]
    fn fail(&mut self, msg: String) {
        let at = std::panic::Location::caller();
        self.failures
            .push(format!("[{}:{}] {msg}", at.file(), at.line()));
    }

    /// Fails the test if any check failed, listing them all and then the events.
    #[track_caller]
    pub fn finish(self, events: &[Value]) {
        assert!(
            self.failures.is_empty(),
            "{} check(s) failed:\n  {}{}",
            self.failures.len(),
            self.failures.join("\n  "),
            dump(events)
        );
    }
}

/// The events of `kind` in `events`, for messages and counting.
pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e.kind() == kind).collect()
}

/// The first event matching `pred`; fails the test with every event if there is none.
#[track_caller]
pub fn find<'a>(events: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    events
        .iter()
        .find(|e| pred(e))
        .unwrap_or_else(|| panic!("no {what} among the events:{}", dump(events)))
}

/// Position of the first event matching `pred`, for ordering assertions.
pub fn position(events: &[Value], pred: impl Fn(&Value) -> bool) -> Option<usize> {
    events.iter().position(pred)
}

/// All `events` as text, one per line, for failure messages.
pub fn dump(events: &[Value]) -> String {
    tracer::describe(events, &[])
}

/// Polls `f` until it returns Some, or fails the test after `timeout` with `what` and the
/// last thing seen.
pub fn poll<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last seen: {e}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(250)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_and_hex() {
        let e = json!({"kind": "mmap", "pid": 7, "addr": "0x7f00", "len": 4096});
        assert!(e.is("mmap", 7));
        assert_eq!(e.hex_of("addr"), Some(0x7f00));
        assert_eq!(e.u64_of("len"), Some(4096));
        assert_fields(&e, json!({"len": 4096, "pid": 7}));
    }

    #[test]
    #[should_panic(expected = "len: want 1, got 4096")]
    fn field_mismatch_is_named() {
        assert_fields(&json!({"len": 4096}), json!({"len": 1}));
    }
}
