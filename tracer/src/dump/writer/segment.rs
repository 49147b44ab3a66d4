//! The writer thread: takes the queue's chunks, compresses them into blocks, writes and rotates
//! segment files, syncs them, records what it lost as gap records and recovers from write errors.
use std::{
    collections::VecDeque,
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use super::{Chunk, RecordSummary, Shared, Storage, Tuning, retention::is_disk_full};
use crate::{
    dump::{
        SEGMENT_EXT,
        format::{self, BlockType, SegmentMeta},
    },
    event::{self, Body, Event, RecorderGap},
    host::{self, HostInfo},
    proc_table::ProcTable,
};

/// The options, checked and with defaults applied.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_size: u64,
    pub segment_size: u64,
    pub max_age: Option<Duration>,
    pub flush_interval: Duration,
}

pub(super) struct Current {
    pub(super) path: PathBuf,
    pub(super) size: u64,
    pub(super) opened: SystemTime,
    /// Time of the last write: what `--max-age` measures once the segment is closed.
    pub(super) modified: SystemTime,
}

pub(super) struct Closed {
    pub(super) path: PathBuf,
    pub(super) size: u64,
    pub(super) mtime: SystemTime,
}

pub(super) struct Failure {
    pub(super) next_retry: Instant,
}

pub(super) struct Writer {
    pub(super) storage: Box<dyn Storage>,
    pub(super) dir: PathBuf,
    pub(super) limits: Limits,
    pub(super) tuning: Tuning,
    pub(super) host: HostInfo,
    pub(super) shared: Arc<Shared>,
    pub(super) procs: ProcTable,
    pub(super) current: Option<Current>,
    /// Older segments, oldest first.
    pub(super) closed: VecDeque<Closed>,
    pub(super) next_seq: u64,
    /// When the oldest data written but not yet synced arrived.
    pub(super) unsynced_since: Option<Instant>,
    pub(super) failed: Option<Failure>,
    /// Records lost since the last gap record was written, the boot-clock span of those records,
    /// and the run's total.
    pub(super) gap: u64,
    pub(super) gap_span: Option<(u64, u64)>,
    pub(super) lost_total: u64,
    pub(super) gap_reason: String,
    /// Our bytes on disk when the file system said it was full: the size bound from then on.
    pub(super) disk_bound: Option<u64>,
    pub(super) compressor: Option<zstd::bulk::Compressor<'static>>,
    pub(super) summary: RecordSummary,
    /// The summary so far, for metrics while recording.
    pub(super) live: Arc<Mutex<RecordSummary>>,
    /// Latest record timestamp seen, to stamp snapshots.
    pub(super) last_ts: u64,
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
    pub(super) fn run(mut self) -> RecordSummary {
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

    pub(super) fn publish_live(&self) {
        let mut s = self.summary.clone();
        s.segments_on_disk = self.closed.len();
        s.bytes_on_disk = self.closed.iter().map(|c| c.size).sum();
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// Waits until a full block is queued, queued or unsynced data is about to be older than
    /// half the flush interval, a retry or a rotation is due, or the recorder closes.
    pub(super) fn wait_for_work(&mut self) -> (Vec<Chunk>, u64, bool, Option<u64>) {
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
    pub(super) fn next_time_check(&self) -> Option<Duration> {
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

    pub(super) fn write_chunk(&mut self, c: &Chunk) {
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

    pub(super) fn lose_chunk(&mut self, c: &Chunk) {
        self.lose(c.count as u64, "", c.first_ts, c.last_ts);
        self.summary.events_unwritten += c.count as u64;
    }

    /// Feeds the records to the writer's process table (whether or not they could be written:
    /// the next segment's snapshot must reflect them).
    pub(super) fn apply(&mut self, mut buf: &[u8]) {
        while let Some(n) = format::record_len(buf) {
            if let Ok(ev) = event::decode(&buf[..n]) {
                self.procs.apply(&ev);
            }
            buf = &buf[n..];
        }
    }

    pub(super) fn lose(&mut self, n: u64, reason: &str, first_ts: u64, last_ts: u64) {
        self.gap += n;
        self.lost_total += n;
        let (a, b) = self.gap_span.unwrap_or((first_ts, last_ts));
        self.gap_span = Some((a.min(first_ts), b.max(last_ts)));
        if !reason.is_empty() && self.gap_reason.is_empty() {
            self.gap_reason = reason.to_owned();
        }
    }

    pub(super) fn write_gap(&mut self) {
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

    pub(super) fn needs_rotation(&self) -> bool {
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
    pub(super) fn append(&mut self, data: &[u8]) -> bool {
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

    pub(super) fn fail(&mut self, path: &Path, what: &str, e: &io::Error) {
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
    pub(super) fn maintain(&mut self, sync_now: bool, closing: bool) {
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

    pub(super) fn sync(&mut self) {
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

    pub(super) fn rotate(&mut self) {
        self.close_current();
        if let Err(e) = self.open_segment() {
            let dir = self.dir.clone();
            self.fail(&dir, "cannot create a segment file in", &e);
        }
    }

    pub(super) fn open_after_failure(&mut self) {
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

    pub(super) fn close_current(&mut self) {
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
    pub(super) fn open_segment(&mut self) -> io::Result<()> {
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
}

/// Segments rotate at a quarter of `--max-age`, so expiry deletes data at most that much
/// after it is due.
fn rotate_age(max_age: Duration) -> Duration {
    (max_age / 4).max(Duration::from_secs(1))
}
