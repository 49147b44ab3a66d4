//! Healthy controls: real servers under real load, traced by `tracer record` at the default
//! thresholds, must give no finding. A finding on them is a false alarm, and false alarms get a
//! tool uninstalled.
//!
//! Each test starts one server (nginx, redis-server, PostgreSQL) on loopback with a private
//! config and data directory, starts the recorder (following this test process and its
//! descendants), runs several rounds of load from the real generator (wrk, redis-benchmark,
//! pgbench's client pool), runs `tracer report --json` on the live dump after every round and
//! on the whole dump at the end, and fails on any finding but the one it explains: the
//! recorder's own SIGTERM, sent by this test to stop it. The recording lasts longer than the
//! analyses' windows (socket_leak's 20 s span, conn_pileup's 30 s age), so each one could fire.
//! The tracer's connection counts are checked against the servers' own counters.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    Checks, EventExt,
    recorder_util::{Bin, Recording, TempDir, clip, dump_events, run_bounded},
    require_root,
    servers::{self, Nginx, Postgres, Redis},
    test_pid,
};

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
const ROUNDS: usize = 3;

/// The recorder of one control: follows this test process and everything it starts.
struct Control {
    bin: Bin,
    dump: TempDir,
    rec: Option<Recording>,
    recorder_pid: u32,
    checks: Checks,
    started: Instant,
}

impl Control {
    fn start() -> Control {
        let bin = Bin::pinned();
        let dump = TempDir::new("healthy-dump");
        let pid = test_pid().to_string();
        let rec = Recording::start(&bin, &dump.join("d"), &["--pid", &pid]);
        let recorder_pid = rec.pid();
        Control {
            bin,
            dump,
            rec: Some(rec),
            recorder_pid,
            checks: Checks::new(),
            started: Instant::now(),
        }
    }

    fn dir(&self) -> std::path::PathBuf {
        self.dump.join("d")
    }

    fn report(&self) -> Value {
        let dir = self.dir();
        self.bin
            .run(
                &["report".as_ref(), dir.as_os_str(), "--json".as_ref()],
                TOOL_TIMEOUT,
            )
            .ok()
            .json()
    }

    /// Every event of the dump.
    fn events(&self) -> Vec<Value> {
        dump_events(&self.bin, &self.dir())
    }

    /// Fails (at the end) on every finding of `report` but the recorder's own stop.
    fn no_findings(&mut self, what: &str, report: &Value) {
        let findings = report["findings"].as_array().cloned().unwrap_or_default();
        let unexplained: Vec<&Value> = findings.iter().filter(|f| !self.explained(f)).collect();
        eprintln!(
            "tracer-tests: {what} after {:.1} s: {} finding(s), {} unexplained; span {} s, {} events, drops {}",
            self.started.elapsed().as_secs_f64(),
            findings.len(),
            unexplained.len(),
            report["stats"]["span_s"],
            report["stats"]["events"],
            report["stats"]["drops_total"]
        );
        // reset_storm included: resets wrk sends by closing connections with unread data are
        // the client's own doing and must not be a storm (issue 10, "Resets by cause"); nothing
        // is excluded here, so this fails until the analysis classifies them.
        for f in &unexplained {
            self.checks.that(
                false,
                format!(
                    "{what}: false alarm on a healthy server: {}",
                    clip(&f.to_string(), 3000)
                ),
            );
        }
        self.checks.that(
            report["stats"]["drops_total"] == 0,
            format!(
                "{what}: records were lost ({}): the figures below cannot be trusted",
                report["stats"]["drops"]
            ),
        );
    }

    /// The one finding a control expects: this test stopping the recorder with SIGTERM (the
    /// recorder follows this test's descendants, itself included).
    fn explained(&self, f: &Value) -> bool {
        f.kind() == "signal_source"
            && f["target_pid"] == self.recorder_pid
            && f["sender_pid"] == test_pid()
            && f["signal"] == "SIGTERM"
    }

    /// Stops the recorder; the report on the whole dump must have no finding either.
    fn finish(&mut self, what: &str) -> Vec<Value> {
        let rec = self.rec.take().expect("recording");
        let r = rec.stop();
        eprintln!(
            "tracer-tests: {what}: {}",
            r.summary().unwrap_or("(no summary)")
        );
        let report = self.report();
        self.no_findings(&format!("{what}, whole dump"), &report);
        self.events()
    }

    /// Fails the test with every failed check.
    fn end(self, events: &[Value]) {
        eprintln!(
            "tracer-tests: control took {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
        // The resets, then the first connection events: the whole dump would drown the message.
        let resets = events.iter().filter(|e| e.kind() == "tcp_reset").take(100);
        let conns = events
            .iter()
            .filter(|e| e.kind().starts_with("conn_"))
            .take(100);
        let conns: Vec<Value> = resets.chain(conns).cloned().collect();
        self.checks.finish(&conns);
    }
}

/// Connections the servers on `port` accepted, and those their clients opened, per the dump.
fn accepted_and_connected(events: &[Value], port: u16) -> (usize, usize) {
    let port = u64::from(port);
    let opens = |role: &str, field: &str| {
        events
            .iter()
            .filter(|e| {
                e.kind() == "conn_open"
                    && e.str_of("role") == Some(role)
                    && e.u64_of(field) == Some(port)
            })
            .count()
    };
    (opens("accept", "sport"), opens("connect", "dport"))
}

fn run_load(what: &str, cmd: &mut Command, timeout: Duration) -> String {
    let t = Instant::now();
    let out = run_bounded(cmd, timeout).ok();
    eprintln!(
        "tracer-tests: {what} ran {:.1} s",
        t.elapsed().as_secs_f64()
    );
    out.stdout
}

fn prelude() -> bool {
    require_root() && servers::require_programs()
}

/// nginx (2 workers) serving a static file to wrk with 200 keep-alive connections, 10 s a
/// round. nginx closes a keep-alive connection after 1000 requests, so there is churn too.
#[test]
fn nginx_under_wrk_gives_no_finding() {
    if !prelude() {
        return;
    }
    let mut nginx = Nginx::start(2);
    let (accepts_before, _, requests_before) = nginx.status();
    let mut c = Control::start();
    let url = format!("http://127.0.0.1:{}/index.html", nginx.port);
    let mut served = 0u64;
    for round in 1..=ROUNDS {
        let out = run_load(
            &format!("wrk round {round}"),
            Command::new("wrk").args(["-t2", "-c200", "-d10s", "--timeout", "5s", &url]),
            Duration::from_secs(60),
        );
        let requests: u64 = out
            .lines()
            .find_map(|l| l.trim().split(" requests in ").next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected wrk output:\n{out}"));
        c.checks.that(
            !out.contains("Non-2xx") && !out.contains("Socket errors"),
            format!("wrk round {round} saw errors:\n{out}"),
        );
        served += requests;
        nginx.guard.assert_running();
        let report = c.report();
        c.no_findings(&format!("nginx round {round}"), &report);
    }
    let events = c.finish("nginx");
    let (accepts_after, _, requests_after) = nginx.status();
    // Both status requests are counted by nginx; only those in between were traced.
    let accepted = (accepts_after - accepts_before - 1) as usize;
    let (traced_accepts, traced_connects) = accepted_and_connected(&events, nginx.port);
    eprintln!(
        "tracer-tests: nginx accepted {accepted} connections and served {} requests ({served} per wrk); the dump has {traced_accepts} accepted, {traced_connects} connected",
        requests_after - requests_before - 1
    );
    c.checks.that(
        traced_accepts == accepted && traced_connects == accepted,
        format!(
            "nginx's stub_status counted {accepted} accepted connections; the dump has {traced_accepts} conn_open accept and {traced_connects} conn_open connect to port {}",
            nginx.port
        ),
    );
    // wrk does not count the requests still in flight when its time is up: nginx served up
    // to one more per connection and round.
    let nginx_served = requests_after - requests_before - 1;
    c.checks.that(
        served > 10_000 && nginx_served >= served && nginx_served <= served + 200 * ROUNDS as u64,
        format!(
            "wrk reported {served} requests, nginx {}",
            requests_after - requests_before - 1
        ),
    );
    nginx.guard.stop();
    c.end(&events);
}

/// redis-server under redis-benchmark with 100 clients: each of its tests opens 100 new
/// connections in a burst, holds them while it runs, and closes them; meanwhile 100 idle
/// clients connected in one burst stay (a ramp that plateaus, not a leak).
#[test]
fn redis_under_redis_benchmark_gives_no_finding() {
    if !prelude() {
        return;
    }
    let mut redis = Redis::start();
    let before = redis.info("total_connections_received");
    let mut c = Control::start();
    let port = redis.port.to_string();
    // The burst of the issue: 100 clients connect at once and stay (idle) for the whole
    // recording, while the benchmark rounds come and go. Stopped after the recorder, so its
    // SIGTERM is not traced.
    let mut idle = servers::Guard::spawn(
        "redis-benchmark -I",
        Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port, "-c", "100", "-I"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
        libc::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.info("connected_clients") < 101 {
        assert!(
            Instant::now() < deadline,
            "redis-benchmark -I -c 100 did not connect its 100 clients"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for round in 1..=ROUNDS {
        let out = run_load(
            &format!("redis-benchmark round {round}"),
            Command::new("redis-benchmark").args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-c",
                "100",
                "-n",
                "250000",
                "-t",
                "set,get,incr,lpush",
                "-q",
                "--csv",
            ]),
            Duration::from_secs(120),
        );
        c.checks.that(
            out.lines().filter(|l| l.starts_with("\"")).count() >= 4,
            format!("unexpected redis-benchmark output round {round}:\n{out}"),
        );
        redis.guard.assert_running();
        let report = c.report();
        c.no_findings(&format!("redis round {round}"), &report);
    }
    idle.assert_running();
    let events = c.finish("redis");
    idle.stop();
    // Every INFO this test sent while recording is counted by redis and traced; the one here
    // is not traced.
    let received = (redis.info("total_connections_received") - before - 1) as usize;
    let (traced_accepts, traced_connects) = accepted_and_connected(&events, redis.port);
    eprintln!(
        "tracer-tests: redis received {received} connections; the dump has {traced_accepts} accepted, {traced_connects} connected"
    );
    c.checks.that(
        traced_accepts == received && traced_connects == received,
        format!(
            "redis counted {received} connections received; the dump has {traced_accepts} conn_open accept and {traced_connects} conn_open connect to port {}",
            redis.port
        ),
    );
    redis.guard.stop();
    c.end(&events);
}

/// PostgreSQL under pgbench: a pool of 20 client connections doing TPC-B-like transactions,
/// held for the whole round; the last round lasts longer than conn_pileup's 30 s, so the pool's
/// connections are older than pileup_min_age_s while they carry traffic.
#[test]
fn postgres_under_a_pgbench_pool_gives_no_finding() {
    if !prelude() {
        return;
    }
    let mut pg = Postgres::start();
    pg.init_bench();
    let before = pg.connections_received();
    let mut c = Control::start();
    let mut transactions = 0u64;
    for (round, secs) in (1..=ROUNDS).zip([10, 10, 35]) {
        let out = run_load(
            &format!("pgbench round {round} ({secs} s)"),
            pg.pgbench()
                .args(["-c", "20", "-j", "2", "-T", &secs.to_string(), "postgres"]),
            Duration::from_secs(secs + 60),
        );
        let done: u64 = out
            .lines()
            .find_map(|l| {
                l.strip_prefix("number of transactions actually processed: ")?
                    .split('/')
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("unexpected pgbench output:\n{out}"));
        c.checks.that(
            done > 100 && out.contains("number of failed transactions: 0"),
            format!("pgbench round {round}:\n{out}"),
        );
        transactions += done;
        pg.guard.assert_running();
        let report = c.report();
        c.no_findings(&format!("postgres round {round}"), &report);
    }
    let events = c.finish("postgres");
    let received = pg.connections_received() - before;
    let (traced_accepts, traced_connects) = accepted_and_connected(&events, pg.port);
    eprintln!(
        "tracer-tests: postgres logged {received} connections, {transactions} transactions; the dump has {traced_accepts} accepted, {traced_connects} connected"
    );
    c.checks.that(
        received >= ROUNDS * 20 && traced_accepts == received && traced_connects == received,
        format!(
            "postgres logged {received} connections received; the dump has {traced_accepts} conn_open accept and {traced_connects} conn_open connect to port {}",
            pg.port
        ),
    );
    pg.guard.stop();
    c.end(&events);
}
