//! `tracer top`: a full-screen table of processes refreshed once a second, fed by the same
//! pipeline as `tracer live` (or, with `--replay`, by a dump at its recorded pace), with the
//! findings as they are raised.
//!
//! Layout as elsewhere: the pipeline's sink ([`TopSink`]) updates the [`model::Model`] and
//! runs the analyses under one lock; the screen thread takes a [`view::Snapshot`] of it once a
//! second and draws it ([`view`]); [`term`] owns the terminal and gives it back on every exit.
pub mod model;
pub mod series;
mod term;
pub mod view;

use std::{
    io::IsTerminal,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use ratatui::{
    Terminal,
    crossterm::event::{self, Event as TermEvent},
    prelude::CrosstermBackend,
};

use self::{
    model::{Model, ModelOptions},
    view::{Action, Ui},
};
use crate::{
    analysis::{AnalysisArgs, FindingUpdate},
    driver::Driver,
    dump::{
        RecordOptions, Recorder,
        cmd::{DumpFilterArgs, DumpSource},
    },
    event::Event,
    host::HostInfo,
    live::{self, TraceArgs},
    metrics::MetricsArgs,
    otlp::OtlpArgs,
    output::BrokenPipe,
    pipeline::{Ctx, Pipeline, Sink},
    sinks::{Findings, Sinks, Spec},
};

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Also record a dump to DIR while watching (as `tracer record -o DIR`).
    #[arg(long, value_name = "DIR", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Watch a recorded dump (segment files or their directory) at its recorded pace instead
    /// of this host (no privileges needed).
    #[arg(long, value_name = "DUMP")]
    pub replay: Option<PathBuf>,
    /// With --replay: how much faster than recorded (0.5 is slower; 0: as fast as possible).
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "FACTOR",
        requires = "replay"
    )]
    pub speed: f64,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub otlp: OtlpArgs,
}

/// What the sink updates and the screen reads.
pub struct Shared {
    pub model: Model,
    pub host: HostInfo,
}

/// Between the screen, the feeding thread and signal handlers.
#[derive(Clone, Default)]
pub struct Control {
    quit: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    /// f64 bits.
    speed: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
}

impl Control {
    fn new(speed: f64) -> Control {
        let c = Control::default();
        c.speed.store(speed.to_bits(), Ordering::SeqCst);
        c
    }
    pub fn quit(&self) {
        self.quit.store(true, Ordering::SeqCst);
    }
    pub fn quitting(&self) -> bool {
        self.quit.load(Ordering::SeqCst)
    }
    fn speed(&self) -> f64 {
        f64::from_bits(self.speed.load(Ordering::SeqCst))
    }
}

/// The sink after the analyses: the model, with the findings the analyses raised for the same
/// event.
pub struct TopSink {
    shared: Arc<Mutex<Shared>>,
    /// The analyses' NEW/UPDATED findings, until the model takes them.
    findings: Arc<Mutex<Vec<FindingUpdate>>>,
}

impl TopSink {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_findings(&self, model: &mut Model) {
        let updates = std::mem::take(&mut *self.findings.lock().unwrap_or_else(|e| e.into_inner()));
        for u in updates {
            model.finding(u);
        }
    }
}

impl Sink for TopSink {
    fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        let mut s = self.lock();
        let s = &mut *s;
        if s.host != *ctx.host {
            s.host = ctx.host.clone();
        }
        s.model.observe(ev, ctx.procs, ctx.host);
        self.take_findings(&mut s.model);
        Ok(())
    }

    fn new_boot(&mut self, _old: &Ctx<'_>, _next: &HostInfo) -> anyhow::Result<()> {
        // The analyses' findings of the boot that ends were raised just before.
        let mut s = self.lock();
        self.take_findings(&mut s.model);
        s.model.new_boot();
        Ok(())
    }

    fn finish(&mut self, _ctx: &Ctx<'_>) -> anyhow::Result<()> {
        // The analyses' last evaluation ran just before (their sink comes first).
        self.take_findings(&mut self.lock().model);
        Ok(())
    }
}

/// Holds replayed events back to their recorded pace (times `speed`), and while paused.
struct Pacer {
    ctl: Control,
    /// (wall time, event time) the pace is measured from.
    anchor: Option<(Instant, u64)>,
    speed: f64,
    last_ts: u64,
}

impl Pacer {
    fn wait(&mut self, ts: u64) -> anyhow::Result<()> {
        if ts == 0 {
            return Ok(());
        }
        loop {
            if self.ctl.quitting() {
                return Err(BrokenPipe.into());
            }
            let speed = self.ctl.speed();
            if self.ctl.paused.load(Ordering::SeqCst) || speed != self.speed {
                // Measured again from here once playing.
                self.anchor = None;
                self.speed = speed;
                if self.ctl.paused.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
            if speed <= 0.0 {
                return Ok(());
            }
            let from = if self.last_ts == 0 {
                ts
            } else {
                self.last_ts.min(ts)
            };
            let (wall, at) = *self.anchor.get_or_insert((Instant::now(), from));
            let due = wall + Duration::from_secs_f64(ts.saturating_sub(at) as f64 / 1e9 / speed);
            let now = Instant::now();
            if now >= due {
                self.last_ts = self.last_ts.max(ts);
                return Ok(());
            }
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
        }
    }
}

pub fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "tracer top draws a full-screen table and needs a terminal, but standard output is \
             not one (piped or redirected): use `tracer live` for a stream of lines, or `tracer \
             record` and `tracer report`"
        );
    }
    if !(args.speed.is_finite() && args.speed >= 0.0) {
        anyhow::bail!("--speed must be a number >= 0 (0: as fast as possible)");
    }
    let fatal = args.analysis.load()?.signal_numbers()?;
    let filtered =
        !args.trace.pids.is_empty() || args.trace.comm.is_some() || args.trace.cgroup.is_some();
    let model = Model::new(ModelOptions {
        fatal_signals: fatal,
        show_idle: !filtered,
        keep_exited: false,
    });
    let shared = Arc::new(Mutex::new(Shared {
        model,
        host: HostInfo::default(),
    }));
    let ctl = Control::new(args.speed);
    // Before the terminal is taken: from here SIGTERM, SIGINT and SIGHUP end it cleanly.
    watch_signals(ctl.clone())?;
    match &args.replay {
        Some(path) => replay(&args, path.clone(), shared, ctl),
        None => live(&args, shared, ctl),
    }
}

fn watch_signals(ctl: Control) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut term, mut int, mut hup) = {
        let _g = rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        )
    };
    std::thread::Builder::new()
        .name("top-signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    _ = hup.recv() => {}
                }
            });
            ctl.quit();
        })?;
    Ok(())
}

/// The sinks of top, live or replayed: a recording (with --record), the analyses, the screen's
/// model, and the fleet outputs (--metrics, --otlp).
fn add_sinks(
    args: &TopArgs,
    pipeline: &mut Pipeline,
    shared: &Arc<Mutex<Shared>>,
) -> anyhow::Result<Sinks> {
    let mut spec = Spec::new(&args.analysis);
    if let Some(dir) = &args.record {
        let rec = Recorder::new(&RecordOptions::new(dir), pipeline.host.clone())
            .with_context(|| format!("--record {}", dir.display()))?;
        spec.recorder = Some(rec);
    }
    spec.findings = Findings::Quiet;
    let findings = Arc::new(Mutex::new(Vec::new()));
    spec.own.push(Box::new(TopSink {
        shared: shared.clone(),
        findings: findings.clone(),
    }));
    spec.metrics = Some(&args.metrics);
    spec.otlp = Some(&args.otlp);
    let sinks = crate::sinks::build(pipeline, spec)?;
    if let Some(engine) = &sinks.engine {
        engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_update(move |u, _| {
                findings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(u.clone())
            });
    }
    Ok(sinks)
}

fn live(args: &TopArgs, shared: Arc<Mutex<Shared>>, ctl: Control) -> anyhow::Result<ExitCode> {
    // Everything that may fail for want of privileges happens before the screen is taken.
    let (mut session, host, filter) = live::start(&args.trace)?;
    let source = format!("live on {} (kernel {})", host.hostname, host.kernel);
    let mut pipeline = Pipeline::new(host, filter);
    let mut sinks = add_sinks(args, &mut pipeline, &shared)?;
    let mut drv = Driver::new(pipeline, "from the kernel");
    let guard = term::enter()?;
    let screen = spawn_screen(shared, ctl.clone(), Ui::new(source, false, 1.0))?;
    let result = (|| {
        session.seed(&mut drv)?;
        let stop = {
            let ctl = ctl.clone();
            async move {
                while !ctl.quitting() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        session.run(&mut drv, None, stop)
    })();
    ctl.quit();
    let screen = screen.join();
    drop(guard);
    sinks.fleet.finish();
    if let Some(dir) = &args.record {
        crate::output::eprint(&format!("tracer: recorded to {}", dir.display()));
    }
    let summary = result?;
    crate::output::eprint(&summary.render());
    screen.map_err(|_| anyhow::anyhow!("the screen thread failed"))??;
    Ok(ExitCode::SUCCESS)
}

fn replay(
    args: &TopArgs,
    path: PathBuf,
    shared: Arc<Mutex<Shared>>,
    ctl: Control,
) -> anyhow::Result<ExitCode> {
    let paths = vec![path.clone()];
    let filter = DumpFilterArgs {
        events: Some(args.trace.events.clone()),
        pids: args.trace.pids.clone(),
        comm: args.trace.comm.clone(),
        cgroup: args.trace.cgroup.clone(),
        since: None,
        until: None,
    };
    // A file that is not a dump is said before the screen is taken.
    let (mut source, mut pipeline) = DumpSource::open(&paths, &filter)?;
    let mut pacer = Pacer {
        ctl: ctl.clone(),
        anchor: None,
        speed: args.speed,
        last_ts: 0,
    };
    source.pace(Box::new(move |ts| pacer.wait(ts)));
    let mut sinks = add_sinks(args, &mut pipeline, &shared)?;
    let guard = term::enter()?;
    let ui = Ui::new(format!("replay of {}", path.display()), true, args.speed);
    let screen = spawn_screen(shared, ctl.clone(), ui)?;
    let outcome = source.run(pipeline);
    // The end stays on screen until q.
    ctl.done.store(true, Ordering::SeqCst);
    let screen = screen.join();
    drop(guard);
    sinks.fleet.finish();
    screen.map_err(|_| anyhow::anyhow!("the screen thread failed"))??;
    outcome?.into_result()?;
    Ok(ExitCode::SUCCESS)
}

/// Sets `quit` when the screen thread ends, however it ends (a panic included).
struct QuitOnDrop(Control);

impl Drop for QuitOnDrop {
    fn drop(&mut self) {
        self.0.quit();
    }
}

fn spawn_screen(
    shared: Arc<Mutex<Shared>>,
    ctl: Control,
    ui: Ui,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    Ok(std::thread::Builder::new()
        .name("top-screen".into())
        .spawn(move || {
            let _quit = QuitOnDrop(ctl.clone());
            screen(&shared, &ctl, ui)
        })?)
}

#[derive(PartialEq, Eq)]
enum Input {
    Ready,
    HungUp,
}

/// Waits up to `timeout` for a key on the terminal; says when the terminal went away (SIGHUP's
/// cause: its window closed).
fn wait_for_input(timeout: Duration) -> Input {
    if !std::io::stdin().is_terminal() {
        // crossterm reads /dev/tty then; keys are looked at after the wait.
        std::thread::sleep(timeout);
        return Input::Ready;
    }
    let mut p = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Input::HungUp
    } else {
        Input::Ready
    }
}

/// How often the screen is redrawn.
const REFRESH: Duration = Duration::from_secs(1);

fn screen(shared: &Mutex<Shared>, ctl: &Control, mut ui: Ui) -> anyhow::Result<()> {
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    term.clear()?;
    let mut last_refresh: Option<Instant> = None;
    let mut last_events = (Instant::now(), 0u64);
    let mut dirty = true;
    while !ctl.quitting() && term::active() {
        let refresh_due = last_refresh.is_none_or(|t| t.elapsed() >= REFRESH);
        if refresh_due || dirty {
            ui.done = ctl.done.load(Ordering::SeqCst);
            if !ui.paused || last_refresh.is_none() || dirty {
                let s = shared.lock().unwrap_or_else(|e| e.into_inner());
                if refresh_due && !ui.paused {
                    let dt = last_events.0.elapsed().as_secs_f64();
                    if dt > 0.0 {
                        ui.events_per_sec =
                            s.model.events.saturating_sub(last_events.1) as f64 / dt;
                    }
                    last_events = (Instant::now(), s.model.events);
                }
                if !ui.paused || dirty {
                    ui.snap = ui.snapshot(&s.model, &s.host);
                }
            }
            if refresh_due {
                last_refresh = Some(Instant::now());
            }
            if !term::active() {
                break;
            }
            // A terminal that went away (SIGHUP) ends the screen.
            term.draw(|f| view::draw(f, &ui))?;
            dirty = false;
        }
        let wait = REFRESH
            .saturating_sub(last_refresh.map_or(Duration::ZERO, |t| t.elapsed()))
            .min(Duration::from_millis(100));
        // Waiting happens here, not in crossterm's poll: that one spins forever on a terminal
        // that went away (the window closed), and SIGHUP could then not end the program.
        if wait_for_input(wait) == Input::HungUp {
            break;
        }
        let mut quit = false;
        while !quit && event::poll(Duration::ZERO)? {
            match event::read()? {
                TermEvent::Key(k) => match ui.key(k) {
                    Action::Quit => quit = true,
                    Action::None => {}
                    Action::Pause => {
                        ctl.paused.store(ui.paused, Ordering::SeqCst);
                        dirty = true;
                    }
                    Action::Speed => {
                        ctl.speed.store(ui.speed.to_bits(), Ordering::SeqCst);
                        dirty = true;
                    }
                    Action::Redraw => dirty = true,
                },
                TermEvent::Resize(..) => dirty = true,
                _ => {}
            }
        }
        if quit {
            break;
        }
    }
    ctl.quit();
    Ok(())
}
