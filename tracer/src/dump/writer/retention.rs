//! The directory's bounds: `--max-size`, `--max-age`, and a full disk, which becomes the size
//! bound (the oldest segments go so that the newest events stay).
use std::io;

use super::Writer;

impl Writer {
    /// The size bound: `--max-size`, or less once the file system has said it is full.
    pub(super) fn max_size(&self) -> u64 {
        self.disk_bound
            .map_or(self.limits.max_size, |b| b.min(self.limits.max_size))
    }

    /// Segments rotate at a quarter of the bound so that, on a full disk, deleting the oldest
    /// one frees room while three quarters of the newest stay.
    pub(super) fn segment_size(&self) -> u64 {
        self.disk_bound.map_or(self.limits.segment_size, |b| {
            (b / 4).max(16 << 10).min(self.limits.segment_size)
        })
    }

    /// Deletes the oldest closed segment, if any.
    pub(super) fn delete_oldest(&mut self, disk_full: bool) -> bool {
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

    /// Deletes the oldest closed segments until `incoming` more bytes fit within `--max-size`,
    /// and those older than `--max-age`.
    pub(super) fn enforce_retention(&mut self, incoming: u64) {
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
pub(super) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
