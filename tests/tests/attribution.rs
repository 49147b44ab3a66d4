//! Naming the right process: limits set at run time, and processes that rename themselves.
use std::{process::Command, time::Duration};

use serde_json::json;
use tracer_tests::{
    Checks, EventExt, MemCgroup, Tracer, Workload,
    recorder_util::{Bin, Recording, TempDir},
    require_root,
    servers::{Needed, in_ci, install_missing},
    workload,
};

/// Soft and hard "Max open files" of a live process, from /proc.
fn proc_nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (v[0], v[1])
}

/// The process lowers its own RLIMIT_NOFILE to 64 (setrlimit) after the tracer has read its
/// exec-time limit from /proc, renames itself, and exhausts the new limit: fd_exhaustion says
/// limit 64 under the new name, with the old name in the evidence.
#[test]
fn a_limit_lowered_at_run_time_is_the_fd_limit() {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test(&["--events", "tcp,process"]);
    let mut w = Workload::spawn(&mut workload!(
        "accept-emfile",
        "--bind",
        "127.0.0.1:0",
        "--nofile",
        64,
        "--late-limit",
        "--rename",
        "wl-svc"
    ));
    let wp = w.pid();
    w.expect("listening");
    let exec_limit = proc_nofile(wp).0;
    assert_ne!(
        exec_limit, 64,
        "the test needs an exec-time limit other than 64"
    );
    // The tracer has taken the process in (with its exec-time limit) before the change.
    t.wait_for("the listen", |e| e.is("tcp_listen", wp));
    w.send("go");
    let truth = w.expect("emfile");
    assert_eq!(truth["accept_errno"], 24, "accept() failed with EMFILE");
    assert_eq!(proc_nofile(wp), (64, 64));
    let _ = t.wait_for_finding(|f| f.kind() == "fd_exhaustion" && f["pid"] == wp);
    w.close_stdin();
    assert!(w.wait().success());
    let stopped = t.stop();
    let finding = stopped
        .findings
        .iter()
        .rev()
        .find(|f| f.kind() == "fd_exhaustion" && f["pid"] == wp)
        .cloned();
    let mut k = Checks::new();
    k.find_with(
        "the setrlimit",
        &stopped.events,
        |e| e.is("rlimit", wp),
        json!({"target_pid": wp, "resource": "nofile", "soft": 64, "hard": 64}),
    );
    k.find_with(
        "the rename",
        &stopped.events,
        |e| e.is("rename", wp),
        json!({"target_pid": wp, "old_comm": "workload", "new_comm": "wl-svc"}),
    );
    match finding {
        Some(f) => {
            k.fields(
                "the fd_exhaustion finding",
                &f,
                json!({
                    "pid": wp, "comm": "wl-svc", "previous_comm": "workload", "fd_limit": 64,
                    "open_fds": 64,
                }),
            );
            let summary = f.str_of("summary").unwrap_or("");
            k.that(
                summary.contains("limit 64") && summary.contains("(wl-svc)"),
                format!("the summary names the new name and limit 64: {summary}"),
            );
        }
        None => k.that(false, format!("an fd_exhaustion finding for {wp}")),
    }
    k.finish(&stopped.events);
}

/// An operator changes another process's limit with util-linux `prlimit --pid`: the event is
/// the prlimit process's, names the target and the new limit, as /proc then says.
#[test]
fn prlimit_on_another_process_names_it() {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test(&["--events", "process"]);
    let mut w = Workload::spawn(&mut workload!("idle"));
    let wp = w.pid();
    w.expect("ready");
    let mut p = Command::new("prlimit")
        .args(["--pid", &wp.to_string(), "--nofile=32:32"])
        .spawn()
        .expect("util-linux prlimit");
    let pp = p.id();
    assert!(p.wait().expect("prlimit reaped").success());
    assert_eq!(proc_nofile(wp), (32, 32));
    let ev = t.try_wait_for(Duration::from_secs(5), |e| {
        e.is("rlimit", pp) && e["target_pid"] == wp
    });
    w.send("exit 0");
    assert!(w.wait().success());
    let stopped = t.stop();
    let mut k = Checks::new();
    match ev {
        Some(e) => k.fields(
            "prlimit's rlimit event",
            &e,
            json!({"comm": "prlimit", "target_pid": wp, "resource": "nofile", "soft": 32,
                   "hard": 32}),
        ),
        None => k.that(false, format!("an rlimit event of prlimit {pp} for {wp}")),
    }
    k.finish(&stopped.events);
}

/// A process renames itself (prctl PR_SET_NAME) and is then killed: the signal finding names
/// it by its new name, with the old one in the evidence.
#[test]
fn a_renamed_process_is_named_by_its_new_name() {
    if !require_root() {
        return;
    }
    let t = Tracer::for_test(&["--events", "signal,process"]);
    let mut w = Workload::spawn(&mut workload!("rename", "--name", "wl-renamed"));
    let wp = w.pid();
    w.expect("renamed");
    w.signal(libc::SIGTERM);
    let _ = w.wait();
    t.wait_for("the exit", |e| e.is("exit", wp));
    let stopped = t.stop();
    let mut k = Checks::new();
    k.find_with(
        "the rename",
        &stopped.events,
        |e| e.is("rename", wp),
        json!({"target_pid": wp, "comm": "workload", "old_comm": "workload",
               "new_comm": "wl-renamed"}),
    );
    k.find_with(
        "the exit under the new name",
        &stopped.events,
        |e| e.is("exit", wp),
        json!({"comm": "wl-renamed", "signal_name": "SIGTERM"}),
    );
    k.find_with(
        "the signal_source finding",
        &stopped.findings,
        |f| f.kind() == "signal_source" && f["target_pid"] == wp,
        json!({"target_comm": "wl-renamed", "target_previous_comm": "workload",
               "signal": "SIGTERM"}),
    );
    let renames = stopped
        .events
        .iter()
        .filter(|e| e.kind() == "rename" && e["target_pid"] == wp)
        .count();
    k.that(renames == 1, format!("one rename, not the exec: {renames}"));
    k.finish(&stopped.events);
}

/// Debian's stress-ng names its workers: `stress-ng --vm 1` forks a worker that renames itself
/// `stress-ng-vm`. One rename event (stress-ng sets the same name again and again: not
/// events), the worker's events under the new name, and its finding (its timeout SIGALRM,
/// counted as fatal here) under the new name with the old one in the evidence.
#[test]
fn stress_ng_workers_have_one_name() {
    if !require_root() {
        return;
    }
    let needed = [Needed {
        present: || std::path::Path::new("/usr/bin/stress-ng").is_file(),
        package: "stress-ng",
    }];
    if let Err(e) = install_missing(&needed) {
        if in_ci() {
            panic!("CI=true and stress-ng is not available: {e}");
        }
        eprintln!("\n***\nSKIP: {e}\n***");
        return;
    }
    let cg = MemCgroup::create(128 << 20).unwrap_or_else(|e| panic!("memory cgroup: {e}"));
    let t = Tracer::for_test(&[
        "--events",
        "signal,process",
        "--threshold",
        "fatal_signals=TERM,KILL,ALRM",
    ]);
    let mut cmd = Command::new("/usr/bin/stress-ng");
    cmd.args(["--vm", "1", "--vm-bytes", "16M", "--timeout", "2s"]);
    let mut w = Workload::spawn(cg.enter(&mut cmd));
    let sp = w.pid();
    let status = w.wait_within(Duration::from_secs(20));
    assert!(status.success(), "stress-ng: {status:?}");
    t.wait_for("stress-ng's exit", |e| e.is("exit", sp));
    let stopped = t.stop();
    let ev = &stopped.events;
    let mut k = Checks::new();
    let worker = ev
        .iter()
        .find(|e| e.is("fork", sp))
        .and_then(|e| e.u64_of("child_pid"))
        .unwrap_or(0) as u32;
    k.that(worker != 0, "stress-ng forks its vm worker");
    let renames: Vec<_> = ev
        .iter()
        .filter(|e| e.kind() == "rename" && e["target_pid"] == worker)
        .collect();
    k.that(
        renames.len() == 1,
        format!("one rename of the worker: {renames:?}"),
    );
    k.find_with(
        "the worker's rename",
        ev,
        |e| e.kind() == "rename" && e["target_pid"] == worker,
        json!({"old_comm": "stress-ng", "new_comm": "stress-ng-vm"}),
    );
    k.find_with(
        "the worker's exit under its new name",
        ev,
        |e| e.is("exit", worker),
        json!({"comm": "stress-ng-vm"}),
    );
    k.find_with(
        "the worker's SIGALRM finding",
        &stopped.findings,
        |f| f.kind() == "signal_source" && f["target_pid"] == worker,
        json!({"target_comm": "stress-ng-vm", "target_previous_comm": "stress-ng",
               "signal": "SIGALRM"}),
    );
    k.finish(ev);
}

/// A supervisor that detaches its service the way monit does: the start program is
/// `sh -c 'sleep 60 & echo $! > pidfile'` (the service becomes init's child as sh exits), the
/// stop program `sh -c 'read p < pidfile; /bin/kill -TERM $p'`. restart_loop names the
/// supervisor script, not init, with the lineage of the latest instance; signal_source says the
/// kill helpers acted on its behalf.
#[test]
fn a_supervisor_whose_service_detaches_is_named() {
    if !require_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tracer-attr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("supervise");
    let pidfile = dir.join("svc.pid");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             start() {{ sh -c '/usr/bin/sleep 60 & echo $! > {p}'; }}\n\
             stop() {{ sh -c 'read p < {p}; /bin/kill -TERM $p'; }}\n\
             start\n\
             for i in 1 2 3 4; do /usr/bin/sleep 0.3; stop; /usr/bin/sleep 0.2; start; done\n\
             /usr/bin/sleep 0.3; stop\n",
            p = pidfile.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    // Every growth of a finding is printed (by default an update waits 10 s).
    let t = Tracer::for_test(&[
        "--events",
        "signal,process",
        "--threshold",
        "update_min_interval_s=0.001",
        "--threshold",
        "update_growth=0.01",
    ]);
    let mut sup = Workload::spawn(&mut Command::new(&script));
    let sp = sup.pid();
    let status = sup.wait_within(Duration::from_secs(20));
    // Whatever happened, no service is left behind.
    if let Some(p) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // SAFETY: kill has no memory preconditions; at worst the pid is gone (ESRCH).
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    assert!(status.success(), "the supervisor script: {status:?}");
    let _ = t.wait_for_finding(|f| f.kind() == "restart_loop" && f["restarts"] == 4);
    let stopped = t.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let mut k = Checks::new();
    let rl = stopped
        .findings
        .iter()
        .rev()
        .find(|f| f.kind() == "restart_loop" && f["program"] == "/usr/bin/sleep 60");
    match rl {
        Some(f) => k.fields(
            "the restart_loop finding",
            f,
            json!({"supervisor_pid": sp, "supervisor_comm": "supervise", "restarts": 4}),
        ),
        None => k.that(false, "a restart_loop finding for sleep 60"),
    }
    if let Some(f) = rl {
        let lineage: Vec<&str> = f["lineage"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        k.that(
            lineage.len() == 3
                && lineage[0].ends_with(" sleep")
                && lineage[1].ends_with(" sh")
                && lineage[2] == format!("{sp} supervise"),
            format!("lineage: sleep, sh, the supervisor: {lineage:?}"),
        );
        let deaths = f["deaths"].as_array().cloned().unwrap_or_default();
        k.that(
            deaths.iter().all(|d| {
                d.as_str().is_some_and(|d| {
                    d.starts_with("SIGTERM from ")
                        && d.ends_with(&format!(" kill on behalf of {sp} supervise"))
                })
            }) && deaths.len() == 4,
            format!("each death: SIGTERM from a kill on behalf of the supervisor: {deaths:?}"),
        );
    }
    k.that(
        !stopped
            .findings
            .iter()
            .any(|f| f.kind() == "restart_loop" && f["supervisor_pid"] == 1),
        "init is not named as the supervisor",
    );
    // One finding for all the helpers, in its latest state.
    let sig: Vec<&serde_json::Value> = stopped
        .findings
        .iter()
        .filter(|f| f.kind() == "signal_source" && f["target_comm"] == "sleep")
        .collect();
    match sig.last() {
        Some(f) => k.fields(
            "the signal_source finding",
            f,
            json!({"on_behalf_of_pid": sp, "on_behalf_of_comm": "supervise",
                   "sender_comm": "kill", "signal": "SIGTERM", "count": 5}),
        ),
        None => k.that(false, "a signal_source finding for sleep"),
    }
    k.that(
        sig.iter().all(|f| f["on_behalf_of_pid"] == sp),
        "every signal_source update is the supervisor's",
    );
    k.finish(&stopped.events);
}

/// Installs a distribution package the test needs when it is missing; false (skip the test)
/// when that fails outside CI.
fn install_or_skip(needed: Needed, what: &str) -> bool {
    if let Err(e) = install_missing(&[needed]) {
        if in_ci() {
            panic!("CI=true and {what} is not available: {e}");
        }
        eprintln!("\n***\nSKIP: {e}\n***");
        return false;
    }
    true
}

/// `tracer record` of this test's process tree (signals and processes), made alongside a live
/// tracer, so `tracer report` can be checked against what live found.
fn record_alongside(name: &str) -> (Bin, TempDir, Recording) {
    let bin = Bin::pinned();
    let dump = TempDir::new(name);
    let me = std::process::id().to_string();
    let rec = Recording::start(
        &bin,
        dump.path(),
        &["--pid", me.as_str(), "--events", "signal,process"],
    );
    (bin, dump, rec)
}

/// `tracer report --json` of a stopped recording.
fn report_of(bin: &Bin, dump: &TempDir) -> serde_json::Value {
    bin.run(
        &[
            "report".as_ref(),
            dump.path().as_os_str(),
            "--json".as_ref(),
        ],
        Duration::from_secs(60),
    )
    .ok()
    .json()
}

/// The brief's first incident with the real program: Debian's monit health-checks a service
/// over TCP (nothing listens: every check fails), starts it detached with
/// `sh -c 'sleep 60 & echo $! > pidfile'` and stops it with `sh -c '... /bin/kill -TERM $p'`.
/// restart_loop names monit (not init, whose child each instance is when it dies), and the
/// kill helpers' SIGTERMs are sent on monit's behalf.
#[test]
fn monit_restarting_a_detached_service_is_named() {
    if !require_root() {
        return;
    }
    let needed = Needed {
        present: || std::path::Path::new("/usr/bin/monit").is_file(),
        package: "monit",
    };
    if !install_or_skip(needed, "monit") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tracer-monit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let d = dir.display();
    let port = tracer_tests::servers::free_port();
    let rc = dir.join("monitrc");
    std::fs::write(
        &rc,
        format!(
            "set daemon 1\n\
             set pidfile {d}/monit.pid\n\
             set idfile {d}/monit.id\n\
             set statefile {d}/monit.state\n\
             set logfile {d}/monit.log\n\
             check process svc with pidfile {d}/svc.pid\n\
             \x20 start program = \"/bin/sh -c '/usr/bin/sleep 60 & echo $! > {d}/svc.pid'\" with timeout 1 seconds\n\
             \x20 stop program = \"/bin/sh -c 'read p < {d}/svc.pid; /bin/kill -TERM $p'\"\n\
             \x20 if failed host 127.0.0.1 port {port} type tcp then restart\n"
        ),
    )
    .expect("monitrc");
    // monit refuses a control file others can read.
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let t = Tracer::for_test(&[
        "--events",
        "signal,process",
        "--threshold",
        "update_min_interval_s=0.001",
        "--threshold",
        "update_growth=0.01",
    ]);
    // The same, recorded: `tracer report` on the dump must name the same supervisor.
    let (bin, dump, rec) = record_alongside("monit-dump");
    let mut monit = Workload::spawn(Command::new("/usr/bin/monit").arg("-I").arg("-c").arg(&rc));
    let mp = monit.pid();
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    while std::time::Instant::now() < deadline
        && t.wait_for_finding(|f| {
            f.kind() == "restart_loop" && f["restarts"].as_u64().is_some_and(|n| n >= 3)
        })
        .is_none()
    {}
    monit.signal(libc::SIGTERM);
    let _ = monit.wait();
    if let Some(p) = std::fs::read_to_string(dir.join("svc.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // SAFETY: kill has no memory preconditions; at worst the pid is gone (ESRCH).
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let stopped = t.stop();
    rec.stop();
    let report = report_of(&bin, &dump);
    let log = std::fs::read_to_string(dir.join("monit.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let mut k = Checks::new();
    let rl = stopped
        .findings
        .iter()
        .rev()
        .find(|f| f.kind() == "restart_loop" && f["program"] == "/usr/bin/sleep 60");
    match rl {
        Some(f) => {
            k.fields(
                "the restart_loop finding",
                f,
                json!({"supervisor_pid": mp, "supervisor_comm": "monit"}),
            );
            k.that(
                f["restarts"].as_u64().is_some_and(|n| n >= 3),
                format!("at least 3 restarts: {f}"),
            );
            let lineage: Vec<&str> = f["lineage"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            k.that(
                lineage.first().is_some_and(|l| l.ends_with(" sleep"))
                    && lineage.iter().any(|l| l.ends_with(" sh"))
                    && lineage.last() == Some(&format!("{mp} monit").as_str()),
                format!("lineage: sleep, sh, ..., monit: {lineage:?}"),
            );
        }
        None => k.that(
            false,
            format!("a restart_loop finding; monit's log:\n{log}"),
        ),
    }
    k.that(
        !stopped
            .findings
            .iter()
            .any(|f| f.kind() == "restart_loop" && f["supervisor_pid"] == 1),
        "init is not named as the supervisor",
    );
    let sig = stopped.findings.iter().rev().find(|f| {
        f.kind() == "signal_source" && f["target_comm"] == "sleep" && f["signal"] == "SIGTERM"
    });
    match sig {
        Some(f) => k.fields(
            "the signal_source finding",
            f,
            json!({"on_behalf_of_pid": mp, "on_behalf_of_comm": "monit", "sender_comm": "kill",
                   "signal": "SIGTERM"}),
        ),
        None => k.that(false, "a signal_source finding for sleep"),
    }
    let reported = report["findings"].as_array().and_then(|a| {
        a.iter()
            .find(|f| f["kind"] == "restart_loop" && f["program"] == "/usr/bin/sleep 60")
    });
    match reported {
        Some(f) => k.fields(
            "the report's restart_loop",
            f,
            json!({"supervisor_pid": mp, "supervisor_comm": "monit"}),
        ),
        None => k.that(false, format!("the report has the restart_loop: {report}")),
    }
    k.finish(&stopped.events);
}

/// The real supervisord (Debian's supervisor package) runs its programs as direct children:
/// `supervisorctl restart` makes supervisord itself SIGTERM the service and start a new one,
/// and a program that keeps exiting with 1 is restarted by autorestart. Both restart loops
/// name supervisord (its pid and comm), never supervisorctl or init; the SIGTERMs' sender is
/// supervisord.
#[test]
fn supervisord_restart_loops_are_named() {
    if !require_root() {
        return;
    }
    let needed = Needed {
        present: || std::path::Path::new("/usr/bin/supervisord").is_file(),
        package: "supervisor",
    };
    if !install_or_skip(needed, "supervisord") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tracer-supervisord-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let d = dir.display();
    let conf = dir.join("supervisord.conf");
    std::fs::write(
        &conf,
        format!(
            "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}\n\
             [unix_http_server]\nfile={d}/supervisor.sock\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\
             [program:svc]\ncommand=/usr/bin/sleep 60\nstartsecs=0\nautorestart=true\n\
             stopsignal=TERM\n\
             [program:crasher]\ncommand=/bin/sh -c \"/usr/bin/sleep 0.4; exit 1\"\nstartsecs=0\n\
             startretries=1000\nautorestart=true\n"
        ),
    )
    .expect("supervisord.conf");
    let t = Tracer::for_test(&[
        "--events",
        "signal,process",
        "--threshold",
        "update_min_interval_s=0.001",
        "--threshold",
        "update_growth=0.01",
    ]);
    // The same, recorded: `tracer report` on the dump must name the same supervisor.
    let (bin, dump, rec) = record_alongside("supervisord-dump");
    let mut sup = Workload::spawn(
        Command::new("/usr/bin/supervisord")
            .arg("-n")
            .arg("-c")
            .arg(&conf),
    );
    let sp = sup.pid();
    // supervisorctl waits for each restart to complete (stop, then start).
    let ctl = |what: &str| {
        Command::new("/usr/bin/supervisorctl")
            .arg("-c")
            .arg(&conf)
            .args(what.split(' '))
            .output()
    };
    let ready = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < ready
        && !ctl("status svc").is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("RUNNING"))
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut restarted = 0;
    for _ in 0..4 {
        if ctl("restart svc").is_ok_and(|o| o.status.success()) {
            restarted += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline
        && t.wait_for_finding(|f| {
            f.kind() == "restart_loop"
                && f["program"].as_str().is_some_and(|p| p.contains("exit 1"))
                && f["restarts"].as_u64().is_some_and(|n| n >= 3)
        })
        .is_none()
    {}
    let _ = ctl("stop all");
    sup.signal(libc::SIGTERM);
    let _ = sup.wait();
    let stopped = t.stop();
    rec.stop();
    let report = report_of(&bin, &dump);
    let log = std::fs::read_to_string(dir.join("supervisord.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let mut k = Checks::new();
    k.that(
        restarted == 4,
        format!("supervisorctl restarted svc 4 times ({restarted})"),
    );
    let last = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        stopped
            .findings
            .iter()
            .rev()
            .find(|f| f.kind() == "restart_loop" && pred(f))
            .cloned()
    };
    let svc = last(&|f| f["program"] == "/usr/bin/sleep 60");
    match &svc {
        Some(f) => {
            k.fields(
                "the restart_loop of svc (supervisorctl restart)",
                f,
                json!({"supervisor_pid": sp, "supervisor_comm": "supervisord"}),
            );
            k.that(
                f["restarts"].as_u64().is_some_and(|n| n >= 3),
                format!("svc: at least 3 restarts: {f}"),
            );
            k.that(
                f["deaths"].as_array().is_some_and(|d| {
                    !d.is_empty()
                        && d.iter().all(|x| {
                            x.as_str().is_some_and(|s| {
                                s.starts_with(&format!("SIGTERM from {sp} supervisord"))
                            })
                        })
                }),
                format!("svc: every death a SIGTERM from supervisord: {f}"),
            );
        }
        None => k.that(
            false,
            format!("a restart_loop for svc; supervisord's log:\n{log}"),
        ),
    }
    match last(&|f| f["program"].as_str().is_some_and(|p| p.contains("exit 1"))) {
        Some(f) => {
            k.fields(
                "the restart_loop of the crashing program (autorestart)",
                &f,
                json!({"supervisor_pid": sp, "supervisor_comm": "supervisord"}),
            );
            k.that(
                f["deaths"].as_array().is_some_and(|d| {
                    !d.is_empty() && d.iter().all(|x| x.as_str() == Some("exit 1"))
                }),
                format!("crasher: every death is exit 1: {f}"),
            );
        }
        None => k.that(
            false,
            format!("a restart_loop for the crasher; supervisord's log:\n{log}"),
        ),
    }
    k.that(
        !stopped.findings.iter().any(|f| {
            f.kind() == "restart_loop"
                && (f["supervisor_pid"] == 1 || f["supervisor_comm"] == "supervisorctl")
        }),
        "neither init nor supervisorctl is named as the supervisor",
    );
    let sig = stopped.findings.iter().rev().find(|f| {
        f.kind() == "signal_source" && f["target_comm"] == "sleep" && f["signal"] == "SIGTERM"
    });
    match sig {
        Some(f) => k.fields(
            "the signal_source finding",
            f,
            json!({"sender_pid": sp, "sender_comm": "supervisord", "signal": "SIGTERM"}),
        ),
        None => k.that(false, "a signal_source finding for sleep"),
    }
    // The report of the recorded dump: the same restart loops, named on supervisord.
    let reported: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .map(|a| a.iter().filter(|f| f["kind"] == "restart_loop").collect())
        .unwrap_or_default();
    for (what, live) in [("svc", svc.as_ref()), ("crasher", None)] {
        let found = reported.iter().find(|f| match live {
            Some(l) => f["program"] == l["program"],
            None => f["program"].as_str().is_some_and(|p| p.contains("exit 1")),
        });
        match found {
            Some(f) => {
                k.fields(
                    &format!("the report's restart_loop of {what}"),
                    f,
                    json!({"supervisor_pid": sp, "supervisor_comm": "supervisord"}),
                );
                k.that(
                    f["restarts"].as_u64().is_some_and(|n| n >= 3),
                    format!("report, {what}: at least 3 restarts: {f}"),
                );
            }
            None => k.that(
                false,
                format!("the report has a restart_loop of {what}: {reported:?}"),
            ),
        }
    }
    k.that(
        reported.iter().all(|f| f["supervisor_pid"] == sp),
        format!("every restart_loop of the report is supervisord's: {reported:?}"),
    );
    k.finish(&stopped.events);
}
