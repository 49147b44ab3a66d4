//! Rendering events for people (one line each) and for scripts (one JSON object per line).
//! The only module that writes to stdout.
//!
//! `json` writes the JSON lines, `text` the lines for people; the names and small
//! conversions both use are here, with the printer sink and the one stdout.
use std::io::{self, Write};

use tracer_common::{memory, tcp};

use crate::{
    event::{Body, Event, socket_addr},
    pipeline::{Ctx, Sink},
};

mod json;
#[cfg(test)]
mod tests;
mod text;

pub use json::{EventJson, to_json, write_json_line};
pub use text::to_line;

pub fn ip(family: u16, a: &[u8; 16]) -> String {
    socket_addr(family, a, 0).ip().to_string()
}

/// `addr:port`, with brackets for IPv6.
pub fn endpoint(family: u16, a: &[u8; 16], port: u16) -> String {
    socket_addr(family, a, port).to_string()
}

fn family_name(f: u16) -> &'static str {
    match f {
        1 => "unix",
        2 => "inet",
        10 => "inet6",
        16 => "netlink",
        17 => "packet",
        _ => "other",
    }
}

fn owner(tgid: u32) -> Option<u32> {
    (tgid != 0).then_some(tgid)
}

/// Milliseconds from boot-clock `since` to `now`; None when `since` is 0 (never, or unknown).
fn ms_since(now: u64, since: u64) -> Option<u64> {
    (since != 0).then(|| now.saturating_sub(since) / 1_000_000)
}

fn role_name(role: u8) -> &'static str {
    match role {
        tcp::ROLE_ACTIVE => "connect",
        tcp::ROLE_PASSIVE => "accept",
        _ => "unknown",
    }
}

/// Who closed first, from the state a connection was in when its fd was closed.
fn closed_by(state: u8) -> &'static str {
    match u16::from(state) {
        tcp::state::ESTABLISHED | tcp::state::SYN_SENT | tcp::state::SYN_RECV => "local",
        tcp::state::CLOSE_WAIT | tcp::state::LAST_ACK => "peer",
        tcp::state::CLOSE => "reset",
        _ => "unknown",
    }
}

/// EINPROGRESS: a non-blocking connect() under way, not a failure.
const EINPROGRESS: i32 = 115;

/// Resident bytes of an OOM victim (saturating: dumps may hold anything).
fn kb_total(o: &tracer_common::oom::OomKill) -> u64 {
    o.anon_rss_kb
        .saturating_add(o.file_rss_kb)
        .saturating_add(o.shmem_rss_kb)
        .saturating_mul(1024)
}

pub fn prot_string(p: u32) -> String {
    let mut s = String::with_capacity(3);
    s.push(if p & memory::PROT_READ != 0 { 'r' } else { '-' });
    s.push(if p & memory::PROT_WRITE != 0 {
        'w'
    } else {
        '-'
    });
    s.push(if p & memory::PROT_EXEC != 0 { 'x' } else { '-' });
    s
}

/// The name of an `RLIMIT_*` resource (only RLIMIT_NOFILE is traced today).
fn rlimit_name(r: u32) -> &'static str {
    match r {
        tracer_common::process::RLIMIT_NOFILE => "nofile",
        _ => "other",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

/// Prints events to stdout. Collector records (process info, drops) are not events for people
/// and are left out, in both formats, so live and replay print the same lines.
pub struct Printer {
    format: Format,
    /// Flush after every line, or let the buffer fill and flush at batch ends (`live` flushes
    /// after each batch it drains from the kernel) or when full (replay).
    line_flush: bool,
}

impl Printer {
    pub fn new(format: Format, line_flush: bool) -> Printer {
        Printer { format, line_flush }
    }
}

/// The one buffered stdout: events, findings and reports go through it in the order they are
/// produced, whether or not each line is flushed. A flush hands the lines to the writer thread
/// of [`crate::stdout`], so a stdout nobody reads does not stop the caller.
fn stdout_buf() -> std::sync::MutexGuard<'static, crate::stdout::Queued> {
    static OUT: std::sync::OnceLock<std::sync::Mutex<crate::stdout::Queued>> =
        std::sync::OnceLock::new();
    OUT.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Hands what is buffered to the writer (after each batch, and at exit).
pub fn flush_stdout() {
    let _ = stdout_buf().flush();
}

/// Waits for stdout to take what is queued (up to `timeout` in live modes); returns the lines
/// not printed in all.
pub fn finish_stdout(timeout: std::time::Duration) -> u64 {
    stdout_buf().finish(timeout)
}

/// Whether an event is shown by the printer.
pub fn printable(ev: &Event) -> bool {
    !matches!(
        ev.body,
        Body::ProcInfo(_) | Body::Drops(_) | Body::RecorderGap(_) | Body::Tick
    )
}

impl Printer {
    /// Appends the line of `ev` to `buf` (nothing for what is not shown): for a caller that
    /// hands the lines to [`print_lines`] itself.
    pub fn render(&self, ev: &Event, ctx: &Ctx<'_>, buf: &mut Vec<u8>) -> io::Result<()> {
        if !printable(ev) || crate::stdout::skip_line() {
            return Ok(());
        }
        match self.format {
            Format::Json => write_json_line(buf, ev, ctx),
            Format::Human => writeln!(buf, "{}", to_line(ev, ctx)),
        }
    }
}

/// The broken-pipe error as the pipeline expects it (`| head` stops the stream quietly).
fn pipe_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::from(BrokenPipe)
    } else {
        anyhow::Error::from(e)
    }
}

/// Writes lines (each with its `\n`) to stdout, in order with everything else printed; takes
/// the buffer rather than copying it (`lines` is left empty).
pub fn print_lines(lines: &mut Vec<u8>) -> anyhow::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    stdout_buf().append_owned(lines).map_err(pipe_error)
}

impl Sink for Printer {
    fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        if !printable(ev) || crate::stdout::skip_line() {
            return Ok(());
        }
        let mut out = stdout_buf();
        let r = match self.format {
            Format::Json => out.append_with(|b| write_json_line(b, ev, ctx)),
            Format::Human => writeln!(out, "{}", to_line(ev, ctx)),
        };
        r.map_err(pipe_error)?;
        if self.line_flush {
            out.flush().map_err(pipe_error)?;
        }
        Ok(())
    }

    fn finish(&mut self, _ctx: &Ctx<'_>) -> anyhow::Result<()> {
        flush_stdout();
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("output closed")]
pub struct BrokenPipe;

/// Writes a line to stdout (for summaries and reports).
pub fn print(s: &str) {
    let mut o = stdout_buf();
    let _ = writeln!(o, "{s}");
    let _ = o.flush();
}

/// Writes a line to stderr (summaries that must not mix with JSON on stdout).
pub fn eprint(s: &str) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{s}");
}
