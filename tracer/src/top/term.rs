//! The terminal while `tracer top` draws: raw mode and the alternate screen, with stderr set
//! aside (a warning written to the terminal would tear the screen; what was written is shown
//! once the terminal is back). Restored exactly once, on every way out: the guard's drop (q,
//! Ctrl-C, SIGTERM, SIGHUP, errors), and the panic hook.
use std::{
    io::{Read, Seek, Write},
    os::fd::{FromRawFd, RawFd},
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
};

use ratatui::crossterm::{
    cursor, execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The real stderr, while fd 2 is the capture file.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);
static CAPTURE: AtomicI32 = AtomicI32::new(-1);

/// Restores the terminal when dropped.
pub struct Guard(());

/// Whether the screen is ours (false once restored, e.g. by the panic hook).
pub fn active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// Takes the terminal: stderr captured, raw mode, alternate screen, cursor hidden.
pub fn enter() -> anyhow::Result<Guard> {
    install_panic_hook();
    capture_stderr();
    let mut out = std::io::stdout();
    if let Err(e) = terminal::enable_raw_mode() {
        restore();
        anyhow::bail!("cannot put the terminal in raw mode: {e}");
    }
    ACTIVE.store(true, Ordering::SeqCst);
    if let Err(e) = execute!(out, EnterAlternateScreen, cursor::Hide) {
        restore();
        anyhow::bail!("cannot switch to the alternate screen: {e}");
    }
    Ok(Guard(()))
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Gives the terminal back (idempotent): main screen, cooked mode, cursor, then stderr and
/// what was written to it meanwhile. Errors are ignored: the terminal may be gone (SIGHUP).
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = std::io::stdout();
        let _ = execute!(out, LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
        let _ = out.flush();
    }
    release_stderr();
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The message must land on a usable terminal, not on the alternate screen.
            restore();
            previous(info);
        }));
    });
}

fn capture_stderr() {
    // SAFETY: memfd_create with a valid NUL-terminated name; dup/dup2 on fds we own.
    unsafe {
        let fd = libc::memfd_create(c"tracer-top-stderr".as_ptr(), libc::MFD_CLOEXEC);
        if fd < 0 {
            return;
        }
        let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
        if saved < 0 || libc::dup2(fd, 2) < 0 {
            libc::close(fd);
            if saved >= 0 {
                libc::close(saved);
            }
            return;
        }
        SAVED_STDERR.store(saved, Ordering::SeqCst);
        CAPTURE.store(fd, Ordering::SeqCst);
    }
}

fn release_stderr() {
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    let cap: RawFd = CAPTURE.swap(-1, Ordering::SeqCst);
    if saved < 0 {
        return;
    }
    // SAFETY: `saved` is our duplicate of the real stderr; `cap` the capture file, owned here
    // from now on.
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    if cap >= 0 {
        // SAFETY: as above; the File closes it.
        let mut f = unsafe { std::fs::File::from_raw_fd(cap) };
        let mut text = Vec::new();
        if f.rewind().is_ok() && f.read_to_end(&mut text).is_ok() && !text.is_empty() {
            let _ = std::io::stderr().write_all(&text);
        }
    }
}
