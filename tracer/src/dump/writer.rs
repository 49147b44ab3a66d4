//! The flight recorder: [`Recorder`] is a pipeline sink that hands raw records to a writer
//! thread, which compresses them into blocks, writes rotating segment files and keeps the
//! directory within its size and age bounds.
//!
//! The event path only appends bytes to a queue under a mutex that the writer holds for a
//! pointer swap at most: it never waits on the disk. The queue is bounded in bytes; when the
//! writer falls that far behind, records are dropped and counted, and the count is written into
//! the dump as a gap record (kind 203; dumps of older versions have GAP blocks instead). A full
//! disk is a size bound: the oldest segments are deleted to keep the newest events. A mutex-guarded queue rather than a channel of batches because the
//! writer must be able to take a half-filled batch on its own timer: on a host that hangs, no
//! further event comes along to push the last ones out, and those are the ones that matter.
//!
//! The writer keeps its own process table, fed by the records it writes, so it can start a new
//! segment (with a snapshot of that table) at any block boundary without asking the event path.
use std::{
    collections::VecDeque,
    io,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use super::{
    DumpError, RecordOptions, SEGMENT_EXT,
    format::{self, BlockType, MAX_BLOCK_RAW, SegmentMeta},
};
use crate::{
    event::{self, Body, Comm, Event, RecorderGap},
    host::{self, HostInfo},
    pipeline::{Ctx, Sink},
    proc_table::ProcTable,
};

/// Everything the writer does to the file system, so tests can make it fail on demand.
pub trait Storage: Send + 'static {
    /// Creates the directory (0700) if needed and takes an exclusive lock on it.
    fn prepare_dir(&mut self, dir: &Path) -> io::Result<()>;
    /// Segment files already in the directory: (path, length, modification time).
    fn list(&mut self, dir: &Path) -> io::Result<Vec<(PathBuf, u64, SystemTime)>>;
    /// Creates a new file (0600) and makes it the current one.
    fn create(&mut self, path: &Path) -> io::Result<()>;
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// fdatasync of the current file.
    fn sync(&mut self) -> io::Result<()>;
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    fn close(&mut self);
    fn remove(&mut self, path: &Path) -> io::Result<()>;
    /// fsync of the directory, so created and removed entries survive a power loss.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The real file system.
#[derive(Default)]
pub struct DiskStorage {
    file: Option<std::fs::File>,
    lock: Option<std::fs::File>,
}

impl Storage for DiskStorage {
    fn prepare_dir(&mut self, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        // Dumps hold command lines, which may hold secrets.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(".lock"))?;
        // SAFETY: valid fd; flock has no memory effects.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    e.kind(),
                    "another `tracer record` is writing to this directory",
                )
            } else {
                e
            });
        }
        self.lock = Some(lock);
        Ok(())
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<(PathBuf, u64, SystemTime)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            let md = e.metadata()?;
            if md.is_file() {
                out.push((
                    path,
                    md.len(),
                    md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
        Ok(out)
    }

    fn create(&mut self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        self.file = Some(
            std::fs::OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?,
        );
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        self.file.as_mut().ok_or_else(no_file)?.write_all(data)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.as_ref().ok_or_else(no_file)?.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.as_ref().ok_or_else(no_file)?.set_len(len)
    }

    fn close(&mut self) {
        self.file = None;
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

fn no_file() -> io::Error {
    io::Error::other("no segment file open")
}

/// Knobs that are not options (tests shorten them).
#[derive(Clone, Debug)]
pub struct Tuning {
    /// How often to try again after a write error.
    pub retry_interval: Duration,
    /// Raw bytes the event path may queue before it drops records.
    pub queue_cap: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            retry_interval: Duration::from_secs(5),
            queue_cap: 64 << 20,
        }
    }
}

/// What a recording produced, for the end-of-run line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordSummary {
    pub dir: PathBuf,
    /// Segment files created by this run.
    pub segments_created: u64,
    /// Segment files in the directory at the end, and their total size.
    pub segments_on_disk: usize,
    pub bytes_on_disk: u64,
    /// Bytes this run wrote, and the events (records) in them.
    pub bytes_written: u64,
    pub events_written: u64,
    /// Events received but not stored: the disk failed, or the writer fell too far behind.
    pub events_unwritten: u64,
    pub events_dropped_queue_full: u64,
    pub segments_deleted: u64,
    /// Writes (or segment creations) that failed; each is retried.
    pub write_errors: u64,
    /// Old segments deleted because the disk was full (a subset of `segments_deleted`).
    pub segments_deleted_disk_full: u64,
    /// Events lost that no gap record in the dump accounts for: writing still failed at exit.
    pub events_lost_unnoted: u64,
}

impl RecordSummary {
    pub fn bytes_per_event(&self) -> f64 {
        if self.events_written == 0 {
            0.0
        } else {
            self.bytes_written as f64 / self.events_written as f64
        }
    }
}

impl std::fmt::Display for RecordSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "recorded {} events in {} new segment file(s), {} bytes ({:.1} bytes/event) in {}; \
             {} segment file(s), {} bytes on disk; {} old segment file(s) deleted",
            self.events_written,
            self.segments_created,
            self.bytes_written,
            self.bytes_per_event(),
            self.dir.display(),
            self.segments_on_disk,
            self.bytes_on_disk,
            self.segments_deleted
        )?;
        let lost = self.events_unwritten + self.events_dropped_queue_full;
        if lost > 0 {
            write!(
                f,
                "; {lost} events NOT recorded ({} could not be written, {} writer too slow)",
                self.events_unwritten, self.events_dropped_queue_full
            )?;
            if self.events_lost_unnoted > 0 {
                write!(
                    f,
                    ", {} of them not noted in the dump (writing still failed at exit)",
                    self.events_lost_unnoted
                )?;
            }
        }
        if self.segments_deleted_disk_full > 0 {
            write!(
                f,
                "; the disk was full: {} old segment file(s) deleted to keep the newest events",
                self.segments_deleted_disk_full
            )?;
        }
        Ok(())
    }
}

/// One block's worth of records on their way to the writer.
struct Chunk {
    buf: Vec<u8>,
    count: u32,
    first_ts: u64,
    last_ts: u64,
    /// When its first record arrived: it must be on disk within the flush interval of that.
    since: Instant,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    /// Records refused because the queue was full, not yet reported to the writer.
    dropped: u64,
    closing: bool,
    /// `Recorder::flush` requests, and the last one the writer has completed.
    flush_requested: u64,
    flush_done: u64,
    /// Emptied buffers the writer hands back, so the event path does not allocate.
    spare: Vec<Vec<u8>>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer.
    wake: Condvar,
    /// Wakes a caller of `Recorder::flush`.
    flushed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic elsewhere must not stop the recording of what is left.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The recorder sink. Construct it with [`Recorder::new`], add it to the pipeline, and the
/// pipeline's `finish` writes the rest, syncs and prints the summary.
pub struct Recorder {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<RecordSummary>>,
    block_raw: usize,
    queue_cap: usize,
    warned_full: bool,
    summary: Arc<Mutex<Option<RecordSummary>>>,
    live: Arc<Mutex<RecordSummary>>,
    print_summary: bool,
}

impl Recorder {
    /// Prepares the output directory (0700, locked against a second recorder), opens the first
    /// segment and starts the writer thread. Errors here are fatal and say what to fix; errors
    /// after this point are reported and survived.
    pub fn new(opts: &RecordOptions, host: HostInfo) -> Result<Recorder, DumpError> {
        Recorder::with_storage(
            opts,
            host,
            Box::new(DiskStorage::default()),
            Tuning::default(),
        )
    }

    pub fn with_storage(
        opts: &RecordOptions,
        host: HostInfo,
        mut storage: Box<dyn Storage>,
        tuning: Tuning,
    ) -> Result<Recorder, DumpError> {
        let limits = opts.limits()?;
        let dir = opts.output.clone();
        let io_err = |what: &str, e: io::Error| DumpError::Io {
            path: dir.clone(),
            what: what.to_owned(),
            error: e,
        };
        storage
            .prepare_dir(&dir)
            .map_err(|e| io_err("cannot use the output directory", e))?;
        let mut existing = storage
            .list(&dir)
            .map_err(|e| io_err("cannot list the output directory", e))?;
        existing.sort_by_key(|(p, _, _)| (segment_seq(p).unwrap_or(0), p.clone()));
        let next_seq = existing
            .iter()
            .filter_map(|(p, _, _)| segment_seq(p))
            .max()
            .map_or(1, |s| s + 1);
        let block_raw = (limits.segment_size / 16).clamp(16 << 10, MAX_BLOCK_RAW as u64) as usize;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            flushed: Condvar::new(),
        });
        let mut w = Writer {
            storage,
            dir: dir.clone(),
            limits,
            tuning: tuning.clone(),
            host,
            shared: shared.clone(),
            procs: ProcTable::new(),
            current: None,
            closed: existing
                .into_iter()
                .map(|(path, size, mtime)| Closed { path, size, mtime })
                .collect(),
            next_seq,
            unsynced_since: None,
            failed: None,
            gap: 0,
            gap_span: None,
            lost_total: 0,
            gap_reason: String::new(),
            disk_bound: None,
            compressor: zstd::bulk::Compressor::new(format::ZSTD_LEVEL).ok(),
            summary: RecordSummary {
                dir: dir.clone(),
                ..RecordSummary::default()
            },
            live: Arc::new(Mutex::new(RecordSummary::default())),
            last_ts: 0,
        };
        let live = w.live.clone();
        w.open_segment()
            .map_err(|e| io_err("cannot create a segment file in", e))?;
        let summary = Arc::new(Mutex::new(None));
        let thread = std::thread::Builder::new()
            .name("tracer-recorder".into())
            .spawn(move || w.run())
            .map_err(|e| io_err("cannot start the writer thread for", e))?;
        Ok(Recorder {
            shared,
            thread: Some(thread),
            block_raw,
            queue_cap: tuning.queue_cap,
            warned_full: false,
            summary,
            live,
            print_summary: true,
        })
    }

    /// Whether `finish` prints the summary line (on by default; tests turn it off).
    pub fn set_print_summary(&mut self, on: bool) {
        self.print_summary = on;
    }

    /// Where the summary appears once the recorder has finished (the pipeline owns the sink).
    pub fn summary_handle(&self) -> Arc<Mutex<Option<RecordSummary>>> {
        self.summary.clone()
    }

    /// The figures so far (bytes, segments, write errors, records not stored), updated by the
    /// writer thread after each batch: what the metrics show while recording.
    pub fn live_stats(&self) -> Arc<Mutex<RecordSummary>> {
        self.live.clone()
    }

    /// Queues one raw record. Never blocks on I/O.
    pub fn record(&mut self, raw: &[u8], ts_ns: u64) {
        let mut q = self.shared.lock();
        if q.bytes + raw.len() > self.queue_cap {
            q.dropped += 1;
            drop(q);
            if !self.warned_full {
                self.warned_full = true;
                tracing::warn!(
                    "dump: the writer cannot keep up (disk too slow?): events are being dropped and counted"
                );
            }
            return;
        }
        q.bytes += raw.len();
        let fits = q
            .chunks
            .back()
            .is_some_and(|c| c.buf.len() + raw.len() <= self.block_raw);
        if !fits {
            let mut buf = q.spare.pop().unwrap_or_default();
            buf.clear();
            buf.reserve(self.block_raw);
            q.chunks.push_back(Chunk {
                buf,
                count: 0,
                first_ts: ts_ns,
                last_ts: ts_ns,
                since: Instant::now(),
            });
            // Either a full block is waiting, or the writer must start the flush clock.
            self.shared.wake.notify_one();
        }
        let Some(c) = q.chunks.back_mut() else { return };
        c.buf.extend_from_slice(raw);
        c.count += 1;
        c.first_ts = c.first_ts.min(ts_ns);
        c.last_ts = c.last_ts.max(ts_ns);
    }

    /// Writes and syncs everything queued so far (retrying at once if writing had failed), and
    /// waits for that, up to `timeout`. Blocks: for tests and explicit requests, not the event
    /// path. Returns whether the writer got there in time.
    pub fn flush(&mut self, timeout: Duration) -> bool {
        let mut q = self.shared.lock();
        q.flush_requested += 1;
        let want = q.flush_requested;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + timeout;
        while q.flush_done < want && self.thread.is_some() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            q = self
                .shared
                .flushed
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Writes everything queued, syncs, stops the writer thread and returns the summary.
    pub fn close(&mut self) -> Result<RecordSummary, DumpError> {
        let Some(t) = self.thread.take() else {
            return self
                .summary
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .ok_or(DumpError::WriterDied);
        };
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let s = t.join().map_err(|_| DumpError::WriterDied)?;
        *self.summary.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
        Ok(s)
    }
}

impl Sink for Recorder {
    fn event(&mut self, ev: &Event, raw: &[u8], _ctx: &Ctx<'_>) -> anyhow::Result<()> {
        self.record(raw, ev.ts_ns);
        Ok(())
    }

    fn finish(&mut self, _ctx: &Ctx<'_>) -> anyhow::Result<()> {
        let s = self.close()?;
        if self.print_summary {
            crate::output::eprint(&s.to_string());
        }
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // An early return or a panic upstream still leaves a complete, synced dump.
        if self.thread.is_some() {
            let _ = self.close();
        }
    }
}

/// The options, checked and with defaults applied.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_size: u64,
    pub segment_size: u64,
    pub max_age: Option<Duration>,
    pub flush_interval: Duration,
}

struct Current {
    path: PathBuf,
    size: u64,
    opened: SystemTime,
    /// Time of the last write: what `--max-age` measures once the segment is closed.
    modified: SystemTime,
}

struct Closed {
    path: PathBuf,
    size: u64,
    mtime: SystemTime,
}

struct Failure {
    next_retry: Instant,
}

struct Writer {
    storage: Box<dyn Storage>,
    dir: PathBuf,
    limits: Limits,
    tuning: Tuning,
    host: HostInfo,
    shared: Arc<Shared>,
    procs: ProcTable,
    current: Option<Current>,
    /// Older segments, oldest first.
    closed: VecDeque<Closed>,
    next_seq: u64,
    /// When the oldest data written but not yet synced arrived.
    unsynced_since: Option<Instant>,
    failed: Option<Failure>,
    /// Records lost since the last gap record was written, the boot-clock span of those records,
    /// and the run's total.
    gap: u64,
    gap_span: Option<(u64, u64)>,
    lost_total: u64,
    gap_reason: String,
    /// Our bytes on disk when the file system said it was full: the size bound from then on.
    disk_bound: Option<u64>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    summary: RecordSummary,
    /// The summary so far, for metrics while recording.
    live: Arc<Mutex<RecordSummary>>,
    /// Latest record timestamp seen, to stamp snapshots.
    last_ts: u64,
}

/// The sequence number in a segment's file name (`tracer-00000042-….tdump`).
pub fn segment_seq(p: &Path) -> Option<u64> {
    let name = p.file_name()?.to_str()?;
    name.strip_prefix("tracer-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

impl Writer {
    fn run(mut self) -> RecordSummary {
        loop {
            let (chunks, dropped, closing, flush) = self.wait_for_work();
            if let Some(f) = &self.failed
                && (flush.is_some() || Instant::now() >= f.next_retry)
            {
                self.open_after_failure();
            }
            if dropped > 0 {
                self.summary.events_dropped_queue_full += dropped;
                let ts = self.last_ts;
                self.lose(dropped, "the writer could not keep up", ts, ts);
            }
            for c in chunks {
                self.write_chunk(&c);
                self.apply(&c.buf);
                let mut q = self.shared.lock();
                q.bytes = q.bytes.saturating_sub(c.buf.len());
                if q.spare.len() < 4 {
                    q.spare.push(c.buf);
                }
            }
            self.maintain(closing || flush.is_some(), closing);
            self.publish_live();
            if let Some(n) = flush {
                self.shared.lock().flush_done = n;
                self.shared.flushed.notify_all();
            }
            if closing {
                break;
            }
        }
        self.close_current();
        self.enforce_retention(0);
        self.summary.events_lost_unnoted = self.gap;
        self.summary.segments_on_disk = self.closed.len();
        self.summary.bytes_on_disk = self.closed.iter().map(|c| c.size).sum();
        self.summary
    }

    fn publish_live(&self) {
        let mut s = self.summary.clone();
        s.segments_on_disk = self.closed.len();
        s.bytes_on_disk = self.closed.iter().map(|c| c.size).sum();
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// Waits until a full block is queued, queued or unsynced data is about to be older than
    /// half the flush interval, a retry or a rotation is due, or the recorder closes.
    fn wait_for_work(&mut self) -> (Vec<Chunk>, u64, bool, Option<u64>) {
        let half = self.limits.flush_interval / 2;
        let shared = self.shared.clone();
        let mut q = shared.lock();
        loop {
            let now = Instant::now();
            let mut deadline = now + Duration::from_secs(60);
            let flush = (q.flush_requested > q.flush_done).then_some(q.flush_requested);
            let mut take_all = q.closing || flush.is_some();
            let full = q.chunks.len() > 1;
            if let Some(c) = q.chunks.front() {
                let due = c.since + half;
                take_all |= now >= due;
                deadline = deadline.min(due);
            }
            let mut due_other = false;
            if let Some(u) = self.unsynced_since {
                due_other |= now >= u + half;
                deadline = deadline.min(u + half);
            }
            if let Some(f) = &self.failed {
                due_other |= now >= f.next_retry;
                deadline = deadline.min(f.next_retry);
            }
            if let Some(d) = self.next_time_check() {
                due_other |= d.is_zero();
                deadline = deadline.min(now + d);
            }
            if take_all || full || due_other || q.dropped > 0 {
                let n = if take_all {
                    q.chunks.len()
                } else {
                    q.chunks.len().saturating_sub(1)
                };
                let chunks: Vec<Chunk> = q.chunks.drain(..n).collect();
                let dropped = std::mem::take(&mut q.dropped);
                return (chunks, dropped, q.closing, flush);
            }
            let wait = deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            q = shared
                .wake
                .wait_timeout(q, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Time until an age-based rotation or deletion is due, if `--max-age` is set.
    fn next_time_check(&self) -> Option<Duration> {
        let age = self.limits.max_age?;
        let now = self.storage.now();
        let mut next = Duration::from_secs(1);
        if let Some(c) = &self.current {
            let elapsed = now.duration_since(c.opened).unwrap_or_default();
            next = next.min(rotate_age(age).saturating_sub(elapsed));
        }
        if let Some(c) = self.closed.front() {
            next = next.min(age.saturating_sub(now.duration_since(c.mtime).unwrap_or_default()));
        }
        Some(next)
    }

    fn write_chunk(&mut self, c: &Chunk) {
        self.last_ts = self.last_ts.max(c.last_ts);
        if self.current.is_none() {
            self.lose_chunk(c);
            return;
        }
        if self.needs_rotation() {
            self.rotate();
            if self.current.is_none() {
                self.lose_chunk(c);
                return;
            }
        }
        self.write_gap();
        let block = format::encode_block(
            BlockType::Records,
            &c.buf,
            c.count,
            c.first_ts,
            c.last_ts,
            self.compressor.as_mut(),
        );
        if self.append(&block) {
            self.summary.events_written += c.count as u64;
            self.unsynced_since = Some(self.unsynced_since.map_or(c.since, |u| u.min(c.since)));
        } else {
            self.lose_chunk(c);
        }
    }

    fn lose_chunk(&mut self, c: &Chunk) {
        self.lose(c.count as u64, "", c.first_ts, c.last_ts);
        self.summary.events_unwritten += c.count as u64;
    }

    /// Feeds the records to the writer's process table (whether or not they could be written:
    /// the next segment's snapshot must reflect them).
    fn apply(&mut self, mut buf: &[u8]) {
        while let Some(n) = format::record_len(buf) {
            if let Ok(ev) = event::decode(&buf[..n]) {
                self.procs.apply(&ev);
            }
            buf = &buf[n..];
        }
    }

    fn lose(&mut self, n: u64, reason: &str, first_ts: u64, last_ts: u64) {
        self.gap += n;
        self.lost_total += n;
        let (a, b) = self.gap_span.unwrap_or((first_ts, last_ts));
        self.gap_span = Some((a.min(first_ts), b.max(last_ts)));
        if !reason.is_empty() && self.gap_reason.is_empty() {
            self.gap_reason = reason.to_owned();
        }
    }

    fn write_gap(&mut self) {
        if self.gap == 0 || self.current.is_none() {
            return;
        }
        let (first_ns, last_ns) = self.gap_span.unwrap_or((self.last_ts, self.last_ts));
        let g = RecorderGap {
            lost: self.gap,
            lost_total: self.lost_total,
            first_ns,
            last_ns,
            reason: if self.gap_reason.is_empty() {
                "write error".into()
            } else {
                self.gap_reason.clone()
            },
        };
        let ts = self.last_ts.max(last_ns);
        let ev = Event::collector(ts, Body::RecorderGap(Box::new(g)));
        let Some(rec) = event::encode_user_record(&ev) else {
            return;
        };
        let block = format::encode_block(
            BlockType::Records,
            &rec,
            1,
            ts,
            ts,
            self.compressor.as_mut(),
        );
        if self.append(&block) {
            self.gap = 0;
            self.gap_span = None;
            self.gap_reason.clear();
        }
    }

    /// The size bound: `--max-size`, or less once the file system has said it is full.
    fn max_size(&self) -> u64 {
        self.disk_bound
            .map_or(self.limits.max_size, |b| b.min(self.limits.max_size))
    }

    /// Segments rotate at a quarter of the bound so that, on a full disk, deleting the oldest
    /// one frees room while three quarters of the newest stay.
    fn segment_size(&self) -> u64 {
        self.disk_bound.map_or(self.limits.segment_size, |b| {
            (b / 4).max(16 << 10).min(self.limits.segment_size)
        })
    }

    fn needs_rotation(&self) -> bool {
        let Some(c) = &self.current else { return false };
        if c.size >= self.segment_size() {
            return true;
        }
        self.limits.max_age.is_some_and(|age| {
            self.storage
                .now()
                .duration_since(c.opened)
                .unwrap_or_default()
                >= rotate_age(age)
        })
    }

    /// Appends to the current segment, keeping the directory within `--max-size`. A full disk
    /// is a size bound: the oldest segments go to make room for the newest events (and, if the
    /// current segment is all there is, it is closed and a fresh one started, so that it can go
    /// too). On any other failure, or a disk full of what is not ours, cuts the file back to its
    /// last whole block, closes it and enters the failed state.
    fn append(&mut self, data: &[u8]) -> bool {
        self.enforce_retention(data.len() as u64);
        let mut fresh = false;
        loop {
            let Some(cur) = &mut self.current else {
                return false;
            };
            let e = match self.storage.append(data) {
                Ok(()) => {
                    cur.size += data.len() as u64;
                    cur.modified = self.storage.now();
                    self.summary.bytes_written += data.len() as u64;
                    return true;
                }
                Err(e) => e,
            };
            let path = cur.path.clone();
            let size = cur.size;
            // Best effort: a reader would skip the partial block anyway.
            let _ = self.storage.truncate(size);
            if is_disk_full(&e) {
                let ours = size + self.closed.iter().map(|c| c.size).sum::<u64>();
                if self.disk_bound.is_none_or(|b| ours < b) {
                    tracing::warn!(
                        "dump: {} is full ({e}): keeping the newest {ours} bytes of events, \
                         deleting the oldest segments as needed",
                        self.dir.display()
                    );
                }
                self.disk_bound = Some(self.disk_bound.map_or(ours, |b| b.min(ours)));
                if self.delete_oldest(true) {
                    continue;
                }
                if !fresh {
                    // Only the current segment is left: start another so that it can go.
                    fresh = true;
                    self.close_current();
                    if self.open_segment().is_ok() {
                        continue;
                    }
                }
            }
            self.fail(&path, "cannot write", &e);
            self.close_current();
            return false;
        }
    }

    /// Deletes the oldest closed segment, if any.
    fn delete_oldest(&mut self, disk_full: bool) -> bool {
        let Some(old) = self.closed.pop_front() else {
            return false;
        };
        if let Err(e) = self.storage.remove(&old.path) {
            tracing::warn!(
                "dump: cannot delete old segment {}: {e}",
                old.path.display()
            );
        } else {
            self.summary.segments_deleted += 1;
            if disk_full {
                self.summary.segments_deleted_disk_full += 1;
            }
        }
        let _ = self.storage.sync_dir(&self.dir);
        true
    }

    fn fail(&mut self, path: &Path, what: &str, e: &io::Error) {
        self.summary.write_errors += 1;
        if self.failed.is_none() {
            // A sequence number left out tells readers that the next segment does not follow
            // on from the last one: something is missing in between.
            self.next_seq += 1;
            tracing::warn!(
                "dump: {what} {}: {e}; events are counted but not recorded until writing works \
                 again (retrying every {:?})",
                path.display(),
                self.tuning.retry_interval
            );
        }
        self.failed = Some(Failure {
            next_retry: Instant::now() + self.tuning.retry_interval,
        });
        self.gap_reason = format!("{what} {}: {e}", path.display());
    }

    /// Periodic work after each batch: sync, rotate by age, retention.
    fn maintain(&mut self, sync_now: bool, closing: bool) {
        let half = self.limits.flush_interval / 2;
        if let Some(u) = self.unsynced_since
            && (sync_now || u.elapsed() >= half)
        {
            self.sync();
        }
        if self.needs_rotation() && !closing {
            self.rotate();
        }
        if self.current.is_some() && self.gap > 0 {
            self.write_gap();
        }
        self.enforce_retention(0);
    }

    fn sync(&mut self) {
        if self.current.is_none() {
            self.unsynced_since = None;
            return;
        }
        if let Err(e) = self.storage.sync() {
            let path = self
                .current
                .as_ref()
                .map(|c| c.path.clone())
                .unwrap_or_default();
            self.fail(&path, "cannot sync", &e);
            self.close_current();
        }
        self.unsynced_since = None;
    }

    fn rotate(&mut self) {
        self.close_current();
        if let Err(e) = self.open_segment() {
            let dir = self.dir.clone();
            self.fail(&dir, "cannot create a segment file in", &e);
        }
    }

    fn open_after_failure(&mut self) {
        match self.open_segment() {
            Ok(()) => {
                tracing::warn!(
                    "dump: writing to {} again; {} events could not be recorded meanwhile",
                    self.dir.display(),
                    self.gap
                );
                self.failed = None;
                self.write_gap();
            }
            Err(e) => {
                let dir = self.dir.clone();
                self.fail(&dir, "cannot create a segment file in", &e);
            }
        }
    }

    fn close_current(&mut self) {
        let Some(c) = self.current.take() else { return };
        self.unsynced_since = None;
        if let Err(e) = self.storage.sync()
            && self.failed.is_none()
        {
            tracing::warn!("dump: cannot sync {}: {e}", c.path.display());
        }
        self.storage.close();
        self.closed.push_back(Closed {
            path: c.path,
            size: c.size,
            mtime: c.modified,
        });
    }

    /// Creates the next segment: preamble, meta, snapshot of the writer's process table.
    fn open_segment(&mut self) -> io::Result<()> {
        let now = self.storage.now();
        let wall_ns = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let seq = self.next_seq;
        let stamp: String = host::rfc3339_ns(wall_ns)
            .chars()
            .take(19)
            .filter(|c| c.is_ascii_digit() || *c == 'T')
            .collect();
        let path = self
            .dir
            .join(format!("tracer-{seq:08}-{stamp}Z.{SEGMENT_EXT}"));
        let meta = SegmentMeta {
            tracer_version: env!("CARGO_PKG_VERSION").to_owned(),
            host: self.host.clone(),
            seq,
            created_wall_ns: wall_ns,
            created_boot_ns: host::boot_ns(),
        };
        let mut bytes = format::encode_preamble().to_vec();
        let meta_json = serde_json::to_vec(&meta).map_err(io::Error::other)?;
        bytes.extend(format::encode_block(
            BlockType::Meta,
            &meta_json,
            0,
            0,
            0,
            None,
        ));
        self.encode_snapshot(&mut bytes);
        self.enforce_retention(bytes.len() as u64);
        loop {
            let r = self.storage.create(&path).and_then(|()| {
                self.storage.append(&bytes).inspect_err(|_| {
                    self.storage.close();
                    let _ = self.storage.remove(&path);
                })
            });
            match r {
                Ok(()) => break,
                // A full disk: our oldest segments make room for the newest.
                Err(e) if is_disk_full(&e) && self.delete_oldest(true) => {}
                Err(e) => return Err(e),
            }
        }
        self.next_seq += 1;
        // The directory entry must survive a power loss as well as the data.
        let _ = self.storage.sync_dir(&self.dir);
        self.current = Some(Current {
            path,
            size: bytes.len() as u64,
            opened: now,
            modified: now,
        });
        self.unsynced_since = Some(Instant::now());
        self.summary.segments_created += 1;
        self.summary.bytes_written += bytes.len() as u64;
        Ok(())
    }

    /// The writer's process table as SNAPSHOT blocks of ProcInfo records.
    fn encode_snapshot(&mut self, out: &mut Vec<u8>) {
        let ts = self.last_ts;
        let mut raw = Vec::new();
        let mut count = 0u32;
        for p in self.procs.snapshot() {
            let Some(rec) = proc_record(p, ts) else {
                continue;
            };
            if !raw.is_empty() && raw.len() + rec.len() > MAX_BLOCK_RAW {
                out.extend(format::encode_block(
                    BlockType::Snapshot,
                    &raw,
                    count,
                    ts,
                    ts,
                    self.compressor.as_mut(),
                ));
                raw.clear();
                count = 0;
            }
            raw.extend_from_slice(&rec);
            count += 1;
        }
        out.extend(format::encode_block(
            BlockType::Snapshot,
            &raw,
            count,
            ts,
            ts,
            self.compressor.as_mut(),
        ));
    }

    /// Deletes the oldest closed segments until `incoming` more bytes fit within `--max-size`,
    /// and those older than `--max-age`.
    fn enforce_retention(&mut self, incoming: u64) {
        let cur = self.current.as_ref().map_or(0, |c| c.size);
        let mut total: u64 = cur + incoming + self.closed.iter().map(|c| c.size).sum::<u64>();
        let now = self.storage.now();
        let max_size = self.max_size();
        while let Some(old) = self.closed.front() {
            let too_old = self
                .limits
                .max_age
                .is_some_and(|a| now.duration_since(old.mtime).unwrap_or_default() > a);
            // Within `--max-size`, the disk's bound keeps the newest closed segment whatever
            // its size (the bound is only an estimate, and can be smaller than a segment): only
            // an append that fails for want of room removes that one.
            let keep = if total > self.limits.max_size {
                usize::from(self.current.is_none())
            } else if self.current.is_none() {
                // Closing needs no room.
                self.closed.len()
            } else {
                1
            };
            if (total <= max_size || self.closed.len() <= keep) && !too_old {
                break;
            }
            total -= old.size;
            self.delete_oldest(self.disk_bound.is_some() && !too_old);
        }
    }
}

/// ENOSPC or EDQUOT.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Segments rotate at a quarter of `--max-age`, so expiry deletes data at most that much
/// after it is due.
fn rotate_age(max_age: Duration) -> Duration {
    (max_age / 4).max(Duration::from_secs(1))
}

/// A ProcInfo record as the collector frames it; a command line too long for one record is cut.
fn proc_record(mut p: event::ProcInfo, ts: u64) -> Option<Vec<u8>> {
    let pid = p.pid;
    let uid = p.uid;
    let comm = Comm::new(&p.comm);
    loop {
        let ev = Event {
            ts_ns: ts,
            cpu: 0,
            tgid: pid,
            tid: pid,
            uid,
            cgroup_id: 0,
            comm,
            body: Body::ProcInfo(Box::new(p.clone())),
        };
        if let Some(r) = event::encode_user_record(&ev) {
            return Some(r);
        }
        if p.cmdline.is_empty() && p.exe.len() < 1024 {
            return None;
        }
        p.cmdline.truncate(p.cmdline.len() / 2);
        p.exe.truncate(1024);
    }
}
