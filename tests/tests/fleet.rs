//! Beyond one host: a real Prometheus scraping `tracer record --metrics` during a reproduced
//! incident, processes named by their systemd unit, container and pod, the OTLP export, and
//! the package.
use std::{
    net::TcpStream,
    os::unix::fs::symlink,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    EventExt, MemCgroup, Tracer,
    cgroup::NamedCgroup,
    http::http_get,
    otlp::{
        attrs, log_records, metric_points, point_value, received, require_otlp_python,
        start_receiver,
    },
    poll,
    recorder_util::{Bin, Recording, TempDir},
    require_root,
    servers::{self, Guard, Needed, free_port, in_ci},
    test_pid,
};

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus's instant query API: the result vector.
fn prom_query(port: u16, q: &str) -> Vec<Value> {
    let Some((200, body)) = http_get(port, &format!("/api/v1/query?query={}", percent_encode(q)))
    else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn sample_value(s: &Value) -> f64 {
    s["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Prometheus from Debian's package, installed when missing (a failure in CI, a loud skip
/// elsewhere).
fn require_prometheus() -> bool {
    let needed = [Needed {
        present: || std::path::Path::new("/usr/bin/prometheus").is_file(),
        package: "prometheus",
    }];
    match servers::install_missing(&needed) {
        Ok(()) => true,
        Err(e) if in_ci() => panic!("CI=true and Prometheus is not available: {e}"),
        Err(e) => {
            eprintln!("\n*****\nSKIP: {e}\n*****");
            false
        }
    }
}

/// A symlink named `name` to the tracer binary, so `tracer scenario ...` runs with that comm.
fn named_tracer(dir: &TempDir, bin: &Bin, name: &str) -> std::path::PathBuf {
    let link = dir.join(name);
    symlink(bin.path(), &link).expect("symlink the tracer binary");
    link
}

/// The leaking proxy of the brief: `proxy` answers `curl`-like clients and never closes its
/// sockets (CLOSE_WAIT) while keeping 1 MiB per request, in a 256 MiB memory cgroup and in a
/// systemd-style unit cgroup. A real Prometheus scrapes `tracer record --metrics` every second;
/// its HTTP API must then hold the culprit's series (named by its unit), the findings and the
/// loss counters, and the dump's report must name the unit too.
#[test]
fn prometheus_scrapes_the_recorder_during_a_leak() {
    if !require_root() || !require_prometheus() {
        return;
    }
    let started = Instant::now();
    let bin = Bin::pinned();
    let tmp = TempDir::new("fleet-prom");
    let dump = tmp.join("dump");
    let metrics_port = free_port();
    let unit = format!("tracer-test-proxy-{}.service", test_pid());
    let unit_cg = NamedCgroup::create(&format!("system.slice/{unit}")).expect("unit cgroup");
    let mem = MemCgroup::create(256 << 20).expect("memory cgroup");

    let rec = Recording::start(
        &bin,
        &dump,
        &[
            "--pid",
            &test_pid().to_string(),
            "--metrics",
            &format!("127.0.0.1:{metrics_port}"),
            "--threshold",
            "close_wait_min_age_s=2",
        ],
    );

    // Prometheus, private config and data, scraping every second.
    let prom_port = free_port();
    let cfg = tmp.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(tmp.join("prometheus.log")).unwrap();
    let prom_mem = MemCgroup::create(512 << 20).expect("memory cgroup for prometheus");
    let mut prom_cmd = Command::new("/usr/bin/prometheus");
    prom_cmd
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(prom_log);
    prom_mem.enter(&mut prom_cmd);
    let mut prom = Guard::spawn("prometheus", &mut prom_cmd, libc::SIGTERM);
    poll("prometheus ready", Duration::from_secs(30), || {
        prom.assert_running();
        match http_get(prom_port, "/-/ready") {
            Some((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // The incident.
    let port = free_port();
    let proxy_bin = named_tracer(&tmp, &bin, "proxy");
    let clients_bin = named_tracer(&tmp, &bin, "curl");
    let scenario = |exe: &std::path::Path, role: &str, rate: &str| {
        let mut c = Command::new(exe);
        c.args(["scenario", role, "--port", &port.to_string()])
            .args(["--rate", rate, "--seconds", "40"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        mem.enter(&mut c);
        c
    };
    let mut proxy_cmd = scenario(&proxy_bin, "proxy", "0");
    unit_cg.enter(&mut proxy_cmd);
    let mut proxy = Guard::spawn("proxy", &mut proxy_cmd, libc::SIGKILL);
    thread::sleep(Duration::from_millis(300));
    let mut clients = Guard::spawn(
        "clients",
        &mut scenario(&clients_bin, "http-clients", "5"),
        libc::SIGKILL,
    );

    let sel = format!("{{comm=\"proxy\",unit=\"{unit}\",pid=\"{}\"}}", proxy.pid());
    let cw = poll(
        "the proxy's CLOSE_WAIT series in Prometheus",
        Duration::from_secs(25),
        || {
            proxy.assert_running();
            let r = prom_query(
                prom_port,
                &format!("tracer_process_close_wait_sockets{sel}"),
            );
            match r.first().map(sample_value) {
                Some(v) if v >= 5.0 => Ok(v),
                _ => Err(format!("{r:?}")),
            }
        },
    );
    let open = prom_query(prom_port, &format!("tracer_process_open_sockets{sel}"));
    let open = open.first().map(sample_value).unwrap_or(0.0);
    assert!(open >= cw, "open sockets {open} < CLOSE_WAIT {cw}");
    let rss = prom_query(prom_port, &format!("tracer_process_rss_bytes{sel}"));
    assert!(
        rss.first().map(sample_value).unwrap_or(0.0) >= (8 << 20) as f64,
        "the proxy keeps 1 MiB per request: {rss:?}"
    );
    let findings = poll(
        "close_wait findings counted",
        Duration::from_secs(10),
        || {
            let r = prom_query(prom_port, "sum(tracer_findings_total{kind=\"close_wait\"})");
            match r.first().map(sample_value) {
                Some(v) if v >= 1.0 => Ok(v),
                _ => Err(format!("{r:?}")),
            }
        },
    );
    // Loss counters: one series per kind, both rings.
    let lost = prom_query(prom_port, "tracer_records_lost_total");
    assert_eq!(
        lost.len(),
        tracer_common::Kind::ALL.len(),
        "one loss counter per kind: {lost:?}"
    );
    for k in tracer_common::Kind::ALL {
        assert!(
            lost.iter().any(|s| s["metric"]["kind"] == k.name()),
            "no loss counter for {}: {lost:?}",
            k.name()
        );
    }
    for ring in ["critical", "bulk"] {
        assert!(
            lost.iter().any(|s| s["metric"]["ring"] == ring),
            "no {ring} ring series: {lost:?}"
        );
    }
    let lost_total: f64 = lost.iter().map(sample_value).sum();
    let written = prom_query(prom_port, "tracer_recorder_bytes_written_total");
    assert!(
        written.first().map(sample_value).unwrap_or(0.0) > 0.0,
        "{written:?}"
    );
    let events = prom_query(prom_port, "tracer_events_total{kind=\"conn_open\"}");
    assert!(
        events.first().map(sample_value).unwrap_or(0.0) >= 5.0,
        "{events:?}"
    );
    // Cardinality stays bounded: at most 20 processes and "other".
    let series = prom_query(prom_port, "count(tracer_process_open_sockets)");
    assert!(
        series.first().map(sample_value).unwrap_or(99.0) <= 21.0,
        "{series:?}"
    );

    clients.stop();
    proxy.stop();
    prom.stop();
    let recorded = rec.stop();
    let summary = recorded.stderr.join("\n");
    if summary.contains("no records lost") {
        assert_eq!(
            lost_total, 0.0,
            "Prometheus saw losses the recorder did not report"
        );
    }
    // The dump names the unit too: the report after the fact.
    let report = bin.run(
        &[
            "report",
            "--json",
            "--threshold",
            "close_wait_min_age_s=2",
            dump.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let doc = report.json();
    let f = doc["findings"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|f| f["kind"] == "close_wait" && f["comm"] == "proxy")
        })
        .unwrap_or_else(|| panic!("no close_wait finding for proxy in the report: {doc}"));
    assert_eq!(f["unit"], unit.as_str(), "{f}");
    eprintln!(
        "fleet: prometheus saw {cw} CLOSE_WAIT, {open} open sockets, {findings} close_wait findings, {lost_total} lost, in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

const CONTAINER_ID: &str = "c0ffee00d15ea5e0c0ffee00d15ea5e0c0ffee00d15ea5e0c0ffee00d15ea5e0";
const POD_UID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const POD_CONTAINER: &str = "feedbeef00000000feedbeef00000000feedbeef00000000feedbeef00000000";

/// Three shells, each in a cgroup named as systemd, docker and the kubelet name theirs, each
/// SIGTERMing a child: their events, the signal_source findings and the metrics' labels must
/// carry the unit, the container id and the pod.
#[test]
fn processes_are_named_by_unit_container_and_pod() {
    if !require_root() {
        return;
    }
    let pid = test_pid();
    let unit = format!("tracer-test-foo-{pid}.service");
    let cgs = [
        NamedCgroup::create(&format!("system.slice/{unit}")).expect("unit cgroup"),
        NamedCgroup::create(&format!("system.slice/docker-{CONTAINER_ID}.scope"))
            .expect("docker cgroup"),
        NamedCgroup::create(&format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{POD_CONTAINER}.scope",
            POD_UID.replace('-', "_")
        ))
        .expect("pod cgroup"),
    ];
    let metrics_port = free_port();
    let t = Tracer::for_test(&["--metrics", &format!("127.0.0.1:{metrics_port}")]);
    let mut shells = Vec::new();
    for cg in &cgs {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "sleep 30 & kill -TERM $!; wait; sleep 2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cg.enter(&mut c);
        shells.push(Guard::spawn("sh", &mut c, libc::SIGKILL));
    }
    let expect: [&[(&str, &str)]; 3] = [
        &[("unit", unit.as_str())],
        &[
            ("container_id", CONTAINER_ID),
            ("container_runtime", "docker"),
        ],
        &[
            ("container_id", POD_CONTAINER),
            ("container_runtime", "containerd"),
            ("pod_uid", POD_UID),
            ("pod_qos", "burstable"),
        ],
    ];
    for (sh, want) in shells.iter().zip(expect) {
        let sh_pid = sh.pid();
        let ev = t.wait_for(&format!("the SIGTERM from sh {sh_pid}"), |e| {
            e.is("signal", sh_pid) && e.str_of("signal_name") == Some("SIGTERM")
        });
        for (k, v) in want {
            assert_eq!(ev.str_of(k), Some(*v), "event {k}: {ev}");
        }
        if !want.iter().any(|(k, _)| *k == "unit") {
            assert_eq!(
                ev.str_of("unit"),
                None,
                "a container's scope is not a unit: {ev}"
            );
        }
        let f = t
            .wait_for_finding(|f| {
                f["kind"] == "signal_source" && f["sender_pid"].as_u64() == Some(sh_pid as u64)
            })
            .unwrap_or_else(|| panic!("no signal_source finding for sh {sh_pid}"));
        for (k, v) in want {
            assert_eq!(f[k].as_str(), Some(*v), "finding {k}: {f}");
        }
    }
    // The metrics' labels: the SIGTERMed children (dead before or after their exec), in the same cgroups.
    let text = poll(
        "the labelled series at /metrics",
        Duration::from_secs(5),
        || {
            let (_, body) = http_get(metrics_port, "/metrics").ok_or("no answer")?;
            let ok = body.contains(&format!("unit=\"{unit}\""))
                && body.contains(&format!("container=\"{}\"", &CONTAINER_ID[..12]))
                && body.contains(&format!("pod_uid=\"{POD_UID}\""));
            if ok { Ok(body) } else { Err(body) }
        },
    );
    let pod_sleep = text
        .lines()
        .filter(|l| l.starts_with("tracer_process_fatal_signals_received_total{"))
        .find(|l| l.contains(&format!("pod_uid=\"{POD_UID}\"")) && l.ends_with(" 1"))
        .unwrap_or_else(|| panic!("no series for the pod's SIGTERMed child:\n{text}"));
    assert!(
        pod_sleep.contains(&format!("container=\"{}\"", &POD_CONTAINER[..12])),
        "{pod_sleep}"
    );
    assert!(pod_sleep.ends_with(" 1"), "{pod_sleep}");
    for mut s in shells {
        s.stop();
    }
    t.stop();
    // Innermost first: the docker scope before the system.slice the unit's cgroup created.
    for cg in cgs.into_iter().rev() {
        drop(cg);
    }
}

/// The .deb builds from a fresh clone with the README's one command (`scripts/package.sh`, a
/// dev build here to reuse the test build's dependencies), installs with dpkg -i with the
/// binary, unit, config, completions and man pages in place; `systemd-analyze verify` accepts
/// the unit; the unit's own command line runs with the shipped config and tells systemd's
/// notify socket READY=1 once attached. The package is purged at the end.
#[test]
fn the_package_builds_from_a_clone_installs_and_its_unit_verifies() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = format!(
        "{home}/.cargo/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let has_deb = Command::new("cargo")
        .args(["deb", "--version"])
        .env("PATH", &path)
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_deb {
        eprintln!("tracer-tests: installing cargo-deb (cargo install --locked cargo-deb)");
        let ok = Command::new("cargo")
            .args(["install", "--locked", "--quiet", "cargo-deb"])
            .env("PATH", &path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            if in_ci() {
                panic!("CI=true and cargo-deb cannot be installed");
            }
            eprintln!("\n*****\nSKIP: cargo-deb cannot be installed\n*****");
            return;
        }
    }
    let tmp = TempDir::new("fleet-deb");
    let clone = tmp.join("src");
    let st = Command::new("git")
        .args(["clone", "--quiet", "--no-local"])
        .arg(workspace)
        .arg(&clone)
        .status()
        .expect("git clone");
    assert!(st.success(), "git clone of {} failed", workspace.display());
    // The same target directory as the tests (dependencies already built; the clone's own
    // crates are rebuilt from its committed sources).
    let out = Command::new("bash")
        .arg(clone.join("scripts/package.sh"))
        .args(["-o", tmp.join("deb").to_str().unwrap()])
        .env("TRACER_PROFILE", "dev")
        .env("CARGO_TARGET_DIR", &target)
        .env("PATH", &path)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/package.sh");
    assert!(
        out.status.success(),
        "scripts/package.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = std::fs::read_dir(tmp.join("deb"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb in the output directory");
    let built = started.elapsed();

    struct Purge;
    impl Drop for Purge {
        fn drop(&mut self) {
            let _ = Command::new("dpkg")
                .args(["--purge", "tracer"])
                .stdout(Stdio::null())
                .status();
        }
    }
    let st = Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .expect("dpkg -i");
    let _purge = Purge;
    assert!(st.success(), "dpkg -i {} failed", deb.display());
    for f in [
        "/usr/bin/tracer",
        "/lib/systemd/system/tracer.service",
        "/etc/tracer/tracer.toml",
        "/etc/tracer/tracer.env",
        "/usr/share/bash-completion/completions/tracer",
        "/usr/share/zsh/vendor-completions/_tracer",
        "/usr/share/fish/vendor_completions.d/tracer.fish",
        "/usr/share/man/man1/tracer.1.gz",
        "/usr/share/man/man1/tracer-record.1.gz",
    ] {
        assert!(std::path::Path::new(f).is_file(), "{f} not installed");
    }
    let v = Command::new("/usr/bin/tracer")
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&v.stdout).starts_with("tracer "),
        "{v:?}"
    );
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/lib/systemd/system/tracer.service"])
        .output()
        .expect("systemd-analyze (package systemd)");
    assert!(
        verify.status.success(),
        "systemd-analyze verify rejects the unit:\n{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // The unit's ExecStart, with the shipped config, as systemd would run it (TRACER_OPTS
    // replaced by a free metrics port and this test's pid), under a notify socket.
    let unit = std::fs::read_to_string("/lib/systemd/system/tracer.service").unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let metrics_port = free_port();
    let state = tmp.join("state");
    let mut argv: Vec<String> = Vec::new();
    for w in exec.split_whitespace() {
        match w {
            "$TRACER_OPTS" => argv.extend([
                "--metrics".into(),
                format!("127.0.0.1:{metrics_port}"),
                "--pid".into(),
                test_pid().to_string(),
            ]),
            "/var/lib/tracer" => argv.push(state.to_str().unwrap().to_owned()),
            w => argv.push(w.to_owned()),
        }
    }
    let sock_path = tmp.join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut svc = Guard::spawn("tracer.service", &mut cmd, libc::SIGTERM);
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no readiness from `{}`: {e}", argv.join(" ")));
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    let (code, body) = poll("the service's metrics", Duration::from_secs(5), || {
        http_get(metrics_port, "/metrics").ok_or_else(|| "no answer".to_owned())
    });
    assert_eq!(code, 200);
    assert!(
        body.contains("tracer_recorder_bytes_written_total"),
        "{body}"
    );
    svc.assert_running();
    svc.stop();
    eprintln!(
        "fleet: package built from a clone in {:.1}s, installed and verified in {:.1}s",
        built.as_secs_f64(),
        (started.elapsed() - built).as_secs_f64()
    );
}

// ---- OTLP export ----

/// The leaking proxy again, this time exported over OTLP to a receiver that decodes with the
/// official protobuf definitions: its close_wait finding must arrive as a log record with the
/// JSON fields as attributes (and the unit), the severity mapped, the host in the resource; its
/// series among the metrics.
#[test]
fn otlp_export_reaches_a_collector_during_a_leak() {
    if !require_root() {
        return;
    }
    let Some(python) = require_otlp_python() else {
        return;
    };
    let started = Instant::now();
    let bin = Bin::pinned();
    let tmp = TempDir::new("fleet-otlp");
    let out = tmp.join("received.jsonl");
    let otlp_port = free_port();
    let mut receiver = start_receiver(&python, otlp_port, &out);
    let unit = format!("tracer-test-otlp-proxy-{}.service", test_pid());
    let unit_cg = NamedCgroup::create(&format!("system.slice/{unit}")).expect("unit cgroup");
    let mem = MemCgroup::create(256 << 20).expect("memory cgroup");
    let rec = Recording::start(
        &bin,
        &tmp.join("dump"),
        &[
            "--pid",
            &test_pid().to_string(),
            "--otlp",
            &format!("http://127.0.0.1:{otlp_port}"),
            "--otlp-interval",
            "1s",
            "--threshold",
            "close_wait_min_age_s=2",
        ],
    );

    let port = free_port();
    let proxy_bin = named_tracer(&tmp, &bin, "proxy");
    let clients_bin = named_tracer(&tmp, &bin, "curl");
    let scenario = |exe: &std::path::Path, role: &str, rate: &str| {
        let mut c = Command::new(exe);
        c.args(["scenario", role, "--port", &port.to_string()])
            .args(["--rate", rate, "--seconds", "40"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        mem.enter(&mut c);
        c
    };
    let mut proxy_cmd = scenario(&proxy_bin, "proxy", "0");
    unit_cg.enter(&mut proxy_cmd);
    let mut proxy = Guard::spawn("proxy", &mut proxy_cmd, libc::SIGKILL);
    thread::sleep(Duration::from_millis(300));
    let mut clients = Guard::spawn(
        "clients",
        &mut scenario(&clients_bin, "http-clients", "5"),
        libc::SIGKILL,
    );
    let proxy_pid = proxy.pid().to_string();

    let (resource, finding) = poll(
        "the proxy's close_wait finding as an OTLP log record",
        Duration::from_secs(25),
        || {
            proxy.assert_running();
            receiver.assert_running();
            let recs = log_records(&received(&out));
            recs.iter()
                .find(|(_, r)| {
                    let a = attrs(&r["attributes"]);
                    a.get("kind").map(String::as_str) == Some("close_wait")
                        && a.get("pid") == Some(&proxy_pid)
                })
                .cloned()
                .ok_or_else(|| format!("{} log records", recs.len()))
        },
    );
    let a = attrs(&finding["attributes"]);
    assert_eq!(
        a.get("comm").map(String::as_str),
        Some("proxy"),
        "{finding}"
    );
    assert_eq!(a.get("unit"), Some(&unit), "{finding}");
    assert_eq!(
        a.get("type").map(String::as_str),
        Some("finding"),
        "{finding}"
    );
    assert!(
        a.get("count")
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0)
            >= 1,
        "{finding}"
    );
    let sev = a.get("severity").cloned().unwrap_or_default();
    let want = match sev.as_str() {
        "info" => "SEVERITY_NUMBER_INFO",
        "warning" => "SEVERITY_NUMBER_WARN",
        "critical" => "SEVERITY_NUMBER_ERROR",
        other => panic!("severity {other:?}: {finding}"),
    };
    assert_eq!(finding["severity_number"], want, "{finding}");
    assert_eq!(finding["severity_text"], sev.as_str(), "{finding}");
    assert_eq!(finding["event_name"], "tracer.finding", "{finding}");
    assert_eq!(
        finding["body"]["string_value"].as_str(),
        a.get("summary").map(String::as_str),
        "{finding}"
    );
    assert!(finding["time_unix_nano"].as_str().is_some(), "{finding}");
    let ra = attrs(&resource["attributes"]);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        ra.get("service.name").map(String::as_str),
        Some("tracer"),
        "{resource}"
    );
    assert!(ra.contains_key("service.version"), "{resource}");
    assert_eq!(
        ra.get("host.name").map(String::as_str),
        Some(hostname.trim()),
        "{resource}"
    );
    assert_eq!(
        ra.get("os.type").map(String::as_str),
        Some("linux"),
        "{resource}"
    );
    assert!(
        ra.contains_key("host.id") || ra.contains_key("tracer.boot_id"),
        "{resource}"
    );

    // The metrics: the culprit's series, labelled with its unit.
    let cw = poll(
        "the proxy's CLOSE_WAIT gauge over OTLP",
        Duration::from_secs(15),
        || {
            let reqs = received(&out);
            let pts = metric_points(&reqs, "tracer_process_close_wait_sockets");
            pts.iter()
                .find(|(kind, p)| {
                    let a = attrs(&p["attributes"]);
                    kind == "gauge"
                        && a.get("pid") == Some(&proxy_pid)
                        && a.get("unit") == Some(&unit)
                        && point_value(p) >= 5.0
                })
                .map(|(_, p)| point_value(p))
                .ok_or_else(|| format!("{pts:?}"))
        },
    );
    // The finding's log record is sent at once, the metrics every --otlp-interval: the
    // finding's count comes with the next metrics export (the gauge above may predate it).
    poll(
        "the close_wait finding counted in tracer_findings over OTLP",
        Duration::from_secs(10),
        || {
            let findings = metric_points(&received(&out), "tracer_findings");
            findings
                .iter()
                .any(|(k, p)| {
                    k == "sum"
                        && attrs(&p["attributes"]).get("kind").map(String::as_str)
                            == Some("close_wait")
                        && point_value(p) >= 1.0
                })
                .then_some(())
                .ok_or_else(|| format!("tracer_findings (a sum, _total dropped): {findings:?}"))
        },
    );
    let reqs = received(&out);
    let dropped = metric_points(&reqs, "tracer_otlp_dropped");
    assert!(
        dropped.iter().any(
            |(_, p)| attrs(&p["attributes"]).get("signal").map(String::as_str) == Some("logs")
                && point_value(p) == 0.0
        ),
        "nothing dropped with a healthy collector: {dropped:?}"
    );

    clients.stop();
    proxy.stop();
    let recorded = rec.stop();
    receiver.stop();
    let summary = recorded.stderr.join("\n");
    assert!(summary.contains("tracer: otlp: sent"), "{summary}");
    eprintln!(
        "fleet: OTLP carried the close_wait finding ({sev}) and {cw} CLOSE_WAIT, in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// A line `name{labels} value` of OpenMetrics text: the value.
fn scraped(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Two recorders exporting every event over OTLP to dead collectors: a port nobody listens on,
/// and one that accepts and never answers. Under steady load (loopback connections from the
/// test), both keep recording (events keep counting), their RSS stays flat, the drop counter
/// rises, and SIGTERM ends them within a few seconds.
#[test]
fn otlp_to_a_dead_collector_neither_blocks_nor_grows_memory() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let bin = Bin::pinned();
    let tmp = TempDir::new("fleet-otlp-dead");
    // Accepts, never reads nor answers; holds every connection.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let held = held.clone();
        thread::spawn(move || {
            for c in hole.incoming().flatten() {
                held.lock().unwrap().push(c);
            }
        });
    }
    let closed_port = free_port();
    let recorders: Vec<(&str, u16, Recording)> =
        [("closed port", closed_port), ("black hole", hole_port)]
            .into_iter()
            .enumerate()
            .map(|(i, (what, port))| {
                let metrics_port = free_port();
                let rec = Recording::start(
                    &bin,
                    &tmp.join(format!("dump{i}")),
                    &[
                        "--pid",
                        &test_pid().to_string(),
                        "--metrics",
                        &format!("127.0.0.1:{metrics_port}"),
                        "--otlp",
                        &format!("http://127.0.0.1:{port}"),
                        "--otlp-events",
                        "--otlp-interval",
                        "1s",
                        "--otlp-queue",
                        "1000",
                    ],
                );
                (what, metrics_port, rec)
            })
            .collect();

    // Load: loopback connections, opened and closed, for ~11 s.
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    thread::spawn(move || {
        for c in sink.incoming() {
            drop(c);
        }
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if TcpStream::connect(("127.0.0.1", sink_port)).is_ok() {
                    n += 1;
                }
                thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };

    let scrape = |port: u16| {
        http_get(port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    let mut rss: Vec<Vec<u64>> = vec![Vec::new(); recorders.len()];
    let mut first = Vec::new();
    for s in 0..11 {
        thread::sleep(Duration::from_secs(1));
        for (i, (_, mport, rec)) in recorders.iter().enumerate() {
            rss[i].push(vm_rss_kib(rec.pid()));
            if s == 2 {
                first.push(scrape(*mport));
            }
        }
    }
    let last: Vec<String> = recorders.iter().map(|(_, m, _)| scrape(*m)).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let conns = load.join().unwrap();

    let mut report = Vec::new();
    for (i, (what, _, _)) in recorders.iter().enumerate() {
        let series = |text: &str, s: &str| scraped(text, s).unwrap_or(-1.0);
        let ev = r#"tracer_events_total{kind="conn_open"}"#;
        let dr = r#"tracer_otlp_dropped_total{signal="logs"}"#;
        let (e0, e1) = (series(&first[i], ev), series(&last[i], ev));
        let (d0, d1) = (series(&first[i], dr), series(&last[i], dr));
        assert!(
            e1 > e0 && e0 >= 0.0,
            "{what}: events stopped counting: {e0} then {e1}"
        );
        assert!(
            d1 > d0 && d0 >= 0.0,
            "{what}: the drop counter did not rise: {d0} then {d1}"
        );
        assert!(
            series(
                &last[i],
                r#"tracer_otlp_failed_requests_total{signal="logs"}"#
            ) >= 1.0,
            "{what}: no failed request counted:\n{}",
            last[i]
        );
        assert!(
            series(&last[i], "tracer_otlp_queue_length") <= 1000.0,
            "{what}: queue beyond its bound"
        );
        // Flat after warm-up: with a dead collector nothing accumulates beyond the queue.
        let base = rss[i][2];
        let max = *rss[i][2..].iter().max().unwrap();
        assert!(
            max.saturating_sub(base) < 12 * 1024,
            "{what}: RSS grew from {base} to {max} KiB: {:?}",
            rss[i]
        );
        report.push(format!(
            "{what}: {} events, {} dropped, RSS {base}..{max} KiB",
            e1, d1
        ));
    }
    assert!(
        !held.lock().unwrap().is_empty(),
        "the black hole was never connected to"
    );
    for (what, _, rec) in recorders {
        let t = Instant::now();
        let recorded = rec.stop();
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(6),
            "{what}: SIGTERM took {took:?}"
        );
        let stderr = recorded.stderr.join("\n");
        assert!(
            stderr.contains("tracer: otlp: sent 0 log records"),
            "{what}: {stderr}"
        );
        report.push(format!("{what}: stopped in {:.1}s", took.as_secs_f64()));
    }
    eprintln!(
        "fleet: dead collectors ({conns} connections of load): {} in {:.1}s",
        report.join("; "),
        started.elapsed().as_secs_f64()
    );
}
