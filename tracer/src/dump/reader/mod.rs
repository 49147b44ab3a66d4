//! Reading dumps: [`DumpReader`] walks one or more segment files (or directories of them) in
//! time order and yields each segment's start, its process snapshot, and the raw records,
//! which `event::decode` then turns into events.
//!
//! Damage is reported and survived: a block whose checksums fail is skipped and reading
//! resumes at the next sync marker; an incomplete last block (the recorder was killed, or the
//! host lost power) ends the segment with a warning. Only input that is not a dump at all, or
//! from a newer format, is an error. No length read from the input is trusted before its
//! checksum passes and it is under the caps in `format`, so memory stays bounded whatever the
//! input.
use std::{
    collections::VecDeque,
    fmt,
    path::{Path, PathBuf},
};

use super::{
    DumpError, SEGMENT_EXT,
    format::{self, BlockType, Gap, SegmentMeta},
};
use crate::host::HostInfo;

mod segment;

use segment::{Origin, SegReader, Source, decompressor, probe};

/// Something wrong in a dump that reading survives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DumpWarning {
    /// The file ends inside a block: the recorder stopped while writing it.
    Truncated {
        file: PathBuf,
        offset: u64,
        bytes: u64,
    },
    /// Bytes that are not a valid block, skipped up to the next one.
    Corrupt {
        file: PathBuf,
        offset: u64,
        skipped: u64,
        reason: String,
    },
    /// A block whose checksum passed but whose records do not frame (a writer bug).
    BadRecords { file: PathBuf, offset: u64 },
    /// A whole segment file left out.
    SkippedFile { file: PathBuf, reason: String },
}

impl fmt::Display for DumpWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DumpWarning::Truncated {
                file,
                offset,
                bytes,
            } => write!(
                f,
                "{}: truncated at byte {offset}: the last {bytes} bytes are an incomplete block \
                 (the recorder stopped while writing); everything before them was read",
                file.display()
            ),
            DumpWarning::Corrupt {
                file,
                offset,
                skipped,
                reason,
            } => write!(
                f,
                "{}: corrupted block at byte {offset} ({reason}): skipped {skipped} bytes, reading \
                 resumed after them",
                file.display()
            ),
            DumpWarning::BadRecords { file, offset } => write!(
                f,
                "{}: block at byte {offset} holds malformed records; the rest of the block was skipped",
                file.display()
            ),
            DumpWarning::SkippedFile { file, reason } => {
                write!(f, "{}: skipped: {reason}", file.display())
            }
        }
    }
}

/// One segment as the reader sees it.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub size: u64,
    /// None when the META block is damaged; `host` then comes from the previous segment.
    pub meta: Option<SegmentMeta>,
    pub host: HostInfo,
    pub tracer_version: String,
    /// This segment directly follows the previous one read (same recorder run, same boot, next
    /// sequence number, nothing lost in between): its snapshot repeats what the reader of the
    /// previous segment already knows.
    pub continues: bool,
}

/// What [`DumpReader::next_item`] yields.
#[derive(Debug)]
pub enum Item<'a> {
    /// A new segment starts; snapshot records and records that follow belong to it.
    Segment(&'a SegmentInfo),
    /// A ProcInfo record (kind 200) of the segment's starting snapshot.
    Snapshot(&'a [u8]),
    /// A record, as the kernel or the collector framed it.
    Record(&'a [u8]),
    /// Records the recorder received but could not store here.
    Gap(Gap),
    Warning(DumpWarning),
}

/// Totals over what was read so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub segments: u64,
    /// Size of the segment files read.
    pub bytes: u64,
    pub records: u64,
    pub snapshot_records: u64,
    pub blocks: u64,
    pub corrupt_blocks: u64,
    pub truncated: u64,
    /// Records lost by the recorder (GAP blocks).
    pub recorder_lost: u64,
    /// Smallest and largest record timestamps, as wall-clock ns.
    pub first_wall_ns: Option<i64>,
    pub last_wall_ns: Option<i64>,
}

/// Empty and cut-short files are skipped with a warning when other segments remain (the last
/// segment of a killed recorder may be one); anything else that is not a dump is an error.
fn skippable(e: &DumpError) -> bool {
    matches!(e, DumpError::Empty(_) | DumpError::Truncated { .. })
}

/// Reads dumps. See the module documentation.
pub struct DumpReader {
    sources: Vec<Source>,
    next_source: usize,
    seg: Option<SegReader>,
    info: Option<SegmentInfo>,
    /// Whether the previous segment ended without damage, and its meta.
    prev: Option<(bool, Option<SegmentMeta>, HostInfo)>,
    warnings: VecDeque<DumpWarning>,
    block: Vec<u8>,
    block_type: BlockType,
    block_off: u64,
    pos: usize,
    headers_only: bool,
    dec: zstd::bulk::Decompressor<'static>,
    stats: ReadStats,
    peak_buffer: usize,
}

enum Step {
    Segment,
    Record(usize, usize, bool),
    Gap(Gap),
    Warning(DumpWarning),
    End,
}

impl DumpReader {
    /// Opens segment files and directories of them (`*.tdump` inside), ordered by the time each
    /// segment was created.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<DumpReader, DumpError> {
        let mut sources = Vec::new();
        let mut warnings = VecDeque::new();
        let mut first_skip = None;
        for p in paths {
            let p = p.as_ref();
            let md = std::fs::metadata(p).map_err(|e| DumpError::Io {
                path: p.to_owned(),
                what: "cannot open".into(),
                error: e,
            })?;
            let files = if md.is_dir() {
                let mut v = Vec::new();
                let rd = std::fs::read_dir(p).map_err(|e| DumpError::Io {
                    path: p.to_owned(),
                    what: "cannot list".into(),
                    error: e,
                })?;
                for e in rd.flatten() {
                    let f = e.path();
                    if f.extension().and_then(|x| x.to_str()) == Some(SEGMENT_EXT)
                        && e.metadata().is_ok_and(|m| m.is_file())
                    {
                        v.push(f);
                    }
                }
                if v.is_empty() {
                    return Err(DumpError::NoSegments(p.to_owned()));
                }
                v.sort();
                v
            } else {
                vec![p.to_owned()]
            };
            for f in files {
                let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                match probe(Origin::File(f.clone()), f.clone(), size) {
                    Ok(s) => sources.push(s),
                    Err(e) if skippable(&e) => {
                        warnings.push_back(DumpWarning::SkippedFile {
                            file: f,
                            reason: e.to_string(),
                        });
                        first_skip.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if sources.is_empty()
            && let Some(e) = first_skip
        {
            return Err(e);
        }
        DumpReader::from_sources(sources, warnings)
    }

    /// Reads one segment held in memory (tests, fuzzing).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<DumpReader, DumpError> {
        let size = bytes.len() as u64;
        let s = probe(Origin::Memory(bytes.into()), PathBuf::from(name), size)?;
        DumpReader::from_sources(vec![s], VecDeque::new())
    }

    fn from_sources(
        mut sources: Vec<Source>,
        warnings: VecDeque<DumpWarning>,
    ) -> Result<DumpReader, DumpError> {
        // Creation time orders segments across recorder runs and reboots; a segment without a
        // readable META goes where its name puts it among its neighbours.
        sources.sort_by(|a, b| {
            let ka = a.meta.as_ref().map(|m| (m.created_wall_ns, m.seq));
            let kb = b.meta.as_ref().map(|m| (m.created_wall_ns, m.seq));
            match (ka, kb) {
                (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.name.cmp(&b.name)),
                _ => a.name.cmp(&b.name),
            }
        });
        Ok(DumpReader {
            sources,
            next_source: 0,
            seg: None,
            info: None,
            prev: None,
            warnings,
            block: Vec::new(),
            block_type: BlockType::Records,
            block_off: 0,
            pos: 0,
            headers_only: false,
            dec: decompressor()?,
            stats: ReadStats::default(),
            peak_buffer: 0,
        })
    }

    /// Segments, in the order they will be read.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.sources.iter().map(|s| s.name.clone()).collect()
    }

    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// The largest amount of buffer memory the reader has held (for the allocation bound tests).
    pub fn peak_buffer(&self) -> usize {
        self.peak_buffer
    }

    /// The next item; `Ok(None)` at the end of the last segment. Errors are for files that
    /// cannot be read at all, or are not dumps.
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, DumpError> {
        let step = self.step()?;
        Ok(match step {
            Step::End => None,
            Step::Segment => self.info.as_ref().map(Item::Segment),
            Step::Record(a, b, snap) => {
                let r = &self.block[a..b];
                Some(if snap {
                    Item::Snapshot(r)
                } else {
                    Item::Record(r)
                })
            }
            Step::Gap(g) => Some(Item::Gap(g)),
            Step::Warning(w) => Some(Item::Warning(w)),
        })
    }

    fn step(&mut self) -> Result<Step, DumpError> {
        loop {
            if let Some(w) = self.warnings.pop_front() {
                match &w {
                    DumpWarning::Corrupt { .. } => self.stats.corrupt_blocks += 1,
                    DumpWarning::Truncated { .. } => self.stats.truncated += 1,
                    _ => {}
                }
                return Ok(Step::Warning(w));
            }
            if self.pos < self.block.len() {
                let a = self.pos;
                match format::record_len(&self.block[a..]) {
                    Some(n) => {
                        self.pos += n;
                        let snap = self.block_type == BlockType::Snapshot;
                        if snap {
                            self.stats.snapshot_records += 1;
                        } else {
                            self.stats.records += 1;
                        }
                        return Ok(Step::Record(a, a + n, snap));
                    }
                    None => {
                        self.pos = self.block.len();
                        if let Some(s) = &mut self.seg {
                            s.damaged = true;
                        }
                        let file = self
                            .info
                            .as_ref()
                            .map(|i| i.path.clone())
                            .unwrap_or_default();
                        self.warnings.push_back(DumpWarning::BadRecords {
                            file,
                            offset: self.block_off,
                        });
                        continue;
                    }
                }
            }
            let Some(seg) = &mut self.seg else {
                match self.start_next_segment()? {
                    Some(true) => return Ok(Step::Segment),
                    Some(false) => continue,
                    None => return Ok(Step::End),
                }
            };
            let name = seg.name.clone();
            let next = seg
                .next_block(
                    &mut self.block,
                    self.headers_only,
                    &mut self.dec,
                    &mut self.warnings,
                )
                .map_err(|e| DumpError::Io {
                    path: name,
                    what: "cannot read".into(),
                    error: e,
                })?;
            self.peak_buffer = self
                .peak_buffer
                .max(seg.buffer_capacity() + self.block.capacity());
            let Some((h, off)) = next else {
                let damaged = seg.damaged;
                self.seg = None;
                if let Some(i) = self.info.take() {
                    self.prev = Some((!damaged, i.meta, i.host));
                }
                continue;
            };
            self.stats.blocks += 1;
            self.block_off = off;
            self.block_type = h.block_type;
            self.pos = self.block.len();
            match h.block_type {
                BlockType::Records | BlockType::Snapshot => {
                    if h.block_type == BlockType::Records && h.count > 0 {
                        self.note_span(h.first_ts, h.last_ts);
                    }
                    if self.headers_only {
                        self.block.clear();
                    }
                    self.pos = 0;
                }
                BlockType::Gap => {
                    let g: Gap = serde_json::from_slice(&self.block).unwrap_or_default();
                    self.stats.recorder_lost += g.lost;
                    if let Some(s) = &mut self.seg {
                        s.damaged = true;
                    }
                    return Ok(Step::Gap(g));
                }
                // Already read by `probe`; later ones and unknown types are skipped.
                BlockType::Meta | BlockType::Unknown(_) => {}
            }
        }
    }

    fn note_span(&mut self, first_ts: u64, last_ts: u64) {
        let Some(info) = &self.info else { return };
        let a = info.host.wall_ns(first_ts);
        let b = info.host.wall_ns(last_ts);
        self.stats.first_wall_ns = Some(self.stats.first_wall_ns.map_or(a, |x| x.min(a)));
        self.stats.last_wall_ns = Some(self.stats.last_wall_ns.map_or(b, |x| x.max(b)));
    }

    /// Opens the next segment: Some(true) when it started, Some(false) when it was skipped
    /// (a warning says why), None after the last one.
    fn start_next_segment(&mut self) -> Result<Option<bool>, DumpError> {
        let Some(src) = self.sources.get(self.next_source).cloned() else {
            return Ok(None);
        };
        self.next_source += 1;
        let seg = match SegReader::open(&src) {
            Ok(s) => s,
            // Deleted or cut since it was probed: a recorder is still writing here.
            Err(e @ (DumpError::Io { .. } | DumpError::Empty(_) | DumpError::Truncated { .. })) => {
                self.warnings.push_back(DumpWarning::SkippedFile {
                    file: src.name,
                    reason: e.to_string(),
                });
                self.prev = None;
                return Ok(Some(false));
            }
            Err(e) => return Err(e),
        };
        let prev_host = self.prev.as_ref().map(|p| p.2.clone());
        let host = src
            .meta
            .as_ref()
            .map(|m| m.host.clone())
            .or(prev_host)
            .unwrap_or_default();
        let continues = match (&self.prev, &src.meta) {
            (Some((true, Some(pm), _)), Some(m)) => {
                pm.host.boot_id == m.host.boot_id && m.seq == pm.seq + 1
            }
            _ => false,
        };
        self.stats.segments += 1;
        self.stats.bytes += src.size;
        self.info = Some(SegmentInfo {
            path: src.name.clone(),
            size: src.size,
            meta: src.meta.clone(),
            host,
            tracer_version: src.tracer_version.clone(),
            continues,
        });
        self.seg = Some(seg);
        self.block.clear();
        self.pos = 0;
        Ok(Some(true))
    }
}

/// The wall-clock span (ns since the epoch) of the records in `paths`, from block headers
/// only, without decompressing: for `--since -10m` and friends.
pub fn wall_span<P: AsRef<Path>>(paths: &[P]) -> Result<Option<(i64, i64)>, DumpError> {
    let mut r = DumpReader::open(paths)?;
    r.headers_only = true;
    while r.step().map(|s| !matches!(s, Step::End))? {}
    Ok(r.stats.first_wall_ns.zip(r.stats.last_wall_ns))
}
