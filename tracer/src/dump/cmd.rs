//! `tracer replay` and `tracer export`: a dump fed through the same pipeline as live events,
//! so the output is what `tracer live` printed (or would have printed) for those events.
use std::{cell::RefCell, collections::BTreeMap, io::Write, path::PathBuf, rc::Rc, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::json;

use super::{
    DumpReader, Item,
    reader::{ReadStats, wall_span},
};
use crate::{
    driver::{Driver, Source},
    event::{self, Body, Drops, Event, KindCounts},
    filter::{self, FilterSpec},
    host::{self, HostInfo},
    output::{self, Format},
    pipeline::{Ctx, Pipeline, Sink},
    proc_table::ProcTable,
    sinks::Findings,
    units,
};

/// Which events of a dump to show.
#[derive(Args, Clone, Debug, Default)]
pub struct DumpFilterArgs {
    /// Event families, comma separated: tcp, signal, process, oom, memory, all.
    #[arg(long, value_name = "LIST")]
    pub events: Option<String>,
    /// Only this process and its descendants (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only processes with this name (as in `comm`).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Only processes in this cgroup: its path (e.g. /system.slice/api.service) or numeric id.
    #[arg(long, value_name = "PATH|ID")]
    pub cgroup: Option<String>,
    /// Start at TIME: RFC 3339 (2026-11-24T03:04:05Z), +DURATION after the dump's start, or
    /// -DURATION before its end (e.g. -10m: the last ten minutes).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Stop at TIME (same forms as --since).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
}

#[derive(Args, Clone, Debug)]
pub struct ReplayArgs {
    /// Dump segment files, or directories of them (as written by `tracer record -o DIR`).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// One JSON object per line, as `tracer live --json` prints them.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub filter: DumpFilterArgs,
    /// Print statistics about the dump (time span, events per kind, drops, size) instead of the
    /// events.
    #[arg(long)]
    pub stats: bool,
    /// Events only: no findings lines (`tracer live` prints them as they appear; so does replay).
    #[arg(long)]
    pub no_findings: bool,
    #[command(flatten)]
    pub analysis: crate::analysis::AnalysisArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// JSON lines: one object per event, as `tracer replay --json`.
    Jsonl,
}

#[derive(Args, Clone, Debug)]
pub struct ExportArgs {
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Dump segment files, or directories of them.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Write to FILE (mode 0600: events hold command lines) instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub filter: DumpFilterArgs,
}

pub fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let (source, mut pipeline) = DumpSource::open(&args.paths, &args.filter)?;
    let counts = Rc::new(RefCell::new(Counts::default()));
    let mut spec = crate::sinks::Spec::new(&args.analysis);
    if args.stats {
        spec.own.push(Box::new(StatsSink(counts.clone())));
    } else {
        spec.printer = Some(if args.json {
            Format::Json
        } else {
            Format::Human
        });
        if !args.no_findings {
            // The same findings, at the same points of the stream, as `live` printed them.
            spec.findings = Findings::Print { json: args.json };
            spec.concurrent = true;
        }
    }
    crate::sinks::build(&mut pipeline, spec)?;
    let outcome = source.run(pipeline)?;
    if args.stats {
        print_stats(&args.paths, &outcome, &counts.borrow(), args.json);
    }
    outcome.into_result()
}

pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let ExportFormat::Jsonl = args.format;
    let (source, mut pipeline) = DumpSource::open(&args.paths, &args.filter)?;
    let analysis = crate::analysis::AnalysisArgs::default();
    let mut spec = crate::sinks::Spec::new(&analysis);
    match &args.output {
        None => spec.printer = Some(Format::Json),
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            spec.own.push(Box::new(JsonlFile {
                out: std::io::BufWriter::new(f),
                path: path.clone(),
                line: Vec::with_capacity(512),
            }));
        }
    }
    crate::sinks::build(&mut pipeline, spec)?;
    source.run(pipeline)?.into_result()
}

/// A time bound as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeArg {
    /// Nanoseconds since the Unix epoch.
    Wall(i64),
    AfterStart(Duration),
    BeforeEnd(Duration),
}

pub fn parse_time(s: &str) -> anyhow::Result<TimeArg> {
    let t = s.trim();
    if let Some(ns) = host::parse_rfc3339(t) {
        return Ok(TimeArg::Wall(ns));
    }
    let dur = |d: &str| units::parse_duration(d).map_err(|e| anyhow::anyhow!("{e}"));
    if let Some(d) = t.strip_prefix('+') {
        return Ok(TimeArg::AfterStart(dur(d)?));
    }
    if let Some(d) = t.strip_prefix('-') {
        return Ok(TimeArg::BeforeEnd(dur(d)?));
    }
    if units::parse_duration(t).is_ok() {
        bail!(
            "time '{s}' is ambiguous: write +{t} for {t} after the dump's start, or -{t} for {t} \
             before its end"
        );
    }
    bail!(
        "invalid time '{s}': expected RFC 3339 (2026-11-24T03:04:05Z), +DURATION (after the \
         dump's start) or -DURATION (before its end)"
    )
}

fn to_wall(t: TimeArg, span: Option<(i64, i64)>) -> Option<i64> {
    let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    match (t, span) {
        (TimeArg::Wall(w), _) => Some(w),
        (TimeArg::AfterStart(d), Some((a, _))) => Some(a.saturating_add(ns(d))),
        (TimeArg::BeforeEnd(d), Some((_, b))) => Some(b.saturating_sub(ns(d))),
        // No records: nothing to bound.
        (_, None) => None,
    }
}

/// A wall-clock bound as the boot-time ns of the segment being read.
fn to_boot(wall: i64, host: &HostInfo) -> u64 {
    (wall as i128 - host.boot_to_wall_ns as i128).clamp(0, u64::MAX as i128) as u64
}

/// What a run over a dump found besides the events.
#[derive(Debug, Default)]
pub struct Outcome {
    pub read: ReadStats,
    pub warnings: u64,
    pub decode_errors: u64,
    /// Output closed early (`| head`).
    pub stopped: bool,
}

impl Outcome {
    /// Corrupted blocks make the exit status non-zero (data was lost); a truncated tail does not
    /// (it is what a crash or a power loss leaves, and everything before it was read).
    pub fn into_result(self) -> anyhow::Result<()> {
        if self.read.corrupt_blocks > 0 && !self.stopped {
            bail!(
                "{} corrupted block(s) were skipped (see the warnings above); everything else was \
                 read",
                self.read.corrupt_blocks
            );
        }
        Ok(())
    }
}

/// Reads the dump at `paths` and feeds it through a pipeline with `sinks`.
pub fn run(
    paths: &[PathBuf],
    args: &DumpFilterArgs,
    sinks: Vec<Box<dyn Sink>>,
) -> anyhow::Result<Outcome> {
    let (source, mut pipeline) = DumpSource::open(paths, args)?;
    for s in sinks {
        pipeline.add_sink(s);
    }
    source.run(pipeline)
}

/// Holds each record back until its time comes (`tracer top --replay`'s recorded pace); an
/// error stops the dump.
pub type Pace = Box<dyn FnMut(u64) -> anyhow::Result<()>>;

/// A dump as a [`Source`]: its records in order, each segment's host (another boot is a
/// boundary the driver acts on), the time bounds of `--since`/`--until` per segment, and the
/// dump's own warnings (gaps, skipped blocks) counted.
pub struct DumpSource {
    reader: super::prefetch::Prefetch,
    since: Option<i64>,
    until: Option<i64>,
    feed_snapshot: bool,
    warnings: u64,
    pace: Option<Pace>,
}

impl DumpSource {
    /// Opens the dump and compiles the filters; the pipeline is what to add the sinks to.
    pub fn open(
        paths: &[PathBuf],
        args: &DumpFilterArgs,
    ) -> anyhow::Result<(DumpSource, Pipeline)> {
        let since = args
            .since
            .as_deref()
            .map(parse_time)
            .transpose()
            .context("--since")?;
        let until = args
            .until
            .as_deref()
            .map(parse_time)
            .transpose()
            .context("--until")?;
        let relative = [since, until]
            .iter()
            .flatten()
            .any(|t| !matches!(t, TimeArg::Wall(_)));
        let span = if relative { wall_span(paths)? } else { None };
        let cgroup = match &args.cgroup {
            Some(c) => Some(resolve_cgroup(c, paths)?),
            None => None,
        };
        let filter = FilterSpec::new(
            args.events.as_deref().unwrap_or("all"),
            &args.pids,
            args.comm.as_deref(),
            cgroup,
            false,
        )?
        .userspace();
        let source = DumpSource {
            reader: super::prefetch::Prefetch::open(paths),
            since: since.and_then(|t| to_wall(t, span)),
            until: until.and_then(|t| to_wall(t, span)),
            feed_snapshot: true,
            warnings: 0,
            pace: None,
        };
        Ok((source, Pipeline::new(HostInfo::default(), filter)))
    }

    /// Feeds records no faster than `pace` lets them through.
    pub fn pace(&mut self, pace: Pace) {
        self.pace = Some(pace);
    }

    /// Feeds the whole dump through `pipeline` and ends it.
    pub fn run(mut self, pipeline: Pipeline) -> anyhow::Result<Outcome> {
        let mut drv = Driver::new(pipeline, "in the dump");
        drv.run(&mut self)?;
        Ok(Outcome {
            read: self.reader.stats(),
            warnings: self.warnings + drv.decode_errors,
            decode_errors: drv.decode_errors,
            stopped: drv.stopped,
        })
    }
}

impl Source for DumpSource {
    fn pump(&mut self, drv: &mut Driver) -> anyhow::Result<()> {
        while let Some(item) = self.reader.next_item()? {
            let raw = match item {
                Item::Segment(info) => {
                    let filter = &mut drv.pipeline.filter;
                    filter.since_ns = self.since.map(|w| to_boot(w, &info.host));
                    filter.until_ns = self.until.map(|w| to_boot(w, &info.host));
                    self.feed_snapshot = !info.continues;
                    drv.host(info.host.clone())?;
                    continue;
                }
                Item::Snapshot(raw) if self.feed_snapshot => raw,
                Item::Snapshot(_) => continue,
                Item::Record(raw) => raw,
                Item::Gap(g) => {
                    self.warnings += 1;
                    tracing::warn!(
                        "dump: {} events were not recorded at this point ({})",
                        g.lost,
                        if g.reason.is_empty() {
                            "recorder error"
                        } else {
                            &g.reason
                        }
                    );
                    continue;
                }
                Item::Warning(w) => {
                    self.warnings += 1;
                    tracing::warn!("dump: {w}");
                    continue;
                }
            };
            if let Some(pace) = self.pace.as_mut() {
                pace(crate::driver::record_ts(raw))?;
            }
            let Some(ev) = drv.decode(raw) else { continue };
            if let Body::RecorderGap(g) = &ev.body {
                self.warnings += 1;
                let host = &drv.pipeline.host;
                tracing::warn!(
                    "dump: {} events were not recorded between {} and {} ({})",
                    g.lost,
                    host.rfc3339(g.first_ns),
                    host.rfc3339(g.last_ns),
                    g.reason
                );
            }
            drv.feed(&ev, raw)?;
        }
        Ok(())
    }
}

/// A cgroup given by path, as the id its events carry: learnt from the dump itself (processes
/// whose recorded cgroup path matches), so it works on another host; else, for a dump of this
/// very boot, from the cgroup file system.
/// `--cgroup PATH|ID` of a dump: the id and level from the cgroup v2 ancestry stored in the
/// dump's process facts (see [`filter::CgroupSel::find`]).
fn resolve_cgroup(arg: &str, paths: &[PathBuf]) -> anyhow::Result<filter::CgroupSel> {
    let want = match arg.parse::<u64>() {
        Ok(id) => filter::CgroupArg::Id(id),
        Err(_) => filter::CgroupArg::Path(filter::normalize_cgroup_path(arg)),
    };
    let mut reader = DumpReader::open(paths)?;
    let mut procs = ProcTable::new();
    let mut by_memory_path = None;
    let mut boot = String::new();
    while let Some(item) = reader.next_item()? {
        let raw = match item {
            Item::Segment(info) => {
                boot = info.host.boot_id.clone();
                continue;
            }
            Item::Snapshot(r) | Item::Record(r) => r,
            _ => continue,
        };
        let Ok(ev) = event::decode(raw) else { continue };
        procs.apply(&ev);
        let Some(p) = procs.get(ev.tgid) else {
            continue;
        };
        if let Some(sel) = want.find(p) {
            return Ok(sel);
        }
        // Dumps from before the cgroup v2 ancestry was stored: a process whose (memory) cgroup
        // path is that one, in a record it wrote.
        if by_memory_path.is_none()
            && ev.body.kind().is_some()
            && let filter::CgroupArg::Path(w) = &want
            && !p.cgroup.is_empty()
            && filter::normalize_cgroup_path(&p.cgroup) == *w
        {
            by_memory_path = Some(filter::CgroupSel {
                id: ev.cgroup_id,
                level: filter::CgroupSel::UNKNOWN_LEVEL,
            });
        }
    }
    let this_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    match (want, by_memory_path) {
        (_, Some(sel)) => Ok(sel),
        // Recorded on this boot: the cgroup may still exist.
        (filter::CgroupArg::Path(w), None)
            if !boot.is_empty()
                && this_boot.trim() == boot
                && let Ok((id, level)) =
                    crate::procfs::cgroup_v2_id(&crate::procfs::CgroupMounts::read(), &w) =>
        {
            Ok(filter::CgroupSel { id, level })
        }
        (filter::CgroupArg::Id(id), None) => Ok(filter::CgroupSel {
            id,
            level: filter::CgroupSel::UNKNOWN_LEVEL,
        }),
        (filter::CgroupArg::Path(_), None) => bail!(
            "--cgroup {arg}: no process of the dump ran in that cgroup or below it; give its numeric id instead"
        ),
    }
}

/// Writes JSON lines to a file (`export -o`).
struct JsonlFile {
    out: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    /// One line, reused from event to event.
    line: Vec<u8>,
}

impl Sink for JsonlFile {
    fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        if !output::printable(ev) {
            return Ok(());
        }
        self.line.clear();
        output::write_json_line(&mut self.line, ev, ctx)?;
        self.out
            .write_all(&self.line)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn finish(&mut self, _ctx: &Ctx<'_>) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.out
            .get_ref()
            .sync_data()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[derive(Debug, Default)]
struct Counts {
    per_kind: KindCounts,
    events: u64,
    first_wall: Option<i64>,
    last_wall: Option<i64>,
    drops: Option<Drops>,
    /// Sums over the recorder's gap records (see [`event::RecorderGap`]).
    gap_lost: u64,
    gap_lost_total: u64,
    gap_span: Option<(i64, i64)>,
}

/// Counts the events that pass the filters, per kind, and keeps the last drop counts.
struct StatsSink(Rc<RefCell<Counts>>);

impl Sink for StatsSink {
    fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        let mut c = self.0.borrow_mut();
        match &ev.body {
            Body::Drops(d) => c.drops = Some((**d).clone()),
            Body::RecorderGap(g) => {
                c.gap_lost += g.lost;
                c.gap_lost_total = c.gap_lost_total.max(g.lost_total);
                let (a, b) = (ctx.host.wall_ns(g.first_ns), ctx.host.wall_ns(g.last_ns));
                let (x, y) = c.gap_span.unwrap_or((a, b));
                c.gap_span = Some((x.min(a), y.max(b)));
            }
            Body::ProcInfo(_) | Body::Tick => {}
            _ => {
                c.per_kind.add(ev);
                c.events += 1;
                let w = ctx.host.wall_ns(ev.ts_ns);
                c.first_wall = Some(c.first_wall.map_or(w, |x| x.min(w)));
                c.last_wall = Some(c.last_wall.map_or(w, |x| x.max(w)));
            }
        }
        Ok(())
    }
}

fn human_duration(ns: i64) -> String {
    let s = ns.max(0) / 1_000_000_000;
    match s {
        0..60 => format!("{:.3}s", ns.max(0) as f64 / 1e9),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m{:02}s", s / 3600, s % 3600 / 60, s % 60),
        _ => format!(
            "{}d{:02}h{:02}m",
            s / 86400,
            s % 86400 / 3600,
            s % 3600 / 60
        ),
    }
}

fn print_stats(paths: &[PathBuf], o: &Outcome, c: &Counts, as_json: bool) {
    let r = &o.read;
    let per_record = if r.records == 0 {
        0.0
    } else {
        r.bytes as f64 / r.records as f64
    };
    let drops_total = c.drops.as_ref().map_or(0, Drops::total);
    if as_json {
        let doc = json!({
            "paths": paths,
            "segments": r.segments,
            "size_bytes": r.bytes,
            "records": r.records,
            "bytes_per_record": (per_record * 10.0).round() / 10.0,
            "first": c.first_wall.map(host::rfc3339_ns),
            "last": c.last_wall.map(host::rfc3339_ns),
            "span_s": c.first_wall.zip(c.last_wall).map(|(a, b)| (b - a) as f64 / 1e9),
            "events": c.events,
            "events_per_kind": c.per_kind,
            "kernel_drops": drops_total,
            "kernel_drops_per_kind": c.drops.as_ref().map(|d| d.per_kind.iter().cloned().collect::<BTreeMap<_, _>>()),
            "recorder_lost": r.recorder_lost + c.gap_lost,
            "recorder_lost_total": c.gap_lost_total.max(r.recorder_lost + c.gap_lost),
            "recorder_gap_first": c.gap_span.map(|s| host::rfc3339_ns(s.0)),
            "recorder_gap_last": c.gap_span.map(|s| host::rfc3339_ns(s.1)),
            "warnings": o.warnings,
            "corrupt_blocks": r.corrupt_blocks,
            "truncated": r.truncated,
            "undecodable_records": o.decode_errors,
        });
        output::print(&doc.to_string());
        return;
    }
    let mut lines = vec![format!("segments      {} ({} bytes)", r.segments, r.bytes)];
    match c.first_wall.zip(c.last_wall) {
        Some((a, b)) => lines.push(format!(
            "time span     {} .. {} ({})",
            host::rfc3339_ns(a),
            host::rfc3339_ns(b),
            human_duration(b - a)
        )),
        None => lines.push("time span     (no events)".into()),
    }
    lines.push(format!(
        "records       {} ({per_record:.1} bytes/record on disk)",
        r.records
    ));
    lines.push(format!("events        {}", c.events));
    let mut kinds: Vec<_> = c.per_kind.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (k, n) in kinds {
        lines.push(format!("  {k:<14}{n}"));
    }
    match &c.drops {
        Some(d) if d.total() > 0 => {
            let per: Vec<String> = d
                .per_kind
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            lines.push(format!("kernel drops  {} ({})", d.total(), per.join(", ")));
        }
        Some(_) => lines.push("kernel drops  0".into()),
        None => lines.push("kernel drops  unknown (no drop counts in the dump)".into()),
    }
    let lost = r.recorder_lost + c.gap_lost;
    match c.gap_span {
        Some((a, b)) => lines.push(format!(
            "recorder lost {lost} between {} and {} ({} in the whole run)",
            host::rfc3339_ns(a),
            host::rfc3339_ns(b),
            c.gap_lost_total.max(lost)
        )),
        None => lines.push(format!("recorder lost {lost}")),
    }
    lines.push(format!(
        "warnings      {} ({} corrupted blocks, {} truncated, {} undecodable records)",
        o.warnings, r.corrupt_blocks, r.truncated, o.decode_errors
    ));
    for l in lines {
        output::print(&l);
    }
}
