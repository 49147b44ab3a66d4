//! Memory: large mappings, heap growth and RSS samples. Every allocating workload runs inside a
//! memory cgroup with a limit well above what it allocates (and far below the machine's RAM).
use std::{os::unix::process::ExitStatusExt, time::Duration};

use serde_json::json;
use tracer_tests::{
    Checks, EventExt, MemCgroup, Tracer, Workload, parse_hex, position, require_root, test_pid,
    workload,
};

const MIB: u64 = 1 << 20;

fn cgroup(limit: u64) -> MemCgroup {
    MemCgroup::create(limit).unwrap_or_else(|e| panic!("memory cgroup: {e}"))
}

fn hex(v: &serde_json::Value) -> u64 {
    parse_hex(v.as_str().expect("a hex string")).expect("0x…")
}

/// mmap()'s exit reads the call's arguments from the task's saved registers (6.2+).
#[test]
fn large_anonymous_mmap_and_munmap() {
    large_anonymous_mmap_and_munmap_with(&[]);
}

/// The same with mmap()'s arguments saved at entry (the fallback before 6.2).
#[test]
fn large_anonymous_mmap_and_munmap_arguments_saved_at_entry() {
    large_anonymous_mmap_and_munmap_with(&[("TRACER_CLASSIC_TRACEPOINTS", "1")]);
}

fn large_anonymous_mmap_and_munmap_with(env: &[(&str, &str)]) {
    if !require_root() {
        return;
    }
    let cg = cgroup(256 * MIB);
    let t = Tracer::for_test_env(&["--events", "memory,process"], env);
    let mut w = Workload::spawn(cg.enter(&mut workload!("mmap", "--mib", 64)));
    let wp = w.pid();
    let mapped = w.expect("mapped");
    w.expect("unmapped");
    assert!(w.wait().success());
    t.wait_for("the workload's exit", |e| e.is("exit", wp));
    let ev = t.stop().events;
    let mut k = Checks::new();
    let addr = mapped["addr"].as_str().unwrap();
    if let Some(m) = k.find_with(
        "the 64 MiB mmap",
        &ev,
        |e| e.is("mmap", wp) && e["len"] == 64 * MIB,
        json!({
            "addr": addr, "prot": "rw-", "anonymous": true, "shared": false,
            "comm": "workload", "ppid": test_pid(),
        }),
    ) {
        k.that(
            m.get("fd").is_none(),
            format!("an anonymous mapping has no fd: {m}"),
        );
    }
    k.find_with(
        "its munmap",
        &ev,
        |e| e.is("munmap", wp),
        json!({"addr": addr, "len": 64 * MIB}),
    );
    let a = position(&ev, |e| e.is("mmap", wp) && e["len"] == 64 * MIB);
    let b = position(&ev, |e| e.is("munmap", wp));
    k.that(
        matches!((a, b), (Some(a), Some(b)) if a < b),
        "mmap before munmap",
    );
    k.finish(&ev);
}

/// A file-backed mapping: its fd, protection and sharing, read from the task's saved
/// registers (6.2+) and, in the fallback, saved at entry.
#[test]
fn large_file_mmap_names_its_fd() {
    if !require_root() {
        return;
    }
    let cg = cgroup(256 * MIB);
    let mut k = Checks::new();
    let mut all = Vec::new();
    for env in [&[][..], &[("TRACER_CLASSIC_TRACEPOINTS", "1")][..]] {
        let t = Tracer::for_test_env(&["--events", "memory,process"], env);
        let mut w = Workload::spawn(cg.enter(&mut workload!("mmap", "--mib", 64, "--file")));
        let wp = w.pid();
        let mapped = w.expect("mapped");
        w.expect("unmapped");
        assert!(w.wait().success());
        t.wait_for("the workload's exit", |e| e.is("exit", wp));
        let ev = t.stop().events;
        k.find_with(
            &format!("the 64 MiB file mapping ({env:?})"),
            &ev,
            |e| e.is("mmap", wp) && e["len"] == 64 * MIB,
            json!({
                "addr": mapped["addr"], "prot": "r--", "anonymous": false, "shared": true,
                "fd": mapped["fd"],
            }),
        );
        all.extend(ev);
    }
    k.finish(&all);
}

/// Heap growth through brk (sbrk) of 16 MiB.
#[test]
fn brk_growth() {
    if !require_root() {
        return;
    }
    let cg = cgroup(256 * MIB);
    let t = Tracer::for_test(&["--events", "memory,process"]);
    let mut w = Workload::spawn(cg.enter(&mut workload!("brk", "--mib", 16)));
    let wp = w.pid();
    let truth = w.expect("brk");
    assert!(w.wait().success());
    t.wait_for("the workload's exit", |e| e.is("exit", wp));
    let ev = t.stop().events;
    let (start, prev, new) = (
        hex(&truth["start_brk"]),
        hex(&truth["prev"]),
        hex(&truth["new"]),
    );
    let mut k = Checks::new();
    if let Some(b) = k.find_with(
        "the brk event ending at the new break",
        &ev,
        |e| e.is("brk", wp) && e["addr"] == truth["new"],
        json!({"comm": "workload"}),
    ) {
        let (len, from) = (
            b.i64_of("len").unwrap_or(0),
            b.hex_of("prev_addr").unwrap_or(0),
        );
        k.that(
            len >= (new - prev) as i64,
            format!("len {len} >= the growth {}: {b}", new - prev),
        );
        k.that(
            (start..=prev).contains(&from) && len == (new - from) as i64,
            format!("prev_addr {from:#x} within this heap [{start:#x}, {prev:#x}] and len = addr - prev_addr: {b}"),
        );
    }
    k.finish(&ev);
}

/// After exec the heap is a new one: a brk event must not measure the new program's break
/// against the old program's.
#[test]
fn exec_starts_a_new_heap() {
    if !require_root() {
        return;
    }
    let cg = cgroup(256 * MIB);
    let t = Tracer::for_test(&["--events", "memory,process"]);
    let mut w = Workload::spawn(cg.enter(&mut workload!("reexec", "brk", "--mib", 16)));
    let wp = w.pid();
    let before = w.expect("before-exec");
    let truth = w.expect("brk");
    assert!(w.wait().success());
    t.wait_for("the workload's exit", |e| e.is("exit", wp));
    let ev = t.stop().events;
    let (start, new) = (hex(&truth["start_brk"]), hex(&truth["new"]));
    let mut k = Checks::new();
    // The second exec (the first is the spawn).
    let exec_at = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is("exec", wp))
        .map(|(i, _)| i)
        .nth(1);
    k.that(exec_at.is_some(), "the re-exec's exec event");
    let after: Vec<_> = ev[exec_at.unwrap_or(ev.len())..]
        .iter()
        .filter(|e| e.is("brk", wp))
        .collect();
    for b in &after {
        let from = b.hex_of("prev_addr").unwrap_or(0);
        k.that(
            (start..=new).contains(&from),
            format!(
                "brk after exec: prev_addr {from:#x} is outside the new heap [{start:#x}, {new:#x}] \
                 (the old program's heap: start {}, break {}): {b}",
                before["start_brk"], before["brk"]
            ),
        );
    }
    k.that(
        after.iter().any(|b| b["addr"] == truth["new"]),
        "the 16 MiB brk of the new program",
    );
    k.finish(&ev);
}

/// A process that touches 100 MiB gets a memory sample showing it.
#[test]
fn rss_sample_for_touched_memory() {
    if !require_root() {
        return;
    }
    let cg = cgroup(256 * MIB);
    let t = Tracer::for_test(&["--events", "memory,process"]);
    let mut w = Workload::spawn(cg.enter(&mut workload!("hog", "--mib", 100)));
    let wp = w.pid();
    let touched = w.expect("touched");
    let sample = t.try_wait_for(Duration::from_secs(5), |e| {
        e.is("mem_sample", wp) && e.u64_of("rss_anon_bytes").unwrap_or(0) >= 90 * MIB
    });
    w.close_stdin();
    assert!(w.wait().success());
    let ev = t.stop().events;
    let mut k = Checks::new();
    match sample {
        Some(s) => {
            let rss = s.u64_of("rss_bytes").unwrap_or(0);
            let anon = s.u64_of("rss_anon_bytes").unwrap_or(0);
            let mapped = s.u64_of("mapped_bytes").unwrap_or(0);
            k.that(anon >= 90 * MIB, format!("rss_anon_bytes >= 90 MiB: {s}"));
            k.that(mapped >= 100 * MIB, format!("mapped_bytes >= 100 MiB: {s}"));
            k.that(
                rss <= cg.limit(),
                format!("rss_bytes within the cgroup's limit: {s}"),
            );
            k.fields("the sample", &s, json!({"comm": "workload"}));
        }
        None => k.that(
            false,
            format!(
                "a mem_sample of pid {wp} with rss_anon_bytes >= 90 MiB (the workload saw VmRSS {} kB)",
                touched["vm_rss_kb"]
            ),
        ),
    }
    // Samples are aggregated in the kernel: one only when RSS or mapped bytes moved by their
    // step (1/32 of the value, between 1 MiB and 16 MiB) since the previous one, not one per
    // page fault (100 MiB are 25,600 of them): ~70 from 0 to 100 MiB.
    let samples: Vec<_> = ev.iter().filter(|e| e.is("mem_sample", wp)).collect();
    k.that(
        (2..=120).contains(&samples.len()),
        format!("a few dozen samples for 100 MiB, got {}", samples.len()),
    );
    let step = |v: u64| (v >> 5).clamp(MIB, 16 * MIB);
    for pair in samples.windows(2) {
        let moved = |f: &str| {
            let now = pair[1].u64_of(f).unwrap_or(0);
            now.abs_diff(pair[0].u64_of(f).unwrap_or(0)) >= step(now)
        };
        k.that(
            moved("rss_bytes") || moved("mapped_bytes"),
            format!(
                "consecutive samples a step (1/32 of the value, 1 to 16 MiB) apart: {} then {}",
                pair[0], pair[1]
            ),
        );
    }
    k.finish(&ev);
}

/// /proc/PID/status's VmRSS, in bytes.
fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
        * 1024
}

/// The last memory sample of a small process is within 5% of its VmRSS read from /proc while
/// it is alive (the sample step is 1/32 of RSS, at least 1 MiB; a fixed 16 MiB step left
/// these sizes up to 19% off, or without any sample below 16 MiB). Through the BTF `rss_stat`,
/// which reads the counter from the process's `mm_struct`.
#[test]
fn last_sample_is_within_five_percent_of_vm_rss() {
    last_sample_within_five_percent(&[]);
}

/// The same through the classic `kmem/rss_stat` (the fallback where BTF lacks the layout),
/// which reads the kernel's trace record.
#[test]
fn last_sample_is_within_five_percent_of_vm_rss_classic_tracepoints() {
    last_sample_within_five_percent(&[("TRACER_CLASSIC_TRACEPOINTS", "1")]);
}

fn last_sample_within_five_percent(env: &[(&str, &str)]) {
    if !require_root() {
        return;
    }
    let cg = cgroup(128 * MIB);
    let mut k = Checks::new();
    let mut all = Vec::new();
    for mib in [20, 30, 40] {
        let t = Tracer::for_test_env(&["--events", "memory,process"], env);
        let mut w = Workload::spawn(cg.enter(&mut workload!("hog", "--mib", mib)));
        let wp = w.pid();
        w.expect("touched");
        // The workload now only waits on stdin: its RSS stays put until it exits (its mm is
        // torn down after exit, with no samples: the kernel's `curr` is then 0).
        let truth = vm_rss(wp);
        w.close_stdin();
        assert!(w.wait().success());
        t.wait_for("the workload's exit", |e| e.is("exit", wp));
        let ev = t.stop().events;
        match ev.iter().rfind(|e| e.is("mem_sample", wp)) {
            Some(last) => {
                let rss = last.u64_of("rss_bytes").unwrap_or(0);
                let err = rss.abs_diff(truth) as f64 / truth as f64;
                eprintln!(
                    "{mib} MiB touched: VmRSS {truth}, last sample {rss}: {:.2}% off",
                    err * 100.0
                );
                k.that(
                    err <= 0.05,
                    format!(
                        "{mib} MiB touched: the last sample's rss_bytes {rss} within 5% of VmRSS {truth} ({:.1}% off): {last}",
                        err * 100.0
                    ),
                );
            }
            None => k.that(
                false,
                format!("{mib} MiB touched: no mem_sample of pid {wp}"),
            ),
        }
        all.extend(ev);
    }
    k.finish(&all);
}

/// A process growing 40 MiB/s in a 96 MiB cgroup is OOM-killed after ~2.5 s, long before the
/// 30 s of samples the regular runaway_alloc path waits for: it gets an early, critical
/// runaway_alloc finding, printed before its oom_kill.
#[test]
fn fast_runaway_is_warned_before_its_oom_kill() {
    if !require_root() {
        return;
    }
    let limit = 96 * MIB;
    let cg = cgroup(limit);
    let t = Tracer::for_test(&["--events", "memory,oom,signal,process"]);
    let mut w = Workload::spawn(cg.enter(&mut workload!("hog", "--unbounded", "--mib-per-s", 40)));
    let wp = w.pid();
    w.expect("hogging");
    let status = w.wait_within(Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "the hog was killed");
    assert_eq!(cg.oom_kills(), Some(1), "the cgroup counted one OOM kill");
    t.wait_for("the hog's exit", |e| e.is("exit", wp));
    let stopped = t.stop();
    let ev = &stopped.events;
    let mut k = Checks::new();
    let oom = k.find_with(
        "the oom_kill event",
        ev,
        |e| e.kind() == "oom_kill" && e["victim_pid"] == wp,
        json!({"pid": wp}),
    );
    let warned = k.find_with(
        "the runaway_alloc finding, as first raised",
        &stopped.findings,
        |f| f.kind() == "runaway_alloc" && f["pid"] == wp && f["update"] == "new",
        json!({
            "severity": "critical", "comm": "workload", "early_warning": true,
            "limit_source": "cgroup", "limit_bytes": limit,
        }),
    );
    if let (Some(oom), Some(f)) = (oom, warned) {
        // Both are RFC 3339 with nanoseconds, in UTC: they sort as strings.
        let (raised, killed) = (f.str_of("ts").unwrap_or(""), oom.str_of("ts").unwrap_or(""));
        eprintln!(
            "runaway_alloc raised at {raised}, oom_kill at {killed}: {}",
            f["summary"]
        );
        k.that(
            !raised.is_empty() && raised < killed,
            format!("raised ({raised}) before the oom_kill ({killed}): {f}"),
        );
        let rate = f.u64_of("growth_bytes_per_sec").unwrap_or(0);
        k.that(
            (20 * MIB..=80 * MIB).contains(&rate),
            format!("growth_bytes_per_sec near 40 MiB/s: {f}"),
        );
        let left = f["seconds_to_limit"].as_f64().unwrap_or(-1.0);
        k.that(
            (0.0..30.0).contains(&left),
            format!("seconds_to_limit within the 30 s window: {f}"),
        );
        k.that(
            f.str_of("summary")
                .unwrap_or("")
                .starts_with("early warning: "),
            format!("the summary says it is an early warning: {f}"),
        );
    }
    k.finish(ev);
}

/// `--large-mapping`: a 2 MiB mmap is not an event by default (4 MiB), and is with 1M.
#[test]
fn large_mapping_threshold() {
    if !require_root() {
        return;
    }
    let cg = cgroup(64 * MIB);
    for (args, shown) in [
        (&["--events", "memory,process"][..], false),
        (
            &["--events", "memory,process", "--large-mapping", "1M"][..],
            true,
        ),
    ] {
        let t = Tracer::for_test(args);
        let mut w = Workload::spawn(cg.enter(&mut workload!("mmap", "--mib", 2)));
        let wp = w.pid();
        let mapped = w.expect("mapped");
        assert!(w.wait().success());
        t.wait_for("the workload's exit", |e| e.is("exit", wp));
        let ev = t.stop().events;
        let mut k = Checks::new();
        let mmap = ev.iter().find(|e| e.is("mmap", wp) && e["len"] == 2 * MIB);
        let munmap = ev
            .iter()
            .find(|e| e.is("munmap", wp) && e["len"] == 2 * MIB);
        if shown {
            k.that(
                mmap.is_some_and(|m| m["addr"] == mapped["addr"]) && munmap.is_some(),
                format!(
                    "with {args:?}: the 2 MiB mmap and munmap at {}",
                    mapped["addr"]
                ),
            );
        } else {
            k.that(
                mmap.is_none() && munmap.is_none(),
                format!("by default a 2 MiB mapping is not an event: {mmap:?} {munmap:?}"),
            );
        }
        k.finish(&ev);
    }
}
