//! `tracer doctor`: what works on this host, probe by probe, and whether tracing is possible.
use std::process::ExitCode;

use tracer_common::config::TaskOffsets;

use crate::{
    kernel::{btf, tracefs::Tracefs},
    output::print,
    probes::{self, ProbeState, TraceConfig},
};

pub fn run() -> anyhow::Result<ExitCode> {
    let mut fatal = Vec::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    print(&format!("kernel          {}", kernel.trim()));

    let privileged = probes::has_privilege();
    print(&format!(
        "privileges      {}",
        if privileged {
            "ok (root or CAP_BPF+CAP_PERFMON)"
        } else {
            "MISSING: run with sudo"
        }
    ));
    if !privileged {
        fatal.push("no privilege to load BPF programs");
    }

    match btf::task_offsets() {
        Ok(o) => {
            let known = [
                o.task_exit_code,
                o.task_tgid,
                o.mm_total_vm,
                o.fdtable_fd,
                o.skc_num,
            ]
            .iter()
            .filter(|v| **v != TaskOffsets::UNKNOWN)
            .count();
            print(&format!(
                "BTF             ok (/sys/kernel/btf/vmlinux; {known}/5 key struct offsets resolved)"
            ));
        }
        Err(e) => print(&format!(
            "BTF             MISSING ({e}): fork events, exit codes, accept addresses and mapped bytes unavailable"
        )),
    }

    let tfs = match Tracefs::find_or_mount() {
        Ok(t) => {
            print(&format!("tracefs         ok ({})", t.root.display()));
            Some(t)
        }
        Err(e) => {
            print(&format!("tracefs         MISSING: {e}"));
            fatal.push("tracefs unavailable");
            None
        }
    };

    if let (true, Some(tfs)) = (privileged, &tfs) {
        match probes::load(&TraceConfig::default(), tfs) {
            Ok(loaded) => {
                print("ring buffers    ok");
                print("");
                print("probe                                   family   status");
                for s in &loaded.status {
                    let state = match &s.state {
                        ProbeState::Attached => "attached".to_owned(),
                        // A fallback stands by when the probe it replaces is attached.
                        ProbeState::NotSelected => match s.spec.fallback_for {
                            Some(p) => format!("standby (fallback for {p}, which is attached)"),
                            None => "not selected".to_owned(),
                        },
                        ProbeState::Skipped(why) => format!("SKIPPED: {why}"),
                    };
                    print(&format!(
                        "{:<40}{:<9}{state}",
                        s.spec.attach.describe(),
                        s.spec.family.name()
                    ));
                }
                for m in &loaded.missing_fields {
                    if let Some(f) = m.field {
                        print(&format!(
                            "note: {} has no field '{f}' on this kernel (reported as unknown)",
                            m.tracepoint
                        ));
                    }
                }
                for note in kernel_notes(&loaded, tfs) {
                    print(&format!("note: {note}"));
                }
                let total = loaded.status.len();
                print(&format!("\n{}/{total} probes attached", loaded.attached()));
                print(&prog_errors_line(&loaded));
            }
            Err(e) => {
                print(&format!("loading         FAILED: {e}"));
                fatal.push("the programs could not be loaded");
            }
        }
    }

    if fatal.is_empty() {
        print("tracing is possible on this host");
        Ok(ExitCode::SUCCESS)
    } else {
        print(&format!("tracing is NOT possible: {}", fatal.join("; ")));
        Ok(ExitCode::FAILURE)
    }
}

/// How long doctor lets the attached programs run on the host's own activity before it reads
/// their error counters.
const EXERCISE: std::time::Duration = std::time::Duration::from_secs(1);

/// The programs' failed reads (a fault, or a tracepoint record shorter than its format) over
/// [`EXERCISE`] of this host's activity: any means a program loses what it reads here.
fn prog_errors_line(loaded: &probes::Loaded) -> String {
    std::thread::sleep(EXERCISE);
    let counters = tracer_common::prog::Prog::ALL.len();
    match loaded.prog_errors() {
        Ok(e) => match probes::describe_prog_errors(&e) {
            None => format!(
                "program errors  0 in {}s of this host's activity ({counters} counters read)",
                EXERCISE.as_secs()
            ),
            Some(d) => format!(
                "program errors  FOUND {d} in {}s of this host's activity: those programs lose what \
                 they read on this kernel",
                EXERCISE.as_secs()
            ),
        },
        Err(e) => format!("program errors  UNKNOWN (cannot read the counters: {e})"),
    }
}

/// What this kernel's missing hooks and older layouts cost, in the operator's terms.
fn kernel_notes(loaded: &probes::Loaded, tfs: &Tracefs) -> Vec<&'static str> {
    let attached = |name: &str| {
        loaded.status.iter().any(|s| {
            matches!(s.state, ProbeState::Attached)
                && s.spec.attach.describe().ends_with(&format!("/{name}"))
                || matches!(s.state, ProbeState::Attached)
                    && s.spec.attach.describe() == format!("tp_btf {name}")
        })
    };
    let mut notes = Vec::new();
    if !attached("sock_recv_length") || !attached("sock_send_length") {
        notes.push(
            "sock/sock_recv_length or sock_send_length is missing (kernels before 6.3): \
             conn_close and conn_status carry no bytes in/out nor last receive time, and a \
             connection waiting for an answer is only seen while in SYN_SENT; socket owners are \
             learnt from connect, accept, listen and close",
        );
    }
    // The 6.10 layout (with `reason`) came with resets for packets without a socket.
    let old_reset =
        matches!(tfs.format("tcp", "tcp_send_reset"), Ok(Some(f)) if !f.field("reason").present());
    if old_reset {
        notes.push(
            "tcp/tcp_send_reset has the pre-6.10 layout: no tcp_reset is reported for a reset \
             sent for a packet with no socket (a refused connect shows only as the connect's \
             ECONNREFUSED and the reset it receives)",
        );
    }
    if !attached("cgroup_attach_task") {
        notes.push(
            "cgroup/cgroup_attach_task is not attached: a process moved into another memory \
             cgroup after it started is seen from /proc at its next memory sample (on cgroup v2 \
             also from its records' cgroup id), so an oom_kill of a process killed before that \
             may name the cgroup it left and that cgroup's limit",
        );
    }
    if kernel_before(6, 2) {
        notes.push(
            "kmem/rss_stat fires only when a task's cached RSS counters sync (kernels before \
             6.2, about every 64 page faults): a process's first mem_sample comes after that, \
             and RSS figures can read up to 64 pages per thread and counter low",
        );
    }
    notes
}

/// Whether the running kernel is older than `major.minor`.
fn kernel_before(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) < (major, minor)
}
