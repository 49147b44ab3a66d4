//! The bytes of a dump segment, as described in `docs/dump-format.md`: a fixed preamble, then
//! self-delimiting blocks, each behind a sync marker and two checksums so a reader can skip a
//! damaged block and find the next one.
//!
//! The framing's integers are little-endian; records are stored as the kernel wrote them (host
//! byte order, little-endian on every host tracer builds for; see the doc). Nothing here
//! touches files: the writer and the reader both go through these functions, so the layout
//! lives in one place.
use serde::{Deserialize, Serialize};

use crate::host::HostInfo;
use tracer_common::HEADER_LEN;

/// First 8 bytes of every segment. The high first byte and the trailing newline catch 7-bit and
/// newline-translating transfers, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"\x89TRCDMP\n";
/// Bumped only for changes an older reader cannot skip over. New block types, codecs and meta
/// fields do not need a bump: readers skip what they do not know.
pub const FORMAT_VERSION: u16 = 1;
pub const PREAMBLE_LEN: usize = 32;
const VERSION_FIELD_LEN: usize = 16;

/// Starts every block. Arbitrary bytes, chosen to be unlikely in record data and compressed
/// output; the header checksum rules out the rare false match.
pub const SYNC: [u8; 8] = [0xd3, 0x5a, 0x17, 0xb6, 0x42, 0x4b, 0xe9, 0x0c];
pub const BLOCK_HEADER_LEN: usize = 48;

/// No block, stored or raw, is larger than this: a reader refuses bigger lengths before
/// allocating anything. The writer stays far below it (see `MAX_BLOCK_RAW`).
pub const MAX_STORED_LEN: u32 = 16 << 20;
pub const MAX_RAW_LEN: u32 = 16 << 20;
/// The writer's largest block before compression.
pub const MAX_BLOCK_RAW: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockType {
    /// JSON [`SegmentMeta`]; the first block of a segment.
    Meta,
    /// Process records (kind 200) describing the processes alive when the segment started.
    Snapshot,
    /// Records as received: header + payload, back to back.
    Records,
    /// JSON [`Gap`]: records the recorder received but could not store before this point.
    Gap,
    /// A block type from a later version: skipped.
    Unknown(u8),
}

impl BlockType {
    pub fn to_u8(self) -> u8 {
        match self {
            BlockType::Meta => 1,
            BlockType::Snapshot => 2,
            BlockType::Records => 3,
            BlockType::Gap => 4,
            BlockType::Unknown(v) => v,
        }
    }

    pub fn from_u8(v: u8) -> BlockType {
        match v {
            1 => BlockType::Meta,
            2 => BlockType::Snapshot,
            3 => BlockType::Records,
            4 => BlockType::Gap,
            v => BlockType::Unknown(v),
        }
    }
}

pub const CODEC_NONE: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;
/// Level 3 (zstd's default): most of the ratio of higher levels at several times the speed,
/// which matters on a host that is already in trouble.
pub const ZSTD_LEVEL: i32 = 3;

/// The fixed part of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    pub block_type: BlockType,
    pub codec: u8,
    /// Bytes stored after the header.
    pub stored_len: u32,
    /// Bytes after decompression.
    pub raw_len: u32,
    pub count: u32,
    /// Smallest and largest record timestamp in the block (boot-time ns). Records from several
    /// CPUs are not strictly ordered, so these are bounds, not the first and last record.
    pub first_ts: u64,
    pub last_ts: u64,
    pub data_crc: u32,
}

/// Why 48 bytes at some offset are not a valid block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    NoSync,
    Checksum,
    /// Checksum right but lengths beyond the caps or inconsistent: a writer bug or a forgery.
    BadLength,
}

impl BlockHeader {
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut b = [0u8; BLOCK_HEADER_LEN];
        b[0..8].copy_from_slice(&SYNC);
        b[8] = self.block_type.to_u8();
        b[9] = self.codec;
        // b[10..12] reserved, zero.
        b[12..16].copy_from_slice(&self.stored_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.count.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_ts.to_le_bytes());
        b[32..40].copy_from_slice(&self.last_ts.to_le_bytes());
        b[40..44].copy_from_slice(&self.data_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<BlockHeader, HeaderProblem> {
        if b.len() < BLOCK_HEADER_LEN || b[0..8] != SYNC {
            return Err(HeaderProblem::NoSync);
        }
        if crc32fast::hash(&b[..44]) != u32_at(b, 44) {
            return Err(HeaderProblem::Checksum);
        }
        let h = BlockHeader {
            block_type: BlockType::from_u8(b[8]),
            codec: b[9],
            stored_len: u32_at(b, 12),
            raw_len: u32_at(b, 16),
            count: u32_at(b, 20),
            first_ts: u64_at(b, 24),
            last_ts: u64_at(b, 32),
            data_crc: u32_at(b, 40),
        };
        if h.stored_len > MAX_STORED_LEN
            || h.raw_len > MAX_RAW_LEN
            || (h.codec == CODEC_NONE && h.stored_len != h.raw_len)
        {
            return Err(HeaderProblem::BadLength);
        }
        Ok(h)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The fixed start of a segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preamble {
    pub version: u16,
    /// The writing tracer's version, so a "newer format" error can say which tracer to use.
    pub tracer_version: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PreambleProblem {
    /// Fewer bytes than a preamble, all matching the magic so far (a segment cut off right after
    /// it was created).
    Short,
    NotADump,
}

pub fn encode_preamble() -> [u8; PREAMBLE_LEN] {
    let mut b = [0u8; PREAMBLE_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // b[10..16]: flags and reserved, zero.
    let v = env!("CARGO_PKG_VERSION").as_bytes();
    let n = v.len().min(VERSION_FIELD_LEN);
    b[16..16 + n].copy_from_slice(&v[..n]);
    b
}

pub fn decode_preamble(b: &[u8]) -> Result<Preamble, PreambleProblem> {
    let n = b.len().min(MAGIC.len());
    if b[..n] != MAGIC[..n] {
        return Err(PreambleProblem::NotADump);
    }
    if b.len() < PREAMBLE_LEN {
        return Err(PreambleProblem::Short);
    }
    let v = &b[16..16 + VERSION_FIELD_LEN];
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    Ok(Preamble {
        version: u16::from_le_bytes([b[8], b[9]]),
        tracer_version: String::from_utf8_lossy(&v[..end]).into_owned(),
    })
}

/// What a segment says about itself (the META block). Fields are only ever added, with serde
/// defaults, so older dumps keep reading.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub tracer_version: String,
    pub host: HostInfo,
    /// Position in the recorder's sequence of segments (per output directory).
    pub seq: u64,
    /// Wall clock (ns since the epoch) and boot clock when the segment was opened.
    pub created_wall_ns: i64,
    #[serde(default)]
    pub created_boot_ns: u64,
}

/// A GAP block: records lost by the recorder itself (queue full, disk full, write errors), as
/// opposed to records the kernel dropped (those arrive as `Drops` records).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub lost: u64,
    #[serde(default)]
    pub reason: String,
}

/// Builds one block (header and stored bytes) from raw bytes, compressing them when that pays.
pub fn encode_block(
    block_type: BlockType,
    raw: &[u8],
    count: u32,
    first_ts: u64,
    last_ts: u64,
    compressor: Option<&mut zstd::bulk::Compressor<'_>>,
) -> Vec<u8> {
    let compressed = compressor
        .and_then(|c| c.compress(raw).ok())
        .filter(|c| c.len() < raw.len());
    let (codec, stored): (u8, &[u8]) = match &compressed {
        Some(c) => (CODEC_ZSTD, c),
        None => (CODEC_NONE, raw),
    };
    let h = BlockHeader {
        block_type,
        codec,
        stored_len: stored.len() as u32,
        raw_len: raw.len() as u32,
        count,
        first_ts,
        last_ts,
        data_crc: crc32fast::hash(stored),
    };
    let mut out = Vec::with_capacity(BLOCK_HEADER_LEN + stored.len());
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(stored);
    out
}

#[derive(Debug, PartialEq, Eq)]
pub enum DataProblem {
    Checksum,
    UnknownCodec(u8),
    Decompress(String),
}

/// Checks and decompresses a block's stored bytes into `out` (cleared first). `out` never grows
/// beyond the header's `raw_len`, which [`BlockHeader::decode`] capped.
pub fn decode_block_data(
    h: &BlockHeader,
    stored: &[u8],
    out: &mut Vec<u8>,
    decompressor: &mut zstd::bulk::Decompressor<'_>,
) -> Result<(), DataProblem> {
    out.clear();
    if crc32fast::hash(stored) != h.data_crc {
        return Err(DataProblem::Checksum);
    }
    match h.codec {
        CODEC_NONE => out.extend_from_slice(stored),
        CODEC_ZSTD => {
            out.reserve_exact(h.raw_len as usize);
            let n = decompressor
                .decompress_to_buffer(stored, out)
                .map_err(|e| DataProblem::Decompress(e.to_string()))?;
            if n != h.raw_len as usize {
                return Err(DataProblem::Decompress(format!(
                    "{n} bytes after decompression, the header says {}",
                    h.raw_len
                )));
            }
        }
        c => return Err(DataProblem::UnknownCodec(c)),
    }
    Ok(())
}

/// The length of the record at the start of `b` (header + payload), if `b` holds a whole one.
pub fn record_len(b: &[u8]) -> Option<usize> {
    if b.len() < HEADER_LEN {
        return None;
    }
    let payload = u16::from_le_bytes([b[2], b[3]]) as usize;
    let len = HEADER_LEN + payload;
    (len <= b.len()).then_some(len)
}

/// The timestamp of a record (its header's `ts_ns`); `b` must hold a header.
pub fn record_ts(b: &[u8]) -> u64 {
    u64_at(b, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_header_round_trips_and_rejects_damage() {
        let h = BlockHeader {
            block_type: BlockType::Records,
            codec: CODEC_ZSTD,
            stored_len: 10,
            raw_len: 100,
            count: 3,
            first_ts: 5,
            last_ts: 9,
            data_crc: 77,
        };
        let b = h.encode();
        assert_eq!(BlockHeader::decode(&b), Ok(h));
        for i in 0..BLOCK_HEADER_LEN {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(BlockHeader::decode(&d).is_err(), "flip at {i} accepted");
        }
        let big = BlockHeader {
            raw_len: MAX_RAW_LEN + 1,
            ..h
        };
        assert_eq!(
            BlockHeader::decode(&big.encode()),
            Err(HeaderProblem::BadLength)
        );
    }

    #[test]
    fn preamble_round_trips() {
        let p = decode_preamble(&encode_preamble()).unwrap();
        assert_eq!(p.version, FORMAT_VERSION);
        assert_eq!(p.tracer_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(decode_preamble(&MAGIC[..3]), Err(PreambleProblem::Short));
        assert_eq!(decode_preamble(b""), Err(PreambleProblem::Short));
        assert_eq!(
            decode_preamble(b"{\"json\": 1}"),
            Err(PreambleProblem::NotADump)
        );
    }

    #[test]
    fn blocks_compress_and_decode() {
        let raw: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).unwrap();
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        let block = encode_block(BlockType::Records, &raw, 1, 2, 3, Some(&mut c));
        let h = BlockHeader::decode(&block).unwrap();
        assert_eq!(h.codec, CODEC_ZSTD);
        let mut out = Vec::new();
        decode_block_data(&h, &block[BLOCK_HEADER_LEN..], &mut out, &mut d).unwrap();
        assert_eq!(out, raw);
        // Incompressible data is stored as is.
        let block = encode_block(BlockType::Gap, b"{}", 0, 0, 0, Some(&mut c));
        assert_eq!(BlockHeader::decode(&block).unwrap().codec, CODEC_NONE);
    }
}
