//! `cargo xtask bench`: tracer's overhead against the untraced workload and against bpftrace
//! doing the same hooks, side by side in one run, plus its capacity (zero-loss event rate,
//! CPU per event, memory with many processes and sockets, dump size, replay speed).
//!
//! Runs alternate (untraced, tracer, bpftrace, untraced, ...) and figures are medians, with
//! ratios taken per round, because the machines this runs on are shared and noisy.
use std::{
    collections::BTreeMap,
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use clap::Args;

mod bpfstats;
mod procs;
mod results;
mod tracers;
mod workloads;

use bpfstats::ProgCost;
use procs::{Guard, TempDir};
use results::{Capacity, MemoryFigures, RampStep, ReplayFigures, Results, Run, WorkloadResult};
use tracers::{Env, Mode, TracerCmd};
use workloads::{Kind, Workload};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Run every part for a second or two, one round, no verdicts: keeps the bench working in CI.
    #[arg(long)]
    pub smoke: bool,
    /// Rounds of (untraced, tracer, bpftrace, hooks only, tracer hooks only) per workload.
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// Seconds per workload run.
    #[arg(long, default_value_t = 6.0)]
    pub duration: f64,
    /// Workloads to measure, comma separated: http, mem, proc, redis.
    #[arg(long, default_value = "http,mem,proc,redis", value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Parts to run, comma separated: overhead, hooks (kernel time per eBPF program, one extra
    /// run per workload and tracer with BPF statistics on), capacity, memory, churn-memory
    /// (RSS and kernel map fill over --short-lived processes and as many connections), replay.
    #[arg(
        long,
        default_value = "overhead,hooks,capacity,memory,churn-memory,replay",
        value_delimiter = ','
    )]
    pub parts: Vec<String>,
    /// Short-lived processes, and short connections, for the churn-memory part.
    #[arg(long, default_value_t = 1_000_000)]
    pub short_lived: u64,
    /// Seconds per step of the capacity ramp.
    #[arg(long, default_value_t = 4.0)]
    pub ramp_step: f64,
    /// Seconds of load recorded into the dump that replay is timed on.
    #[arg(long, default_value_t = 30.0)]
    pub dump_seconds: f64,
    /// Live processes and open sockets for the collector-memory figure.
    #[arg(long, default_value_t = 10_000)]
    pub processes: usize,
    #[arg(long, default_value_t = 100_000)]
    pub sockets: usize,
    /// How tracer is run: record (the flight recorder), live (> /dev/null), or auto (record if
    /// this build has it).
    #[arg(long, default_value = "auto")]
    pub tracer: String,
    /// Skip installing packages and building (use what is there).
    #[arg(long)]
    pub no_build: bool,
    /// Where results-<date>.{md,json} go.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

fn say(msg: impl AsRef<str>) {
    eprintln!("\x1b[1mbench:\x1b[0m {}", msg.as_ref());
}

pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the bench attaches eBPF programs and installs packages: run it as root (sudo -E cargo xtask bench)"
        );
    }
    procs::stop_children_on_signal();
    if args.smoke {
        args.rounds = 1;
        args.duration = args.duration.min(1.5);
        args.ramp_step = args.ramp_step.min(1.0);
        args.dump_seconds = args.dump_seconds.min(2.0);
        args.processes = args.processes.min(200);
        args.sockets = args.sockets.min(2_000);
        args.short_lived = args.short_lived.min(20_000);
    }
    let kinds = args
        .workloads
        .iter()
        .map(|s| Kind::parse(s.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for p in &args.parts {
        const PARTS: [&str; 6] = [
            "overhead",
            "hooks",
            "capacity",
            "memory",
            "churn-memory",
            "replay",
        ];
        if !PARTS.contains(&p.trim()) {
            bail!("unknown part '{p}' ({})", PARTS.join(", "));
        }
    }
    let part = |p: &str| args.parts.iter().any(|x| x.trim() == p);

    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    if !args.no_build {
        install_packages()?;
        build(&root)?;
    }
    let tracer = target.join("release/tracer");
    let worker = target.join("release/xtask");
    for (p, what) in [(&tracer, "tracer"), (&worker, "xtask (bench workers)")] {
        if !p.exists() {
            bail!("{} missing: run without --no-build", what);
        }
    }
    let tracer_cmd = match args.tracer.as_str() {
        "record" => TracerCmd::Record,
        "live" => TracerCmd::Live,
        "auto" if has_record(&tracer) => TracerCmd::Record,
        "auto" => {
            say("this tracer has no `record` yet: measuring `tracer live > /dev/null`");
            TracerCmd::Live
        }
        other => bail!("--tracer {other}: record, live or auto"),
    };
    let tmp = TempDir::new("tracer-bench")?;
    // Private copies: the work tree is shared, and a rebuild must not swap binaries mid-run.
    let bin = tmp.0.join("bin");
    std::fs::create_dir_all(&bin)?;
    let (tracer, worker) = (bin.join("tracer"), {
        std::fs::copy(&tracer, bin.join("tracer"))?;
        std::fs::copy(&worker, bin.join("xtask"))?;
        bin.join("xtask")
    });
    let env = Env {
        tracer: tracer.clone(),
        tracer_cmd,
        bpftrace_script: root.join("bench/equivalent.bt"),
        floor_script: root.join("bench/floor.bt"),
        tmp: tmp.0.clone(),
    };

    let mut res = Results {
        date: utc_now(),
        command: command_line(),
        smoke: args.smoke,
        host: host_facts(&tracer),
        rounds: args.rounds,
        seconds_per_run: args.duration,
        tracer_command: match tracer_cmd {
            TracerCmd::Record => "tracer record -o TMPDIR".into(),
            TracerCmd::Live => "tracer live > /dev/null".into(),
        },
        ..Results::default()
    };

    if part("overhead") || part("hooks") {
        for &k in &kinds {
            match overhead(k, &worker, &env, &args, part("overhead"), part("hooks")) {
                Ok(w) => res.workloads.push(w),
                Err(e) => {
                    say(format!("{} workload failed: {e:#}", k.name()));
                    res.errors.push(format!("overhead/{}: {e:#}", k.name()));
                }
            }
        }
    }
    if part("capacity") {
        match capacity(&worker, &env, &args) {
            Ok(c) => res.capacity = c,
            Err(e) => res.errors.push(format!("capacity: {e:#}")),
        }
    }
    if part("memory") {
        match memory(&worker, &env, &args) {
            Ok(m) => res.memory = Some(m),
            Err(e) => res.errors.push(format!("memory: {e:#}")),
        }
    }
    if part("churn-memory") {
        match churn_memory(&worker, &env, &args) {
            Ok(m) => res.churn_memory = Some(m),
            Err(e) => res.errors.push(format!("churn-memory: {e:#}")),
        }
    }
    if part("replay") {
        if tracer_cmd == TracerCmd::Record {
            match replay(&worker, &env, &args) {
                Ok(r) => res.replay = Some(r),
                Err(e) => res.errors.push(format!("replay: {e:#}")),
            }
        } else {
            res.notes
                .push("replay and dump size: not measured (this tracer has no `record`)".into());
        }
    }
    res.judge();

    let md = res.markdown();
    println!("{md}");
    let out = args.out.clone().unwrap_or_else(|| target.join("bench"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let stem = format!("results-{}", res.date.replace([':', '-'], ""));
    let md_path = out.join(format!("{stem}.md"));
    let json_path = out.join(format!("{stem}.json"));
    std::fs::write(&md_path, &md)?;
    std::fs::write(&json_path, serde_json::to_string_pretty(&res)?)?;
    say(format!(
        "results written to {} and {}",
        md_path.display(),
        json_path.display()
    ));
    if !res.errors.is_empty() {
        bail!(
            "{} part(s) of the bench failed: {}",
            res.errors.len(),
            res.errors.join("; ")
        );
    }
    Ok(())
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// bpftrace, redis and wrk from the distribution, when missing.
fn install_packages() -> anyhow::Result<()> {
    let wanted = [
        ("bpftrace", "bpftrace"),
        ("redis-server", "redis-server"),
        ("redis-benchmark", "redis-tools"),
        ("wrk", "wrk"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| !on_path(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(format!("installing {}", missing.join(" ")));
    crate::apt::install(&missing)
}

fn build(root: &Path) -> anyhow::Result<()> {
    say("setting up the toolchain (scripts/setup.sh) and building tracer and the bench workers");
    let st = Command::new("bash")
        .arg(root.join("scripts/setup.sh"))
        .current_dir(root)
        .status()
        .context("cannot run scripts/setup.sh")?;
    if !st.success() {
        bail!("scripts/setup.sh failed");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "-p", "tracer", "-p", "xtask"])
        .current_dir(root)
        .status()?;
    if !st.success() {
        bail!("cargo build --release -p tracer -p xtask failed");
    }
    Ok(())
}

fn has_record(tracer: &Path) -> bool {
    Command::new(tracer)
        .args(["record", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn first_line_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| "?".into())
}

fn host_facts(tracer: &Path) -> std::collections::BTreeMap<String, String> {
    let mut h = std::collections::BTreeMap::new();
    h.insert(
        "kernel".into(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    );
    h.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_default(),
    );
    h.insert(
        "tracer".into(),
        first_line_of(&tracer.to_string_lossy(), &["--version"]),
    );
    h.insert("bpftrace".into(), first_line_of("bpftrace", &["--version"]));
    // Which tracer was measured: the figures move with every change to the programs.
    h.insert(
        "commit".into(),
        first_line_of(
            "git",
            &[
                "-C",
                &workspace_root().to_string_lossy(),
                "describe",
                "--always",
                "--dirty",
            ],
        ),
    );
    h
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

fn format_utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Runnable tasks right now (from /proc/stat), ourselves excluded.
fn others_running() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("procs_running "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0.0, |n| (n - 1.0).max(0.0))
}

/// The machine is shared: before a round, waits (up to `max_secs`) for other work to calm
/// down, so a colleague's build does not land in one run of a round only.
fn wait_quiet(max_secs: f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(max_secs);
    loop {
        let mut busy = 0.0;
        for _ in 0..10 {
            busy += others_running();
            std::thread::sleep(Duration::from_millis(100));
        }
        if busy / 10.0 < 0.5 || Instant::now() >= deadline {
            return;
        }
    }
}

/// Kernel time per eBPF program, by tracer.
type HookCosts = BTreeMap<String, Vec<ProgCost>>;

/// One workload: untraced, tracer, bpftrace, alternating, `rounds` times.
fn overhead(
    kind: Kind,
    worker: &Path,
    env: &Env,
    args: &BenchArgs,
    rounds: bool,
    hooks: bool,
) -> anyhow::Result<WorkloadResult> {
    say(format!("workload {}: {}", kind.name(), kind.describe()));
    let mut w = Workload::new(kind, worker.to_path_buf());
    w.setup(args.duration)?;
    let result = (|| -> anyhow::Result<(Vec<Run>, HookCosts)> {
        // Warm-up: page cache, server pools, the first exec of the binaries.
        w.run(args.duration.min(2.0))?;
        let mut runs = Vec::new();
        for round in 0..if rounds { args.rounds } else { 0 } {
            wait_quiet(if args.smoke { 0.0 } else { 20.0 });
            for mode in Mode::ALL {
                if !args.smoke {
                    wait_quiet(10.0);
                }
                let tag = format!("{}-{round}-{}", kind.name(), mode.name());
                let mut att = tracers::attach(mode, env, &tag)?;
                if let Some(a) = att.as_mut() {
                    a.mark()?;
                }
                let throughput = w.run(args.duration)?;
                let det = att.map(|a| a.detach()).transpose()?;
                say(format!(
                    "  {} round {}/{} {:>8}: {:>10} {}{}",
                    kind.name(),
                    round + 1,
                    args.rounds,
                    mode.name(),
                    results::num(throughput),
                    kind.unit(),
                    det.as_ref()
                        .map(|d| format!(
                            "  [{} events, {} lost, {:.0}% CPU]",
                            d.events,
                            d.lost,
                            d.cpu_s / d.wall_s * 100.0
                        ))
                        .unwrap_or_default()
                ));
                runs.push(Run {
                    round,
                    mode,
                    throughput,
                    seconds: args.duration,
                    tracer: det,
                });
                // Let TIME_WAIT sockets and exited processes settle between runs.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        let mut costs = BTreeMap::new();
        if hooks {
            for mode in [Mode::Tracer, Mode::Bpftrace, Mode::TracerHooks] {
                costs.insert(mode.name().to_owned(), profile(&mut w, mode, env, args)?);
            }
        }
        Ok((runs, costs))
    })();
    w.teardown()?;
    let (runs, costs) = result?;
    let mut r = WorkloadResult::new(kind.name(), kind.describe(), kind.unit(), runs);
    r.hooks = costs;
    Ok(r)
}

/// One more run with the kernel's BPF statistics on: time spent in each eBPF program.
fn profile(
    w: &mut Workload,
    mode: Mode,
    env: &Env,
    args: &BenchArgs,
) -> anyhow::Result<Vec<ProgCost>> {
    let _stats = bpfstats::enable()?;
    let tag = format!("{}-profile-{}", w.kind.name(), mode.name());
    let mut a = tracers::attach(mode, env, &tag)?.context("a tracer")?;
    a.mark()?;
    let before = bpfstats::snapshot(a.pid());
    let t = Instant::now();
    let run = w.run(args.duration);
    let after = bpfstats::snapshot(a.pid());
    let secs = t.elapsed().as_secs_f64();
    // Names are looked up while the programs are still loaded.
    let costs = bpfstats::costs(&before, &after, secs);
    a.detach()?;
    run?;
    let total: f64 = costs.iter().map(|c| c.cpu_pct).sum();
    let top: Vec<String> = costs
        .iter()
        .take(3)
        .map(|c| {
            format!(
                "{} {:.0}ns x {}/s",
                c.name,
                c.avg_ns,
                results::num(c.runs_per_s)
            )
        })
        .collect();
    say(format!(
        "  {} {:>8} in-kernel: {total:.1}% of a CPU; top: {}",
        w.kind.name(),
        mode.name(),
        top.join(", ")
    ));
    Ok(costs)
}

/// Ramps paced floods until tracer loses records: cheap single records (listen() calls), then
/// loopback connection churn (the connection model: 4 records per connection).
fn capacity(worker: &Path, env: &Env, args: &BenchArgs) -> anyhow::Result<Vec<Capacity>> {
    let listen_rates: Vec<u64> = if args.smoke {
        vec![20_000, 0]
    } else {
        vec![
            25_000, 50_000, 100_000, 200_000, 400_000, 600_000, 800_000, 1_200_000, 1_600_000,
            2_400_000, 0,
        ]
    };
    let conn_rates: Vec<u64> = if args.smoke {
        vec![20_000, 0]
    } else {
        vec![
            25_000, 50_000, 100_000, 150_000, 200_000, 300_000, 400_000, 600_000, 800_000, 0,
        ]
    };
    Ok(vec![
        ramp(
            worker,
            env,
            args,
            "listen",
            "16",
            "listen() calls on a listening socket (1 tcp_listen record each) + SIGUSR1 to self \
             every 16 calls",
            &listen_rates,
        )?,
        ramp(
            worker,
            env,
            args,
            "conn",
            "4",
            "loopback connections opened and closed (4 TCP records each: conn_open and conn_close at both ends) + SIGUSR1 to \
             self every 4 connections",
            &conn_rates,
        )?,
    ])
}

fn ramp(
    worker: &Path,
    env: &Env,
    args: &BenchArgs,
    kind: &str,
    signal_every: &str,
    generator: &str,
    rates: &[u64],
) -> anyhow::Result<Capacity> {
    say(format!(
        "capacity ({kind}): ramping the event rate until tracer loses records"
    ));
    let mut cap = Capacity {
        generator: format!("{generator}; paced, one generator process per CPU"),
        ..Capacity::default()
    };
    let mut lossy = 0;
    for &rate in rates {
        // BPF statistics on: what one record costs in the kernel at each rate.
        let stats = bpfstats::enable()?;
        let mut a = tracers::attach_tracer(env, &format!("ramp-{kind}-{rate}"), false)?;
        a.mark()?;
        let before = bpfstats::snapshot(a.pid());
        // One generator per CPU, so the generators (slowed by the hooks) can outrun the
        // collector.
        let gens = std::thread::available_parallelism().map_or(2, |n| n.get());
        let per_gen = rate.div_ceil(gens as u64);
        let secs = args.ramp_step;
        let handles: Vec<_> = (0..gens)
            .map(|_| {
                let w = worker.to_path_buf();
                let kind = kind.to_owned();
                let signal_every = signal_every.to_owned();
                std::thread::spawn(move || {
                    workloads::run_worker(
                        &w,
                        &[
                            "flood",
                            "--kind",
                            &kind,
                            "--signal-every",
                            &signal_every,
                            "--rate",
                            &per_gen.to_string(),
                            "--secs",
                            &secs.to_string(),
                        ],
                    )
                })
            })
            .collect();
        let reports: Vec<anyhow::Result<workloads::WorkerReport>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("generator thread panicked")))
            })
            .collect();
        let after = bpfstats::snapshot(a.pid());
        let d = a.detach()?;
        drop(stats);
        let kernel_ns: u64 = after
            .iter()
            .map(|(id, c)| {
                c.run_time_ns
                    .saturating_sub(before.get(id).map_or(0, |b| b.run_time_ns))
            })
            .sum();
        let (mut generated, mut gen_secs) = (0u64, 0f64);
        for r in reports {
            let r = r?;
            generated += r.events;
            gen_secs = gen_secs.max(r.secs);
        }
        // Generators that cannot count their records exactly: what tracer got plus lost.
        let offered = if generated > 0 {
            generated as f64 / gen_secs
        } else {
            (d.events + d.lost) as f64 / d.wall_s
        };
        let cpu_pct = d.cpu_s / d.wall_s * 100.0;
        let step = RampStep {
            target_rate: rate,
            offered_rate: offered,
            tracer_events: d.events,
            lost: d.lost,
            lost_critical: d.lost_critical,
            lost_by_kind: d.lost_by_kind.clone(),
            cpu_pct,
            cpu_pct_per_100k: cpu_pct / (offered / 100_000.0),
            kernel_ns_per_event: kernel_ns as f64 / d.events.max(1) as f64,
        };
        say(format!(
            "  asked {:>8}/s offered {:>8}/s: {} events, {} lost ({} critical), {:.0}% CPU, \
             {:.0} ns/event in the kernel",
            if rate == 0 {
                "max".into()
            } else {
                results::num(rate as f64)
            },
            results::num(offered),
            d.events,
            d.lost,
            d.lost_critical,
            cpu_pct,
            step.kernel_ns_per_event
        ));
        let saturated = rate == 0 || offered < 0.85 * rate as f64;
        if step.lost == 0 && offered > cap.max_zero_loss_rate {
            cap.max_zero_loss_rate = offered;
            cap.cpu_pct_per_100k = step.cpu_pct_per_100k;
        }
        lossy = if step.lost > 0 { lossy + 1 } else { 0 };
        cap.generator_bound = saturated && step.lost == 0;
        cap.steps.push(step);
        // Two lossy steps in a row, or generators that cannot go faster: done.
        if lossy >= 2 || saturated {
            break;
        }
    }
    Ok(cap)
}

/// Spawns a `bench-worker` that prints `ready` once set up; stopped by closing its stdin.
fn spawn_ready(worker: &Path, args: &[&str], timeout: Duration) -> anyhow::Result<Guard> {
    let mut cmd = Command::new(worker);
    cmd.arg("bench-worker")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut g = Guard::spawn(
        &format!("bench-worker {}", args[0]),
        &mut cmd,
        libc::SIGKILL,
    )?;
    let out = g.take_stdout().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(crate::worker::wait_ready(&mut BufReader::new(out)));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(_)) => Ok(g),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("{} not ready after {timeout:?}", g.name),
    }
}

fn free_pids() -> usize {
    let max: usize = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let used = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0);
    max.saturating_sub(used)
}

/// Collector memory with many live processes and open sockets, created while tracer runs,
/// then with a second tracer started when they already exist (seeded from /proc).
fn memory(worker: &Path, env: &Env, args: &BenchArgs) -> anyhow::Result<MemoryFigures> {
    let processes = args.processes.min(free_pids().saturating_sub(2_000));
    // 20,000 fds per process at most here (hard RLIMIT_NOFILE; raising it needs
    // CAP_SYS_RESOURCE): 5,000 connections (10,000 sockets) per holder process.
    let per_holder = 10_000usize.min(args.sockets.max(2));
    let holders = args.sockets.div_ceil(per_holder);
    say(format!(
        "memory: {processes} sleeping processes and {} loopback sockets ({holders} holders)",
        holders * per_holder
    ));
    let mut a = tracers::attach_tracer(env, "memory-live", false)?;
    std::thread::sleep(Duration::from_secs(1));
    let (idle_rss, _) = procs::memory(a.pid())?;
    let t0 = Instant::now();
    let mut held = Vec::new();
    held.push(spawn_ready(
        worker,
        &["hold-procs", "--count", &processes.to_string()],
        Duration::from_secs(300),
    )?);
    for _ in 0..holders {
        held.push(spawn_ready(
            worker,
            &["hold-sockets", "--pairs", &(per_holder / 2).to_string()],
            Duration::from_secs(300),
        )?);
    }
    let seconds_to_create = t0.elapsed().as_secs_f64();
    // Let the collector catch up with the burst.
    std::thread::sleep(Duration::from_secs(if args.smoke { 1 } else { 3 }));
    let (live_rss, live_hwm) = procs::memory(a.pid())?;
    a.mark()?;
    let b = tracers::attach_tracer(env, "memory-seeded", false)?;
    std::thread::sleep(Duration::from_secs(if args.smoke { 1 } else { 3 }));
    let (seeded_rss, seeded_hwm) = procs::memory(b.pid())?;
    let db = b.detach()?;
    // Stopping the holders kills every process and closes every socket at once: a burst.
    for mut g in held {
        g.stop()?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let d = a.detach()?;
    say(format!(
        "  idle {} MiB; live {} MiB (HWM {} MiB); seeded {} MiB (HWM {} MiB); {}",
        idle_rss >> 20,
        live_rss >> 20,
        live_hwm >> 20,
        seeded_rss >> 20,
        seeded_hwm >> 20,
        d.summary
    ));
    Ok(MemoryFigures {
        processes,
        sockets: holders * per_holder,
        idle_rss,
        live_rss,
        live_hwm,
        seeded_rss,
        seeded_hwm,
        seconds_to_create,
        lost: d.lost + db.lost,
        lost_critical: d.lost_critical + db.lost_critical,
        lost_by_kind: d.lost_by_kind,
        summary: d.summary,
    })
}

/// Collector memory over a long run: `--short-lived` short-lived processes and as many short
/// loopback connections under the tracer, in two halves, with VmRSS/VmHWM and the entries of
/// every kernel hash map (per pid, per socket) at the start, the middle and the end. Bounded
/// means the middle and the end agree.
fn churn_memory(
    worker: &Path,
    env: &Env,
    args: &BenchArgs,
) -> anyhow::Result<results::ChurnMemory> {
    let half = (args.short_lived / 2).max(1).to_string();
    // At most this long per half, whatever is done by then.
    let secs = if args.smoke { "30" } else { "150" };
    say(format!(
        "churn-memory: {} short-lived processes and {} short connections, in two halves",
        args.short_lived, args.short_lived
    ));
    let started = Instant::now();
    let a = tracers::attach_tracer(env, "churn-memory", false)?;
    std::thread::sleep(Duration::from_secs(1));
    let sample = |label: &str, procs: u64, conns: u64| -> anyhow::Result<results::MemSample> {
        let (rss, hwm) = procs::memory(a.pid())?;
        Ok(results::MemSample {
            label: label.into(),
            procs,
            conns,
            rss,
            hwm,
            maps: bpfstats::map_fills(a.pid()),
        })
    };
    let mut samples = vec![sample("start", 0, 0)?];
    let (mut procs_done, mut conns_done) = (0, 0);
    for label in ["middle", "end"] {
        let r = workloads::run_worker(
            &worker.to_path_buf(),
            &[
                "short-lived",
                "--procs",
                &half,
                "--conns",
                &half,
                "--secs",
                secs,
            ],
        )?;
        procs_done += r.procs;
        conns_done += r.conns;
        // The collector catches up, exits and closes reach the tables.
        std::thread::sleep(Duration::from_secs(3));
        let m = sample(label, procs_done, conns_done)?;
        say(format!(
            "  {label}: {procs_done} processes, {conns_done} connections: VmRSS {} MiB, VmHWM {} \
             MiB; maps {}",
            m.rss >> 20,
            m.hwm >> 20,
            m.maps
                .iter()
                .map(|f| format!("{} {}/{}", f.name, f.entries, f.max_entries))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        samples.push(m);
    }
    let d = a.detach()?;
    Ok(results::ChurnMemory {
        samples,
        seconds: started.elapsed().as_secs_f64(),
        lost: d.lost,
        summary: d.summary,
    })
}

/// Records a dump under mixed load (HTTP connection churn and process churn), then times
/// replay and report on it.
fn replay(worker: &Path, env: &Env, args: &BenchArgs) -> anyhow::Result<ReplayFigures> {
    let load = "wrk -H 'Connection: close' on the HTTP server + the proc churn, together";
    say(format!(
        "replay: recording {:.0} s of {load}",
        args.dump_seconds
    ));
    let mut http = Workload::new(Kind::Http, worker.to_path_buf());
    http.setup(args.dump_seconds)?;
    let mut a = tracers::attach_tracer(env, "replay", true)?;
    a.mark()?;
    let secs = args.dump_seconds;
    let w2 = worker.to_path_buf();
    let churn = std::thread::spawn(move || {
        workloads::run_worker(&w2, &["proc-churn", "--secs", &secs.to_string()])
    });
    let wrk = http.run(secs);
    let churn = churn
        .join()
        .map_err(|_| anyhow::anyhow!("proc churn panicked"))?;
    let dump = a.output().to_path_buf();
    let d = a.detach();
    http.teardown()?;
    let d = d?;
    wrk?;
    churn?;
    let dump_bytes = procs::dir_bytes(&dump);
    let events = d.events;
    let mut r = ReplayFigures {
        load: load.into(),
        record_seconds: secs,
        events,
        lost: d.lost,
        lost_critical: d.lost_critical,
        dump_bytes,
        bytes_per_event: dump_bytes as f64 / events.max(1) as f64,
        ..ReplayFigures::default()
    };
    r.per_kind = replay_stats_kinds(&env.tracer, &dump);
    let repeats = if args.smoke { 1 } else { 3 };
    let time = |a: &[&str]| -> anyhow::Result<f64> {
        let mut v = Vec::new();
        for _ in 0..repeats {
            let t = Instant::now();
            let st = Command::new(&env.tracer)
                .args(a)
                .arg(&dump)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if !st.success() {
                bail!("tracer {} failed ({st})", a.join(" "));
            }
            v.push(t.elapsed().as_secs_f64());
        }
        Ok(results::median(&v))
    };
    let result = (|| -> anyhow::Result<()> {
        r.replay_json_s = time(&["replay", "--json"])?;
        r.replay_stats_s = time(&["replay", "--stats"])?;
        r.report_s = time(&["report"])?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dump);
    result?;
    let rate = |s: f64| events as f64 / s;
    r.replay_json_rate = rate(r.replay_json_s);
    r.replay_stats_rate = rate(r.replay_stats_s);
    r.report_rate = rate(r.report_s);
    say(format!(
        "  {} events, {:.1} bytes/event; replay --json {:.2}s, --stats {:.2}s, report {:.2}s",
        events, r.bytes_per_event, r.replay_json_s, r.replay_stats_s, r.report_s
    ));
    Ok(r)
}

/// Events per kind from `tracer replay --stats --json` (empty if its shape is unknown).
fn replay_stats_kinds(tracer: &Path, dump: &Path) -> std::collections::BTreeMap<String, u64> {
    let out = Command::new(tracer)
        .args(["replay", "--stats", "--json"])
        .arg(dump)
        .output();
    let Ok(out) = out else {
        return Default::default();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return Default::default();
    };
    let kinds = ["events_per_kind", "per_kind", "kinds", "events"]
        .iter()
        .find_map(|k| v.get(*k).and_then(|x| x.as_object()));
    kinds
        .map(|o| {
            o.iter()
                .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
