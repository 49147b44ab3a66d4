//! Dump tests: round trips through real files, rotation and retention, damage of every kind,
//! disk failures, the size target, and a bounded mutation fuzz of the reader.
use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use super::{
    cmd::{self, DumpFilterArgs, TimeArg},
    format::{self, BLOCK_HEADER_LEN, BlockType, MAX_RAW_LEN, MAX_STORED_LEN, PREAMBLE_LEN},
    testing::{self, Mix, Rng},
    *,
};
use crate::{
    event::{self, Body, Comm, Event, ProcInfo},
    pipeline::{Ctx, Pipeline, Sink},
};

/// A directory under the system temp dir, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "tracer-dump-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.0)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == SEGMENT_EXT))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default, Debug)]
struct ReadBack {
    records: Vec<Vec<u8>>,
    /// Snapshot records per segment, in segment order.
    snapshots: Vec<Vec<Vec<u8>>>,
    segments: Vec<SegmentInfo>,
    warnings: Vec<DumpWarning>,
    gaps: Vec<u64>,
}

fn drain(mut r: DumpReader) -> ReadBack {
    let mut out = ReadBack::default();
    let mut guard = 0u64;
    while let Some(item) = r.next_item().expect("read") {
        guard += 1;
        assert!(guard < 10_000_000, "reader does not end");
        match item {
            Item::Segment(s) => {
                out.segments.push(s.clone());
                out.snapshots.push(Vec::new());
            }
            Item::Snapshot(raw) => out
                .snapshots
                .last_mut()
                .expect("segment first")
                .push(raw.to_vec()),
            Item::Record(raw) => out.records.push(raw.to_vec()),
            Item::Gap(g) => out.gaps.push(g.lost),
            Item::Warning(w) => out.warnings.push(w),
        }
    }
    out
}

fn read_dir(dir: &Path) -> ReadBack {
    drain(DumpReader::open(&[dir]).expect("open dump"))
}

fn quiet(mut r: Recorder) -> Recorder {
    r.set_print_summary(false);
    r
}

fn record_all(rec: &mut Recorder, records: &[Vec<u8>]) {
    for r in records {
        rec.record(r, format::record_ts(r));
    }
}

#[test]
fn round_trip_through_files_is_byte_exact() {
    let dir = TempDir::new("round-trip");
    let records = Mix::new(1).take(20_000);
    let mut rec = quiet(Recorder::new(&RecordOptions::new(dir.path()), testing::host()).unwrap());
    record_all(&mut rec, &records);
    let s = rec.close().unwrap();
    assert_eq!(s.events_written, records.len() as u64);
    assert_eq!(s.events_unwritten + s.events_dropped_queue_full, 0);
    let back = read_dir(dir.path());
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    assert_eq!(back.records.len(), records.len());
    assert!(back.records == records, "records differ");
    for r in &back.records {
        event::decode(r).expect("decodes");
    }
    assert_eq!(back.segments.len(), 1);
    assert_eq!(back.segments[0].host, testing::host());
    assert_eq!(
        back.segments[0].meta.as_ref().unwrap().tracer_version,
        env!("CARGO_PKG_VERSION")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.path()), 0o700);
    for f in dir.segments() {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[test]
fn the_recorder_is_a_sink_and_records_collector_records_too() {
    let dir = TempDir::new("sink");
    let rec = quiet(Recorder::new(&RecordOptions::new(dir.path()), testing::host()).unwrap());
    let summary = rec.summary_handle();
    let mut p = Pipeline::new(testing::host(), crate::filter::Filter::default());
    p.add_sink(Box::new(rec));
    let drops = Event {
        ts_ns: 5,
        cpu: 0,
        tgid: 0,
        tid: 0,
        uid: 0,
        cgroup_id: 0,
        comm: Comm::new("tracer"),
        body: Body::Drops(Box::new(event::Drops {
            per_kind: vec![("mmap".into(), 7)],
        })),
    };
    let raw = event::encode_user_record(&drops).unwrap();
    p.feed(&drops, &raw).unwrap();
    for r in Mix::new(2).take(100) {
        p.feed(&event::decode(&r).unwrap(), &r).unwrap();
    }
    p.finish().unwrap();
    assert_eq!(
        summary.lock().unwrap().as_ref().unwrap().events_written,
        101
    );
    let back = read_dir(dir.path());
    assert_eq!(back.records[0], raw);
}

fn proc_info_record(pid: u32, ppid: u32, comm: &str, ts: u64) -> Vec<u8> {
    event::encode_user_record(&Event {
        ts_ns: ts,
        cpu: 0,
        tgid: pid,
        tid: pid,
        uid: 0,
        cgroup_id: 0,
        comm: Comm::new(comm),
        body: Body::ProcInfo(Box::new(ProcInfo {
            pid,
            ppid,
            comm: comm.into(),
            exe: format!("/usr/bin/{comm}"),
            cmdline: vec![comm.into(), "--serve".into()],
            cgroup: "/system.slice/api.service".into(),
            nofile_limit: Some(1024),
            ..ProcInfo::default()
        })),
    })
    .unwrap()
}

/// Wraps the disk: can fail every write on demand (a full disk), fake the clock, and tracks the
/// total size of the directory after every operation.
#[derive(Clone, Default)]
struct Faults {
    fail: Arc<AtomicBool>,
    clock: Arc<Mutex<Option<SystemTime>>>,
    sizes: Arc<Mutex<HashMap<PathBuf, u64>>>,
    max_total: Arc<AtomicU64>,
    /// A file system of this many bytes (0: unbounded): a write past it takes what fits and
    /// fails with ENOSPC, as a real one does.
    capacity: Arc<AtomicU64>,
}

struct FaultyStorage {
    inner: DiskStorage,
    f: Faults,
    current: Option<PathBuf>,
}

impl FaultyStorage {
    fn enospc(&self) -> io::Result<()> {
        if self.f.fail.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    fn track(&self) {
        let total: u64 = self.f.sizes.lock().unwrap().values().sum();
        self.f.max_total.fetch_max(total, Ordering::SeqCst);
    }
}

impl Storage for FaultyStorage {
    fn prepare_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.inner.prepare_dir(dir)
    }
    fn list(&mut self, dir: &Path) -> io::Result<Vec<(PathBuf, u64, SystemTime)>> {
        let l = self.inner.list(dir)?;
        for (p, s, _) in &l {
            self.f.sizes.lock().unwrap().insert(p.clone(), *s);
        }
        Ok(l)
    }
    fn create(&mut self, path: &Path) -> io::Result<()> {
        self.enospc()?;
        self.inner.create(path)?;
        self.f.sizes.lock().unwrap().insert(path.to_owned(), 0);
        self.current = Some(path.to_owned());
        Ok(())
    }
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let cap = self.f.capacity.load(Ordering::SeqCst);
        let total: u64 = self.f.sizes.lock().unwrap().values().sum();
        if cap > 0 && total + data.len() as u64 > cap {
            let fits = (cap - total.min(cap)) as usize;
            let _ = self.inner.append(&data[..fits]);
            if let Some(c) = &self.current {
                *self.f.sizes.lock().unwrap().entry(c.clone()).or_default() += fits as u64;
            }
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if self.f.fail.load(Ordering::SeqCst) {
            // A full disk takes part of the write, then refuses.
            let _ = self.inner.append(&data[..data.len() / 2]);
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.append(data)?;
        if let Some(c) = &self.current {
            *self.f.sizes.lock().unwrap().entry(c.clone()).or_default() += data.len() as u64;
        }
        self.track();
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        if let Some(c) = &self.current {
            self.f.sizes.lock().unwrap().insert(c.clone(), len);
        }
        self.inner.truncate(len)
    }
    fn close(&mut self) {
        self.current = None;
        self.inner.close()
    }
    fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.f.sizes.lock().unwrap().remove(path);
        self.inner.remove(path)
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn now(&self) -> SystemTime {
        self.f.clock.lock().unwrap().unwrap_or_else(SystemTime::now)
    }
}

fn faulty_recorder(opts: &RecordOptions, f: &Faults) -> Recorder {
    let storage = FaultyStorage {
        inner: DiskStorage::default(),
        f: f.clone(),
        current: None,
    };
    let tuning = Tuning {
        retry_interval: Duration::from_millis(20),
        ..Tuning::default()
    };
    quiet(Recorder::with_storage(opts, testing::host(), Box::new(storage), tuning).unwrap())
}

#[test]
fn rotation_keeps_the_size_bound_and_the_newest_data() {
    let dir = TempDir::new("rotation");
    let opts = RecordOptions {
        max_size: 256 << 10,
        segment_size: Some(64 << 10),
        ..RecordOptions::new(dir.path())
    };
    let f = Faults::default();
    let mut rec = faulty_recorder(&opts, &f);
    let mut records = vec![proc_info_record(2301, 1, "node", 1)];
    records.extend(Mix::new(3).take(60_000));
    for chunk in records.chunks(2_000) {
        record_all(&mut rec, chunk);
        // Let the writer keep up, as it does at real event rates, so nothing is dropped.
        assert!(rec.flush(Duration::from_secs(30)));
    }
    let s = rec.close().unwrap();
    assert_eq!(s.events_written, records.len() as u64);
    assert!(s.segments_created > 4, "{s:?}");
    assert!(s.segments_deleted > 0, "{s:?}");
    let on_disk: u64 = dir
        .segments()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk <= opts.max_size, "{on_disk} bytes on disk");
    let max_total = f.max_total.load(Ordering::SeqCst);
    assert!(
        max_total <= opts.max_size,
        "the directory reached {max_total} bytes"
    );
    assert_eq!(s.bytes_on_disk, on_disk);

    let back = read_dir(dir.path());
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    // What is left is the newest data, without holes: a suffix of what was recorded.
    assert!(!back.records.is_empty());
    assert!(
        records.ends_with(&back.records),
        "not a suffix of the recording"
    );
    assert!(back.records.len() < records.len());
    // Every segment after the first continues the previous one; the oldest one kept starts
    // with a snapshot that still knows the process described at the very start.
    assert!(!back.segments[0].continues);
    assert!(back.segments[1..].iter().all(|s| s.continues));
    let first_snapshot: Vec<Event> = back.snapshots[0]
        .iter()
        .map(|r| event::decode(r).unwrap())
        .collect();
    let node = first_snapshot.iter().find_map(|e| match &e.body {
        Body::ProcInfo(p) if p.pid == 2301 => Some(p.clone()),
        _ => None,
    });
    let node = node.expect("snapshot knows pid 2301");
    assert_eq!(node.cmdline, vec!["node", "--serve"]);
    assert_eq!(node.cgroup, "/system.slice/api.service");
}

#[test]
fn max_age_deletes_old_segments() {
    let dir = TempDir::new("max-age");
    let opts = RecordOptions {
        max_age: Some(Duration::from_secs(3600)),
        ..RecordOptions::new(dir.path())
    };
    let f = Faults::default();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_400_000);
    *f.clock.lock().unwrap() = Some(t0);
    let mut rec = faulty_recorder(&opts, &f);
    let mut mix = Mix::new(4);
    let old = mix.take(1000);
    record_all(&mut rec, &old);
    assert!(rec.flush(Duration::from_secs(30)));
    let first = dir.segments();
    assert_eq!(first.len(), 1);
    // Two hours later.
    *f.clock.lock().unwrap() = Some(t0 + Duration::from_secs(7200));
    let new = mix.take(1000);
    record_all(&mut rec, &new);
    assert!(rec.flush(Duration::from_secs(30)));
    let s = rec.close().unwrap();
    assert!(
        !first[0].exists(),
        "the two-hour-old segment is still there"
    );
    assert_eq!(s.segments_deleted, 1);
    let back = read_dir(dir.path());
    assert_eq!(back.records, new);
}

#[test]
fn disk_full_is_survived_counted_and_recovered_from() {
    let dir = TempDir::new("disk-full");
    let f = Faults::default();
    let mut rec = faulty_recorder(&RecordOptions::new(dir.path()), &f);
    let mut mix = Mix::new(5);
    let before = mix.take(3000);
    record_all(&mut rec, &before);
    assert!(rec.flush(Duration::from_secs(30)));

    f.fail.store(true, Ordering::SeqCst);
    let during = mix.take(3000);
    record_all(&mut rec, &during);
    rec.flush(Duration::from_secs(30));
    // Still failing at the retry: nothing crashes, more is counted.
    let during2 = mix.take(500);
    record_all(&mut rec, &during2);
    rec.flush(Duration::from_secs(30));

    f.fail.store(false, Ordering::SeqCst);
    let after = mix.take(3000);
    record_all(&mut rec, &after);
    assert!(rec.flush(Duration::from_secs(30)));
    let s = rec.close().unwrap();
    let lost = (during.len() + during2.len()) as u64;
    assert_eq!(s.events_unwritten, lost, "{s:?}");
    assert_eq!(s.events_written, (before.len() + after.len()) as u64);
    assert!(
        s.to_string()
            .contains(&format!("{lost} events NOT recorded")),
        "{s}"
    );

    assert!(
        s.segments_deleted_disk_full >= 1,
        "the oldest segment went to make room: {s:?}"
    );

    let back = read_dir(dir.path());
    assert!(
        back.warnings.is_empty(),
        "the failed write was cut back: {:?}",
        back.warnings
    );
    let (gaps, records) = split_gaps(&back.records);
    // This disk stays full whatever is deleted, so `before` went for nothing: on a real one
    // (next test) deleting makes room.
    assert!(
        records == after,
        "{s}; {} records, {} segments, gaps {gaps:?}, {:?}",
        records.len(),
        back.segments.len(),
        back.warnings
    );
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!((gaps[0].lost, gaps[0].lost_total), (lost, lost));
    let first = format::record_ts(&during[0]);
    let last = format::record_ts(&during2[during2.len() - 1]);
    assert_eq!((gaps[0].first_ns, gaps[0].last_ns), (first, last));
    assert!(
        back.gaps.is_empty(),
        "no GAP blocks any more: {:?}",
        back.gaps
    );
    assert!(
        !back.segments[0].continues,
        "a segment after a gap repeats its snapshot"
    );
}

/// The recorder's gap records, and the other records.
fn split_gaps(records: &[Vec<u8>]) -> (Vec<event::RecorderGap>, Vec<Vec<u8>>) {
    let mut gaps = Vec::new();
    let mut rest = Vec::new();
    for r in records {
        match event::decode(r).map(|e| e.body) {
            Ok(event::Body::RecorderGap(g)) => gaps.push(*g),
            _ => rest.push(r.clone()),
        }
    }
    (gaps, rest)
}

#[test]
fn a_full_disk_is_a_size_bound_that_keeps_the_newest_events() {
    let dir = TempDir::new("disk-bound");
    let f = Faults::default();
    // The default 1 GiB --max-size and 64 MiB segments on a 600 KiB file system.
    f.capacity.store(600 << 10, Ordering::SeqCst);
    let mut rec = faulty_recorder(&RecordOptions::new(dir.path()), &f);
    let records = Mix::new(9).take(150_000);
    for part in records.chunks(2000) {
        record_all(&mut rec, part);
        assert!(rec.flush(Duration::from_secs(30)));
    }
    let s = rec.close().unwrap();
    assert!(s.segments_deleted_disk_full >= 2, "{s}");
    assert!(f.max_total.load(Ordering::SeqCst) <= 600 << 10);
    let back = read_dir(dir.path());
    let (gaps, kept) = split_gaps(&back.records);
    let lost: u64 = gaps.iter().map(|g| g.lost).sum();
    assert_eq!(
        s.events_unwritten, lost,
        "the exit line and the dump agree: {s}"
    );
    assert_eq!(s.events_lost_unnoted, 0, "{s}");
    assert!(
        kept.len() > 10_000,
        "most of the bound holds events: {}",
        kept.len()
    );
    assert_eq!(kept.last(), records.last(), "the newest event is kept: {s}");
    // What is kept is the newest run of records, whole but for the gaps' records.
    let start = records.iter().position(|r| *r == kept[0]).expect("kept");
    assert!(records.len() - start >= kept.len() + lost as usize - 1);
}

/// A segment built block by block, with each block's byte range and record range.
struct Built {
    bytes: Vec<u8>,
    /// (start offset, end offset, records before this block, records in it)
    blocks: Vec<(usize, usize, usize, usize)>,
    records: Vec<Vec<u8>>,
    /// Where the preamble and every block end.
    ends: Vec<usize>,
}

fn build(n: usize, per_block: usize, seed: u64) -> Built {
    let records = Mix::new(seed).take(n);
    let bytes = testing::segment_bytes(&records, per_block);
    let mut blocks = Vec::new();
    let mut pos = PREAMBLE_LEN;
    let mut seen = 0;
    let mut ends = vec![PREAMBLE_LEN];
    while pos < bytes.len() {
        let h = format::BlockHeader::decode(&bytes[pos..]).unwrap();
        let end = pos + BLOCK_HEADER_LEN + h.stored_len as usize;
        if h.block_type == BlockType::Records {
            blocks.push((pos, end, seen, h.count as usize));
            seen += h.count as usize;
        }
        ends.push(end);
        pos = end;
    }
    Built {
        bytes,
        blocks,
        records,
        ends,
    }
}

#[test]
fn a_truncated_tail_keeps_every_complete_block() {
    let b = build(3000, 250, 6);
    let mut cuts: Vec<usize> = (PREAMBLE_LEN..b.bytes.len()).step_by(97).collect();
    for &(start, end, _, _) in &b.blocks {
        cuts.extend([
            start,
            start + 1,
            start + BLOCK_HEADER_LEN - 1,
            start + BLOCK_HEADER_LEN,
            end - 1,
        ]);
    }
    for cut in cuts {
        let back = drain(DumpReader::from_bytes("cut.tdump", b.bytes[..cut].to_vec()).unwrap());
        let complete: usize = b
            .blocks
            .iter()
            .filter(|bl| bl.1 <= cut)
            .map(|bl| bl.3)
            .sum();
        assert_eq!(back.records.len(), complete, "cut at {cut}");
        assert!(back.records[..] == b.records[..complete], "cut at {cut}");
        let at_boundary = b.ends.contains(&cut);
        if at_boundary {
            assert!(
                back.warnings.is_empty(),
                "cut at {cut}: {:?}",
                back.warnings
            );
        } else {
            assert_eq!(back.warnings.len(), 1, "cut at {cut}: {:?}", back.warnings);
            let DumpWarning::Truncated { offset, bytes, .. } = &back.warnings[0] else {
                panic!("cut at {cut}: {:?}", back.warnings)
            };
            assert_eq!(offset + bytes, cut as u64);
            assert!(back.warnings[0].to_string().contains("truncated at byte"));
        }
    }
    // Cut inside the preamble: nothing to read, and said so.
    for cut in [0, 1, 8, PREAMBLE_LEN - 1] {
        let e = DumpReader::from_bytes("cut.tdump", b.bytes[..cut].to_vec())
            .err()
            .expect("error");
        assert!(
            matches!(e, DumpError::Empty(_) | DumpError::Truncated { .. }),
            "{e}"
        );
    }
}

#[test]
fn a_corrupted_block_is_reported_at_its_offset_and_skipped() {
    let b = build(3000, 250, 7);
    let mut rng = Rng(7);
    for (i, &(start, end, before, count)) in b.blocks.iter().enumerate() {
        // One flip in the header, one in the data.
        for at in [
            start + 8 + rng.below(40) as usize,
            start + BLOCK_HEADER_LEN + rng.below((end - start - BLOCK_HEADER_LEN) as u64) as usize,
        ] {
            let mut bytes = b.bytes.clone();
            bytes[at] ^= 0x5a;
            let back = drain(DumpReader::from_bytes("flip.tdump", bytes).unwrap());
            assert_eq!(
                back.warnings.len(),
                1,
                "block {i}, byte {at}: {:?}",
                back.warnings
            );
            let DumpWarning::Corrupt { offset, .. } = &back.warnings[0] else {
                panic!("block {i}: {:?}", back.warnings)
            };
            assert_eq!(*offset, start as u64, "block {i}, byte {at}");
            assert!(
                back.warnings[0]
                    .to_string()
                    .contains(&format!("byte {start}"))
            );
            let mut expect = b.records[..before].to_vec();
            expect.extend_from_slice(&b.records[before + count..]);
            assert!(
                back.records == expect,
                "block {i}, byte {at}: the rest does not replay"
            );
        }
    }
    // A damaged sync marker and a run of zeroes over two blocks.
    let mut bytes = b.bytes.clone();
    let (s1, _, before, _) = b.blocks[3];
    let (_, e2, _, _) = b.blocks[4];
    bytes[s1..e2 - 10].fill(0);
    let back = drain(DumpReader::from_bytes("zeroed.tdump", bytes).unwrap());
    assert_eq!(back.warnings.len(), 1, "{:?}", back.warnings);
    assert_eq!(
        back.records.len(),
        b.records.len() - b.blocks[3].3 - b.blocks[4].3
    );
    assert!(back.records[..before] == b.records[..before]);
}

#[test]
fn replay_of_a_damaged_dump_fails_after_replaying_the_rest() {
    let dir = TempDir::new("damaged");
    std::fs::create_dir_all(dir.path()).unwrap();
    let b = build(2000, 250, 8);
    let mut bytes = b.bytes.clone();
    bytes[b.blocks[2].0 + 100] ^= 1;
    let path = dir.path().join("x.tdump");
    std::fs::write(&path, &bytes).unwrap();
    let seen = Rc::new(RefCell::new(0usize));
    let out = cmd::run(
        std::slice::from_ref(&path),
        &DumpFilterArgs::default(),
        vec![Box::new(Count(seen.clone()))],
    )
    .unwrap();
    assert_eq!(out.read.corrupt_blocks, 1);
    // What a pipeline shows of the records outside the damaged block (SIGCHLD is filtered).
    let (s2, n2) = (b.blocks[2].2, b.blocks[2].3);
    let expect = Rc::new(RefCell::new(0usize));
    let mut p = Pipeline::new(testing::host(), crate::filter::Filter::default());
    p.add_sink(Box::new(Count(expect.clone())));
    for r in b.records[..s2].iter().chain(&b.records[s2 + n2..]) {
        p.feed(&event::decode(r).unwrap(), r).unwrap();
    }
    let expect = *expect.borrow();
    assert_eq!(*seen.borrow(), expect);
    let args = cmd::ExportArgs {
        format: cmd::ExportFormat::Jsonl,
        paths: vec![path],
        output: Some(dir.path().join("out.jsonl")),
        filter: DumpFilterArgs::default(),
    };
    let e = cmd::export(&args).unwrap_err();
    assert!(
        format!("{e:#}").contains("1 corrupted block(s) were skipped"),
        "{e:#}"
    );
    let lines = std::fs::read_to_string(dir.path().join("out.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, expect);
}

use std::{cell::RefCell, rc::Rc};

struct Count(Rc<RefCell<usize>>);

impl Sink for Count {
    fn event(&mut self, ev: &Event, _raw: &[u8], _ctx: &Ctx<'_>) -> anyhow::Result<()> {
        if crate::output::printable(ev) {
            *self.0.borrow_mut() += 1;
        }
        Ok(())
    }
}

/// Collects what the JSON printer would print.
struct Json(Rc<RefCell<Vec<String>>>);

impl Sink for Json {
    fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        if crate::output::printable(ev) {
            self.0
                .borrow_mut()
                .push(crate::output::to_json(ev, ctx).to_string());
        }
        Ok(())
    }
}

#[test]
fn replay_output_is_what_live_printed_and_filters_apply() {
    let dir = TempDir::new("replay");
    let mut records = vec![proc_info_record(2301, 1, "node", 3_600_000_000_000)];
    records.extend(Mix::new(9).take(5000));
    let mut rec = quiet(Recorder::new(&RecordOptions::new(dir.path()), testing::host()).unwrap());
    let live = Rc::new(RefCell::new(Vec::new()));
    let mut p = Pipeline::new(testing::host(), crate::filter::Filter::default());
    p.add_sink(Box::new(Json(live.clone())));
    for r in &records {
        p.feed(&event::decode(r).unwrap(), r).unwrap();
        rec.record(r, format::record_ts(r));
    }
    rec.close().unwrap();
    let replayed = Rc::new(RefCell::new(Vec::new()));
    let paths = [dir.path().to_owned()];
    cmd::run(
        &paths,
        &DumpFilterArgs::default(),
        vec![Box::new(Json(replayed.clone()))],
    )
    .unwrap();
    assert_eq!(*live.borrow(), *replayed.borrow());
    assert!(replayed.borrow()[0].contains("\"ppid\""));

    // --pid, --events, --since/--until relative to the dump.
    let only = Rc::new(RefCell::new(Vec::new()));
    let args = DumpFilterArgs {
        pids: vec![2301],
        events: Some("memory".into()),
        since: Some("+200ms".into()),
        until: Some("-200ms".into()),
        ..DumpFilterArgs::default()
    };
    cmd::run(&paths, &args, vec![Box::new(Json(only.clone()))]).unwrap();
    let only = only.borrow();
    assert!(!only.is_empty());
    let docs: Vec<serde_json::Value> = only
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(docs.iter().all(|d| d["pid"] == 2301));
    assert!(docs.iter().all(|d| ["mmap", "munmap", "brk", "mem_sample"].contains(&d["kind"].as_str().unwrap())));
    let h = testing::host();
    let first = records
        .iter()
        .map(|r| h.wall_ns(format::record_ts(r)))
        .min()
        .unwrap();
    let last = records
        .iter()
        .map(|r| h.wall_ns(format::record_ts(r)))
        .max()
        .unwrap();
    for d in &docs {
        let t = crate::host::parse_rfc3339(d["ts"].as_str().unwrap()).unwrap();
        assert!(t >= first + 200_000_000 && t <= last - 200_000_000);
    }

    // --cgroup by path, learnt from the dump (the snapshot says node is in api.service).
    let by_cgroup = Rc::new(RefCell::new(Vec::new()));
    let args = DumpFilterArgs {
        cgroup: Some("/system.slice/api.service".into()),
        ..DumpFilterArgs::default()
    };
    cmd::run(&paths, &args, vec![Box::new(Json(by_cgroup.clone()))]).unwrap();
    assert!(!by_cgroup.borrow().is_empty());
    let args = DumpFilterArgs {
        cgroup: Some("/nowhere".into()),
        ..DumpFilterArgs::default()
    };
    let e = cmd::run(&paths, &args, vec![]).err().unwrap();
    assert!(
        format!("{e:#}").contains("no process of the dump ran in that cgroup"),
        "{e:#}"
    );
}

#[test]
fn time_arguments_parse_or_say_what_is_expected() {
    assert_eq!(
        cmd::parse_time("+10m").unwrap(),
        TimeArg::AfterStart(Duration::from_secs(600))
    );
    assert_eq!(
        cmd::parse_time("-30s").unwrap(),
        TimeArg::BeforeEnd(Duration::from_secs(30))
    );
    assert_eq!(
        cmd::parse_time("1970-01-01T00:00:01Z").unwrap(),
        TimeArg::Wall(1_000_000_000)
    );
    let e = cmd::parse_time("10m").unwrap_err().to_string();
    assert!(e.contains("ambiguous") && e.contains("+10m"), "{e}");
    let e = cmd::parse_time("yesterday").unwrap_err().to_string();
    assert!(e.contains("RFC 3339"), "{e}");
}

#[test]
fn files_that_are_not_dumps_are_clear_errors() {
    let dir = TempDir::new("garbage");
    std::fs::create_dir_all(dir.path()).unwrap();
    let garbage = dir.path().join("garbage.bin");
    let mut rng = Rng(10);
    std::fs::write(
        &garbage,
        (0..4096).map(|_| rng.next_u64() as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let e = DumpReader::open(&[&garbage]).err().unwrap();
    assert!(matches!(e, DumpError::NotADump(_)), "{e}");
    assert!(e.to_string().contains("is not a tracer dump"), "{e}");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello\n").unwrap();
    assert!(matches!(
        DumpReader::open(&[&text]),
        Err(DumpError::NotADump(_))
    ));

    let empty = dir.path().join("empty.tdump");
    std::fs::write(&empty, b"").unwrap();
    let e = DumpReader::open(&[&empty]).err().unwrap();
    assert!(matches!(e, DumpError::Empty(_)), "{e}");
    assert!(e.to_string().contains("is empty"), "{e}");

    let missing = dir.path().join("missing.tdump");
    let e = DumpReader::open(&[&missing]).err().unwrap();
    assert!(
        e.to_string().starts_with("cannot open") && e.to_string().contains("missing.tdump"),
        "{e}"
    );

    let nothing = dir.path().join("nothing");
    std::fs::create_dir_all(&nothing).unwrap();
    assert!(matches!(
        DumpReader::open(&[&nothing]),
        Err(DumpError::NoSegments(_))
    ));

    // In a directory, an empty last segment (recorder killed right after creating it) is
    // skipped with a warning and the rest reads.
    let b = build(100, 50, 10);
    std::fs::write(dir.path().join("a.tdump"), &b.bytes).unwrap();
    let back = read_dir(dir.path());
    assert_eq!(back.records.len(), 100);
    assert_eq!(back.warnings.len(), 1);
    assert!(matches!(back.warnings[0], DumpWarning::SkippedFile { .. }));
}

#[test]
fn a_newer_format_is_refused_with_the_version_to_use() {
    let mut b = build(10, 10, 11).bytes;
    b[8..10].copy_from_slice(&(format::FORMAT_VERSION + 1).to_le_bytes());
    b[16..32].fill(0);
    b[16..21].copy_from_slice(b"9.1.0");
    let e = DumpReader::from_bytes("new.tdump", b).err().unwrap();
    assert!(
        matches!(e, DumpError::NewerVersion { version: 2, .. }),
        "{e}"
    );
    let m = e.to_string();
    assert!(
        m.contains("tracer 9.1.0") && m.contains("newer tracer"),
        "{m}"
    );
}

#[test]
fn unknown_block_types_from_later_versions_are_skipped() {
    let b = build(500, 100, 12);
    let mut bytes = b.bytes[..b.blocks[2].0].to_vec();
    bytes.extend(format::encode_block(
        BlockType::Unknown(99),
        b"future",
        0,
        0,
        0,
        None,
    ));
    bytes.extend_from_slice(&b.bytes[b.blocks[2].0..]);
    let back = drain(DumpReader::from_bytes("future.tdump", bytes).unwrap());
    assert!(back.warnings.is_empty());
    assert!(back.records == b.records);
}

#[test]
fn options_are_checked_and_defaults_follow_max_size() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: RecordOptions,
    }
    let c = Cli::try_parse_from(["record", "-o", "/tmp/x"]).unwrap();
    let l = c.opts.limits().unwrap();
    assert_eq!(
        (l.max_size, l.segment_size, l.flush_interval),
        (1 << 30, 64 << 20, Duration::from_secs(1))
    );
    let c = Cli::try_parse_from([
        "record",
        "-o",
        "/tmp/x",
        "--max-size",
        "100M",
        "--max-age",
        "7d",
        "--duration",
        "30s",
    ])
    .unwrap();
    assert_eq!(c.opts.limits().unwrap().segment_size, 25 << 20);
    assert_eq!(c.opts.max_age, Some(Duration::from_secs(7 * 86400)));
    assert_eq!(c.opts.duration, Some(Duration::from_secs(30)));
    let c = Cli::try_parse_from([
        "record",
        "-o",
        "x",
        "--max-size",
        "100M",
        "--segment-size",
        "64M",
    ])
    .unwrap();
    let e = c.opts.limits().unwrap_err().to_string();
    assert!(e.contains("--max-size") && e.contains("twice"), "{e}");
    assert!(Cli::try_parse_from(["record", "-o", "x", "--max-size", "lots"]).is_err());
    assert!(Cli::try_parse_from(["record"]).is_err(), "-o is required");
}

/// The size target: at most 32 bytes per event on a realistic mix, both in the large blocks of
/// a busy host and in the small blocks a quiet host flushes every half second.
#[test]
fn bytes_per_event_on_a_realistic_mix() {
    let dir = TempDir::new("size");
    let records = Mix::new(13).take(200_000);
    let raw: usize = records.iter().map(Vec::len).sum();
    let mut rec = quiet(Recorder::new(&RecordOptions::new(dir.path()), testing::host()).unwrap());
    for chunk in records.chunks(20_000) {
        record_all(&mut rec, chunk);
        rec.flush(Duration::from_secs(60));
    }
    let s = rec.close().unwrap();
    assert_eq!(s.events_written, records.len() as u64);
    let big = s.bytes_per_event();
    let small_blocks = testing::segment_bytes(&records, 1000);
    let small = small_blocks.len() as f64 / records.len() as f64;
    eprintln!(
        "bytes/event: raw {:.1}, recorder {big:.1}, blocks of 1000 events {small:.1}",
        raw as f64 / records.len() as f64
    );
    assert!(big <= 32.0, "{big:.1} bytes/event");
    assert!(small <= 32.0, "{small:.1} bytes/event in small blocks");
}

/// Mutated dumps (flips, cut-outs, insertions, duplicated and forged blocks) never panic, never
/// loop, and never make the reader hold more than the block caps allow.
#[test]
fn mutated_dumps_never_panic_and_stay_within_the_memory_bound() {
    let b = build(600, 100, 14);
    let mut rng = Rng(0x5eed);
    let bound = 2 * (MAX_STORED_LEN.max(MAX_RAW_LEN) as usize) + (1 << 20);
    for i in 0..3000 {
        let mut d = b.bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let len = d.len().max(1) as u64;
            match rng.below(6) {
                0 => {
                    let at = rng.below(len) as usize;
                    if at < d.len() {
                        d[at] ^= 1 << rng.below(8);
                    }
                }
                1 => {
                    let at = rng.below(len) as usize;
                    d.truncate(at);
                }
                2 => {
                    let a = rng.below(len) as usize;
                    let n = rng.below(200) as usize;
                    d.drain(a.min(d.len())..(a + n).min(d.len()));
                }
                3 => {
                    let at = rng.below(len) as usize;
                    let junk: Vec<u8> = (0..rng.below(100)).map(|_| rng.next_u64() as u8).collect();
                    d.splice(at.min(d.len())..at.min(d.len()), junk);
                }
                4 => {
                    // A forged header with valid checksums claiming a huge block.
                    let h = format::BlockHeader {
                        block_type: BlockType::Records,
                        codec: format::CODEC_ZSTD,
                        stored_len: rng.below(MAX_STORED_LEN as u64 + 1) as u32,
                        raw_len: rng.below(MAX_RAW_LEN as u64 + 1) as u32,
                        count: rng.next_u64() as u32,
                        first_ts: 0,
                        last_ts: 0,
                        data_crc: 0,
                    };
                    let at = rng.below(len) as usize;
                    d.splice(at.min(d.len())..at.min(d.len()), h.encode());
                }
                _ => {
                    // A copy of a block elsewhere.
                    let (s, e, _, _) = b.blocks[rng.below(b.blocks.len() as u64) as usize];
                    let at = rng.below(len) as usize;
                    let blk = b.bytes[s..e].to_vec();
                    d.splice(at.min(d.len())..at.min(d.len()), blk);
                }
            }
        }
        let Ok(mut r) = DumpReader::from_bytes("fuzz.tdump", d) else {
            continue;
        };
        let mut items = 0u64;
        loop {
            match r.next_item() {
                Ok(Some(Item::Record(raw))) => {
                    let _ = event::decode(raw);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
            items += 1;
            assert!(items < 1_000_000, "iteration {i}: reader does not end");
        }
        assert!(
            r.peak_buffer() <= bound,
            "iteration {i}: {} bytes held",
            r.peak_buffer()
        );
    }
}

#[test]
fn segments_of_several_runs_are_read_in_time_order() {
    let dir = TempDir::new("runs");
    let mut mix = Mix::new(15);
    let first = mix.take(500);
    let second = mix.take(500);
    for part in [&first, &second] {
        let mut rec =
            quiet(Recorder::new(&RecordOptions::new(dir.path()), testing::host()).unwrap());
        record_all(&mut rec, part);
        rec.close().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let segs = dir.segments();
    assert_eq!(segs.len(), 2);
    assert!(segs[0].to_string_lossy().contains("tracer-00000001-"));
    assert!(segs[1].to_string_lossy().contains("tracer-00000002-"));
    // Given in reverse order, read in recording order.
    let back = drain(DumpReader::open(&[&segs[1], &segs[0]]).unwrap());
    assert_eq!(back.records, [first, second].concat());
    assert!(back.segments[1].continues);
}

#[test]
fn a_second_recorder_on_the_same_directory_is_refused() {
    let dir = TempDir::new("lock");
    let _a = quiet(Recorder::new(&RecordOptions::new(dir.path()), testing::host()).unwrap());
    let e = Recorder::new(&RecordOptions::new(dir.path()), testing::host())
        .err()
        .unwrap();
    assert!(e.to_string().contains("another `tracer record`"), "{e}");
}

/// A dump that spans a reboot: pid 3000 leaks sockets in boot 1; in boot 2 the same pid is
/// another, healthy process (it closes every socket it opens). The leak is found once, for
/// boot 1 only, with boot 1's counts and clock; nothing of boot 2 is mixed into it, and the
/// healthy process gets no finding.
#[test]
fn a_reboot_in_a_dump_keeps_the_findings_of_each_boot_apart() {
    use crate::analysis::{Engine, testutil::Stream};
    let minutes = 10u64;
    let mut boot1 = Stream::new();
    boot1.proc_info(3000, 1, "node", |i| i.open_sockets = Some(0));
    for sec in 0..minutes * 60 {
        for k in 0..4 {
            boot1
                .at(sec * 1000 + k * 200)
                .socket_open(3000, "node", 10 + k as i32);
        }
    }
    let mut boot2 = Stream::new();
    boot2.proc_info(3000, 1, "node", |i| i.open_sockets = Some(0));
    for sec in 0..minutes * 60 {
        for k in 0..4 {
            let fd = 10 + k as i32;
            boot2.at(sec * 1000 + k * 200).socket_open(3000, "node", fd);
            boot2
                .at(sec * 1000 + k * 200 + 100)
                .socket_close(3000, "node", fd);
        }
    }
    // Two boots of one host, the second an hour after the first (same boot-time clock values).
    let first = boot1.host.clone();
    let mut second = first.clone();
    second.boot_id = "second-boot".into();
    second.boot_to_wall_ns += 3600 * 1_000_000_000;
    let dir = TempDir::new("two-boots");
    std::fs::create_dir_all(dir.path()).unwrap();
    for (i, (host, records)) in [
        (first.clone(), &boot1.records),
        (second.clone(), &boot2.records),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir
            .path()
            .join(format!("{:04}.{}", i + 1, super::SEGMENT_EXT));
        std::fs::write(
            path,
            testing::segment_bytes_of(host, i as u64 + 1, records, 500),
        )
        .unwrap();
    }
    let (sink, engine) = Engine::new(crate::analysis::AnalysisConfig::default())
        .unwrap()
        .into_shared();
    let out = cmd::run(
        &[dir.path().to_owned()],
        &DumpFilterArgs::default(),
        vec![Box::new(sink)],
    )
    .unwrap();
    assert_eq!(out.decode_errors, 0);
    let e = engine.lock().unwrap();
    let findings: Vec<serde_json::Value> =
        e.findings().iter().map(|f| f.to_json(e.host())).collect();
    let leaks: Vec<_> = findings
        .iter()
        .filter(|f| f["kind"] == "socket_leak")
        .collect();
    assert_eq!(leaks.len(), 1, "{findings:#?}");
    let leak = leaks[0];
    assert_eq!(leak["pid"], 3000);
    assert_eq!(leak["boot_id"], first.boot_id.as_str());
    // Boot 1's count: every socket opened was still open at its end.
    assert_eq!(leak["open_sockets"], minutes * 60 * 4);
    // Boot 1's clock: seen within its ten minutes, not an hour later.
    let last = first.rfc3339(testutil_base_ns() + minutes * 60 * 1_000_000_000);
    assert!(
        leak["last_seen"].as_str().unwrap() <= last.as_str(),
        "{leak:#}"
    );
    // Nothing of boot 2: the healthy process raised nothing.
    assert!(
        findings
            .iter()
            .all(|f| f["boot_id"] == first.boot_id.as_str()),
        "{findings:#?}"
    );
}

fn testutil_base_ns() -> u64 {
    crate::analysis::testutil::BASE_NS
}

/// A dump written by an earlier version (the fuzz seed, committed 2026-11-24: 300 records of 14
/// kernel kinds) still reads and decodes, record for record: kind ids and payload layouts never
/// change.
#[test]
fn a_dump_from_an_earlier_version_still_decodes() {
    let bytes = include_bytes!("../../../fuzz/seeds/dump_reader/small.tdump");
    let back = drain(DumpReader::from_bytes("small.tdump", bytes.to_vec()).unwrap());
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    eprintln!(
        "old dump: {} segments, {} snapshot records, {} records",
        back.segments.len(),
        back.snapshots.iter().flatten().count(),
        back.records.len()
    );
    let mut kinds = std::collections::BTreeSet::new();
    for raw in back.snapshots.iter().flatten().chain(&back.records) {
        let ev = event::decode(raw).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(ev.kind_name(), "unknown");
        kinds.insert(ev.kind_name());
    }
    assert_eq!(back.records.len(), 300);
    assert_eq!(kinds.len(), 14, "{kinds:?}");
}
