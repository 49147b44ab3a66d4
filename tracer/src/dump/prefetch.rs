//! A [`DumpReader`] on its own thread: reading and zstd decompression of the segments overlap
//! with decoding, the analyses and printing on the caller's thread. Records cross in batches
//! (one allocation per batch, not per record) through a bounded queue, so memory stays bounded
//! whatever the dump's size: at most [`QUEUE`] batches of about [`BATCH_BYTES`] are in flight.
use std::{
    path::PathBuf,
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    thread::JoinHandle,
};

use super::{
    DumpError, DumpReader, DumpWarning, Item, ReadStats, SegmentInfo,
    format::{Gap, record_len},
};

/// Batches queued between the threads.
const QUEUE: usize = 4;
/// A batch is sent once it holds this many bytes of records.
const BATCH_BYTES: usize = 64 << 10;

/// What the reader thread hands over, in the dump's order.
enum Chunk {
    Segment(Box<SegmentInfo>),
    /// Whole records back to back (each `record_len` long), all snapshot records or none.
    Records {
        bytes: Vec<u8>,
        snapshot: bool,
    },
    Gap(Gap),
    Warning(DumpWarning),
}

/// Reads a dump ahead on a thread; yields the same items as [`DumpReader::next_item`].
pub struct Prefetch {
    rx: Option<Receiver<Result<Chunk, DumpError>>>,
    thread: Option<JoinHandle<ReadStats>>,
    cur: Option<Chunk>,
    pos: usize,
    stats: ReadStats,
}

impl Prefetch {
    /// Opens `paths` (on the thread: an error that stops [`DumpReader::open`] is the first
    /// thing [`Prefetch::next_item`] returns).
    pub fn open(paths: &[PathBuf]) -> Prefetch {
        let paths = paths.to_vec();
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("dump-reader".into())
            .spawn(move || read_ahead(&paths, &tx));
        match thread {
            Ok(t) => Prefetch {
                rx: Some(rx),
                thread: Some(t),
                cur: None,
                pos: 0,
                stats: ReadStats::default(),
            },
            Err(e) => {
                // No thread: report it as the reader's own I/O error would be.
                let (tx, rx) = sync_channel(1);
                let _ = tx.send(Err(DumpError::Io {
                    path: PathBuf::from("dump"),
                    what: "cannot start the reader thread".into(),
                    error: e,
                }));
                Prefetch {
                    rx: Some(rx),
                    thread: None,
                    cur: None,
                    pos: 0,
                    stats: ReadStats::default(),
                }
            }
        }
    }

    /// The next item; `Ok(None)` at the end.
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, DumpError> {
        loop {
            if let Some(Chunk::Records { bytes, .. }) = &self.cur
                && self.pos < bytes.len()
            {
                break;
            }
            let Some(rx) = &self.rx else { return Ok(None) };
            let Ok(next) = rx.recv() else {
                // The thread is done (or died: `stats` says what it read).
                self.rx = None;
                return Ok(None);
            };
            self.cur = Some(next?);
            self.pos = 0;
            if !matches!(self.cur, Some(Chunk::Records { .. })) {
                break;
            }
        }
        Ok(match self.cur.take() {
            None => None,
            Some(Chunk::Segment(info)) => {
                self.cur = Some(Chunk::Segment(info));
                match &self.cur {
                    Some(Chunk::Segment(info)) => Some(Item::Segment(info)),
                    _ => None,
                }
            }
            Some(Chunk::Gap(g)) => Some(Item::Gap(g)),
            Some(Chunk::Warning(w)) => Some(Item::Warning(w)),
            Some(c @ Chunk::Records { .. }) => {
                self.cur = Some(c);
                let Some(Chunk::Records { bytes, snapshot }) = &self.cur else {
                    return Ok(None);
                };
                let a = self.pos;
                // The thread put whole records in; a short one cannot happen, but ends the batch.
                let n = record_len(&bytes[a..]).unwrap_or(bytes.len() - a);
                self.pos += n;
                let r = &bytes[a..a + n];
                Some(if *snapshot {
                    Item::Snapshot(r)
                } else {
                    Item::Record(r)
                })
            }
        })
    }

    /// Totals over what was read: stops the thread if the caller stopped early.
    pub fn stats(&mut self) -> ReadStats {
        self.rx = None;
        if let Some(t) = self.thread.take()
            && let Ok(s) = t.join()
        {
            self.stats = s;
        }
        self.stats.clone()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        let _ = self.stats();
    }
}

/// The thread: reads `paths` to the end (or until the receiver is gone), batching records.
fn read_ahead(paths: &[PathBuf], tx: &SyncSender<Result<Chunk, DumpError>>) -> ReadStats {
    let mut reader = match DumpReader::open(paths) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(e));
            return ReadStats::default();
        }
    };
    let mut batch: Vec<u8> = Vec::new();
    let mut batch_snapshot = false;
    let flush = |batch: &mut Vec<u8>, snapshot: bool| -> bool {
        if batch.is_empty() {
            return true;
        }
        let bytes = std::mem::replace(batch, Vec::with_capacity(BATCH_BYTES + 512));
        tx.send(Ok(Chunk::Records { bytes, snapshot })).is_ok()
    };
    loop {
        let chunk = match reader.next_item() {
            Ok(None) => break,
            Ok(Some(item @ (Item::Record(_) | Item::Snapshot(_)))) => {
                let (r, snap) = match item {
                    Item::Snapshot(r) => (r, true),
                    Item::Record(r) => (r, false),
                    _ => continue,
                };
                if snap != batch_snapshot && !flush(&mut batch, batch_snapshot) {
                    break;
                }
                batch_snapshot = snap;
                batch.extend_from_slice(r);
                if batch.len() >= BATCH_BYTES && !flush(&mut batch, batch_snapshot) {
                    break;
                }
                continue;
            }
            Ok(Some(Item::Segment(info))) => Ok(Chunk::Segment(Box::new(info.clone()))),
            Ok(Some(Item::Gap(g))) => Ok(Chunk::Gap(g)),
            Ok(Some(Item::Warning(w))) => Ok(Chunk::Warning(w)),
            Err(e) => Err(e),
        };
        let stop = chunk.is_err();
        if !flush(&mut batch, batch_snapshot) || tx.send(chunk).is_err() || stop {
            return reader.stats().clone();
        }
    }
    let _ = flush(&mut batch, batch_snapshot);
    reader.stats().clone()
}
