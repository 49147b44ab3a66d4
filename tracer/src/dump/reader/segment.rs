//! One segment file, read block by block: a look-ahead buffer that can resync on the next
//! sync marker ([`Window`]), the preamble check and the block loop that reports damage and goes
//! on ([`SegReader`]), and the probe that reads a segment's META block to order segments.
use std::{
    collections::VecDeque,
    io::{self, Read},
    path::PathBuf,
    sync::Arc,
};

use super::super::{
    DumpError,
    format::{
        self, BLOCK_HEADER_LEN, BlockHeader, BlockType, DataProblem, FORMAT_VERSION, HeaderProblem,
        PREAMBLE_LEN, PreambleProblem, SYNC, SegmentMeta,
    },
};
use super::DumpWarning;

#[derive(Clone)]
pub(super) enum Origin {
    File(PathBuf),
    Memory(Arc<[u8]>),
}

#[derive(Clone)]
pub(super) struct Source {
    pub(super) origin: Origin,
    pub(super) name: PathBuf,
    pub(super) size: u64,
    pub(super) meta: Option<SegmentMeta>,
    pub(super) tracer_version: String,
}

impl Source {
    pub(super) fn open(&self) -> io::Result<Box<dyn Read>> {
        Ok(match &self.origin {
            Origin::File(p) => Box::new(std::fs::File::open(p)?),
            Origin::Memory(b) => Box::new(io::Cursor::new(b.clone())),
        })
    }
}

/// A read buffer over a stream that can look ahead and skip: all the reader needs to resync.
struct Window {
    src: Box<dyn Read>,
    buf: Vec<u8>,
    start: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

const READ_CHUNK: usize = 64 << 10;

impl Window {
    fn new(src: Box<dyn Read>) -> Window {
        Window {
            src,
            buf: Vec::new(),
            start: 0,
            base: 0,
            eof: false,
        }
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// Makes at least `n` bytes available unless the stream ends first; says whether it did.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.buf.len() - self.start < n && !self.eof {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.base += self.start as u64;
                self.start = 0;
            }
            let old = self.buf.len();
            // Grow step by step: a length in a header is only a claim until the bytes arrive,
            // so a short input never costs a large allocation.
            let want = (n - old).clamp(READ_CHUNK, old.max(1 << 20));
            self.buf.reserve_exact(want);
            self.buf.resize(old + want, 0);
            let got = loop {
                match self.src.read(&mut self.buf[old..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            };
            self.buf.truncate(old + got);
            self.eof = got == 0;
        }
        Ok(self.buf.len() - self.start >= n)
    }

    /// Skips to the next sync marker; false when the stream ends first.
    fn find_sync(&mut self) -> io::Result<bool> {
        loop {
            let a = self.avail();
            if let Some(i) = a.windows(SYNC.len()).position(|w| w == SYNC) {
                self.consume(i);
                return Ok(true);
            }
            let keep = a.len().min(SYNC.len() - 1);
            self.consume(a.len() - keep);
            if !self.fill(keep + 1)? {
                let n = self.avail().len();
                self.consume(n);
                return Ok(false);
            }
        }
    }
}

/// Reading position inside one segment file.
pub(super) struct SegReader {
    w: Window,
    pub(super) name: PathBuf,
    /// Any warning in this segment (its successor then cannot be taken as contiguous).
    pub(super) damaged: bool,
}

fn header_reason(p: HeaderProblem) -> &'static str {
    match p {
        HeaderProblem::NoSync => "no block marker",
        HeaderProblem::Checksum => "header checksum mismatch",
        HeaderProblem::BadLength => "impossible block length",
    }
}

impl SegReader {
    /// Opens a segment and checks its preamble (the caller probed it already, but the file may
    /// have changed since).
    pub(super) fn open(src: &Source) -> Result<SegReader, DumpError> {
        let io_err = |e| DumpError::Io {
            path: src.name.clone(),
            what: "cannot read".into(),
            error: e,
        };
        let mut w = Window::new(src.open().map_err(io_err)?);
        w.fill(PREAMBLE_LEN).map_err(io_err)?;
        let p = format::decode_preamble(w.avail()).map_err(|p| match p {
            PreambleProblem::NotADump => DumpError::NotADump(src.name.clone()),
            PreambleProblem::Short if w.avail().is_empty() => DumpError::Empty(src.name.clone()),
            PreambleProblem::Short => DumpError::Truncated {
                path: src.name.clone(),
                len: w.avail().len() as u64,
            },
        })?;
        if p.version > FORMAT_VERSION {
            return Err(DumpError::NewerVersion {
                path: src.name.clone(),
                version: p.version,
                writer: p.tracer_version,
            });
        }
        w.consume(PREAMBLE_LEN);
        Ok(SegReader {
            w,
            name: src.name.clone(),
            damaged: false,
        })
    }

    /// Bytes the look-ahead buffer holds (for the reader's peak-memory figure).
    pub(super) fn buffer_capacity(&self) -> usize {
        self.w.buf.capacity()
    }

    /// The next intact block, its data in `out` (unless `headers_only`). Damage goes to `warn`.
    pub(super) fn next_block(
        &mut self,
        out: &mut Vec<u8>,
        headers_only: bool,
        dec: &mut zstd::bulk::Decompressor<'static>,
        warn: &mut VecDeque<DumpWarning>,
    ) -> io::Result<Option<(BlockHeader, u64)>> {
        loop {
            if !self.w.fill(1)? {
                return Ok(None);
            }
            let off = self.w.offset();
            if !self.w.fill(BLOCK_HEADER_LEN)? {
                self.truncated(off, warn);
                return Ok(None);
            }
            let h = match BlockHeader::decode(&self.w.avail()[..BLOCK_HEADER_LEN]) {
                Ok(h) => h,
                Err(p) => {
                    self.w.consume(1);
                    let found = self.w.find_sync()?;
                    let skipped = self.w.offset() - off;
                    let mut reason = header_reason(p).to_owned();
                    if !found {
                        reason.push_str("; no intact block after it");
                    }
                    self.corrupt(off, skipped, reason, warn);
                    continue;
                }
            };
            let total = BLOCK_HEADER_LEN + h.stored_len as usize;
            if !self.w.fill(total)? {
                self.truncated(off, warn);
                return Ok(None);
            }
            let r = if headers_only {
                Ok(())
            } else {
                format::decode_block_data(&h, &self.w.avail()[BLOCK_HEADER_LEN..total], out, dec)
            };
            self.w.consume(total);
            match r {
                Ok(()) => return Ok(Some((h, off))),
                Err(p) => {
                    let reason = match p {
                        DataProblem::Checksum => "data checksum mismatch".to_owned(),
                        DataProblem::UnknownCodec(c) => format!("unknown compression {c}"),
                        DataProblem::Decompress(e) => format!("cannot decompress: {e}"),
                    };
                    self.corrupt(off, total as u64, reason, warn);
                }
            }
        }
    }

    fn truncated(&mut self, offset: u64, warn: &mut VecDeque<DumpWarning>) {
        let bytes = self.w.avail().len() as u64;
        self.w.consume(bytes as usize);
        self.damaged = true;
        warn.push_back(DumpWarning::Truncated {
            file: self.name.clone(),
            offset,
            bytes,
        });
    }

    fn corrupt(
        &mut self,
        offset: u64,
        skipped: u64,
        reason: String,
        warn: &mut VecDeque<DumpWarning>,
    ) {
        self.damaged = true;
        warn.push_back(DumpWarning::Corrupt {
            file: self.name.clone(),
            offset,
            skipped,
            reason,
        });
    }
}

/// Reads the preamble and META block of a segment, to sort segments and fail early on files
/// that are not dumps.
pub(super) fn probe(origin: Origin, name: PathBuf, size: u64) -> Result<Source, DumpError> {
    let mut src = Source {
        origin,
        name,
        size,
        meta: None,
        tracer_version: String::new(),
    };
    let mut seg = SegReader::open(&src)?;
    let mut dec = decompressor()?;
    let mut out = Vec::new();
    let mut ignore = VecDeque::new();
    let first = seg
        .next_block(&mut out, false, &mut dec, &mut ignore)
        .map_err(|e| DumpError::Io {
            path: src.name.clone(),
            what: "cannot read".into(),
            error: e,
        })?;
    if let Some((h, _)) = first
        && h.block_type == BlockType::Meta
    {
        src.meta = serde_json::from_slice(&out).ok();
    }
    src.tracer_version = src
        .meta
        .as_ref()
        .map(|m| m.tracer_version.clone())
        .unwrap_or_default();
    Ok(src)
}

pub(super) fn decompressor() -> Result<zstd::bulk::Decompressor<'static>, DumpError> {
    zstd::bulk::Decompressor::new().map_err(|e| DumpError::Io {
        path: PathBuf::new(),
        what: "cannot set up decompression".into(),
        error: e,
    })
}
