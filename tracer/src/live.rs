//! The live source: load and attach the programs, seed the process table from /proc, then
//! read both ring buffers and feed every record through the pipeline until stopped.
use std::{collections::HashSet, time::Duration};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use clap::Args;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};
use tracer_common::{Kind, prog::Prog};

use crate::{
    driver::{Driver, Source, record_ts},
    event::{self, Body, Comm, Drops, Event, KindCounts, ProcInfo},
    filter::{CgroupSel, Filter, FilterSpec},
    host::{self, HostInfo},
    kernel::tracefs::Tracefs,
    probes::{self, Loaded, TraceConfig},
    procfs::{self, CgroupMounts},
    units,
};

/// What to trace: shared by `live` and `record` (and, without the kernel-only options, by
/// `replay`).
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Event families to trace, comma separated: tcp, signal, process, oom, memory (or all).
    #[arg(long, default_value = "all", value_name = "LIST")]
    pub events: String,
    /// Trace only this process and its descendants (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Trace only processes with this name (the kernel's 15-character comm).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Trace only this cgroup v2 (path below the cgroup2 mount, or absolute) and its children.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Also show SIGCHLD (sent on every child exit; hidden by default).
    #[arg(long)]
    pub sigchld: bool,
    /// Also emit every TCP state change (tcp_state events). Connections are always followed
    /// (conn_open, conn_close, conn_status); this adds some ten records per connection.
    #[arg(long)]
    pub tcp_states: bool,
    /// The most a process's RSS or mapped bytes move before a memory sample (the step is 1/32
    /// of the value, from 1 MiB up to this).
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = units::parse_size)]
    pub mem_threshold: u64,
    /// mmap/munmap/brk moves at least this large are single events.
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = units::parse_size)]
    pub large_mapping: u64,
    /// Ring buffer for TCP and memory events.
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = units::parse_size)]
    pub ring_size: u64,
    /// Ring buffer for signals, process and OOM events (kept apart so floods cannot crowd them
    /// out; 4M holds the exits and signals of some 20,000 processes killed at once).
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = units::parse_size)]
    pub critical_ring_size: u64,
}

impl TraceArgs {
    /// The command line's defaults (everything traced, default thresholds).
    pub fn defaults() -> TraceArgs {
        TraceArgs {
            events: "all".into(),
            pids: Vec::new(),
            comm: None,
            cgroup: None,
            sigchld: false,
            tcp_states: false,
            mem_threshold: probes::DEFAULT_MEM_SAMPLE,
            large_mapping: probes::DEFAULT_LARGE_MAPPING,
            ring_size: 8 << 20,
            critical_ring_size: 4 << 20,
        }
    }

    /// The filters, parsed once: compiled to the kernel's configuration here, and to the
    /// userspace filter by whoever replays what was traced.
    pub fn filter_spec(&self, mounts: &CgroupMounts) -> anyhow::Result<FilterSpec> {
        let cgroup = match &self.cgroup {
            Some(c) => {
                let (id, level) = procfs::cgroup_v2_id(mounts, c).map_err(anyhow::Error::msg)?;
                Some(CgroupSel { id, level })
            }
            None => None,
        };
        Ok(FilterSpec::new(
            &self.events,
            &self.pids,
            self.comm.as_deref(),
            cgroup,
            self.sigchld,
        )?)
    }

    fn kernel_config(&self, spec: &FilterSpec) -> anyhow::Result<TraceConfig> {
        let ring = |v: u64, what: &str| -> anyhow::Result<u32> {
            u32::try_from(v)
                .ok()
                .filter(|v| *v >= 4096)
                .with_context(|| format!("{what} must be between 4K and 2G"))
        };
        Ok(TraceConfig {
            filter: spec.clone(),
            tcp_states: self.tcp_states,
            mem_sample_bytes: self.mem_threshold,
            large_mapping_bytes: self.large_mapping,
            critical_ring_bytes: ring(self.critical_ring_size, "--critical-ring-size")?,
            bulk_ring_bytes: ring(self.ring_size, "--ring-size")?,
        })
    }
}

/// How a live session ended, and what it saw.
#[derive(Debug, Default)]
pub struct Summary {
    pub events: u64,
    pub per_kind: KindCounts,
    pub drops: Vec<(Kind, u64)>,
    /// Reads that failed in the kernel, per program (see `tracer_common::prog`).
    pub prog_errors: Vec<(Prog, u64)>,
    pub decode_errors: u64,
    pub duration: Duration,
    /// Lines stdout did not take (see [`crate::stdout`]).
    pub unprinted: u64,
}

impl Summary {
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }

    pub fn render(&self) -> String {
        let kinds: Vec<String> = self
            .per_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let mut s = format!(
            "tracer: {} events in {:.1}s{}{}",
            self.events,
            self.duration.as_secs_f64(),
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            },
            if self.total_drops() == 0 && self.unprinted == 0 {
                "; no records lost".to_owned()
            } else {
                String::new()
            }
        );
        if self.total_drops() > 0 {
            let d: Vec<String> = self
                .drops
                .iter()
                .map(|(k, n)| format!("{} {n}", k.name()))
                .collect();
            s.push_str(&format!(
                "; LOST {} records (ring buffer full): {}",
                self.total_drops(),
                d.join(", ")
            ));
        }
        if self.unprinted > 0 {
            s.push_str(&format!(
                "; {} lines NOT printed (stdout was not read fast enough)",
                self.unprinted
            ));
        }
        if self.decode_errors > 0 {
            s.push_str(&format!("; {} undecodable records", self.decode_errors));
        }
        if let Some(e) = probes::describe_prog_errors(&self.prog_errors) {
            s.push_str(&format!("; {e}"));
        }
        s
    }
}

/// A live session: attached programs plus the enrichment state.
pub struct Session {
    loaded: Loaded,
    mounts: CgroupMounts,
    /// Processes whose /proc facts could not be read (gone): not retried.
    unreadable: HashSet<u32>,
    /// (process, cgroup) pairs whose facts were read again for the cgroup: once each.
    cgroup_reread: HashSet<(u32, u64)>,
    /// Processes whose /proc facts were read again at their first EMFILE.
    emfile_reread: HashSet<u32>,
    last_drops: Vec<(Kind, u64)>,
    /// Records copied out of the ring buffers, sorted by time before they are fed.
    arena: Vec<u8>,
    index: Vec<(u64, usize, usize)>,
    summary: Summary,
    /// Said on stderr once the snapshot is fed: from then on nothing is missed.
    ready: String,
    drops_fed: bool,
}

/// Everything before the first event: tracefs, privileges, loading and attaching.
pub fn start(args: &TraceArgs) -> anyhow::Result<(Session, HostInfo, Filter)> {
    let mounts = CgroupMounts::read();
    let spec = args.filter_spec(&mounts)?;
    let cfg = args.kernel_config(&spec)?;
    if !probes::has_privilege() {
        return Err(probes::LoadError::NoPrivilege.into());
    }
    let tfs = Tracefs::find_or_mount()?;
    let loaded = probes::load(&cfg, &tfs)?;
    for m in &loaded.missing_fields {
        match m.field {
            Some(f) => tracing::warn!(
                "{}: this kernel has no field '{f}'; it will be reported as unknown",
                m.tracepoint
            ),
            None => tracing::debug!("{}: not on this kernel", m.tracepoint),
        }
    }
    let skipped = loaded
        .status
        .iter()
        .filter(|s| matches!(s.state, probes::ProbeState::Skipped(_)))
        .count();
    let ready = format!(
        "tracer: tracing ({} probes attached{}); Ctrl-C to stop",
        loaded.attached(),
        if skipped > 0 {
            format!(", {skipped} skipped: see `tracer doctor`")
        } else {
            String::new()
        }
    );
    let host = HostInfo::current();
    let filter = spec.after_kernel();
    Ok((
        Session {
            loaded,
            mounts,
            unreadable: HashSet::new(),
            cgroup_reread: HashSet::new(),
            emfile_reread: HashSet::new(),
            last_drops: Vec::new(),
            arena: Vec::with_capacity(1 << 20),
            index: Vec::with_capacity(8192),
            summary: Summary::default(),
            ready,
            drops_fed: false,
        },
        host,
        filter,
    ))
}

fn proc_event(info: ProcInfo, ts_ns: u64) -> Event {
    Event {
        ts_ns,
        cpu: 0,
        tgid: info.pid,
        tid: info.pid,
        uid: info.uid,
        cgroup_id: 0,
        comm: Comm::new(&info.comm),
        body: Body::ProcInfo(Box::new(info)),
    }
}

/// Seconds between sweeps of the kernel's per-process maps (see [`probes::sweep`]);
/// `TRACER_SWEEP_SECS` changes it (tests).
fn sweep_ticks() -> u64 {
    const SWEEP_SECS: u64 = 30;
    std::env::var("TRACER_SWEEP_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(SWEEP_SECS)
        .div_ceil(DROP_POLL.as_secs().max(1))
        .max(1)
}

/// How often drop counters are read.
const DROP_POLL: Duration = Duration::from_secs(1);
/// How often the rings are drained without a wakeup: the kernel writes records without waking
/// us until a quarter of a ring is used (see tracer-ebpf's submit_flags), so this bounds their
/// latency.
pub const BULK_DRAIN: Duration = Duration::from_millis(50);

impl Session {
    /// Feeds the /proc snapshot (taken after attaching, so every process is either in it or
    /// seen forking).
    pub fn seed(&mut self, drv: &mut Driver) -> anyhow::Result<()> {
        let now = host::boot_ns();
        for info in procfs::snapshot(&self.mounts) {
            drv.user(proc_event(info, now))?;
        }
        crate::output::eprint(&self.ready);
        // Under systemd (Type=notify): ready once the probes are attached and the snapshot fed.
        crate::assets::notify_ready();
        Ok(())
    }

    /// Runs until Ctrl-C, SIGTERM, `duration`, or a sink error (a closed stdout ends quietly).
    /// `stop` ends the session when it completes (use `std::future::pending()` for never).
    pub fn run(
        self,
        drv: &mut Driver,
        duration: Option<Duration>,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Summary> {
        let started = std::time::Instant::now();
        // Draining the rings and recording never wait on stdout: lines it does not take are
        // counted instead.
        crate::stdout::set_lossy(true);
        let mut rings = Rings {
            session: self,
            duration,
            stop: Some(stop),
        };
        let result = drv.run(&mut rings);
        let mut summary = std::mem::take(&mut rings.session.summary);
        summary.duration = started.elapsed();
        summary.drops = rings.session.last_drops.clone();
        summary.prog_errors = match rings.session.loaded.prog_errors() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("cannot read the programs' error counters: {e}");
                Vec::new()
            }
        };
        summary.decode_errors = drv.decode_errors;
        summary.unprinted = crate::output::finish_stdout(Duration::from_secs(1));
        result.map(|()| summary)
    }

    /// Reads the rings (and the connection map, the drop counters, the clock) until stopped.
    async fn read(
        &mut self,
        drv: &mut Driver,
        duration: Option<Duration>,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let (critical, bulk) = self
            .loaded
            .take_rings()
            .context("ring buffers already taken")?;
        // SAFETY: each RingBuf owns its map fd, which stays open and the same for as long as the
        // AsyncFd that owns the RingBuf lives.
        let register = |r| {
            unsafe { AsyncFd::register_with_interest(r, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow::anyhow!("cannot poll a ring buffer: {e}"))
        };
        let mut critical = register(critical)?;
        let mut bulk = register(bulk)?;
        let mut scanner = self.loaded.take_conns().map(crate::conns::Scanner::new);
        let mut pid_maps = self.loaded.take_pid_maps();
        let sweep_every = sweep_ticks();
        let mut ticks = 0u64;
        // Attached, rings and maps open, sinks ready: what is left needs only the kept set.
        match crate::privilege::drop_after_attach() {
            Ok(kept) => tracing::debug!("capabilities kept: {kept:#x}; no_new_privs set"),
            Err(e) => tracing::warn!("cannot drop privileges after attaching: {e}"),
        }
        let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
        let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(DROP_POLL);
        let mut drain_tick = tokio::time::interval(BULK_DRAIN);
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                g = critical.readable_mut() => { let mut g = g?; g.clear_ready(); }
                g = bulk.readable_mut() => { let mut g = g?; g.clear_ready(); }
                _ = tick.tick() => {
                    // What the rings hold first: the map is read as of now.
                    self.drain(critical.get_mut(), bulk.get_mut(), drv)?;
                    if let Some(s) = scanner.as_mut() {
                        self.feed_statuses(s, drv)?;
                    }
                    drv.tick(host::boot_ns())?;
                    self.poll_drops(drv, false)?;
                    ticks += 1;
                    if ticks.is_multiple_of(sweep_every)
                        && let Some(m) = pid_maps.as_mut()
                    {
                        let s = m.sweep();
                        tracing::debug!(
                            "swept the per-process maps: {} of {} socket fds and {} of {} \
                             forks deleted (processes gone)",
                            s.sock_fds_deleted, s.sock_fds, s.forked_from_deleted, s.forked_from
                        );
                    }
                }
                _ = drain_tick.tick() => {}
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                _ = &mut deadline => break,
                _ = &mut stop => break,
            }
            self.drain(critical.get_mut(), bulk.get_mut(), drv)?;
        }
        // Whatever is still in the rings when asked to stop.
        self.drain(critical.get_mut(), bulk.get_mut(), drv)?;
        self.poll_drops(drv, true)
    }

    /// Copies out what both rings hold, orders it by time, and feeds it.
    fn drain(
        &mut self,
        critical: &mut RingBuf<MapData>,
        bulk: &mut RingBuf<MapData>,
        drv: &mut Driver,
    ) -> anyhow::Result<()> {
        loop {
            self.arena.clear();
            self.index.clear();
            // Bounded batches keep memory flat under a flood; critical first.
            for ring in [&mut *critical, &mut *bulk] {
                let mut n = 0;
                while n < 4096 {
                    let Some(item) = ring.next() else { break };
                    let start = self.arena.len();
                    self.arena.extend_from_slice(&item);
                    event::sanitize(&mut self.arena[start..]);
                    let ts = record_ts(&item);
                    self.index.push((ts, start, self.arena.len()));
                    n += 1;
                }
            }
            if self.index.is_empty() {
                return Ok(());
            }
            self.index.sort_by_key(|(ts, _, _)| *ts);
            let index = std::mem::take(&mut self.index);
            let arena = std::mem::take(&mut self.arena);
            for &(_, a, b) in &index {
                let raw = &arena[a..b];
                if let Some(ev) = drv.decode(raw) {
                    self.enrich(&ev, drv)?;
                    self.summary.per_kind.add(&ev);
                    self.summary.events += 1;
                    drv.feed(&ev, raw)?;
                    self.moved(&ev, drv)?;
                }
            }
            self.index = index;
            self.arena = arena;
            // Lines reach people (and pipes) batch by batch, not one write per event.
            crate::output::flush_stdout();
        }
    }

    /// Connections that sit in CLOSE_WAIT or wait for an answer, from the kernel's map.
    fn feed_statuses(
        &mut self,
        scanner: &mut crate::conns::Scanner,
        drv: &mut Driver,
    ) -> anyhow::Result<()> {
        let statuses = scanner.scan(host::boot_ns());
        if statuses.is_empty() {
            return Ok(());
        }
        for (ev, raw) in statuses {
            self.summary.per_kind.add(&ev);
            self.summary.events += 1;
            drv.feed(&ev, &raw)?;
        }
        crate::output::flush_stdout();
        Ok(())
    }

    /// Reads /proc facts (limits, cgroup, open sockets) the first time a process shows up after
    /// exec, and feeds them as a ProcInfo record so dumps carry them too.
    /// Also read again, before the record is fed (exec included), when the record was written
    /// in a cgroup the facts do not describe (a process moved into a cgroup between fork and
    /// exec): replay's `--cgroup` decides on the stored ancestry.
    fn enrich(&mut self, ev: &Event, drv: &mut Driver) -> anyhow::Result<()> {
        if let Body::Exit(_) = ev.body {
            // Its pid may come back as another process.
            self.emfile_reread.remove(&ev.tgid);
            self.unreadable.remove(&ev.tgid);
        }
        if ev.tgid == 0
            || matches!(
                ev.body,
                Body::Exit(_)
                    | Body::ProcInfo(_)
                    | Body::Drops(_)
                    | Body::RecorderGap(_)
                    | Body::Tick
            )
        {
            return Ok(());
        }
        let entry = drv.pipeline.procs.get(ev.tgid);
        let moved = entry.is_some_and(|p| p.cgroup_v2.last().is_some_and(|c| *c != ev.cgroup_id))
            && self.cgroup_reread.insert((ev.tgid, ev.cgroup_id));
        // A move into a v1 memory cgroup leaves the record's (v2) cgroup id as it was: at a
        // memory sample (what an OOM finding judges by; they are few) the memory cgroup is
        // checked in /proc.
        let moved = moved
            || (self.mounts.v1_memory.is_some()
                && matches!(ev.body, Body::MemSample(_))
                && entry.is_some_and(|p| {
                    p.has_info && procfs::mem_cgroup_of(ev.tgid).is_some_and(|c| c != p.cgroup)
                }));
        // At a process's first EMFILE its limit and fd count are read again: the limit may
        // have changed before tracer started (or in a way no probe saw).
        let reread = is_emfile(ev) && !self.emfile_reread.contains(&ev.tgid);
        if reread {
            if self.emfile_reread.len() > 65536 {
                self.emfile_reread.clear();
            }
            self.emfile_reread.insert(ev.tgid);
        }
        if !moved
            && !reread
            && (matches!(ev.body, Body::Exec(_))
                || entry.is_some_and(|p| p.has_info)
                || self.unreadable.contains(&ev.tgid))
        {
            return Ok(());
        }
        if self.cgroup_reread.len() > 65536 {
            self.cgroup_reread.clear();
        }
        match procfs::read_proc(ev.tgid, &self.mounts) {
            Some(info) => drv.user(proc_event(info, ev.ts_ns))?,
            None => {
                if self.unreadable.len() > 65536 {
                    self.unreadable.clear();
                }
                self.unreadable.insert(ev.tgid);
            }
        }
        Ok(())
    }

    /// After a process moved into another memory cgroup (the record has already updated the
    /// process table's path): its facts again, with that cgroup's limit, fed as a ProcInfo so
    /// dumps carry them and replay decides alike. From /proc while the process lives; once it
    /// is gone (the collector lags, and a process killed by its new cgroup's limit goes fast),
    /// from the table with the limit read below the cgroup's path, which outlives it.
    fn moved(&mut self, ev: &Event, drv: &mut Driver) -> anyhow::Result<()> {
        let Body::CgroupAttach(c) = &ev.body else {
            return Ok(());
        };
        if !c.memory || c.truncated || !drv.pipeline.procs.is_live(c.pid) {
            return Ok(());
        }
        let info = match procfs::read_proc(c.pid, &self.mounts) {
            Some(info) => info,
            None => {
                let version = if c.hierarchy == tracer_common::process::CGROUP_V2_HIERARCHY {
                    procfs::CgroupVersion::V2
                } else {
                    procfs::CgroupVersion::V1
                };
                let (Some(entry), Some(limit)) = (
                    drv.pipeline.procs.get(c.pid),
                    self.mounts.mem_limit(version, &c.path),
                ) else {
                    return Ok(());
                };
                ProcInfo {
                    mem_limit: Some(limit),
                    ..entry.info()
                }
            }
        };
        drv.user(proc_event(info, ev.ts_ns))
    }

    /// Reads the kernel's drop counters; a change is warned about and fed as a Drops record
    /// (so dumps carry it). `last` feeds one even without a change: a dump then says "no
    /// records lost" rather than nothing.
    fn poll_drops(&mut self, drv: &mut Driver, last: bool) -> anyhow::Result<()> {
        let drops = self.loaded.drops()?;
        if drops != self.last_drops || (last && !self.drops_fed) {
            let new: u64 = drops.iter().map(|(_, n)| n).sum::<u64>()
                - self.last_drops.iter().map(|(_, n)| n).sum::<u64>();
            if new > 0 {
                tracing::warn!(
                    "{new} records lost: a ring buffer was full (raise --ring-size, or filter with --pid/--comm/--events)"
                );
            }
            self.drops_fed = true;
            self.last_drops = drops.clone();
            let drops = Drops {
                per_kind: drops
                    .iter()
                    .map(|(k, n)| (k.name().to_owned(), *n))
                    .collect(),
            };
            drv.user(Event::collector(
                host::boot_ns(),
                Body::Drops(Box::new(drops)),
            ))?;
        }
        Ok(())
    }
}

/// The live [`Source`]: a session's ring buffers, until stopped.
struct Rings<F> {
    session: Session,
    duration: Option<Duration>,
    stop: Option<F>,
}

impl<F: std::future::Future<Output = ()>> Source for Rings<F> {
    fn pump(&mut self, drv: &mut Driver) -> anyhow::Result<()> {
        let stop = self.stop.take().context("a live session runs once")?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(self.session.read(drv, self.duration, stop))
    }
}

/// accept() or socket() failed because the process is at its RLIMIT_NOFILE.
fn is_emfile(ev: &Event) -> bool {
    const EMFILE: i32 = 24;
    match &ev.body {
        Body::TcpAccept(a) => a.ret == -EMFILE,
        Body::SocketOpen(s) => s.fd == -EMFILE,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_totals_line_names_program_errors_only_when_there_are_some() {
        let mut s = Summary {
            events: 3,
            duration: Duration::from_secs(2),
            ..Summary::default()
        };
        assert_eq!(s.render(), "tracer: 3 events in 2.0s; no records lost");
        s.prog_errors = vec![(Prog::sys_exit_accept4, 3), (Prog::rss_stat, 1)];
        assert_eq!(
            s.render(),
            "tracer: 3 events in 2.0s; no records lost; \
             4 program errors (sys_exit_accept4: 3, rss_stat: 1)"
        );
    }
}
