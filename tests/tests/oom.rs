//! OOM kills inside a memory cgroup limited to 64 MiB: the victim, the trigger, the kernel's
//! SIGKILL and the victim's exit.
use std::{os::unix::process::ExitStatusExt, time::Duration};

use serde_json::{Value, json};
use tracer_tests::{
    Checks, EventExt, MemCgroup, Tracer, Workload,
    cgroup::Version,
    position,
    recorder_util::{Bin, Recording, TempDir, dump_events},
    require_root, test_pid, workload,
};

const MIB: u64 = 1 << 20;
const LIMIT: u64 = 64 * MIB;

fn cgroup() -> MemCgroup {
    MemCgroup::create(LIMIT).unwrap_or_else(|e| panic!("memory cgroup: {e}"))
}

/// A hog allocating without bound is killed; it is both the trigger and the victim.
#[test]
fn hog_is_oom_killed() {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let cg = cgroup();
    let t = Tracer::for_test(&["--events", "oom,signal,process"]);
    let mut w = Workload::spawn(cg.enter(&mut workload!("hog", "--unbounded")));
    let wp = w.pid();
    w.expect("hogging");
    let status = w.wait_within(Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "the hog was killed");
    assert_eq!(cg.oom_kills(), Some(1), "the cgroup counted one OOM kill");
    t.wait_for("the hog's exit", |e| e.is("exit", wp));
    let stopped = t.stop();
    let ev = stopped.events;
    let mut k = Checks::new();
    if let Some(f) = k.find_with(
        "the oom_kill finding",
        &stopped.findings,
        |f| f.kind() == "oom_kill" && f["victim_pid"] == wp,
        json!({
            "victim_comm": "workload", "trigger_pid": wp, "trigger_comm": "workload",
        }),
    ) {
        let rss = f.u64_of("victim_rss_bytes").unwrap_or(0);
        k.that(rss > 0, format!("the finding's victim_rss_bytes: {f}"));
    }
    if let Some(o) = k.find_with(
        "the oom_kill",
        &ev,
        |e| e.kind() == "oom_kill" && e["victim_pid"] == wp,
        json!({"pid": wp, "comm": "workload", "victim_comm": "workload", "ppid": me}),
    ) {
        let rss = o.u64_of("victim_rss_bytes").unwrap_or(0);
        k.that(
            rss > 0 && rss <= 2 * LIMIT,
            format!("victim_rss_bytes in (0, 2 x limit]: {o}"),
        );
    }
    k.find_with(
        "the kernel's SIGKILL",
        &ev,
        |e| e.kind() == "signal" && e["target_pid"] == wp,
        json!({
            "signal": 9, "signal_name": "SIGKILL", "from_kernel": true, "code": 128,
            "pid": wp, "target_comm": "workload",
        }),
    );
    k.find_with(
        "the hog's exit",
        &ev,
        |e| e.is("exit", wp),
        json!({"signal": 9, "signal_name": "SIGKILL", "exit_code": Value::Null, "ppid": me}),
    );
    let sig = position(&ev, |e| e.kind() == "signal" && e["target_pid"] == wp);
    let oom = position(&ev, |e| e.kind() == "oom_kill");
    let exit = position(&ev, |e| e.is("exit", wp));
    k.that(
        matches!((sig, oom, exit), (Some(a), Some(b), Some(c)) if a < b && b < c),
        "signal, oom_kill, exit in that order",
    );
    k.finish(&ev);
}

/// The allocating process is not always the one killed: a process holding memory with a high
/// oom_score_adj is the victim, the allocator the trigger.
#[test]
fn trigger_and_victim_differ() {
    if !require_root() {
        return;
    }
    let cg = cgroup();
    let t = Tracer::for_test(&["--events", "oom,signal,process"]);
    let mut holder = Workload::spawn(cg.enter(&mut workload!("hog", "--mib", 24)));
    let hp = holder.pid();
    holder.expect("touched");
    std::fs::write(format!("/proc/{hp}/oom_score_adj"), "1000").expect("oom_score_adj");
    let mut hog = Workload::spawn(cg.enter(&mut workload!("hog", "--unbounded")));
    let gp = hog.pid();
    hog.expect("hogging");
    let hs = holder.wait_within(Duration::from_secs(30));
    assert_eq!(hs.signal(), Some(libc::SIGKILL), "the holder was killed");
    let gs = hog.wait_within(Duration::from_secs(30));
    assert_eq!(gs.signal(), Some(libc::SIGKILL), "then the hog");
    t.wait_for("the hog's exit", |e| e.is("exit", gp));
    let stopped = t.stop();
    let ev = stopped.events;
    let mut k = Checks::new();
    k.find_with(
        "the oom_kill finding for the holder",
        &stopped.findings,
        |f| f.kind() == "oom_kill" && f["victim_pid"] == hp,
        json!({"trigger_pid": gp}),
    );
    if let Some(o) = k.find_with(
        "the holder's oom_kill",
        &ev,
        |e| e.kind() == "oom_kill" && e["victim_pid"] == hp,
        json!({"pid": gp, "victim_comm": "workload", "oom_score_adj": 1000}),
    ) {
        let rss = o.u64_of("victim_rss_bytes").unwrap_or(0);
        k.that(
            rss >= 20 * MIB,
            format!("the holder had its 24 MiB resident: {o}"),
        );
    }
    k.find_with(
        "the SIGKILL for the holder, sent in the hog's allocation",
        &ev,
        |e| e.kind() == "signal" && e["target_pid"] == hp,
        json!({"signal": 9, "from_kernel": true, "pid": gp}),
    );
    k.find_with(
        "the hog's own oom_kill",
        &ev,
        |e| e.kind() == "oom_kill" && e["victim_pid"] == gp,
        json!({"pid": gp, "oom_score_adj": 0}),
    );
    k.finish(&ev);
}

/// The collector stopped (SIGSTOP) until dropped (SIGCONT), as a collector lagging far behind
/// under load is: what happens meanwhile waits in the ring buffers.
struct Paused(libc::pid_t);

impl Paused {
    fn new(pid: u32) -> Paused {
        let pid = pid as libc::pid_t;
        // SAFETY: kill() only sends a signal; no memory is passed.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGSTOP) },
            0,
            "SIGSTOP {pid}"
        );
        // Stopped before anything happens (the state is 'T' in /proc/PID/stat).
        let stat = format!("/proc/{pid}/stat");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&stat)
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('T')))
        {
            assert!(std::time::Instant::now() < deadline, "{pid} did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The memory cgroup's directory name, which ends the path a record or finding names.
fn name_of(cg: &MemCgroup) -> String {
    cg.path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A process that joins its memory cgroup itself, after fork and exec (as a supervisor's child
/// that moves into its unit's cgroup does): the OOM finding names the cgroup that killed it and
/// its limit, not the one the process was born in. The collector is paused from before the
/// move until the process is dead and reaped, as a collector lagging under load may be: /proc
/// has nothing left to say then, and the kernel's `cgroup_attach` record is what tells it
/// (no memory family either: no memory sample to read /proc at).
#[test]
fn oom_names_the_cgroup_joined_after_fork() {
    if !require_root() {
        return;
    }
    let cg = cgroup();
    let t = Tracer::for_test(&["--events", "oom,signal,process"]);
    let dir = cg.path().display().to_string();
    let paused = Paused::new(t.pid());
    let mut w = Workload::spawn(&mut workload!(
        "join-hog",
        "--cgroup",
        dir,
        "--mib-per-s",
        64
    ));
    let wp = w.pid();
    w.expect("hogging");
    let status = w.wait_within(Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "the hog was killed");
    assert_eq!(cg.oom_kills(), Some(1), "its cgroup counted one OOM kill");
    drop(paused);
    t.wait_for("the hog's exit", |e| e.is("exit", wp));
    let stopped = t.stop();
    let name = name_of(&cg);
    let mut k = Checks::new();
    if let Some(a) = k.find_with(
        "the hog's move into its memory cgroup",
        &stopped.events,
        |e| e.kind() == "cgroup_attach" && e["target_pid"] == wp && e["memory"] == true,
        json!({"pid": wp, "target_comm": "workload", "cgroup_truncated": false}),
    ) {
        k.that(
            a.str_of("cgroup")
                .is_some_and(|c| c.ends_with(&format!("/{name}"))),
            format!("the record names the cgroup joined ({name}): {a}"),
        );
    }
    if let Some(f) = k.find_with(
        "the oom_kill finding",
        &stopped.findings,
        |f| f.kind() == "oom_kill" && f["victim_pid"] == wp,
        json!({"victim_comm": "workload", "cgroup_limit_bytes": LIMIT}),
    ) {
        k.that(
            f.str_of("cgroup")
                .is_some_and(|c| c.ends_with(&format!("/{name}"))),
            format!("the finding names the cgroup joined ({name}): {f}"),
        );
    }
    k.finish(&stopped.events);
}

/// A forked child moved into a memory cgroup by its parent (as runc or systemd move a process
/// after fork), then OOM-killed there: a recording holds the kernel's `cgroup_attach` record
/// (`tracer replay --json` shows the mover, the child and the cgroup's path), and the report
/// of that recording names the cgroup and its limit.
#[test]
fn a_child_moved_by_its_parent_is_recorded_and_reported() {
    if !require_root() {
        return;
    }
    let me = test_pid();
    let cg = cgroup();
    let bin = Bin::pinned();
    let dump = TempDir::new("cgroup-attach");
    let mine = me.to_string();
    let rec = Recording::start(
        &bin,
        dump.path(),
        &[
            "--pid",
            mine.as_str(),
            "--events",
            "oom,signal,process",
            "--print",
            "--json",
        ],
    );
    let mut w = Workload::spawn(&mut workload!("wait-hog", "--mib-per-s", 64));
    let wp = w.pid();
    w.expect("waiting");
    cg.add(wp)
        .unwrap_or_else(|e| panic!("moving {wp} into {}: {e}", cg.path().display()));
    w.send("go");
    w.expect("hogging");
    let status = w.wait_within(Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "the hog was killed");
    assert_eq!(cg.oom_kills(), Some(1), "its cgroup counted one OOM kill");
    rec.wait_for("the hog's exit", Duration::from_secs(30), |e| {
        e.is("exit", wp)
    });
    rec.stop();
    let ev = dump_events(&bin, dump.path());
    let name = name_of(&cg);
    let mut k = Checks::new();
    if let Some(a) = k.find_with(
        "the child's move into its memory cgroup, in the replay",
        &ev,
        |e| e.kind() == "cgroup_attach" && e["target_pid"] == wp && e["memory"] == true,
        json!({"pid": me, "target_comm": "workload", "cgroup_truncated": false}),
    ) {
        k.that(
            a.str_of("cgroup")
                .is_some_and(|c| c.ends_with(&format!("/{name}"))),
            format!("the record names the cgroup ({name}): {a}"),
        );
        let v1 = cg.version() == Version::V1;
        k.that(
            a.u64_of("hierarchy").is_some_and(|h| (h != 0) == v1),
            format!("hierarchy: a v1 hierarchy's id on v1, 0 on cgroup v2: {a}"),
        );
    }
    let report = bin
        .run(
            &[
                "report".as_ref(),
                dump.path().as_os_str(),
                "--json".as_ref(),
            ],
            Duration::from_secs(60),
        )
        .ok()
        .json();
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    if let Some(f) = k.find_with(
        "the oom_kill finding of the report",
        &findings,
        |f| f.kind() == "oom_kill" && f["victim_pid"] == wp,
        json!({"victim_comm": "workload", "cgroup_limit_bytes": LIMIT}),
    ) {
        k.that(
            f.str_of("cgroup")
                .is_some_and(|c| c.ends_with(&format!("/{name}"))),
            format!("the finding names the cgroup ({name}): {f}"),
        );
    }
    k.finish(&ev);
}
