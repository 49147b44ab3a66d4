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
                let total = loaded.status.len();
                print(&format!("\n{}/{total} probes attached", loaded.attached()));
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
