//! What one kernel's boot reported, checked against what the workload did.
use std::collections::BTreeMap;

use serde_json::Value;

pub struct Report {
    pub package: String,
    pub kernel: String,
    pub seconds: f64,
    /// (check, result) rows of the per-kernel table.
    pub rows: Vec<(String, String)>,
    pub failures: Vec<String>,
    /// Known differences of this kernel, seen as expected.
    pub differences: Vec<String>,
}

fn sections(results: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut name: Option<String> = None;
    let mut body = String::new();
    for line in results.lines() {
        if let Some(n) = line.strip_prefix("=== ") {
            if let Some(prev) = name.take() {
                out.insert(prev, std::mem::take(&mut body));
            }
            name = Some(n.trim().to_owned());
        } else if name.is_some() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// (major, minor) of a release string such as `6.12.118+deb12-amd64`.
pub fn version(release: &str) -> (u32, u32) {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|s| s.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn is_finding(v: &Value) -> bool {
    v.get("severity").is_some() && v.get("first_seen").is_some()
}

struct Ctx {
    rows: Vec<(String, String)>,
    failures: Vec<String>,
}

impl Ctx {
    fn report(
        self,
        package: &str,
        kernel: String,
        seconds: f64,
        differences: Vec<String>,
    ) -> Report {
        Report {
            package: package.into(),
            kernel,
            seconds,
            rows: self.rows,
            failures: self.failures,
            differences,
        }
    }

    /// A row that must hold; `detail` says what was seen.
    fn must(&mut self, what: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        self.rows.push((
            what.to_owned(),
            if ok {
                format!("ok {detail}")
            } else {
                format!("FAIL {detail}")
            },
        ));
        if !ok {
            self.failures.push(format!("{what}: {detail}"));
        }
    }
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(u64::MAX)
}

pub fn check(package: &str, results: &str, seconds: f64) -> Report {
    let s = sections(results);
    let get = |k: &str| s.get(k).cloned().unwrap_or_default();
    let kernel = get("kernel").trim().to_owned();
    let ver = version(&kernel);
    let old = ver < (6, 2);
    let mut c = Ctx {
        rows: Vec::new(),
        failures: Vec::new(),
    };
    let mut differences = Vec::new();

    // doctor
    let doctor = get("doctor");
    c.must(
        "doctor",
        doctor.contains("tracing is possible") && doctor.contains("exit 0"),
        doctor
            .lines()
            .find(|l| l.contains("probes attached"))
            .unwrap_or("(no summary)")
            .trim(),
    );
    let doctor_line = |name: &str| {
        doctor
            .lines()
            .find(|l| l.contains(name) && l.starts_with("tracepoint"))
            .unwrap_or("")
            .to_owned()
    };
    // rss_stat's BTF program reads the counter from the mm_struct, whose layout differs before
    // 6.2 (atomic_long_t counters) and after (percpu_counters): attached on both means BTF gave
    // that layout (else the classic tracepoint stands in, and this fails).
    let rss_btf = doctor
        .lines()
        .find(|l| l.starts_with("tp_btf rss_stat"))
        .unwrap_or("(not listed)")
        .to_owned();
    c.must(
        "doctor: tp_btf rss_stat",
        rss_btf.ends_with("attached"),
        rss_btf
            .split_whitespace()
            .skip(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    let recv = doctor_line("sock/sock_recv_length");
    if old {
        let said = doctor.contains("no bytes in/out");
        c.must(
            "doctor: no sock_*_length",
            !recv.contains("attached") && said,
            "missing, and doctor says what is lost",
        );
        differences.push("no sock/sock_{recv,send}_length: bytes per connection and last receive time are not known (doctor says so)".into());
    }

    let workload: Vec<Value> = get("workload")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let by_event = |name: &str| workload.iter().find(|v| v["event"] == name).cloned();
    let live_err = get("live.err");
    c.must(
        "tracer live",
        live_err.contains("exit 0"),
        live_err.lines().last().unwrap_or("").trim(),
    );
    let lines: Vec<Value> = get("live")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let (findings, events): (Vec<Value>, Vec<Value>) = lines.into_iter().partition(is_finding);
    let find = |pred: &dyn Fn(&Value) -> bool| events.iter().find(|e| pred(e)).cloned();

    let Some(m) = by_event("matrix") else {
        c.must(
            "workload",
            false,
            format!("no matrix line in {:?}", get("workload")),
        );
        return c.report(package, kernel, seconds, differences);
    };
    let pid = u(&m, "pid");
    let srv = u(&m, "server_port");
    let cport = u(&m, "client_port");
    let is = |e: &Value, kind: &str| e["kind"] == kind && u(e, "pid") == pid;

    // TCP
    let connect = find(&|e| is(e, "conn_open") && e["role"] == "connect" && u(e, "sport") == cport);
    let accept = find(&|e| is(e, "conn_open") && e["role"] == "accept" && u(e, "dport") == cport);
    c.must(
        "conn_open connect+accept",
        connect.as_ref().is_some_and(|e| u(e, "dport") == srv) && accept.is_some(),
        format!("port {cport} -> {srv}"),
    );
    let close = find(&|e| is(e, "conn_close") && e["role"] == "connect" && u(e, "sport") == cport);
    match &close {
        Some(e) if old => {
            c.must(
                "conn_close",
                e["closed_first"] == "local",
                format!("closed_first {}, bytes not known", e["closed_first"]),
            );
        }
        Some(e) => c.must(
            "conn_close",
            e["closed_first"] == "local"
                && u(e, "bytes_out") == u(&m, "sent")
                && u(e, "bytes_in") == u(&m, "received"),
            format!(
                "closed_first {}, out {} in {}",
                e["closed_first"], e["bytes_out"], e["bytes_in"]
            ),
        ),
        None => c.must("conn_close", false, "none for the client"),
    }
    let rport = u(&m, "reset_client_port");
    let rst_recv = find(&|e| {
        e["kind"] == "tcp_reset" && e["direction"] == "received" && u(e, "dport") == rport
    });
    c.must(
        "tcp_reset received (abort)",
        rst_recv.is_some(),
        format!("from port {rport}"),
    );
    let refused = u(&m, "refused_port");
    let refused_open = find(&|e| is(e, "conn_open") && u(e, "dport") == refused);
    c.must(
        "refused connect",
        refused_open
            .as_ref()
            .is_some_and(|e| e["error"] == "ECONNREFUSED"),
        format!(
            "error {}",
            refused_open
                .as_ref()
                .map_or(Value::Null, |e| e["error"].clone())
        ),
    );
    let refused_rst = find(&|e| e["kind"] == "tcp_reset" && u(e, "sport") == refused);
    if old {
        c.must(
            "no reset for the refusal",
            refused_rst.is_none(),
            "as documented for 6.1",
        );
        c.must(
            "doctor: old tcp_send_reset",
            doctor
                .contains("no tcp_reset is reported for a reset sent for a packet with no socket"),
            "doctor says so",
        );
        differences.push("no tcp_send_reset for a refused connection (no socket)".into());
        c.must(
            "doctor: rss_stat lag",
            doctor.contains("kmem/rss_stat fires only when"),
            "doctor says so",
        );
        differences.push("kmem/rss_stat fires only at counter syncs: first sample later, figures up to 64 pages low".into());
    } else {
        c.must(
            "tcp_reset sent (refusal)",
            refused_rst
                .as_ref()
                .is_some_and(|e| e["direction"] == "sent" && e["cause"] == "no_socket"),
            format!(
                "{}",
                refused_rst.map_or(Value::Null, |e| e["cause"].clone())
            ),
        );
    }
    // A reset received runs in softirq, not in the owner: its owner_pid comes from the
    // ownership the other hooks learnt (on 6.1 without sock_{recv,send}_length).
    c.must(
        "socket owners learnt",
        rst_recv.as_ref().is_some_and(|e| u(e, "owner_pid") == pid),
        format!(
            "reset's owner_pid {}",
            rst_recv
                .as_ref()
                .map_or(Value::Null, |e| e["owner_pid"].clone())
        ),
    );

    // processes and signals
    let sleeper = u(&m, "sleeper");
    let sig = find(&|e| is(e, "signal") && u(e, "target_pid") == sleeper);
    c.must(
        "signal SIGTERM",
        sig.as_ref().is_some_and(|e| e["signal_name"] == "SIGTERM"),
        format!("{pid} -> {sleeper}"),
    );
    let forks = ["sleeper", "exiter", "execer"]
        .iter()
        .filter(|k| find(&|e| is(e, "fork") && u(e, "child_pid") == u(&m, k)).is_some())
        .count();
    c.must("fork", forks == 3, format!("{forks} of 3 children"));
    let exiter = u(&m, "exiter");
    let ex = find(&|e| e["kind"] == "exit" && u(e, "pid") == exiter);
    c.must(
        "exit code",
        ex.as_ref().is_some_and(|e| u(e, "exit_code") == 7),
        format!("{}", ex.map_or(Value::Null, |e| e["exit_code"].clone())),
    );
    let killed = find(&|e| e["kind"] == "exit" && u(e, "pid") == sleeper);
    c.must(
        "exit by signal",
        killed
            .as_ref()
            .is_some_and(|e| e["signal_name"] == "SIGTERM"),
        format!(
            "{}",
            killed.map_or(Value::Null, |e| e["signal_name"].clone())
        ),
    );
    let execer = u(&m, "execer");
    let exec = find(&|e| e["kind"] == "exec" && u(e, "pid") == execer);
    c.must(
        "exec",
        exec.as_ref()
            .is_some_and(|e| e["args"].to_string().contains("--code")),
        format!("{}", exec.map_or(Value::Null, |e| e["filename"].clone())),
    );
    let rl = find(&|e| e["kind"] == "rlimit" && u(e, "target_pid") == pid);
    c.must(
        "rlimit",
        rl.as_ref()
            .is_some_and(|e| u(e, "soft") == 900 && u(e, "hard") == 1000),
        "nofile 900/1000",
    );
    let rn = find(&|e| {
        e["kind"] == "rename" && u(e, "target_pid") == pid && e["new_comm"] == "vm-renamed"
    });
    c.must(
        "rename",
        rn.as_ref().is_some_and(|e| e["old_comm"] == "workload"),
        "workload -> vm-renamed",
    );

    // memory
    let len = u(&m, "mmap_len");
    let mm = find(&|e| is(e, "mmap") && u(e, "len") == len);
    let mu = find(&|e| is(e, "munmap") && u(e, "len") == len);
    c.must(
        "mmap+munmap",
        mm.is_some() && mu.is_some(),
        format!("{} MiB", len >> 20),
    );
    let brk = find(&|e| is(e, "brk"));
    c.must("brk", brk.is_some(), "+8 MiB");
    match by_event("touched") {
        Some(t) => {
            let hog = u(&t, "pid");
            let truth = u(&t, "vm_rss_kb").saturating_mul(1024);
            let samples: Vec<&Value> = events
                .iter()
                .filter(|e| e["kind"] == "mem_sample" && u(e, "pid") == hog)
                .collect();
            let peak = samples.iter().map(|e| u(e, "rss_bytes")).max().unwrap_or(0);
            let first = samples.first().map_or(0, |e| u(e, "rss_bytes"));
            // Within 10% of VmRSS (the sample step is 1/32 of the figure, at least 1 MiB).
            let ok = peak.abs_diff(truth) * 10 <= truth && first > 0;
            c.must(
                "mem_sample peak",
                ok,
                format!(
                    "peak {:.1} MiB vs VmRSS {:.1} MiB, first {:.1} MiB",
                    peak as f64 / 1048576.0,
                    truth as f64 / 1048576.0,
                    first as f64 / 1048576.0
                ),
            );
        }
        None => c.must("mem_sample peak", false, "the hog said nothing"),
    }

    // the OOM kill of a process that joined its cgroup after fork
    match by_event("hogging") {
        Some(h) => {
            let victim = u(&h, "pid");
            let ev = find(&|e| e["kind"] == "oom_kill" && u(e, "victim_pid") == victim);
            c.must("oom_kill event", ev.is_some(), format!("victim {victim}"));
            let f = findings
                .iter()
                .find(|f| f["kind"] == "oom_kill" && u(f, "victim_pid") == victim);
            c.must(
                "oom_kill finding: cgroup+limit",
                f.is_some_and(|f| {
                    f["cgroup"] == "/oom" && u(f, "cgroup_limit_bytes") == super::OOM_LIMIT
                }),
                format!(
                    "cgroup {} limit {}",
                    f.map_or(Value::Null, |f| f["cgroup"].clone()),
                    f.map_or(Value::Null, |f| f["cgroup_limit_bytes"].clone())
                ),
            );
        }
        None => c.must("oom_kill event", false, "the join-hog said nothing"),
    }
    c.report(package, kernel, seconds, differences)
}

pub fn print_table(reports: &[Report]) {
    if reports.is_empty() {
        return;
    }
    let mut checks: Vec<String> = Vec::new();
    for r in reports {
        for (k, _) in &r.rows {
            if !checks.contains(k) {
                checks.push(k.clone());
            }
        }
    }
    let w = checks.iter().map(|c| c.len()).max().unwrap_or(5).max(6);
    print!("{:w$}", "check");
    for r in reports {
        print!("  {:44}", format!("{} ({:.0} s)", r.package, r.seconds));
    }
    println!();
    for k in &checks {
        print!("{k:w$}");
        for r in reports {
            let v = r
                .rows
                .iter()
                .find(|(c, _)| c == k)
                .map_or("-", |(_, v)| v.as_str());
            print!("  {v:44}");
        }
        println!();
    }
    for r in reports {
        for d in &r.differences {
            println!("{} ({}): known difference: {d}", r.package, r.kernel);
        }
        for f in &r.failures {
            println!("{}: FAILED {f}", r.kernel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_release_strings() {
        assert_eq!(version("6.1.0-57-amd64"), (6, 1));
        assert_eq!(version("6.12.118+deb12-amd64"), (6, 12));
        assert!(version("6.1.0-57-amd64") < (6, 2));
    }

    #[test]
    fn a_boot_that_reported_nothing_useful_fails() {
        let results = "=== kernel\n6.12.118+deb12-amd64\n=== doctor\ntracing is NOT possible\nexit 1\n\
                       === workload\n=== live\n=== live.err\nexit 1\n=== end\n";
        let r = check("linux-image-6.12", results, 1.0);
        assert_eq!(r.kernel, "6.12.118+deb12-amd64");
        assert!(
            r.failures.iter().any(|f| f.starts_with("doctor")),
            "{:?}",
            r.failures
        );
        assert!(
            r.failures.iter().any(|f| f.starts_with("workload")),
            "{:?}",
            r.failures
        );
    }
}
