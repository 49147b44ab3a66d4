//! The analyses on a thread of their own beside the printer, for the commands that read a
//! dump (`replay`, `report`): the printer and the analyses cost about the same per event, and
//! on one thread they ran one after the other.
//!
//! Events go to the analysis thread in batches, each with the lines the printer wrote for it;
//! a batch's lines are written once the analyses are through with it, with the finding lines
//! they raised put right after the line of the event that raised them, as when both ran in
//! the same thread. The analysis thread keeps a process table of its own, fed the same events
//! (those the filters leave out too), so every analysis sees the table as of its event.
use std::{
    mem,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
};

use anyhow::Context;

use crate::{
    analysis::Engine,
    event::Event,
    host::HostInfo,
    output::{self, Printer},
    pipeline::{Ctx, Sink},
    proc_table::ProcTable,
};

/// Events per batch: enough that handing a batch over costs nothing per event, few enough
/// that the two threads start working together at once.
const BATCH: usize = 4096;
/// Printed bytes after which a batch is handed over anyway; its buffer is allocated this big
/// (and some) up front, since growing it copied every line once more.
const BATCH_BYTES: usize = 1 << 20;
const OUT_CAPACITY: usize = BATCH_BYTES + (64 << 10);

enum Msg {
    /// An event, and whether it passed the filters (the analyses see only those).
    Event { ev: Event, passed: bool },
    /// The pipeline switched to this host (see [`crate::pipeline::Pipeline::set_host`]).
    Host(HostInfo),
    /// The stream ended.
    Finish,
}

#[derive(Default)]
struct Batch {
    msgs: Vec<Msg>,
    /// The printer's lines for the batch, and where the lines of each message end in them.
    out: Vec<u8>,
    ends: Vec<usize>,
    /// The finding lines the analyses raised, each with the message that raised it.
    raised: Vec<(usize, String)>,
}

/// The finding lines the engine's update subscriber renders, for the analysis thread to
/// collect after each event (a flag, not a lock per event: findings are rare).
#[derive(Default)]
pub struct Raised {
    any: AtomicBool,
    lines: Mutex<Vec<String>>,
}

impl Raised {
    pub fn push(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
        self.any.store(true, Ordering::Relaxed);
    }

    fn take(&self) -> Option<Vec<String>> {
        if !self.any.swap(false, Ordering::Relaxed) {
            return None;
        }
        Some(mem::take(
            &mut *self.lines.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// Where the lines go: stdout ([`output::print_lines`]), or a test's buffer. It may take the
/// buffer and leave another in its place.
type Out = Box<dyn FnMut(&mut Vec<u8>) -> anyhow::Result<()>>;

/// The printer (when events are printed) and the engine, as one pipeline sink.
pub struct Lockstep {
    printer: Option<Printer>,
    out: Out,
    cur: Batch,
    /// Batches handed to the analysis thread and not back yet.
    in_flight: usize,
    spare: Option<Batch>,
    to_worker: Option<mpsc::SyncSender<Batch>>,
    from_worker: mpsc::Receiver<Batch>,
    worker: Option<thread::JoinHandle<()>>,
}

impl Lockstep {
    /// Starts the analysis thread on `engine`, whose update subscriber (if any) pushes the
    /// finding lines to print into `raised`.
    pub fn start(
        printer: Option<Printer>,
        engine: Arc<Mutex<Engine>>,
        raised: Arc<Raised>,
    ) -> anyhow::Result<Lockstep> {
        Lockstep::with_output(printer, engine, raised, Box::new(output::print_lines))
    }

    fn with_output(
        printer: Option<Printer>,
        engine: Arc<Mutex<Engine>>,
        raised: Arc<Raised>,
        out: Out,
    ) -> anyhow::Result<Lockstep> {
        let printing = printer.is_some();
        let (to_worker, rx) = mpsc::sync_channel::<Batch>(1);
        let (tx, from_worker) = mpsc::sync_channel::<Batch>(2);
        let worker = thread::Builder::new()
            .name("analyses".into())
            .spawn(move || analyse(&engine, &raised, rx, tx))
            .context("cannot start the analysis thread")?;
        Ok(Lockstep {
            printer,
            out,
            cur: Batch {
                out: Vec::with_capacity(if printing { OUT_CAPACITY } else { 0 }),
                ..Batch::default()
            },
            in_flight: 0,
            spare: None,
            to_worker: Some(to_worker),
            from_worker,
            worker: Some(worker),
        })
    }

    fn push(&mut self, msg: Msg) -> anyhow::Result<()> {
        self.cur.msgs.push(msg);
        self.cur.ends.push(self.cur.out.len());
        if self.cur.msgs.len() >= BATCH || self.cur.out.len() >= BATCH_BYTES {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands the current batch to the analysis thread, then prints the one before it (the
    /// thread works on the one while the lines of the other are written).
    fn hand_over(&mut self) -> anyhow::Result<()> {
        let mut next = self.spare.take().unwrap_or_default();
        if self.printer.is_some() && next.out.capacity() < OUT_CAPACITY {
            // A fresh buffer: reserving on the old one would copy its spare capacity.
            next.out = Vec::with_capacity(OUT_CAPACITY);
        }
        let full = mem::replace(&mut self.cur, next);
        self.to_worker
            .as_ref()
            .context("the analysis thread was stopped")?
            .send(full)
            .map_err(|_| stopped())?;
        self.in_flight += 1;
        if self.in_flight > 1 {
            self.print_next()?;
        }
        Ok(())
    }

    /// Waits for the oldest batch handed over and prints it, with its findings.
    fn print_next(&mut self) -> anyhow::Result<()> {
        let mut b = self.from_worker.recv().map_err(|_| stopped())?;
        self.in_flight -= 1;
        if !b.raised.is_empty() {
            let extra: usize = b.raised.iter().map(|(_, l)| l.len() + 1).sum();
            let mut lines = Vec::with_capacity(b.out.len() + extra);
            let mut at = 0;
            for (i, line) in b.raised.drain(..) {
                let end = b.ends[i];
                lines.extend_from_slice(&b.out[at..end]);
                lines.extend_from_slice(line.as_bytes());
                lines.push(b'\n');
                at = end;
            }
            lines.extend_from_slice(&b.out[at..]);
            b.out = lines;
        }
        let r = (self.out)(&mut b.out);
        b.out.clear();
        b.ends.clear();
        self.spare = Some(b);
        r
    }

    /// Ends the analysis thread (after the batches it holds).
    fn stop(&mut self) {
        self.to_worker = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn stopped() -> anyhow::Error {
    anyhow::anyhow!("the analysis thread stopped")
}

impl Sink for Lockstep {
    fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        if let Some(p) = &self.printer {
            p.render(ev, ctx, &mut self.cur.out)?;
        }
        self.push(Msg::Event {
            ev: ev.clone(),
            passed: true,
        })
    }

    fn skipped(&mut self, ev: &Event) -> anyhow::Result<()> {
        self.push(Msg::Event {
            ev: ev.clone(),
            passed: false,
        })
    }

    fn host(&mut self, host: &HostInfo) -> anyhow::Result<()> {
        self.push(Msg::Host(host.clone()))
    }

    fn finish(&mut self, _ctx: &Ctx<'_>) -> anyhow::Result<()> {
        self.cur.msgs.push(Msg::Finish);
        self.cur.ends.push(self.cur.out.len());
        self.hand_over()?;
        while self.in_flight > 0 {
            self.print_next()?;
        }
        self.stop();
        output::flush_stdout();
        Ok(())
    }
}

impl Drop for Lockstep {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The analysis thread: each batch through the engine, as [`crate::pipeline::Pipeline`]
/// feeds its sinks, then back with the finding lines it raised.
fn analyse(
    engine: &Mutex<Engine>,
    raised: &Raised,
    rx: mpsc::Receiver<Batch>,
    tx: mpsc::SyncSender<Batch>,
) {
    let mut procs = ProcTable::new();
    let mut host = HostInfo::default();
    // What the engine does as a pipeline sink (`impl Sink for Engine`), message by message.
    while let Ok(mut b) = rx.recv() {
        // The report reads the engine once the stream ended; nobody else meanwhile.
        let mut e = engine.lock().unwrap_or_else(|e| e.into_inner());
        for (i, msg) in b.msgs.drain(..).enumerate() {
            match msg {
                Msg::Event { ev, passed } => {
                    procs.apply(&ev);
                    if passed {
                        e.observe(
                            &ev,
                            &Ctx {
                                procs: &procs,
                                host: &host,
                            },
                        );
                    }
                }
                Msg::Host(next) => {
                    if !host.boot_id.is_empty() && next.boot_id != host.boot_id {
                        let old = Ctx {
                            procs: &procs,
                            host: &host,
                        };
                        e.new_boot(&old, &next);
                        procs = ProcTable::new();
                    }
                    host = next;
                }
                Msg::Finish => e.evaluate(&Ctx {
                    procs: &procs,
                    host: &host,
                }),
            }
            if let Some(lines) = raised.take() {
                b.raised.extend(lines.into_iter().map(|line| (i, line)));
            }
        }
        drop(e);
        if tx.send(b).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{AnalysisConfig, testutil::Stream},
        filter::FilterSpec,
        output::Format,
        pipeline::Pipeline,
        report,
    };

    /// Lines as one buffer, shared with what writes them.
    type Lines = Arc<Mutex<Vec<u8>>>;

    /// The printer as `sinks::build` adds it before the engine, printing into a buffer.
    struct Print(Printer, Lines);

    impl Sink for Print {
        fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
            Ok(self.0.render(ev, ctx, &mut self.1.lock().unwrap())?)
        }
    }

    fn engine(lines: impl Fn(String) + Send + 'static) -> Engine {
        let mut e = Engine::new(AnalysisConfig::default()).unwrap();
        e.on_update(move |u, host| lines(report::update_text(u, host, true)));
        e
    }

    /// Thousands of events over several batches: restart loops and signals raising and
    /// updating findings all along, a second boot half way, a process outside the filter.
    fn stream() -> (Stream, HostInfo) {
        let mut s = Stream::new();
        s.proc_info(1, 0, "systemd", |_| {});
        s.proc_info(2, 0, "kthreadd", |_| {});
        for k in 0..3000u32 {
            let pid = 10_000 + k;
            let sender = 100 + k % 40;
            s.at(u64::from(k) * 7)
                .fork(1, "systemd", pid)
                .exec(pid, "svc", "/usr/bin/svc", &["svc"])
                .signal(sender, "killer", 15, 0, pid, "svc")
                .exit(pid, "svc", 15)
                .fork(2, "kthreadd", 90_000 + k);
        }
        let mut next = s.host.clone();
        next.boot_id = "c".into();
        (s, next)
    }

    /// Feeds the stream, the second half after a reboot.
    fn run(p: &mut Pipeline, s: &Stream, next: &HostInfo) {
        p.set_host(s.host.clone()).unwrap();
        let half = s.events.len() / 2;
        for (i, ev) in s.events.iter().enumerate() {
            if i == half {
                p.set_host(next.clone()).unwrap();
            }
            p.feed(ev, &[]).unwrap();
        }
        p.finish().unwrap();
    }

    /// Event lines and finding lines come out as when the engine ran in the printer's thread,
    /// byte for byte, with the filters leaving events out, and the engine ends the same.
    #[test]
    fn prints_what_one_thread_printed_in_the_same_order() {
        let (s, next) = stream();
        for pids in [vec![], vec![1]] {
            let filter = || FilterSpec::new("all", &pids, None, None, false).unwrap();
            let one: Lines = Lines::default();
            let mut p = Pipeline::new(HostInfo::default(), filter().userspace());
            p.add_sink(Box::new(Print(
                Printer::new(Format::Json, false),
                one.clone(),
            )));
            let l = one.clone();
            let e = engine(move |line| {
                let mut b = l.lock().unwrap();
                b.extend_from_slice(line.as_bytes());
                b.push(b'\n');
            });
            let (sink, single) = e.into_shared();
            p.add_sink(Box::new(sink));
            run(&mut p, &s, &next);

            let two: Lines = Lines::default();
            let raised = Arc::new(Raised::default());
            let r = raised.clone();
            let engine = Arc::new(Mutex::new(engine(move |line| r.push(line))));
            let t = two.clone();
            let sink = Lockstep::with_output(
                Some(Printer::new(Format::Json, false)),
                engine.clone(),
                raised,
                Box::new(move |b: &mut Vec<u8>| {
                    t.lock().unwrap().append(b);
                    Ok(())
                }),
            )
            .unwrap();
            let mut p = Pipeline::new(HostInfo::default(), filter().userspace());
            p.add_sink(Box::new(sink));
            run(&mut p, &s, &next);

            let (one, two) = (one.lock().unwrap(), two.lock().unwrap());
            let findings = one
                .split(|&c| c == b'\n')
                .filter(|l| l.windows(16).any(|w| w == br#""type":"finding""#))
                .count();
            assert!(findings > 10, "the stream raises findings ({findings})");
            assert!(*one == *two, "the same lines in the same order");
            let (a, b) = (single.lock().unwrap(), engine.lock().unwrap());
            let json =
                |e: &Engine| serde_json::to_string(&report::json(e, e.host(), true)).unwrap();
            assert_eq!(json(&a), json(&b), "the same report");
        }
    }
}
