//! `tracer demo`: reproduces the incidents of the brief on this host, in sandboxed child
//! processes (loopback only, memory-limited cgroups, stopped by pid), traces them with the
//! real programs, shows findings as they appear, and prints the report.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, ExitCode},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::{
    analysis::AnalysisArgs,
    driver::Driver,
    dump::{RecordOptions, Recorder},
    live::{self, TraceArgs},
    output,
    pipeline::Pipeline,
    report,
    sandbox::MemCgroup,
    scenario, sinks,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Incident {
    /// A supervisor SIGTERMs and restarts a server that leaks sockets until accept() fails with
    /// EMFILE; its clients' connections are reset.
    RestartLoop,
    /// A proxy that never closes its sockets (CLOSE_WAIT) and keeps a buffer per request.
    CloseWait,
    /// A crawler allocating steadily until the OOM killer stops it in its 128 MiB cgroup.
    Runaway,
    /// An API worker whose connections to a silent "database" pile up.
    Pileup,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Run only these incidents (repeatable); default: all four, at the same time.
    #[arg(long = "only", value_enum, value_name = "INCIDENT")]
    pub only: Vec<Incident>,
    /// Also record everything to this dump directory (then try `tracer report DIR`).
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Print the final report as JSON (findings as they appear are JSON lines too).
    #[arg(long)]
    pub json: bool,
    /// How long the workloads run.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

/// Thresholds scaled down to a demo that lasts seconds, not hours (the defaults wait for
/// minutes of evidence). `tracer report` on a demo dump needs the same: see `demo_thresholds`.
pub const DEMO_THRESHOLDS: &[&str] = &[
    "socket_leak_window_s=20",
    "socket_leak_min_span_s=4",
    "socket_leak_min_growth=30",
    "close_wait_min_age_s=3",
    "mem_min_duration_s=5",
    "mem_min_growth_bytes=32M",
    "pileup_min_open=20",
    "pileup_min_age_s=3",
    "reset_min_count=10",
];

fn demo_analysis(args: &AnalysisArgs) -> AnalysisArgs {
    let mut a = args.clone();
    // The user's own --threshold values win over the demo's.
    let mut t: Vec<String> = DEMO_THRESHOLDS.iter().map(|s| s.to_string()).collect();
    t.append(&mut a.thresholds);
    a.thresholds = t;
    a
}

/// A free loopback port (bound then released).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Children {
    list: Vec<(String, Child)>,
}

impl Children {
    /// Stops every child still running, by pid: SIGTERM, then SIGKILL.
    fn stop_all(&mut self) {
        for (_, c) in &mut self.list {
            if c.try_wait().ok().flatten().is_none() {
                // SAFETY: signalling our own child by pid.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for (_, c) in &mut self.list {
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn all_done(&mut self) -> bool {
        self.list
            .iter_mut()
            .all(|(_, c)| c.try_wait().ok().flatten().is_some())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The symlinks that give each workload its name (comm): node, monit, ruby, postgres...
fn bin_dir() -> anyhow::Result<tempdir::Dir> {
    let exe = std::env::current_exe().context("locating the tracer binary")?;
    let dir = tempdir::Dir::new("tracer-demo")?;
    for name in [
        "monit", "node", "clients", "proxy", "curl", "ruby", "postgres", "api",
    ] {
        std::os::unix::fs::symlink(&exe, dir.path().join(name))?;
    }
    Ok(dir)
}

mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Dir> {
            use std::os::unix::fs::DirBuilderExt;
            let p = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::DirBuilder::new().mode(0o700).create(&p)?;
            Ok(Dir(p))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn describe(i: Incident) -> &'static str {
    match i {
        Incident::RestartLoop => {
            "restart loop: 'monit' health-checks 'node', which inherited a 64-fd limit and never closes its clients' connections; when accept() fails with EMFILE the check fails, monit sends SIGTERM and restarts it"
        }
        Incident::CloseWait => {
            "leaking proxy: 'proxy' answers 'curl' but never closes its sockets (CLOSE_WAIT) and keeps 1 MiB per request (256 MiB cgroup)"
        }
        Incident::Runaway => {
            "runaway crawler: 'ruby' allocates 12 MiB/s until its 128 MiB cgroup's OOM killer stops it"
        }
        Incident::Pileup => {
            "pile-up: 'api' opens a connection to 'postgres' for every request; the database never answers, the connections pile up"
        }
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let incidents: BTreeSet<Incident> = if args.only.is_empty() {
        Incident::value_variants().iter().copied().collect()
    } else {
        args.only.iter().copied().collect()
    };
    let analysis = demo_analysis(&args.analysis);
    // A bad --threshold is said before anything starts.
    analysis.load()?;
    // Trace only what the demo starts: its descendants (the collector itself is never traced).
    let mut trace = TraceArgs::defaults();
    trace.pids = vec![std::process::id()];
    trace.mem_threshold = 4 << 20;
    let (mut session, host, filter) = live::start(&trace)?;

    let bins = bin_dir()?;
    let procs = |cg: &MemCgroup| cg.path.join("cgroup.procs");
    let seconds = args.seconds.max(5);
    let mut cgroups = Vec::new();
    let mut children = Children { list: Vec::new() };

    let mut pipeline = Pipeline::new(host, filter);
    let mut spec = sinks::Spec::new(&analysis);
    spec.findings = sinks::Findings::Print { json: args.json };
    if let Some(dir) = &args.record {
        let mut rec = Recorder::new(&RecordOptions::new(dir), pipeline.host.clone())?;
        rec.set_print_summary(true);
        spec.recorder = Some(rec);
    }
    let engine = sinks::build(&mut pipeline, spec)?
        .engine
        .context("the demo needs the analyses")?;
    let json = args.json;
    let mut drv = Driver::new(pipeline, "from the kernel");
    session.seed(&mut drv)?;

    if !json {
        output::print(&format!(
            "tracer demo: {} incident(s), {seconds} s, traced live:",
            incidents.len()
        ));
        for i in &incidents {
            output::print(&format!("  - {}", describe(*i)));
        }
        output::print("");
    }

    let spawn = |children: &mut Children,
                 name: &str,
                 role: &str,
                 port: u16,
                 rate: u32,
                 cg: Option<&Path>|
     -> anyhow::Result<()> {
        let c = scenario::spawn(bins.path(), name, role, port, rate, seconds, cg)
            .with_context(|| format!("starting the {name} workload"))?;
        children.list.push((name.to_owned(), c));
        Ok(())
    };
    // SAFETY: setenv before any thread of ours reads the environment concurrently (the
    // runtime is not started yet).
    unsafe { std::env::set_var("TRACER_DEMO_BIN", bins.path()) };
    for i in &incidents {
        match i {
            Incident::RestartLoop => {
                let cg = MemCgroup::create("tracer-demo-restart", 256 << 20)?;
                let port = free_port()?;
                spawn(
                    &mut children,
                    "monit",
                    "supervisor",
                    port,
                    3,
                    Some(&procs(&cg)),
                )?;
                std::thread::sleep(Duration::from_millis(200));
                spawn(
                    &mut children,
                    "clients",
                    "ws-clients",
                    port,
                    60,
                    Some(&procs(&cg)),
                )?;
                cgroups.push(cg);
            }
            Incident::CloseWait => {
                let cg = MemCgroup::create("tracer-demo-proxy", 256 << 20)?;
                let port = free_port()?;
                spawn(&mut children, "proxy", "proxy", port, 0, Some(&procs(&cg)))?;
                std::thread::sleep(Duration::from_millis(100));
                spawn(
                    &mut children,
                    "curl",
                    "http-clients",
                    port,
                    8,
                    Some(&procs(&cg)),
                )?;
                cgroups.push(cg);
            }
            Incident::Runaway => {
                let cg = MemCgroup::create("tracer-demo-crawler", 128 << 20)?;
                spawn(&mut children, "ruby", "crawler", 0, 12, Some(&procs(&cg)))?;
                cgroups.push(cg);
            }
            Incident::Pileup => {
                let cg = MemCgroup::create("tracer-demo-pileup", 128 << 20)?;
                let port = free_port()?;
                spawn(&mut children, "postgres", "db", port, 0, Some(&procs(&cg)))?;
                std::thread::sleep(Duration::from_millis(100));
                spawn(
                    &mut children,
                    "api",
                    "api-worker",
                    port,
                    5,
                    Some(&procs(&cg)),
                )?;
                cgroups.push(cg);
            }
        }
    }

    // Stop tracing when every workload has ended (or a little after their time is up).
    let children = Arc::new(Mutex::new(children));
    let watch = children.clone();
    let deadline = Duration::from_secs(seconds + 10);
    let stop = async move {
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let done = watch.lock().map(|mut c| c.all_done()).unwrap_or(true);
            if done || start.elapsed() > deadline {
                break;
            }
        }
        // Let the last events (exits, resets) arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let summary = session.run(&mut drv, None, stop);
    if let Ok(mut c) = children.lock() {
        c.stop_all();
    }
    drop(cgroups);
    let summary = summary?;
    let engine = engine
        .lock()
        .map_err(|_| anyhow::anyhow!("analysis engine poisoned"))?;
    if !json {
        output::print("");
    }
    if json {
        // One line, the last of the stream: findings lines above, the report document here.
        let doc = report::json(&engine, engine.host(), true);
        output::print(&serde_json::to_string(&doc)?);
    } else {
        output::print(report::text(&engine, engine.host()).trim_end());
    }
    output::eprint(&summary.render());
    if let Some(dir) = &args.record {
        output::eprint(&format!(
            "recorded to {}; replay the findings with: tracer report {} {}",
            dir.display(),
            dir.display(),
            DEMO_THRESHOLDS
                .iter()
                .map(|t| format!("--threshold {t}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}
