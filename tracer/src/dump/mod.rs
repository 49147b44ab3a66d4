//! Dumps: the flight recorder ([`Recorder`], a pipeline sink), the reader ([`DumpReader`]) and
//! the commands built on them (`replay`, `export`). The file format is specified in
//! `docs/dump-format.md` and implemented in [`format`].
//!
//! A dump is a directory of segment files (`*.tdump`). Each segment starts with the host facts
//! and a snapshot of the process table, so deleting old segments (the recorder does, to stay
//! within `--max-size` and `--max-age`) leaves the newer ones replayable on their own.
use std::{io, path::PathBuf, time::Duration};

use clap::Args;
use thiserror::Error;

pub mod cmd;
pub mod format;
pub mod prefetch;
pub mod reader;
pub mod writer;

/// Synthetic dumps for the dump tests (only they use it).
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use reader::{DumpReader, DumpWarning, Item, ReadStats, SegmentInfo};
pub use writer::{DiskStorage, Limits, RecordSummary, Recorder, Storage, Tuning};

/// File name extension of segment files.
pub const SEGMENT_EXT: &str = "tdump";

const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// The smallest segment worth a file (and the block size floor).
const MIN_SEGMENT_SIZE: u64 = 64 << 10;

#[derive(Debug, Error)]
pub enum DumpError {
    #[error("{what} {}: {error}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        error: io::Error,
    },
    #[error("{} is not a tracer dump (it does not start with the dump signature)", .0.display())]
    NotADump(PathBuf),
    #[error(
        "{} is empty, not a tracer dump (a recorder stopped right after creating a segment \
         leaves such a file)",
        .0.display()
    )]
    Empty(PathBuf),
    #[error("{} ends after {len} bytes, inside its preamble: nothing to replay", path.display())]
    Truncated { path: PathBuf, len: u64 },
    #[error(
        "{} was written by tracer {writer} in dump format {version}; this tracer ({}) reads \
         format {} and older: use a newer tracer to read it",
        path.display(),
        env!("CARGO_PKG_VERSION"),
        format::FORMAT_VERSION
    )]
    NewerVersion {
        path: PathBuf,
        version: u16,
        writer: String,
    },
    #[error("no dump segments (*.{SEGMENT_EXT}) in {}", .0.display())]
    NoSegments(PathBuf),
    #[error("{0}")]
    InvalidOptions(String),
    #[error("the dump writer thread died; the dump may miss the last events")]
    WriterDied,
}

/// `tracer record` options (flattened into that command).
#[derive(Args, Clone, Debug)]
pub struct RecordOptions {
    /// Directory of dump segments; created (mode 0700) if missing. Segment files are 0600:
    /// they hold command lines.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// Bound on the total size of the segments in DIR; the oldest are deleted first.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = crate::units::parse_size)]
    pub max_size: u64,
    /// Size at which a new segment file is started [default: 64M, at most a quarter of
    /// --max-size].
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub segment_size: Option<u64>,
    /// Delete segments older than this (e.g. 2h, 7d).
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub max_age: Option<Duration>,
    /// Events older than this are on disk (written and fdatasync'ed): what a crash or a power
    /// loss can cost at most.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = crate::units::parse_duration)]
    pub flush_interval: Duration,
    /// Stop recording after this long.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub duration: Option<Duration>,
}

impl RecordOptions {
    /// Options with defaults, writing to `dir` (tests, and callers that build options in code).
    pub fn new(dir: impl Into<PathBuf>) -> RecordOptions {
        RecordOptions {
            output: dir.into(),
            max_size: 1 << 30,
            segment_size: None,
            max_age: None,
            flush_interval: Duration::from_secs(1),
            duration: None,
        }
    }

    /// Checks the options and applies the defaults that depend on others.
    pub fn limits(&self) -> Result<Limits, DumpError> {
        let bad = |m: String| Err(DumpError::InvalidOptions(m));
        let segment_size = match self.segment_size {
            Some(s) => s,
            None => DEFAULT_SEGMENT_SIZE
                .min(self.max_size / 4)
                .max(MIN_SEGMENT_SIZE),
        };
        if segment_size < MIN_SEGMENT_SIZE {
            return bad(format!(
                "--segment-size must be at least {}K",
                MIN_SEGMENT_SIZE >> 10
            ));
        }
        // Room for a full segment while the next one fills.
        if self.max_size < 2 * segment_size {
            return bad(format!(
                "--max-size ({}) must be at least twice the segment size ({segment_size}): \
                 raise --max-size or lower --segment-size",
                self.max_size
            ));
        }
        if self.flush_interval < Duration::from_millis(10) {
            return bad("--flush-interval must be at least 10ms".into());
        }
        if self.max_age.is_some_and(|a| a < Duration::from_secs(1)) {
            return bad("--max-age must be at least 1s".into());
        }
        Ok(Limits {
            max_size: self.max_size,
            segment_size,
            max_age: self.max_age,
            flush_interval: self.flush_interval,
        })
    }
}
