//! The exporter thread and the bounded queue in front of it. The pipeline only ever takes a
//! short lock to push (or drop, counted, when the queue is full) and never waits for the
//! network; one thread batches, encodes and POSTs, retrying failures with exponential backoff
//! (capped) and dropping, counted, what it cannot deliver. With a dead collector memory stays
//! within the queue's bound plus one batch.
use std::{
    collections::VecDeque,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::resource::v1::Resource;

use super::{
    config::SignalConfig,
    encode::{self, LogItem},
    http::{self, HttpError, InFlight},
};
use crate::metrics::{Family, MetricKind, Snapshot};

/// Log records per request at most (the SDK's batch processor default).
pub const BATCH: usize = 512;
/// A partial batch waits this long for company.
const LOGS_DELAY: Duration = Duration::from_secs(1);
/// Backoff after the first failure, doubling up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Attempts at one batch before it is dropped.
const MAX_TRIES: u32 = 5;
/// At exit: the time the last flush may take, and each of its requests.
const FINAL_FLUSH: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Logs,
    Metrics,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }
}

/// Per signal: items delivered, dropped (queue full, rejected, or given up on), failed requests.
#[derive(Default, Debug)]
pub struct Counters {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub failures: AtomicU64,
}

#[derive(Default)]
struct Queue {
    logs: VecDeque<LogItem>,
    /// The latest snapshot not yet sent: a newer one replaces it (they are cumulative).
    metrics: Option<Snapshot>,
    stop: bool,
    done: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    finished: Condvar,
    logs: Counters,
    metrics: Counters,
    queued: AtomicU64,
    inflight: InFlight,
    cap: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counters(&self, s: Signal) -> &Counters {
        match s {
            Signal::Logs => &self.logs,
            Signal::Metrics => &self.metrics,
        }
    }
}

/// What the pipeline side holds: cheap to clone, never blocks on the network.
#[derive(Clone)]
pub struct Handle(Arc<Shared>);

impl Handle {
    /// Whether a log record would be dropped now; counts it as dropped if so (callers skip
    /// building records that cannot be queued).
    pub fn reject_if_full(&self) -> bool {
        if self.0.queued.load(Relaxed) as usize >= self.0.cap {
            self.0.logs.dropped.fetch_add(1, Relaxed);
            true
        } else {
            false
        }
    }

    pub fn push_log(&self, item: LogItem) {
        let mut q = self.0.lock();
        if q.logs.len() >= self.0.cap || q.stop {
            self.0.logs.dropped.fetch_add(1, Relaxed);
            return;
        }
        q.logs.push_back(item);
        self.0.queued.store(q.logs.len() as u64, Relaxed);
        if q.logs.len() == BATCH {
            self.0.wake.notify_one();
        }
    }

    pub fn set_metrics(&self, snap: &Snapshot) {
        self.0.lock().metrics = Some(snap.clone());
    }

    /// The exporter's own counters, added to every snapshot (so `--metrics` shows them too).
    pub fn families(&self) -> Vec<Family> {
        let s = &self.0;
        let per_signal = |f: fn(&Counters) -> &AtomicU64| {
            [Signal::Logs, Signal::Metrics]
                .into_iter()
                .map(|sig| {
                    (
                        vec![("signal", sig.name().to_owned())],
                        f(s.counters(sig)).load(Relaxed) as f64,
                    )
                })
                .collect()
        };
        vec![
            Family {
                name: "tracer_otlp_sent_total",
                help: "OTLP items delivered: log records (logs), data points (metrics).",
                kind: MetricKind::Counter,
                samples: per_signal(|c| &c.sent),
            },
            Family {
                name: "tracer_otlp_dropped_total",
                help: "OTLP items dropped: queue full, rejected by the collector, or given up on after retries.",
                kind: MetricKind::Counter,
                samples: per_signal(|c| &c.dropped),
            },
            Family {
                name: "tracer_otlp_failed_requests_total",
                help: "OTLP export requests that failed (each retry counts).",
                kind: MetricKind::Counter,
                samples: per_signal(|c| &c.failures),
            },
            Family {
                name: "tracer_otlp_queue_length",
                help: "Log records waiting for the OTLP exporter.",
                kind: MetricKind::Gauge,
                samples: vec![(Vec::new(), s.queued.load(Relaxed) as f64)],
            },
        ]
    }
}

/// What the exporter did, for the summary at exit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub logs_sent: u64,
    pub logs_dropped: u64,
    pub points_sent: u64,
    pub metrics_dropped: u64,
    pub last_error: Option<String>,
}

pub struct Settings {
    pub logs: SignalConfig,
    pub metrics: SignalConfig,
    pub interval: Duration,
    pub queue: usize,
    pub resource: Resource,
    /// Wall-clock ns when tracer started: the start of every cumulative sum.
    pub start_ns: i64,
}

/// The exporter: owns the thread; [`Exporter::shutdown`] (or drop) flushes within a bound.
pub struct Exporter {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<Option<String>>>,
}

impl Exporter {
    pub fn start(settings: Settings) -> std::io::Result<Exporter> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            finished: Condvar::new(),
            logs: Counters::default(),
            metrics: Counters::default(),
            queued: AtomicU64::new(0),
            inflight: InFlight::default(),
            cap: settings.queue.max(1),
        });
        let s = shared.clone();
        let thread = thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let mut w = Worker::new(s.clone(), settings);
                w.run();
                let last = w.last_error.take();
                s.lock().done = true;
                s.finished.notify_all();
                last
            })?;
        Ok(Exporter {
            shared,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> Handle {
        Handle(self.shared.clone())
    }

    /// Stops the thread after a last flush of at most a few seconds (a request stuck on a
    /// silent collector is cut), and says what was sent and dropped.
    pub fn shutdown(&mut self) -> Option<Summary> {
        let t = self.thread.take()?;
        let s = &self.shared;
        s.lock().stop = true;
        s.wake.notify_all();
        // A request in flight gets a moment to finish; then it is cut, and the worker's own
        // last flush is bounded by FINAL_FLUSH.
        let wait = |d: Duration| {
            let q = s.lock();
            let (q, _) = s
                .finished
                .wait_timeout_while(q, d, |q| !q.done)
                .unwrap_or_else(|e| e.into_inner());
            q.done
        };
        let mut done = wait(Duration::from_secs(1));
        for _ in 0..2 {
            if done {
                break;
            }
            http::cut(&s.inflight);
            done = wait(FINAL_FLUSH + Duration::from_millis(500));
        }
        // Not done: leave the thread to the process exit rather than hang the exit.
        let last_error = if done { t.join().ok().flatten() } else { None };
        Some(Summary {
            logs_sent: s.logs.sent.load(Relaxed),
            logs_dropped: s.logs.dropped.load(Relaxed),
            points_sent: s.metrics.sent.load(Relaxed),
            metrics_dropped: s.metrics.dropped.load(Relaxed),
            last_error,
        })
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Backoff state of one signal.
struct Retry {
    /// Consecutive failed requests (the backoff exponent); 0 when the last one went through.
    failures: u32,
    /// Attempts at the current batch.
    tries: u32,
    next_try: Instant,
}

impl Retry {
    fn new() -> Retry {
        Retry {
            failures: 0,
            tries: 0,
            next_try: Instant::now(),
        }
    }

    fn ok(&mut self) {
        self.failures = 0;
        self.tries = 0;
    }

    /// A failed attempt: true when the batch is to be given up.
    fn failed(&mut self, now: Instant, retryable: bool) -> bool {
        self.failures = self.failures.saturating_add(1);
        self.tries += 1;
        self.next_try = now + backoff(self.failures);
        let give_up = !retryable || self.tries >= MAX_TRIES;
        if give_up {
            self.tries = 0;
        }
        give_up
    }
}

/// Backoff after `failures` consecutive failures: 1 s, 2 s, 4 s... up to 30 s.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_CAP)
}

struct Worker {
    shared: Arc<Shared>,
    s: Settings,
    logs_batch: Vec<LogItem>,
    logs_retry: Retry,
    last_logs_flush: Instant,
    metrics_pending: Option<Snapshot>,
    metrics_retry: Retry,
    next_metrics: Instant,
    last_error: Option<String>,
}

fn wall_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Worker {
    fn new(shared: Arc<Shared>, s: Settings) -> Worker {
        let now = Instant::now();
        Worker {
            shared,
            next_metrics: now + s.interval,
            s,
            logs_batch: Vec::new(),
            logs_retry: Retry::new(),
            last_logs_flush: now,
            metrics_pending: None,
            metrics_retry: Retry::new(),
            last_error: None,
        }
    }

    fn run(&mut self) {
        loop {
            let stop = {
                let q = self.shared.lock();
                let q = if !q.stop && q.logs.len() < BATCH {
                    self.shared
                        .wake
                        .wait_timeout(q, TICK)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                } else {
                    q
                };
                q.stop
            };
            if stop {
                self.final_flush();
                return;
            }
            let now = Instant::now();
            if now >= self.logs_retry.next_try {
                if self.logs_batch.is_empty() {
                    self.take_logs(now, false);
                }
                if !self.logs_batch.is_empty() {
                    self.send_logs(self.s.logs.timeout);
                }
            }
            if now >= self.next_metrics && now >= self.metrics_retry.next_try {
                self.next_metrics = now + self.s.interval;
                self.take_metrics();
                if self.metrics_pending.is_some() {
                    self.send_metrics(self.s.metrics.timeout);
                }
            }
        }
    }

    /// Moves up to a batch from the queue (a full one, or whatever waited LOGS_DELAY).
    fn take_logs(&mut self, now: Instant, any: bool) {
        let mut q = self.shared.lock();
        if q.logs.len() >= BATCH
            || (!q.logs.is_empty() && (any || now >= self.last_logs_flush + LOGS_DELAY))
        {
            let n = q.logs.len().min(BATCH);
            self.logs_batch.extend(q.logs.drain(..n));
            self.shared.queued.store(q.logs.len() as u64, Relaxed);
        }
    }

    fn take_metrics(&mut self) {
        if let Some(s) = self.shared.lock().metrics.take() {
            // A newer snapshot supersedes one still waiting for a retry (they are cumulative).
            self.metrics_pending = Some(s);
        }
    }

    fn post(&mut self, signal: Signal, body: &[u8], timeout: Duration) -> Result<(), HttpError> {
        let cfg = match signal {
            Signal::Logs => &self.s.logs,
            Signal::Metrics => &self.s.metrics,
        };
        let r = http::post(
            &cfg.url,
            &cfg.headers,
            "application/x-protobuf",
            body,
            timeout,
            &self.shared.inflight,
        );
        if let Err(e) = &r {
            self.shared.counters(signal).failures.fetch_add(1, Relaxed);
            let msg = e.to_string();
            if self.last_error.as_deref() != Some(msg.as_str()) {
                let then = if e.retryable() {
                    "retrying with backoff"
                } else {
                    "dropping the batch"
                };
                tracing::warn!("OTLP {} export: {msg}; {then}", signal.name());
                self.last_error = Some(msg);
            }
        }
        r
    }

    fn send_logs(&mut self, timeout: Duration) {
        let body = encode::logs_request(&self.s.resource, &self.logs_batch, wall_now_ns());
        let n = self.logs_batch.len() as u64;
        let r = self.post(Signal::Logs, &body, timeout);
        let now = Instant::now();
        match r {
            Ok(()) => {
                self.shared.logs.sent.fetch_add(n, Relaxed);
                self.logs_retry.ok();
                self.logs_batch.clear();
                self.last_logs_flush = now;
            }
            Err(e) => {
                if self.logs_retry.failed(now, e.retryable()) {
                    self.shared.logs.dropped.fetch_add(n, Relaxed);
                    self.logs_batch.clear();
                }
            }
        }
    }

    fn send_metrics(&mut self, timeout: Duration) {
        let Some(snap) = &self.metrics_pending else {
            return;
        };
        let points: u64 = snap.families.iter().map(|f| f.samples.len() as u64).sum();
        let now_ns = wall_now_ns();
        let body = encode::metrics_request(&self.s.resource, snap, self.s.start_ns, now_ns);
        let r = self.post(Signal::Metrics, &body, timeout);
        match r {
            Ok(()) => {
                self.shared.metrics.sent.fetch_add(points, Relaxed);
                self.metrics_retry.ok();
                self.metrics_pending = None;
            }
            Err(e) => {
                if self.metrics_retry.failed(Instant::now(), e.retryable()) {
                    self.shared.metrics.dropped.fetch_add(points, Relaxed);
                    self.metrics_pending = None;
                }
            }
        }
    }

    /// At exit: what is queued and the last snapshot, once each, within FINAL_FLUSH, unless
    /// the signal's collector is known to be failing; the rest is counted as dropped.
    fn final_flush(&mut self) {
        let deadline = Instant::now() + FINAL_FLUSH;
        let left = || deadline.saturating_duration_since(Instant::now());
        if self.logs_retry.failures == 0 {
            loop {
                if self.logs_batch.is_empty() {
                    self.take_logs(Instant::now(), true);
                }
                if self.logs_batch.is_empty() || left().is_zero() {
                    break;
                }
                self.send_logs(left().min(self.s.logs.timeout));
                if self.logs_retry.failures > 0 {
                    break;
                }
            }
        }
        let mut q = self.shared.lock();
        let left_over = (q.logs.len() + self.logs_batch.len()) as u64;
        q.logs.clear();
        self.shared.queued.store(0, Relaxed);
        self.shared.logs.dropped.fetch_add(left_over, Relaxed);
        self.logs_batch.clear();
        drop(q);
        self.take_metrics();
        if self.metrics_retry.failures == 0 && !left().is_zero() {
            self.send_metrics(left().min(self.s.metrics.timeout));
        }
        if let Some(s) = self.metrics_pending.take() {
            let points: u64 = s.families.iter().map(|f| f.samples.len() as u64).sum();
            self.shared.metrics.dropped.fetch_add(points, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::TcpListener,
    };

    use serde_json::Map;

    use super::*;
    use crate::otlp::config::resolve;

    fn settings(port: u16, queue: usize) -> Settings {
        let (logs, metrics) = resolve(&format!("http://127.0.0.1:{port}"), &|_| None).unwrap();
        Settings {
            logs,
            metrics,
            interval: Duration::from_millis(300),
            queue,
            resource: Resource::default(),
            start_ns: 0,
        }
    }

    fn item(i: usize) -> LogItem {
        LogItem {
            time_ns: i as i64,
            severity: None,
            event_name: encode::EVENT_EVENT_NAME,
            body: format!("event {i}"),
            attributes: Map::new(),
        }
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(6), BACKOFF_CAP);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_pushing_never_waits() {
        // A collector that accepts and never answers.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut ex = Exporter::start(settings(port, 100)).unwrap();
        let h = ex.handle();
        let t = Instant::now();
        for i in 0..10_000 {
            if !h.reject_if_full() {
                h.push_log(item(i));
            }
        }
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        let dropped = h.0.logs.dropped.load(Relaxed);
        assert!(dropped >= 9_000, "{dropped}");
        assert!(h.0.lock().logs.len() <= 100);
        let t = Instant::now();
        let s = ex.shutdown().unwrap();
        assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
        assert_eq!(s.logs_sent, 0);
        assert_eq!(s.logs_dropped, 10_000, "{s:?}");
        drop(l);
    }

    /// A collector answering 200 to everything, counting requests per path.
    fn collector() -> (u16, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { break };
                let mut buf = Vec::new();
                let mut tmp = [0u8; 65536];
                while let Ok(n) = c.read(&mut tmp) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((h, _)) = text.split_once("\r\n\r\n") {
                        let len: usize = h
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= h.len() + 4 + len {
                            let path = h.split_whitespace().nth(1).unwrap_or("").to_owned();
                            s2.lock().unwrap().push(path);
                            break;
                        }
                    }
                }
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        (port, seen)
    }

    #[test]
    fn delivers_logs_and_metrics_and_flushes_at_exit() {
        let (port, seen) = collector();
        let mut ex = Exporter::start(settings(port, 2048)).unwrap();
        let h = ex.handle();
        for i in 0..600 {
            h.push_log(item(i));
        }
        h.set_metrics(&Snapshot {
            families: h.families(),
            at_ns: 0,
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.0.metrics.sent.load(Relaxed) == 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        h.push_log(item(600));
        let s = ex.shutdown().unwrap();
        assert_eq!(s.logs_sent, 601, "{s:?}");
        assert_eq!(s.logs_dropped, 0, "{s:?}");
        assert!(s.points_sent > 0, "{s:?}");
        let paths = seen.lock().unwrap().clone();
        assert!(paths.iter().any(|p| p == "/v1/logs"), "{paths:?}");
        assert!(paths.iter().any(|p| p == "/v1/metrics"), "{paths:?}");
    }
}
