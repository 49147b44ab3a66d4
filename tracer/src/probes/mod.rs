//! Loading and attaching the eBPF programs, from one table, and reading what they produce.
//!
//! Each family module lists its probes ([`ProbeSpec`]); [`load`] sets the load-time globals
//! (config, tracepoint field offsets, BTF offsets), loads the object, and attaches every probe
//! of the selected families. A probe whose tracepoint this kernel lacks is skipped with a
//! warning (and shown by `tracer doctor`) instead of failing everything. [`Loaded`] reads the
//! kernel's counters: records lost per kind, failed reads per program.
mod memory;
mod oom;
mod process;
mod signal;
mod sockets;
pub mod sweep;
mod tcp;

use std::{collections::HashSet, io};

use aya::{
    Btf, Ebpf, EbpfError, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, ProgramError, TracePoint},
};
use thiserror::Error;
use tracer_common::{
    Family, Kind,
    config::{Config, FILTER_PID, OPT_SIGCHLD, OPT_TCP_STATES, Offsets, TaskOffsets},
    prog::Prog,
};

use crate::{
    filter::FilterSpec,
    kernel::tracefs::{Missing, Tracefs},
};

/// Where a program attaches.
#[derive(Clone, Copy, Debug)]
pub enum Attach {
    /// A classic tracepoint: category, name.
    Tracepoint(&'static str, &'static str),
    /// A BTF tracepoint (tp_btf) by name.
    BtfTracepoint(&'static str),
}

impl Attach {
    pub fn describe(&self) -> String {
        match self {
            Attach::Tracepoint(c, n) => format!("tracepoint {c}/{n}"),
            Attach::BtfTracepoint(n) => format!("tp_btf {n}"),
        }
    }
}

/// One row of the probe table.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    /// Program (function) name in the eBPF object.
    pub program: &'static str,
    pub attach: Attach,
    pub family: Family,
    pub what: &'static str,
    /// Attached only when this other program (the better one) could not be.
    pub fallback_for: Option<&'static str>,
}

/// Every probe, family by family.
pub fn all_probes() -> impl Iterator<Item = &'static ProbeSpec> {
    [
        tcp::PROBES,
        sockets::PROBES,
        signal::PROBES,
        process::PROBES,
        oom::PROBES,
        memory::PROBES,
    ]
    .into_iter()
    .flatten()
}

/// What happened to one probe at start-up.
#[derive(Clone, Debug)]
pub enum ProbeState {
    Attached,
    /// Not needed for the selected families.
    NotSelected,
    /// This kernel lacks the attach point, or the program could not load; tracing goes on
    /// without it.
    Skipped(String),
}

#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub spec: ProbeSpec,
    pub state: ProbeState,
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(
        "tracing needs root, or CAP_BPF and CAP_PERFMON (and CAP_DAC_READ_SEARCH for tracefs): run with sudo"
    )]
    NoPrivilege,
    #[error("this kernel has no BPF ring buffers (BPF_MAP_TYPE_RINGBUF needs Linux 5.8 or later)")]
    NoRingBuf,
    #[error("this kernel refused to load BPF programs: {0}")]
    Bpf(String),
    #[error(
        "the embedded eBPF object does not match this build of tracer ({0}); rebuild with `cargo build`"
    )]
    Build(String),
    #[error(transparent)]
    Tracefs(#[from] crate::kernel::tracefs::TracefsError),
    #[error("no probe could be attached; run `tracer doctor` to see why")]
    NothingAttached,
}

/// What to trace, as set on the command line.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// `--events`, `--pid`, `--comm`, `--cgroup`, `--sigchld`.
    pub filter: FilterSpec,
    /// Emit every TCP state change besides the connection model.
    pub tcp_states: bool,
    pub mem_sample_bytes: u64,
    pub large_mapping_bytes: u64,
    pub critical_ring_bytes: u32,
    pub bulk_ring_bytes: u32,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            filter: FilterSpec::default(),
            tcp_states: false,
            mem_sample_bytes: DEFAULT_MEM_SAMPLE,
            large_mapping_bytes: DEFAULT_LARGE_MAPPING,
            critical_ring_bytes: 4 << 20,
            bulk_ring_bytes: 8 << 20,
        }
    }
}

/// The most a process's RSS or mapped bytes move before the kernel emits a sample (the step is
/// 1/32 of the value, from 1 MiB: `tracer_common::memory::sample_step`): a runaway allocator
/// growing 100 MiB/s past 512 MiB gives ~6 samples a second, an idle host none.
pub const DEFAULT_MEM_SAMPLE: u64 = 16 << 20;
/// mmap/munmap/brk at least this large are single events (glibc's default mmap threshold is
/// 128 KiB, so smaller would turn every malloc of a big buffer into an event).
pub const DEFAULT_LARGE_MAPPING: u64 = 4 << 20;

impl TraceConfig {
    fn to_kernel(&self) -> Config {
        let mut c = Config::zeroed();
        c.self_tgid = std::process::id();
        c.families = self.filter.families;
        c.filter = self.filter.rule();
        c.page_size = page_size();
        c.memory_hierarchy = crate::procfs::memory_hierarchy();
        c.mem_sample_bytes = self.mem_sample_bytes.max(1);
        c.large_mapping_bytes = self.large_mapping_bytes.max(1);
        if self.filter.sigchld {
            c.options |= OPT_SIGCHLD;
        }
        if self.tcp_states {
            c.options |= OPT_TCP_STATES;
        }
        // Wake the collector early when a quarter of the bulk ring is used; below that it
        // drains on its timer (live::BULK_DRAIN).
        c.bulk_wakeup_bytes = ring_size(self.bulk_ring_bytes) / 4;
        c.critical_wakeup_bytes = ring_size(self.critical_ring_bytes) / 4;
        c
    }

    /// Whether a probe is needed: its family is selected, or it keeps kernel state another
    /// selected feature relies on (fork follows `--pid` descendants).
    fn wants(&self, p: &ProbeSpec) -> bool {
        let families = self.filter.families;
        let memory = families & Family::Memory.bit() != 0;
        families & p.family.bit() != 0
            || (p.program == "sched_process_fork" && !self.filter.pids.is_empty())
            // exec and exit reset and free the kernel's per-process memory state.
            || (memory && matches!(p.program, "sched_process_exec" | "sched_process_exit"))
    }
}

/// The host's page size, for the programs' page counts (4096 when sysconf cannot say).
pub fn page_size() -> u32 {
    // SAFETY: sysconf has no memory preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(v).ok().filter(|v| *v > 0).unwrap_or(4096)
}

/// Whether this process may use BPF: root, or CAP_BPF + CAP_PERFMON in its effective set.
pub fn has_privilege() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0);
    const CAP_PERFMON: u64 = 1 << 38;
    const CAP_BPF: u64 = 1 << 39;
    caps & CAP_BPF != 0 && caps & CAP_PERFMON != 0
}

/// The loaded, attached programs and the maps the collector reads.
pub struct Loaded {
    // Keeps programs attached for as long as it lives.
    _ebpf: Ebpf,
    rings: Option<(RingBuf<MapData>, RingBuf<MapData>)>,
    drops: PerCpuArray<MapData, u64>,
    prog_errors: PerCpuArray<MapData, u64>,
    conns: Option<aya::maps::HashMap<MapData, u64, tracer_common::tcp::ConnInfo>>,
    pid_maps: Option<sweep::PidMaps>,
    pub status: Vec<ProbeStatus>,
    pub missing_fields: Vec<Missing>,
    pub task_offsets_known: bool,
}

/// The eBPF object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

fn classify(e: &EbpfError) -> LoadError {
    let text = e.to_string();
    let os = match e {
        EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) => {
            io_error.raw_os_error()
        }
        _ => None,
    };
    if os == Some(libc::EPERM) || text.contains("Operation not permitted") {
        LoadError::NoPrivilege
    } else if os == Some(libc::EINVAL) && (text.contains("CRITICAL") || text.contains("BULK")) {
        LoadError::NoRingBuf
    } else if matches!(e, EbpfError::ParseError(_)) {
        LoadError::Build(format!("{e:#}"))
    } else {
        LoadError::Bpf(format!("{e:#}"))
    }
}

/// Loads the programs with `cfg` and attaches every selected probe.
pub fn load(cfg: &TraceConfig, tfs: &Tracefs) -> Result<Loaded, LoadError> {
    if !has_privilege() {
        return Err(LoadError::NoPrivilege);
    }
    let (offsets, missing_fields): (Offsets, Vec<Missing>) = crate::kernel::tracefs::offsets(tfs)?;
    let task_offsets = match crate::kernel::btf::task_offsets() {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(
                "kernel BTF unavailable ({e}): exit codes, fork, accept addresses and mapped bytes will be missing"
            );
            TaskOffsets::unknown()
        }
    };
    let mut kconf = cfg.to_kernel();
    // For the bench's "tracer hooks only" floor (`cargo xtask bench`): every probe attached as
    // usual, every family off in the kernel, so each program stops at its first check.
    if std::env::var_os("TRACER_HOOKS_ONLY").is_some() {
        tracing::warn!("TRACER_HOOKS_ONLY is set: the probes are attached, nothing is traced");
        kconf.families = 0;
    }
    let btf = Btf::from_sys_fs().ok();
    let mut loader = EbpfLoader::new();
    if let Some(b) = btf.as_ref() {
        loader.btf(b);
    }
    loader
        .override_global("CONFIG", &kconf, true)
        .override_global("OFFSETS", &offsets, true)
        .override_global("TASK_OFFSETS", &task_offsets, true)
        .map_max_entries("CRITICAL", ring_size(cfg.critical_ring_bytes))
        .map_max_entries("BULK", ring_size(cfg.bulk_ring_bytes));
    let mut ebpf = loader.load(OBJECT).map_err(|e| classify(&e))?;

    if kconf.filter.flags & FILTER_PID != 0 {
        seed_tracked(&mut ebpf, &cfg.filter.pids)?;
    }

    let mut status = Vec::new();
    for spec in all_probes() {
        let primary_attached = spec.fallback_for.is_some_and(|p| {
            status.iter().any(|s: &ProbeStatus| {
                s.spec.program == p && matches!(s.state, ProbeState::Attached)
            })
        });
        let state = if !cfg.wants(spec) || primary_attached {
            ProbeState::NotSelected
        } else {
            match attach(&mut ebpf, spec, tfs, btf.as_ref(), &task_offsets) {
                Ok(()) => ProbeState::Attached,
                Err(AttachError::Privilege) => return Err(LoadError::NoPrivilege),
                Err(AttachError::Skip(why)) => {
                    tracing::warn!("{} ({}) skipped: {why}", spec.attach.describe(), spec.what);
                    ProbeState::Skipped(why)
                }
            }
        };
        status.push(ProbeStatus { spec: *spec, state });
    }
    if !status
        .iter()
        .any(|s| matches!(s.state, ProbeState::Attached))
    {
        return Err(LoadError::NothingAttached);
    }
    let take = |ebpf: &mut Ebpf, name: &str| {
        ebpf.take_map(name)
            .ok_or_else(|| LoadError::Bpf(format!("map {name} missing from the object")))
    };
    let critical = RingBuf::try_from(take(&mut ebpf, "CRITICAL")?)
        .map_err(|e| LoadError::Bpf(e.to_string()))?;
    let bulk =
        RingBuf::try_from(take(&mut ebpf, "BULK")?).map_err(|e| LoadError::Bpf(e.to_string()))?;
    let drops = PerCpuArray::try_from(take(&mut ebpf, "DROPS")?)
        .map_err(|e| LoadError::Bpf(e.to_string()))?;
    let prog_errors = PerCpuArray::try_from(take(&mut ebpf, "PROG_ERRORS")?)
        .map_err(|e| LoadError::Bpf(e.to_string()))?;
    let conns = aya::maps::HashMap::try_from(take(&mut ebpf, "CONNS")?)
        .map_err(|e| LoadError::Bpf(e.to_string()))?;
    let pid_maps = sweep::PidMaps {
        sock_fds: aya::maps::HashMap::try_from(take(&mut ebpf, "SOCK_FDS")?)
            .map_err(|e| LoadError::Bpf(e.to_string()))?,
        forked_from: aya::maps::HashMap::try_from(take(&mut ebpf, "FORKED_FROM")?)
            .map_err(|e| LoadError::Bpf(e.to_string()))?,
    };
    let task_offsets_known = task_offsets.task_exit_code != TaskOffsets::UNKNOWN;
    Ok(Loaded {
        _ebpf: ebpf,
        rings: Some((critical, bulk)),
        drops,
        prog_errors,
        conns: Some(conns),
        pid_maps: Some(pid_maps),
        status,
        missing_fields,
        task_offsets_known,
    })
}

/// Ring buffer sizes must be a power-of-two number of pages.
fn ring_size(bytes: u32) -> u32 {
    bytes.max(4096).next_power_of_two()
}

enum AttachError {
    Privilege,
    Skip(String),
}

fn program_error(e: ProgramError) -> AttachError {
    let text = format!("{e}");
    let verbose = match &e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if io_error.raw_os_error() == Some(libc::EPERM)
                && verifier_log.to_string().trim().is_empty()
            {
                return AttachError::Privilege;
            }
            format!(
                "{io_error}; verifier: {}",
                last_lines(&verifier_log.to_string(), 6)
            )
        }
        ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EPERM) => {
            return AttachError::Privilege;
        }
        _ => text,
    };
    AttachError::Skip(verbose)
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Why a program cannot run on this kernel although its hook exists: struct members it reads
/// were not found in BTF (it would read nothing, or garbage). It is then not attached, and its
/// classic fallback is.
fn unusable(spec: &ProbeSpec, offsets: &TaskOffsets) -> Option<String> {
    match spec.program {
        "rss_stat_btf" => memory::rss_stat_btf_unusable(offsets),
        "sys_exit_mmap_regs" => memory::sys_exit_mmap_regs_unusable(offsets),
        _ => None,
    }
}

fn attach(
    ebpf: &mut Ebpf,
    spec: &ProbeSpec,
    tfs: &Tracefs,
    btf: Option<&Btf>,
    offsets: &TaskOffsets,
) -> Result<(), AttachError> {
    let prog = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| AttachError::Skip(format!("program {} not in the object", spec.program)))?;
    // For tests of the fallbacks, and for a kernel whose BTF tracepoints misbehave: programs
    // that have a fallback (BTF tracepoints, plain loads through BTF pointers) are left out.
    if std::env::var_os("TRACER_CLASSIC_TRACEPOINTS").is_some()
        && all_probes().any(|p| p.fallback_for == Some(spec.program))
    {
        return Err(AttachError::Skip(
            "left out for its fallback (TRACER_CLASSIC_TRACEPOINTS is set)".into(),
        ));
    }
    if let Some(why) = unusable(spec, offsets) {
        return Err(AttachError::Skip(why));
    }
    match spec.attach {
        Attach::Tracepoint(cat, name) => {
            if !tfs.exists(cat, name) {
                return Err(AttachError::Skip(
                    "this kernel has no such tracepoint".into(),
                ));
            }
            let tp: &mut TracePoint = prog.try_into().map_err(program_error)?;
            tp.load().map_err(program_error)?;
            tp.attach(cat, name).map_err(program_error)?;
        }
        Attach::BtfTracepoint(name) => {
            let btf = btf.ok_or_else(|| {
                AttachError::Skip("kernel BTF (/sys/kernel/btf/vmlinux) unavailable".into())
            })?;
            let tp: &mut BtfTracePoint = prog.try_into().map_err(program_error)?;
            tp.load(name, btf).map_err(program_error)?;
            tp.attach().map_err(program_error)?;
        }
    }
    Ok(())
}

/// Fills the kernel's TRACKED set with the `--pid` processes and their current descendants
/// (later ones are added by the fork program).
fn seed_tracked(ebpf: &mut Ebpf, pids: &[u32]) -> Result<(), LoadError> {
    let mut set: HashSet<u32> = pids.iter().copied().collect();
    let procs = crate::procfs::parent_map();
    loop {
        let before = set.len();
        for (pid, ppid) in &procs {
            if set.contains(ppid) {
                set.insert(*pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    let map = ebpf
        .map_mut("TRACKED")
        .ok_or_else(|| LoadError::Bpf("map TRACKED missing".into()))?;
    let mut tracked: BpfHashMap<_, u32, u8> =
        BpfHashMap::try_from(map).map_err(|e| LoadError::Bpf(e.to_string()))?;
    for pid in set {
        tracked
            .insert(&pid, &1, 0)
            .map_err(|e| LoadError::Bpf(e.to_string()))?;
    }
    Ok(())
}

impl Loaded {
    /// The critical and bulk ring buffers, for the reader (once).
    pub fn take_rings(&mut self) -> Option<(RingBuf<MapData>, RingBuf<MapData>)> {
        self.rings.take()
    }

    /// The kernel's connection map, for the collector's periodic read (once).
    /// The per-process maps the collector sweeps (see [`sweep`]).
    pub fn take_pid_maps(&mut self) -> Option<sweep::PidMaps> {
        self.pid_maps.take()
    }

    pub fn take_conns(
        &mut self,
    ) -> Option<aya::maps::HashMap<MapData, u64, tracer_common::tcp::ConnInfo>> {
        self.conns.take()
    }

    /// Records lost in the kernel so far, per kind (all CPUs summed).
    pub fn drops(&self) -> io::Result<Vec<(Kind, u64)>> {
        let mut out = Vec::new();
        for k in Kind::ALL {
            // Below MAX_KIND, the array's size: the kind table checks it at compile time.
            let idx = k as u32;
            let v = self.drops.get(&idx, 0).map_err(io::Error::other)?;
            let n: u64 = v.iter().sum();
            if n > 0 {
                out.push((k, n));
            }
        }
        Ok(out)
    }

    /// Reads that failed in the kernel so far, per program with any (all CPUs summed).
    pub fn prog_errors(&self) -> io::Result<Vec<(Prog, u64)>> {
        let mut out = Vec::new();
        for &p in Prog::ALL {
            // Below MAX_PROG, the array's size: checked at compile time in tracer-common.
            let v = self
                .prog_errors
                .get(&(p as u32), 0)
                .map_err(io::Error::other)?;
            let n: u64 = v.iter().sum();
            if n > 0 {
                out.push((p, n));
            }
        }
        Ok(out)
    }

    pub fn attached(&self) -> usize {
        self.status
            .iter()
            .filter(|s| matches!(s.state, ProbeState::Attached))
            .count()
    }
}

/// "N program errors (sys_exit_accept4: 3, ...)", most first; None when there are none.
pub fn describe_prog_errors(errors: &[(Prog, u64)]) -> Option<String> {
    let total: u64 = errors.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let mut by_count: Vec<&(Prog, u64)> = errors.iter().filter(|(_, n)| *n > 0).collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let each: Vec<String> = by_count
        .iter()
        .map(|(p, n)| format!("{}: {n}", p.name()))
        .collect();
    Some(format!(
        "{total} program error{} ({})",
        if total == 1 { "" } else { "s" },
        each.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_errors_are_described_only_when_there_are_some() {
        assert_eq!(describe_prog_errors(&[]), None);
        assert_eq!(describe_prog_errors(&[(Prog::rss_stat, 0)]), None);
        assert_eq!(
            describe_prog_errors(&[(Prog::tcp_send_reset, 1)]).as_deref(),
            Some("1 program error (tcp_send_reset: 1)")
        );
        assert_eq!(
            describe_prog_errors(&[
                (Prog::sys_enter_connect, 2),
                (Prog::sys_exit_accept4, 3),
                (Prog::rss_stat, 0),
            ])
            .as_deref(),
            Some("5 program errors (sys_exit_accept4: 3, sys_enter_connect: 2)")
        );
    }

    /// Every program of the attach table has an error counter under its own name, and every
    /// counter belongs to a program of the table.
    #[test]
    fn every_probe_has_an_error_counter_of_its_name() {
        let probes: Vec<&str> = all_probes().map(|p| p.program).collect();
        let progs: Vec<&str> = Prog::ALL.iter().map(|p| p.name()).collect();
        for p in &probes {
            assert!(progs.contains(p), "{p} has no Prog id");
        }
        for p in &progs {
            assert!(probes.contains(p), "Prog::{p} is no program of the table");
        }
        assert_eq!(probes.len(), progs.len());
    }

    #[test]
    fn kernel_config_carries_the_filters_and_the_page_size() {
        let cfg = TraceConfig {
            filter: FilterSpec::new("tcp", &[7], Some("nginx"), None, true).unwrap(),
            ..TraceConfig::default()
        };
        let k = cfg.to_kernel();
        assert_eq!(k.filter, cfg.filter.rule());
        assert_eq!(k.families, Family::Tcp.bit());
        assert_ne!(k.options & OPT_SIGCHLD, 0);
        assert_eq!(k.page_size, page_size());
        assert!(k.page_size >= 4096 && k.page_size.is_power_of_two());
    }
}
