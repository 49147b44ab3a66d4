//! The OTLP receiver of the tests (tests/otlp/receiver.py, decoding with the official
//! OpenTelemetry protobuf definitions) and readers of what it received.
use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{
    poll,
    servers::{Guard, in_ci},
};

/// A venv with the official OpenTelemetry protobuf definitions (the opentelemetry-proto PyPI
/// package), made on first use and kept in the temp dir. None (after a loud SKIP) when it
/// cannot be had outside CI; in CI that is a failure.
pub fn require_otlp_python() -> Option<std::path::PathBuf> {
    let venv = std::env::temp_dir().join("tracer-tests-otlp-venv");
    let python = venv.join("bin/python");
    let importable = || {
        Command::new(&python)
            .args([
                "-c",
                "import opentelemetry.proto.collector.logs.v1.logs_service_pb2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if importable() {
        return Some(python);
    }
    eprintln!(
        "tracer-tests: installing opentelemetry-proto into {}",
        venv.display()
    );
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let r = run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).and_then(|()| {
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            "--disable-pip-version-check",
            "opentelemetry-proto",
        ]))
    });
    match r {
        Ok(()) if importable() => Some(python),
        r => {
            let e = format!("opentelemetry-proto for Python is not available: {r:?}");
            if in_ci() {
                panic!("CI=true and {e}");
            }
            eprintln!("\n*****\nSKIP: {e}\n*****");
            None
        }
    }
}

/// The receiver (tests/otlp/receiver.py) on `port`, writing what it decoded to `out`.
pub fn start_receiver(python: &std::path::Path, port: u16, out: &std::path::Path) -> Guard {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/otlp/receiver.py");
    let mut g = Guard::spawn(
        "otlp receiver",
        Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
        libc::SIGTERM,
    );
    poll(
        "the OTLP receiver listening",
        Duration::from_secs(15),
        || {
            g.assert_running();
            TcpStream::connect(("127.0.0.1", port))
                .map(drop)
                .map_err(|e| e.to_string())
        },
    );
    g
}

/// Every request the receiver decoded: (path, request as protobuf JSON).
pub fn received(out: &std::path::Path) -> Vec<(String, Value)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            (
                v["path"].as_str().unwrap_or("").to_owned(),
                v["request"].clone(),
            )
        })
        .collect()
}

/// OTLP attributes as a map of key → value as a string (ints are strings in protobuf JSON).
pub fn attrs(list: &Value) -> std::collections::BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let v = &kv["value"];
            let s = ["string_value", "int_value", "double_value", "bool_value"]
                .iter()
                .find_map(|k| v.get(*k))
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))?;
            Some((kv["key"].as_str()?.to_owned(), s))
        })
        .collect()
}

pub fn log_records(reqs: &[(String, Value)]) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for (_, r) in reqs.iter().filter(|(p, _)| p == "/v1/logs") {
        for rl in r["resource_logs"].as_array().into_iter().flatten() {
            for sl in rl["scope_logs"].as_array().into_iter().flatten() {
                for rec in sl["log_records"].as_array().into_iter().flatten() {
                    out.push((rl["resource"].clone(), rec.clone()));
                }
            }
        }
    }
    out
}

/// Data points of metric `name` in the latest metrics request that has it: (kind, point).
pub fn metric_points(reqs: &[(String, Value)], name: &str) -> Vec<(String, Value)> {
    for (_, r) in reqs.iter().rev().filter(|(p, _)| p == "/v1/metrics") {
        for rm in r["resource_metrics"].as_array().into_iter().flatten() {
            for sm in rm["scope_metrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    if m["name"] != name {
                        continue;
                    }
                    for kind in ["gauge", "sum"] {
                        if let Some(d) = m.get(kind) {
                            return d["data_points"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|p| (kind.to_owned(), p.clone()))
                                .collect();
                        }
                    }
                }
            }
        }
    }
    Vec::new()
}

pub fn point_value(p: &Value) -> f64 {
    p["as_double"].as_f64().unwrap_or(0.0)
}
