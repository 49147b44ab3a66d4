//! The four workloads whose throughput is measured untraced and traced. Each has a set-up
//! (servers it needs, started once and stopped by pid), and a run that loads it for a given
//! time and returns operations per second.
use std::{
    io::{BufReader, Read, Write},
    net::{Ipv4Addr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::Deserialize;

use super::procs::{self, Guard};

pub const HTTP_PORT: u16 = 18080;
pub const REDIS_PORT: u16 = 16379;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Http,
    Mem,
    Proc,
    Redis,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Http, Kind::Mem, Kind::Proc, Kind::Redis];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Mem => "mem",
            Kind::Proc => "proc",
            Kind::Redis => "redis",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .with_context(|| format!("unknown workload '{s}' (http, mem, proc, redis)"))
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::Http => {
                "wrk -H 'Connection: close' against a small HTTP server on loopback (one \
                 connection per request)"
            }
            Kind::Mem => "mmap 256K + touch + munmap, brk +256K + touch + brk back, in a loop",
            Kind::Proc => {
                "fork+exec(/bin/true)+exit, fork+SIGTERM+exit, 8 SIGUSR1 to self, in a loop"
            }
            Kind::Redis => "redis-benchmark -t set,get -c 50 against redis-server on loopback",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Kind::Http | Kind::Redis => "req/s",
            Kind::Mem | Kind::Proc => "loops/s",
        }
    }
}

/// What a worker process printed.
#[derive(Debug, Deserialize)]
pub struct WorkerReport {
    pub ops: u64,
    pub secs: f64,
    #[serde(default)]
    pub events: u64,
    /// `short-lived`: processes and connections done.
    #[serde(default)]
    pub procs: u64,
    #[serde(default)]
    pub conns: u64,
}

pub struct Workload {
    pub kind: Kind,
    worker: PathBuf,
    server: Option<Guard>,
    redis_requests: u64,
}

impl Workload {
    pub fn new(kind: Kind, worker: PathBuf) -> Self {
        Workload {
            kind,
            worker,
            server: None,
            redis_requests: 0,
        }
    }

    /// Starts the servers the workload needs.
    pub fn setup(&mut self, secs: f64) -> anyhow::Result<()> {
        match self.kind {
            Kind::Http => {
                self.server = Some(start_http_server(&self.worker, HTTP_PORT)?);
            }
            Kind::Redis => {
                self.server = Some(start_redis(REDIS_PORT)?);
                // redis-benchmark runs a request count, not a duration: calibrate.
                let rps = redis_benchmark(REDIS_PORT, 20_000)?;
                self.redis_requests = ((rps * secs / 2.0) as u64).max(2_000);
            }
            Kind::Mem | Kind::Proc => {}
        }
        Ok(())
    }

    /// Loads the system for `secs`; returns operations per second.
    pub fn run(&mut self, secs: f64) -> anyhow::Result<f64> {
        match self.kind {
            Kind::Http => wrk(HTTP_PORT, secs),
            Kind::Redis => redis_benchmark(REDIS_PORT, self.redis_requests),
            Kind::Mem => {
                let r = run_worker(&self.worker, &["mem-churn", "--secs", &secs.to_string()])?;
                Ok(r.ops as f64 / r.secs)
            }
            Kind::Proc => {
                let r = run_worker(&self.worker, &["proc-churn", "--secs", &secs.to_string()])?;
                Ok(r.ops as f64 / r.secs)
            }
        }
    }

    pub fn teardown(&mut self) -> anyhow::Result<()> {
        if let Some(mut s) = self.server.take() {
            s.stop()?;
        }
        Ok(())
    }
}

pub fn run_worker(worker: &PathBuf, args: &[&str]) -> anyhow::Result<WorkerReport> {
    let secs: f64 = args
        .windows(2)
        .find(|w| w[0] == "--secs")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(10.0);
    let mut cmd = Command::new(worker);
    cmd.arg("bench-worker").args(args);
    let out = procs::run_capture(
        &format!("bench-worker {}", args[0]),
        &mut cmd,
        Duration::from_secs_f64(secs * 3.0 + 30.0),
    )?;
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("unexpected worker output: {out}"))
}

fn port_free(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_err()
}

fn start_http_server(worker: &PathBuf, port: u16) -> anyhow::Result<Guard> {
    if !port_free(port) {
        bail!("127.0.0.1:{port} is in use: the bench's HTTP server needs it");
    }
    let mut cmd = Command::new(worker);
    cmd.args(["bench-worker", "http-server", "--port", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut g = Guard::spawn("http server", &mut cmd, libc::SIGTERM)?;
    let out = g.take_stdout().context("no stdout")?;
    crate::worker::wait_ready(&mut BufReader::new(out))?;
    Ok(g)
}

fn wrk(port: u16, secs: f64) -> anyhow::Result<f64> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        "-c32",
        &format!("-d{}s", secs.round().max(1.0) as u64),
        "--timeout",
        "2s",
        "-H",
        "Connection: close",
        &format!("http://127.0.0.1:{port}/"),
    ]);
    let out = procs::run_capture("wrk", &mut cmd, Duration::from_secs_f64(secs + 60.0))?;
    parse_wrk(&out).with_context(|| format!("unexpected wrk output:\n{out}"))
}

pub fn parse_wrk(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

fn start_redis(port: u16) -> anyhow::Result<Guard> {
    if !port_free(port) {
        bail!("127.0.0.1:{port} is in use: the bench's redis-server needs it");
    }
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        "",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut g = Guard::spawn("redis-server", &mut cmd, libc::SIGTERM)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = g.try_wait()? {
            bail!("redis-server exited at start ({st})");
        }
        if redis_ping(port) {
            return Ok(g);
        }
        if Instant::now() > deadline {
            bail!("redis-server did not answer PING on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .map(|n| buf[..n].starts_with(b"+PONG"))
            .unwrap_or(false)
}

/// Runs SET and GET `requests` times each; returns the combined requests per second.
fn redis_benchmark(port: u16, requests: u64) -> anyhow::Result<f64> {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        "set,get",
        "-c",
        "50",
        "-n",
        &requests.to_string(),
        "--csv",
    ]);
    let out = procs::run_capture("redis-benchmark", &mut cmd, Duration::from_secs(600))?;
    parse_redis_csv(&out).with_context(|| format!("unexpected redis-benchmark output:\n{out}"))
}

/// Combined rate of the tests in redis-benchmark's CSV (`"SET","12345.68",...`): total
/// requests over total time, i.e. the harmonic mean of the per-test rates.
pub fn parse_redis_csv(out: &str) -> Option<f64> {
    let rates: Vec<f64> = out
        .lines()
        .filter_map(|l| {
            let mut f = l.split(',').map(|f| f.trim_matches('"'));
            let test = f.next()?;
            let rps: f64 = f.next()?.parse().ok()?;
            (test != "test" && rps > 0.0).then_some(rps)
        })
        .collect();
    if rates.is_empty() {
        return None;
    }
    Some(rates.len() as f64 / rates.iter().map(|r| 1.0 / r).sum::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_rate() {
        let out = "Running 1s test @ http://127.0.0.1:18080/\n  2 threads and 32 connections\n\
                   15000 requests in 1.00s, 1.2MB read\nRequests/sec:  15000.50\n\
                   Transfer/sec:      1.2MB\n";
        assert_eq!(parse_wrk(out), Some(15000.5));
        assert_eq!(parse_wrk("nothing"), None);
    }

    #[test]
    fn redis_rates() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\"\n\"SET\",\"100000.00\",\"0.3\"\n\
                   \"GET\",\"50000.00\",\"0.3\"\n";
        let r = parse_redis_csv(out).unwrap();
        assert!((r - 66666.666).abs() < 0.01);
        assert_eq!(parse_redis_csv("\"test\",\"rps\"\n"), None);
    }
}
