//! The pipeline shared by `live`, `record`, `replay` and `report`:
//! source (ring buffers or a dump) → process table (enrichment) → filters → sinks (printer,
//! recorder, analyses). Live and replay feed the same code, which is what makes their output
//! identical for the same events.
use crate::{event::Event, filter::Filter, host::HostInfo, proc_table::ProcTable};

/// What a sink may consult besides the event itself.
pub struct Ctx<'a> {
    pub procs: &'a ProcTable,
    pub host: &'a HostInfo,
}

/// A consumer of the event stream.
pub trait Sink {
    /// One event, after the process table has been updated with it. `raw` is the record as the
    /// kernel wrote it (or, for collector records, as `event::encode_user_record` frames it):
    /// what a dump stores.
    fn event(&mut self, ev: &Event, raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()>;
    /// The stream ended (Ctrl-C, end of dump, `--duration`).
    fn finish(&mut self, _ctx: &Ctx<'_>) -> anyhow::Result<()> {
        Ok(())
    }
    /// The stream crosses into another boot (a dump that spans a reboot): `old` is the boot
    /// that ends, with its process table, for a last look; its pids are reused from here on.
    fn new_boot(&mut self, _old: &Ctx<'_>, _next: &HostInfo) -> anyhow::Result<()> {
        Ok(())
    }
    /// The host the following events come from, once the pipeline switched to it (after
    /// `new_boot` when it is another boot). For a sink that keeps a process table of its own.
    fn host(&mut self, _host: &HostInfo) -> anyhow::Result<()> {
        Ok(())
    }
    /// An event the filters left out, after the process table was updated with it. For a sink
    /// that keeps a process table of its own.
    fn skipped(&mut self, _ev: &Event) -> anyhow::Result<()> {
        Ok(())
    }
}

pub struct Pipeline {
    pub procs: ProcTable,
    pub host: HostInfo,
    pub filter: Filter,
    sinks: Vec<Box<dyn Sink>>,
    /// Events seen (before filtering) and passed to sinks.
    pub seen: u64,
    pub passed: u64,
}

impl Pipeline {
    pub fn new(host: HostInfo, filter: Filter) -> Pipeline {
        Pipeline {
            procs: ProcTable::new(),
            host,
            filter,
            sinks: Vec::new(),
            seen: 0,
            passed: 0,
        }
    }

    pub fn add_sink(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    /// The host the following events come from. Another boot than the current one ends that
    /// boot: the sinks are told (while the old process table is still there), then the table
    /// starts empty, since the new boot's pids name other processes.
    pub fn set_host(&mut self, host: HostInfo) -> anyhow::Result<()> {
        if !self.host.boot_id.is_empty() && host.boot_id != self.host.boot_id {
            let ctx = Ctx {
                procs: &self.procs,
                host: &self.host,
            };
            for s in &mut self.sinks {
                s.new_boot(&ctx, &host)?;
            }
            self.procs = ProcTable::new();
        }
        self.host = host;
        for s in &mut self.sinks {
            s.host(&self.host)?;
        }
        Ok(())
    }

    pub fn feed(&mut self, ev: &Event, raw: &[u8]) -> anyhow::Result<()> {
        self.seen += 1;
        self.procs.apply(ev);
        if !self.filter.pass(ev, &self.procs) {
            for s in &mut self.sinks {
                s.skipped(ev)?;
            }
            return Ok(());
        }
        self.passed += 1;
        let ctx = Ctx {
            procs: &self.procs,
            host: &self.host,
        };
        for s in &mut self.sinks {
            s.event(ev, raw, &ctx)?;
        }
        Ok(())
    }

    pub fn finish(&mut self) -> anyhow::Result<()> {
        let ctx = Ctx {
            procs: &self.procs,
            host: &self.host,
        };
        for s in &mut self.sinks {
            s.finish(&ctx)?;
        }
        Ok(())
    }
}
