//! Figures: medians and ratios of the runs, the targets they are judged against, and the table
//! printed and written to target/bench/results-<date>.{md,json}.
use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::{
    bpfstats::{MapFill, ProgCost},
    tracers::{Detached, Mode},
};

#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub round: usize,
    pub mode: Mode,
    /// Operations per second of the workload.
    pub throughput: f64,
    /// How long the workload ran, in seconds.
    pub seconds: f64,
    pub tracer: Option<Detached>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ModeFigures {
    pub median_throughput: f64,
    /// Median over rounds of this mode's throughput / the same round's untraced throughput.
    pub ratio: f64,
    pub overhead_pct: f64,
    pub median_events_per_s: f64,
    /// CPU of the tracer process, % of one core (median).
    pub median_cpu_pct: f64,
    pub lost: u64,
    pub lost_critical: u64,
    /// Output (dump or text) bytes per event, median.
    pub output_bytes_per_event: f64,
    /// Records the tracer delivered per workload operation (for http: per connection, both
    /// ends on this host), median; background activity included.
    pub records_per_op: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkloadResult {
    pub name: String,
    pub description: String,
    pub unit: String,
    pub runs: Vec<Run>,
    pub modes: BTreeMap<String, ModeFigures>,
    /// Spread of the untraced runs: (max - min) / median, in %.
    pub untraced_spread_pct: f64,
    /// Kernel time per eBPF program (one run per tracer with BPF statistics on), by mode.
    pub hooks: BTreeMap<String, Vec<ProgCost>>,
}

pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl WorkloadResult {
    pub fn new(name: &str, description: &str, unit: &str, runs: Vec<Run>) -> Self {
        let of = |m: Mode| -> Vec<&Run> { runs.iter().filter(|r| r.mode == m).collect() };
        let base: BTreeMap<usize, f64> = of(Mode::Untraced)
            .iter()
            .map(|r| (r.round, r.throughput))
            .collect();
        let base_v: Vec<f64> = base.values().copied().collect();
        let base_median = median(&base_v);
        let spread = if base_v.len() > 1 {
            let max = base_v.iter().copied().fold(f64::MIN, f64::max);
            let min = base_v.iter().copied().fold(f64::MAX, f64::min);
            (max - min) / base_median * 100.0
        } else {
            0.0
        };
        let mut modes = BTreeMap::new();
        for m in Mode::ALL {
            let rs = of(m);
            if rs.is_empty() {
                continue;
            }
            let tp: Vec<f64> = rs.iter().map(|r| r.throughput).collect();
            // Paired with the untraced run of the same round, so drift between rounds cancels.
            let ratios: Vec<f64> = rs
                .iter()
                .filter_map(|r| base.get(&r.round).map(|b| r.throughput / b))
                .collect();
            let ratio = median(&ratios);
            let det: Vec<&Detached> = rs.iter().filter_map(|r| r.tracer.as_ref()).collect();
            let per_op: Vec<f64> = rs
                .iter()
                .filter_map(|r| {
                    let d = r.tracer.as_ref()?;
                    let ops = r.throughput * r.seconds;
                    (ops > 0.0).then(|| d.events as f64 / ops)
                })
                .collect();
            let per = |f: &dyn Fn(&Detached) -> f64| -> f64 {
                median(&det.iter().map(|d| f(d)).collect::<Vec<_>>())
            };
            modes.insert(
                m.name().to_owned(),
                ModeFigures {
                    median_throughput: median(&tp),
                    ratio,
                    overhead_pct: (1.0 - ratio) * 100.0,
                    median_events_per_s: per(&|d| d.events as f64 / d.wall_s.max(1e-9)),
                    median_cpu_pct: per(&|d| d.cpu_s / d.wall_s.max(1e-9) * 100.0),
                    lost: det.iter().map(|d| d.lost).sum(),
                    lost_critical: det.iter().map(|d| d.lost_critical).sum(),
                    // Small dumps are mostly their preamble (host facts, process table).
                    records_per_op: median(&per_op),
                    output_bytes_per_event: per(&|d| {
                        if d.events < 10_000 || d.output_bytes == 0 {
                            f64::NAN
                        } else {
                            d.output_bytes as f64 / d.events as f64
                        }
                    }),
                },
            );
        }
        WorkloadResult {
            name: name.to_owned(),
            description: description.to_owned(),
            unit: unit.to_owned(),
            runs,
            modes,
            untraced_spread_pct: spread,
            hooks: BTreeMap::new(),
        }
    }

    pub fn mode(&self, m: Mode) -> Option<&ModeFigures> {
        self.modes.get(m.name())
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RampStep {
    /// Events per second asked of the generator (0: as fast as it goes).
    pub target_rate: u64,
    /// Events per second the generator produced.
    pub offered_rate: f64,
    pub tracer_events: u64,
    pub lost: u64,
    pub lost_critical: u64,
    pub lost_by_kind: BTreeMap<String, u64>,
    /// Collector CPU, % of one core.
    pub cpu_pct: f64,
    /// Collector CPU per 100,000 events/s, % of one core.
    pub cpu_pct_per_100k: f64,
    /// Time in tracer's eBPF programs per event it received (BPF statistics on).
    pub kernel_ns_per_event: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Capacity {
    pub generator: String,
    pub steps: Vec<RampStep>,
    /// Highest offered event rate with no record lost.
    pub max_zero_loss_rate: f64,
    pub cpu_pct_per_100k: f64,
    /// The generators saturated the CPUs before tracer lost anything: the rate is a lower bound.
    pub generator_bound: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryFigures {
    pub processes: usize,
    pub sockets: usize,
    pub idle_rss: u64,
    /// Tracer running while the processes and sockets were created.
    pub live_rss: u64,
    pub live_hwm: u64,
    /// Tracer started with them already there (seeded from /proc).
    pub seeded_rss: u64,
    pub seeded_hwm: u64,
    pub seconds_to_create: f64,
    /// Records the tracers lost over the whole part, the final burst of exits included.
    pub lost: u64,
    pub lost_critical: u64,
    pub lost_by_kind: BTreeMap<String, u64>,
    pub summary: String,
}

/// Collector memory and kernel map fill at one moment of the churn-memory part.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemSample {
    pub label: String,
    /// Short-lived processes and connections done so far.
    pub procs: u64,
    pub conns: u64,
    pub rss: u64,
    pub hwm: u64,
    pub maps: Vec<MapFill>,
}

/// The churn-memory part: RSS and map entries at the start, the middle and the end of a run of
/// short-lived processes and connections.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChurnMemory {
    pub samples: Vec<MemSample>,
    pub seconds: f64,
    pub lost: u64,
    pub summary: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayFigures {
    pub load: String,
    pub record_seconds: f64,
    pub events: u64,
    pub lost: u64,
    pub lost_critical: u64,
    pub dump_bytes: u64,
    pub bytes_per_event: f64,
    pub replay_json_s: f64,
    pub replay_stats_s: f64,
    pub report_s: f64,
    pub replay_json_rate: f64,
    pub replay_stats_rate: f64,
    pub report_rate: f64,
    pub per_kind: BTreeMap<String, u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "met")]
    Met,
    #[serde(rename = "MISSED")]
    Missed,
    #[serde(rename = "not measured")]
    NotMeasured,
}

impl Verdict {
    pub fn of(ok: bool) -> Self {
        if ok { Verdict::Met } else { Verdict::Missed }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "not measured",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Results {
    pub date: String,
    pub command: String,
    pub smoke: bool,
    pub host: BTreeMap<String, String>,
    pub rounds: usize,
    pub seconds_per_run: f64,
    pub tracer_command: String,
    pub workloads: Vec<WorkloadResult>,
    pub capacity: Vec<Capacity>,
    pub memory: Option<MemoryFigures>,
    pub churn_memory: Option<ChurnMemory>,
    pub replay: Option<ReplayFigures>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}%")
    } else {
        "-".into()
    }
}

pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let (v, suffix) = if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 100e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    match suffix {
        "" if x < 100.0 => format!("{v:.1}"),
        "" => format!("{v:.0}"),
        "M" => format!("{v:.2}M"),
        _ => format!("{v:.1}{suffix}"),
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

impl Results {
    /// Judges the figures against the targets.
    pub fn judge(&mut self) {
        let mut t = Vec::new();
        let smoke = self.smoke;
        let verdict = |ok: bool| {
            if smoke {
                Verdict::NotMeasured
            } else {
                Verdict::of(ok)
            }
        };
        for w in &self.workloads {
            let (Some(tr), Some(bt)) = (w.mode(Mode::Tracer), w.mode(Mode::Bpftrace)) else {
                continue;
            };
            // The absolute targets (http is aimed at 3%).
            let absolute = match w.name.as_str() {
                "http" | "proc" => Some(5.0),
                "redis" => Some(3.0),
                "mem" => Some(10.0),
                _ => None,
            };
            if let Some(max) = absolute {
                t.push(Target {
                    target: format!("{}: tracer costs <= {max}% throughput", w.name),
                    measured: format!(
                        "{} (untraced runs spread {})",
                        pct(tr.overhead_pct),
                        pct(w.untraced_spread_pct)
                    ),
                    verdict: verdict(tr.overhead_pct <= max),
                });
            }
            // Within 1.25x the classic hooks-only floor, or that floor + 3 points.
            if let Some(floor) = w.mode(Mode::Floor) {
                let f = floor.overhead_pct.max(0.0);
                let max = (f * 1.25).max(f + 3.0);
                t.push(Target {
                    target: format!(
                        "{}: tracer overhead <= 1.25x the hooks-only floor (or floor + 3 points)",
                        w.name
                    ),
                    measured: format!(
                        "tracer {} vs floor {} (at most {})",
                        pct(tr.overhead_pct),
                        pct(floor.overhead_pct),
                        pct(max)
                    ),
                    verdict: verdict(tr.overhead_pct <= max),
                });
            }
            if w.name == "http" {
                t.push(Target {
                    target: "http: <= 4 records per short connection (both ends)".into(),
                    measured: format!("{:.2}", tr.records_per_op),
                    verdict: verdict(tr.records_per_op <= 4.05),
                });
            }
            // Below half of bpftrace's overhead; an overhead at or below zero is none at all.
            let ok = tr.overhead_pct <= 0.0 || tr.overhead_pct < bt.overhead_pct / 2.0;
            t.push(Target {
                target: format!("{}: tracer overhead < half of bpftrace's", w.name),
                measured: format!(
                    "tracer {} vs bpftrace {}",
                    pct(tr.overhead_pct),
                    pct(bt.overhead_pct)
                ),
                verdict: verdict(ok),
            });
        }
        // Critical records: every tracer run of every part.
        let mut critical = 0u64;
        let mut runs = 0usize;
        for w in &self.workloads {
            for r in w.runs.iter().filter(|r| r.mode == Mode::Tracer) {
                critical += r.tracer.as_ref().map(|d| d.lost_critical).unwrap_or(0);
                runs += 1;
            }
        }
        for c in &self.capacity {
            critical += c.steps.iter().map(|s| s.lost_critical).sum::<u64>();
            runs += c.steps.len();
        }
        let mut detail = Vec::new();
        if let Some(m) = &self.memory {
            critical += m.lost_critical;
            runs += 2;
            if m.lost_critical > 0 {
                let kinds: Vec<String> = m
                    .lost_by_kind
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                detail.push(format!(
                    "{} in the memory part, when {} processes were killed at once ({})",
                    m.lost_critical,
                    m.processes,
                    kinds.join(", ")
                ));
            }
        }
        if let Some(r) = &self.replay {
            critical += r.lost_critical;
            runs += 1;
        }
        if runs > 0 {
            t.push(Target {
                target: "no critical record (signal, fork, exec, exit, OOM) dropped".into(),
                measured: format!(
                    "{critical} lost over {runs} tracer runs{}",
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", detail.join("; "))
                    }
                ),
                verdict: verdict(critical == 0),
            });
        }
        if let Some(r) = &self.replay {
            for (what, rate, min) in [
                ("tracer replay --stats", r.replay_stats_rate, 5.0),
                ("tracer replay --json", r.replay_json_rate, 2.0),
                ("tracer report", r.report_rate, 5.0),
            ] {
                t.push(Target {
                    target: format!("{what} >= {min} million events/s"),
                    measured: format!("{} events/s", num(rate)),
                    verdict: verdict(rate >= min * 1e6),
                });
            }
            t.push(Target {
                target: "dump <= 32 bytes/event".into(),
                measured: format!("{:.1} bytes/event", r.bytes_per_event),
                verdict: verdict(r.bytes_per_event <= 32.0),
            });
        }
        self.targets = t;
    }

    /// The results as Markdown (also what is printed).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## tracer benchmark, {}{}\n",
            self.date,
            if self.smoke {
                " (SMOKE RUN: figures meaningless)"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "Command: `{}`  ", self.command);
        let host: Vec<String> = self.host.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "Host: {}  ", host.join(", "));
        let _ = writeln!(
            s,
            "tracer measured as `{}` with all hooks attached; bpftrace runs bench/equivalent.bt \
             (same tracepoints, same kernel-side filtering, one line per record); \"hooks only\" \
             is bpftrace with empty programs on the same tracepoints (bench/floor.bt, all \
             classic): the cost of the attach points themselves; \"tracer hooks only\" is \
             tracer's own attach set (BTF tracepoints where it has them) with every family off \
             in the kernel (TRACER_HOOKS_ONLY): each program stops at its first check.\n",
            self.tracer_command
        );
        let measured = self.workloads.iter().any(|w| !w.runs.is_empty());
        if measured {
            let _ = writeln!(
                s,
                "### Throughput ({} rounds of {:.0} s, alternating untraced / tracer / bpftrace / \
                 hooks only / tracer hooks only; medians; ratio = median of the per-round traced/untraced ratios; \
                 overhead = 1 - ratio)\n",
                self.rounds, self.seconds_per_run
            );
            let _ = writeln!(
                s,
                "| workload | unit | untraced | tracer | bpftrace | hooks only | tracer hooks only \
                 | tracer ratio | bpftrace ratio | tracer overhead | bpftrace overhead | \
                 hooks-only overhead | tracer-hooks-only overhead | untraced spread |"
            );
            let _ = writeln!(
                s,
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for w in &self.workloads {
                let g = |m: Mode| w.mode(m).cloned().unwrap_or_default();
                let (u, tr, bt, fl, th) = (
                    g(Mode::Untraced),
                    g(Mode::Tracer),
                    g(Mode::Bpftrace),
                    g(Mode::Floor),
                    g(Mode::TracerHooks),
                );
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {} | {} | {} | {} | {} |",
                    w.name,
                    w.unit,
                    num(u.median_throughput),
                    num(tr.median_throughput),
                    num(bt.median_throughput),
                    num(fl.median_throughput),
                    num(th.median_throughput),
                    tr.ratio,
                    bt.ratio,
                    pct(tr.overhead_pct),
                    pct(bt.overhead_pct),
                    pct(fl.overhead_pct),
                    pct(th.overhead_pct),
                    pct(w.untraced_spread_pct)
                );
            }
            let _ = writeln!(
                s,
                "\n| workload | tracer events/s | tracer records per op | tracer CPU | tracer lost \
                 (critical) | tracer dump bytes/event | bpftrace lines/s | bpftrace CPU | \
                 bpftrace lost |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            for w in &self.workloads {
                let g = |m: Mode| w.mode(m).cloned().unwrap_or_default();
                let (tr, bt) = (g(Mode::Tracer), g(Mode::Bpftrace));
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} | {} | {} ({}) | {} | {} | {} | {} |",
                    w.name,
                    num(tr.median_events_per_s),
                    tr.records_per_op,
                    pct(tr.median_cpu_pct),
                    tr.lost,
                    tr.lost_critical,
                    num(tr.output_bytes_per_event),
                    num(bt.median_events_per_s),
                    pct(bt.median_cpu_pct),
                    bt.lost
                );
            }
        }
        if self.workloads.iter().any(|w| !w.hooks.is_empty()) {
            let _ = writeln!(
                s,
                "\nTime in the kernel's eBPF programs (one extra run each, BPF statistics \
                     on; % of one CPU; tracer's three most expensive programs, average ns per \
                     hit x hits/s):\n"
            );
            let _ = writeln!(
                s,
                "| workload | tracer | bpftrace | tracer hooks only | tracer's top programs |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---|");
            for w in &self.workloads {
                let total = |m: Mode| -> f64 {
                    w.hooks
                        .get(m.name())
                        .map(|v| v.iter().map(|c| c.cpu_pct).sum())
                        .unwrap_or(f64::NAN)
                };
                let top: Vec<String> = w
                    .hooks
                    .get("tracer")
                    .map(|v| {
                        v.iter()
                            .take(3)
                            .map(|c| {
                                format!("{} {:.0} ns x {}/s", c.name, c.avg_ns, num(c.runs_per_s))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    w.name,
                    pct(total(Mode::Tracer)),
                    pct(total(Mode::Bpftrace)),
                    pct(total(Mode::TracerHooks)),
                    top.join(", ")
                );
            }
        }
        if !self.workloads.is_empty() {
            let _ = writeln!(s, "\nWorkloads:");
            for w in &self.workloads {
                let _ = writeln!(s, "- {}: {}", w.name, w.description);
            }
            let _ = writeln!(s);
        }
        for c in &self.capacity {
            let _ = writeln!(s, "### Capacity: event rate ramp ({})\n", c.generator);
            let _ = writeln!(
                s,
                "| asked events/s | offered events/s | tracer events | lost (critical) | \
                 collector CPU | CPU per 100k events/s | kernel ns per event |"
            );
            let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
            for st in &c.steps {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} ({}) | {} | {} | {:.0} |",
                    if st.target_rate == 0 {
                        "max".to_owned()
                    } else {
                        num(st.target_rate as f64)
                    },
                    num(st.offered_rate),
                    st.tracer_events,
                    st.lost,
                    st.lost_critical,
                    pct(st.cpu_pct),
                    pct(st.cpu_pct_per_100k),
                    st.kernel_ns_per_event
                );
            }
            let _ = writeln!(
                s,
                "\nHighest rate with zero loss: **{}{} events/s**{}; collector CPU per 100,000 \
                 events/s: **{} of one core** (at that step).\n",
                if c.generator_bound { ">= " } else { "" },
                num(c.max_zero_loss_rate),
                if c.generator_bound {
                    " (the generators could not go faster on this machine before tracer lost \
                     anything)"
                } else {
                    ""
                },
                pct(c.cpu_pct_per_100k)
            );
        }
        if let Some(c) = &self.churn_memory {
            let last = c.samples.last().cloned().unwrap_or_default();
            let _ = writeln!(
                s,
                "### Collector memory over {} short-lived processes and {} short connections\n",
                last.procs, last.conns
            );
            let names: Vec<&str> = last.maps.iter().map(|m| m.name.as_str()).collect();
            let _ = writeln!(
                s,
                "| | processes | connections | VmRSS | VmHWM | {} |",
                names.join(" | ")
            );
            let _ = writeln!(
                s,
                "|---|---:|---:|---:|---:|{}",
                "---:|".repeat(names.len())
            );
            for m in &c.samples {
                let fills: Vec<String> = names
                    .iter()
                    .map(|n| {
                        m.maps
                            .iter()
                            .find(|f| f.name == *n)
                            .map(|f| format!("{}/{}", f.entries, f.max_entries))
                            .unwrap_or_default()
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    m.label,
                    m.procs,
                    m.conns,
                    mib(m.rss),
                    mib(m.hwm),
                    fills.join(" | ")
                );
            }
            let _ = writeln!(
                s,
                "\nKernel maps as entries/capacity. {:.0} s; lost records: {}. Summary: {}\n",
                c.seconds, c.lost, c.summary
            );
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                s,
                "### Collector memory with {} live processes and {} open sockets\n",
                m.processes, m.sockets
            );
            let _ = writeln!(s, "| | VmRSS | VmHWM |\n|---|---:|---:|");
            let _ = writeln!(s, "| idle (before) | {} | |", mib(m.idle_rss));
            let _ = writeln!(
                s,
                "| running while they were created | {} | {} |",
                mib(m.live_rss),
                mib(m.live_hwm)
            );
            let _ = writeln!(
                s,
                "| started with them present (/proc seeding) | {} | {} |\n",
                mib(m.seeded_rss),
                mib(m.seeded_hwm)
            );
            let _ = writeln!(
                s,
                "Created in {:.1} s; then all killed and closed at once. Lost records: {} \
                 ({} critical). The first tracer's summary: {}\n",
                m.seconds_to_create, m.lost, m.lost_critical, m.summary
            );
        }
        if let Some(r) = &self.replay {
            let _ = writeln!(
                s,
                "### Dump and replay ({:.0} s of {})\n",
                r.record_seconds, r.load
            );
            let kinds: Vec<String> = r.per_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(
                s,
                "Dump: {} events ({} lost), {} bytes, **{:.1} bytes/event**{}.\n",
                r.events,
                r.lost,
                r.dump_bytes,
                r.bytes_per_event,
                if kinds.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", kinds.join(", "))
                }
            );
            let _ = writeln!(s, "| command | seconds | events/s |\n|---|---:|---:|");
            for (what, secs, rate) in [
                (
                    "tracer replay --json DUMP > /dev/null",
                    r.replay_json_s,
                    r.replay_json_rate,
                ),
                (
                    "tracer replay --stats DUMP",
                    r.replay_stats_s,
                    r.replay_stats_rate,
                ),
                ("tracer report DUMP", r.report_s, r.report_rate),
            ] {
                let _ = writeln!(s, "| `{what}` | {secs:.2} | {} |", num(rate));
            }
            let _ = writeln!(s);
        }
        if !self.targets.is_empty() {
            let _ = writeln!(s, "### Targets\n\n| target | measured | |\n|---|---|---|");
            for t in &self.targets {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} |",
                    t.target,
                    t.measured,
                    t.verdict.label()
                );
            }
            let _ = writeln!(s);
        }
        for n in &self.notes {
            let _ = writeln!(s, "Note: {n}\n");
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "### Errors\n");
            for e in &self.errors {
                let _ = writeln!(s, "- {e}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: usize, mode: Mode, throughput: f64) -> Run {
        Run {
            round,
            mode,
            throughput,
            seconds: 6.0,
            tracer: None,
        }
    }

    #[test]
    fn records_per_op_counts_what_the_tracer_delivered_per_operation() {
        let mut traced = run(0, Mode::Tracer, 1000.0);
        traced.tracer = Some(Detached {
            events: 24_000,
            ..Detached::default()
        });
        let w = WorkloadResult::new(
            "http",
            "d",
            "req/s",
            vec![run(0, Mode::Untraced, 1100.0), traced],
        );
        // 1000 req/s for 6 s, 24,000 records: 4 per request.
        assert_eq!(w.mode(Mode::Tracer).unwrap().records_per_op, 4.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn ratios_are_paired_by_round() {
        // Round 1 is globally slower; pairing keeps the ratio at 0.9 in both rounds.
        let runs = vec![
            run(0, Mode::Untraced, 100.0),
            run(0, Mode::Tracer, 90.0),
            run(0, Mode::Bpftrace, 50.0),
            run(1, Mode::Untraced, 50.0),
            run(1, Mode::Tracer, 45.0),
            run(1, Mode::Bpftrace, 25.0),
            run(0, Mode::Floor, 95.0),
            run(1, Mode::Floor, 47.5),
        ];
        let w = WorkloadResult::new("http", "", "req/s", runs);
        let tr = w.mode(Mode::Tracer).unwrap();
        assert!((tr.ratio - 0.9).abs() < 1e-9);
        assert!((tr.overhead_pct - 10.0).abs() < 1e-9);
        assert!((w.mode(Mode::Bpftrace).unwrap().ratio - 0.5).abs() < 1e-9);
        let mut r = Results {
            workloads: vec![w],
            ..Results::default()
        };
        r.judge();
        let verdict = |what: &str| {
            r.targets
                .iter()
                .find(|t| t.target.contains(what))
                .unwrap_or_else(|| panic!("no target {what}"))
                .verdict
        };
        // 10% > 5%: missed; floor 5%: at most max(6.25%, 8%), missed; 10% < 50% / 2: met.
        assert_eq!(verdict("<= 5% throughput"), Verdict::Missed);
        assert_eq!(verdict("hooks-only floor"), Verdict::Missed);
        assert_eq!(verdict("half of bpftrace"), Verdict::Met);
    }
}
