//! The one driver every source feeds: the ring buffers of a live session ([`crate::live`]) and
//! a dump ([`crate::dump::cmd`]). It owns what both need alike: decoding records (and counting
//! those that do not decode), switching host (and boot) where a dump's segments say so,
//! framing the collector's own records (process facts, drops, the clock tick), feeding the
//! [`Pipeline`], and ending the stream (a closed stdout ends it quietly).
use crate::{
    event::{self, Body, Event},
    host::HostInfo,
    output::BrokenPipe,
    pipeline::Pipeline,
};

/// Where records come from.
pub trait Source {
    /// Feeds the driver until the source ends or is told to stop. An error ends the stream
    /// (a [`BrokenPipe`] quietly).
    fn pump(&mut self, drv: &mut Driver) -> anyhow::Result<()>;
}

/// Undecodable records warned about one by one; the rest are counted in one line at the end.
const DECODE_WARNINGS: u64 = 5;

pub struct Driver {
    pub pipeline: Pipeline,
    /// Records that did not decode (kernel records from an older or newer layout, corrupt dump
    /// records).
    pub decode_errors: u64,
    /// The output was closed early (`| head`): the stream ended there.
    pub stopped: bool,
    /// Says where undecodable records came from ("from the kernel", "in the dump").
    origin: &'static str,
}

impl Driver {
    pub fn new(pipeline: Pipeline, origin: &'static str) -> Driver {
        Driver {
            pipeline,
            decode_errors: 0,
            stopped: false,
            origin,
        }
    }

    /// Runs `source` to its end, then ends the stream (the sinks' `finish`).
    pub fn run(&mut self, source: &mut dyn Source) -> anyhow::Result<()> {
        let pumped = source.pump(self);
        if self.decode_errors > DECODE_WARNINGS {
            tracing::warn!(
                "{} records {} could not be decoded in all (written by another tracer version?)",
                self.decode_errors,
                self.origin
            );
        }
        let finished = self.pipeline.finish();
        match pumped.and(finished) {
            Err(e) if e.is::<BrokenPipe>() => {
                self.stopped = true;
                Ok(())
            }
            r => r,
        }
    }

    /// The host (and boot) the following records come from: see [`Pipeline::set_host`].
    pub fn host(&mut self, host: HostInfo) -> anyhow::Result<()> {
        self.pipeline.set_host(host)
    }

    /// A record as the kernel wrote it: its event, or None (counted) when it does not decode.
    pub fn decode(&mut self, raw: &[u8]) -> Option<Event> {
        match event::decode(raw) {
            Ok(ev) => Some(ev),
            Err(e) => {
                self.decode_errors += 1;
                if self.decode_errors <= DECODE_WARNINGS {
                    tracing::warn!("undecodable record {} skipped: {e}", self.origin);
                }
                None
            }
        }
    }

    /// An event through the pipeline, with the record it was decoded from.
    pub fn feed(&mut self, ev: &Event, raw: &[u8]) -> anyhow::Result<()> {
        self.pipeline.feed(ev, raw)
    }

    /// A record decoded and fed; what did not decode is counted and skipped.
    pub fn record(&mut self, raw: &[u8]) -> anyhow::Result<()> {
        match self.decode(raw) {
            Some(ev) => self.feed(&ev, raw),
            None => Ok(()),
        }
    }

    /// A record the collector made (process facts, drops, the tick), fed with its framing so
    /// that a dump stores it like any other.
    pub fn user(&mut self, ev: Event) -> anyhow::Result<()> {
        match event::encode_user_record(&ev) {
            Some(raw) => self.feed(&ev, &raw),
            None => {
                // Cannot happen for the records we make (they are cut to fit); never store an
                // empty record in their place.
                tracing::warn!(
                    pid = ev.tgid,
                    "a collector record could not be encoded; skipped"
                );
                Ok(())
            }
        }
    }

    /// The collector's clock tick (see [`tracer_common::CollectorKind::Tick`]): time moves on for the analyses
    /// even when nothing happens.
    pub fn tick(&mut self, ts_ns: u64) -> anyhow::Result<()> {
        self.user(Event::collector(ts_ns, Body::Tick))
    }
}

/// A record's event time, from its fixed header, without decoding it (for ordering and pacing).
pub fn record_ts(raw: &[u8]) -> u64 {
    raw.get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}
