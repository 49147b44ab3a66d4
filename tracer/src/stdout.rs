//! Standard output through a bounded queue and a thread of its own, so that a reader that stops
//! reading (`tracer live | less`, paused) never stops the collector draining the rings or
//! recording. Lines are handed over in batches; the thread does the blocking writes.
//!
//! Live modes are *lossy*: when the queue already holds [`CAP`] bytes, a new batch is dropped
//! and its lines counted (see [`unprinted`]). Other commands (replay, report) wait instead:
//! there nothing is lost by waiting for the reader.
use std::{
    collections::VecDeque,
    io::{self, Write},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// Bytes queued for the writer thread before a batch is dropped (lossy) or waited on.
pub const CAP: usize = 8 << 20;
/// A batch is handed over once it is this big, even without a flush (each hand-over wakes the
/// writer thread: at 64 KiB that was 3% of `replay --json`).
const BATCH: usize = 256 << 10;

#[derive(Default)]
struct Pending {
    bufs: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Lines of the buffer the thread is writing now.
    in_flight: u64,
    lossy: bool,
    /// The reader went away (EPIPE) or writing failed: nothing more is written.
    broken: bool,
    /// Lines dropped: queue full, output broken, or still queued at exit.
    unprinted: u64,
    thread: bool,
    /// Batches written so far, and the count when [`Queued::finish`] last gave up on a reader
    /// that made no progress (the next finish does not wait for it again).
    written: u64,
    gave_up_at: Option<u64>,
}

struct Shared {
    p: Mutex<Pending>,
    /// Wakes the writer thread (work) and waiters (progress).
    work: Condvar,
    progress: Condvar,
    /// Set while the lossy queue is full (until it drains to half), so the printer can count
    /// a line as not printed without formatting it. Never set when waiting (not lossy).
    saturated: AtomicBool,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            p: Mutex::new(Pending::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
            saturated: AtomicBool::new(false),
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.p.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn shared() -> &'static Arc<Shared> {
    static S: OnceLock<Arc<Shared>> = OnceLock::new();
    S.get_or_init(Shared::new)
}

/// Whether a line printed now would be dropped; if so, it is counted as not printed.
pub fn skip_line() -> bool {
    let s = shared();
    if !s.saturated.load(Ordering::Relaxed) {
        return false;
    }
    s.lock().unprinted += 1;
    true
}

/// Lines in a buffer (SIMD newline search: this runs over every byte printed).
fn lines(b: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', b).count() as u64
}

/// Drops rather than waits once [`CAP`] bytes are queued (live and record).
pub fn set_lossy(on: bool) {
    shared().lock().lossy = on;
}

/// Lines not printed so far.
pub fn unprinted() -> u64 {
    shared().lock().unprinted
}

/// Where the writer thread writes.
type Sink = Box<dyn Write + Send>;

/// The process's one stdout writer; [`crate::output`] holds it behind its own lock.
pub struct Queued {
    cur: Vec<u8>,
    s: Arc<Shared>,
    /// The writer thread's output when it starts (stdout unless a test gave another).
    out: Option<Sink>,
}

impl Default for Queued {
    fn default() -> Queued {
        Queued {
            cur: Vec::new(),
            s: shared().clone(),
            out: None,
        }
    }
}

impl Queued {
    /// A queue of its own writing to `out` (tests).
    #[cfg(test)]
    fn to(out: Sink, lossy: bool) -> Queued {
        let s = Shared::new();
        s.lock().lossy = lossy;
        Queued {
            cur: Vec::new(),
            s,
            out: Some(out),
        }
    }

    /// Hands the current batch to the writer thread.
    fn hand_over(&mut self) -> io::Result<()> {
        let s = self.s.clone();
        if self.cur.is_empty() {
            return if s.lock().broken {
                Err(io::ErrorKind::BrokenPipe.into())
            } else {
                Ok(())
            };
        }
        let mut p = s.lock();
        if !p.thread {
            p.thread = true;
            let s2 = s.clone();
            let out = self.out.take();
            if thread::Builder::new()
                .name("stdout".into())
                .spawn(move || match out {
                    Some(w) => run(&s2, w),
                    None => run(&s2, io::stdout().lock()),
                })
                .is_err()
            {
                p.thread = false;
                drop(p);
                // No thread: write here, as before.
                let r = io::stdout().lock().write_all(&self.cur);
                self.cur.clear();
                return r;
            }
        }
        // Not lossy (replay, report): wait for room. A batch bigger than the whole queue
        // still goes once the queue is empty.
        while !p.lossy && !p.broken && p.bytes > 0 && p.bytes + self.cur.len() > CAP {
            p = s.progress.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if p.broken {
            p.unprinted += lines(&self.cur);
            self.cur.clear();
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if p.lossy && p.bytes + self.cur.len() > CAP {
            s.saturated.store(true, Ordering::Relaxed);
            p.unprinted += lines(&self.cur);
            self.cur.clear();
            return Ok(());
        }
        p.bytes += self.cur.len();
        let next = Vec::with_capacity(self.cur.capacity().min(BATCH * 2));
        p.bufs.push_back(std::mem::replace(&mut self.cur, next));
        s.work.notify_one();
        Ok(())
    }

    /// Waits until everything queued is written; in lossy mode, only while the reader makes
    /// progress (gives up after `stall` without any), and what is still queued then is counted
    /// as not printed. Returns the lines not printed in all.
    pub fn finish(&mut self, stall: Duration) -> u64 {
        let _ = self.hand_over();
        let s = self.s.clone();
        let mut p = s.lock();
        let mut deadline = Instant::now() + stall;
        let mut seen = p.written;
        while p.thread && !p.broken && (p.bytes > 0 || p.in_flight > 0) {
            let now = Instant::now();
            if p.written != seen {
                seen = p.written;
                deadline = now + stall;
            }
            if p.lossy && (now >= deadline || p.gave_up_at == Some(p.written)) {
                p.gave_up_at = Some(p.written);
                let left: u64 = p.bufs.iter().map(|b| lines(b)).sum::<u64>() + p.in_flight;
                p.unprinted += left;
                p.bufs.clear();
                p.bytes = 0;
                // The thread may still finish its write: it no longer counts it.
                p.in_flight = 0;
                break;
            }
            p = s
                .progress
                .wait_timeout(
                    p,
                    deadline
                        .saturating_duration_since(now)
                        .max(Duration::from_millis(1)),
                )
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        p.unprinted
    }
}

impl Queued {
    /// Appends a line built in place by `build` (the printer writes straight into the batch,
    /// not into a buffer of its own that is then copied).
    pub fn append_with<E>(
        &mut self,
        build: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<io::Error>,
    {
        let start = self.cur.len();
        if let Err(e) = build(&mut self.cur) {
            self.cur.truncate(start);
            return Err(e);
        }
        if self.cur.len() >= BATCH {
            self.hand_over()?;
        }
        Ok(())
    }
}

impl Queued {
    /// Appends the lines in `buf`, taking the buffer itself when nothing else is pending (a
    /// batch of lines built elsewhere is not copied); `buf` is left empty.
    pub fn append_owned(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        if self.cur.is_empty() {
            std::mem::swap(&mut self.cur, buf);
        } else {
            self.cur.extend_from_slice(buf);
            buf.clear();
        }
        if self.cur.len() >= BATCH {
            self.hand_over()?;
        }
        Ok(())
    }
}

impl Write for Queued {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.cur.extend_from_slice(buf);
        if self.cur.len() >= BATCH {
            self.hand_over()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.hand_over()
    }
}

/// The writer thread: blocking writes, one queued batch at a time.
fn run(s: &Shared, mut out: impl Write) {
    loop {
        let mut p = s.lock();
        let buf = loop {
            if let Some(b) = p.bufs.pop_front() {
                break b;
            }
            p = s.work.wait(p).unwrap_or_else(|e| e.into_inner());
        };
        p.bytes -= buf.len();
        if p.bytes <= CAP / 2 {
            s.saturated.store(false, Ordering::Relaxed);
        }
        p.in_flight = lines(&buf);
        drop(p);
        let r = out.write_all(&buf).and_then(|()| out.flush());
        let mut p = s.lock();
        p.in_flight = 0;
        p.written += 1;
        if r.is_err() {
            // EPIPE (`| head`) or a failing device: stop writing, count the rest.
            p.broken = true;
            p.unprinted += lines(&buf) + p.bufs.iter().map(|b| lines(b)).sum::<u64>();
            p.bufs.clear();
            p.bytes = 0;
            // The next line must reach the printer's broken-pipe path, not be skipped.
            s.saturated.store(false, Ordering::Relaxed);
        }
        s.progress.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader slower than the printer: it takes a while over each write.
    struct Slow(Arc<Mutex<Vec<u8>>>);

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            thread::sleep(Duration::from_millis(2));
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Writes `n` numbered lines of ~200 bytes (well over the queue's [`CAP`] in all).
    fn print(q: &mut Queued, n: usize) {
        let pad = "x".repeat(190);
        for i in 0..n {
            let _ = writeln!(q, "{i:08} {pad}");
        }
    }

    /// Replay and report wait for the reader: every line arrives, in order, however slow it
    /// is (a batch that did not fit beside the queued ones used to be dropped).
    #[test]
    fn waiting_queue_loses_nothing_to_a_slow_reader() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut q = Queued::to(Box::new(Slow(got.clone())), false);
        let n = 120_000;
        print(&mut q, n);
        assert_eq!(q.finish(Duration::from_secs(5)), 0);
        let got = got.lock().unwrap();
        let lines: Vec<&[u8]> = got
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), n);
        for (i, l) in lines.iter().enumerate() {
            assert!(
                l.starts_with(format!("{i:08} ").as_bytes()),
                "line {i} out of place"
            );
        }
        assert!(!q.s.saturated.load(Ordering::Relaxed));
    }

    /// Live drops whole batches instead of waiting, and counts every line it dropped.
    #[test]
    fn lossy_queue_counts_every_line_it_drops() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut q = Queued::to(Box::new(Slow(got.clone())), true);
        let n = 120_000;
        print(&mut q, n);
        let unprinted = q.finish(Duration::from_secs(5));
        let written = lines(&got.lock().unwrap());
        assert!(unprinted > 0, "a reader this slow must cost lines");
        assert_eq!(written + unprinted, n as u64);
    }
}
