//! The flight recorder: [`Recorder`] is a pipeline sink that hands raw records to a writer
//! thread, which compresses them into blocks, writes rotating segment files and keeps the
//! directory within its size and age bounds.
//!
//! The event path only appends bytes to a queue under a mutex that the writer holds for a
//! pointer swap at most: it never waits on the disk. The queue is bounded in bytes; when the
//! writer falls that far behind, records are dropped and counted, and the count is written into
//! the dump as a gap record (kind 203; dumps of older versions have GAP blocks instead). A
//! mutex-guarded queue rather than a channel of batches because the writer must be able to take
//! a half-filled batch on its own timer: on a host that hangs, no further event comes along to
//! push the last ones out, and those are the ones that matter.
//!
//! The writer keeps its own process table, fed by the records it writes, so it can start a new
//! segment (with a snapshot of that table) at any block boundary without asking the event path.
//!
//! Here: the [`Recorder`] (the sink and the queue) and its summary. [`storage`]: the file system
//! behind a trait; [`segment`]: the writer thread, blocks, rotation and recovery; [`retention`]:
//! the size and age bounds, and a full disk as a size bound (the oldest segments go, the newest
//! events stay); [`snapshot`]: the process snapshot that opens each segment.
use std::{
    collections::VecDeque,
    io,
    path::PathBuf,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    DumpError, RecordOptions,
    format::{self, MAX_BLOCK_RAW},
};
use crate::{
    event::Event,
    host::HostInfo,
    pipeline::{Ctx, Sink},
    proc_table::ProcTable,
};

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

mod retention;
mod segment;
mod snapshot;
mod storage;

use self::segment::{Closed, Writer};
pub use self::{
    segment::{Limits, segment_seq},
    storage::{DiskStorage, Storage},
};
