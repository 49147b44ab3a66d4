//! The names of kernel numbers: errno values, signals and TCP states, in one place, built on
//! libc's constants so a name can never drift from its number. Used by the printers, the
//! analyses and the configuration (signal names in thresholds).
use tracer_common::tcp;

/// `NAME` for each listed libc constant, so the table cannot disagree with libc.
macro_rules! named {
    ($($c:ident),* $(,)?) => { &[$((libc::$c, stringify!($c))),*] };
}

/// errno values a network or memory tracer meets, by name. Aliases (EWOULDBLOCK = EAGAIN,
/// EDEADLOCK = EDEADLK, ENOTSUP = EOPNOTSUPP) are left out: each number has one name.
const ERRNOS: &[(i32, &str)] = named![
    EPERM,
    ENOENT,
    ESRCH,
    EINTR,
    EIO,
    ENXIO,
    E2BIG,
    ENOEXEC,
    EBADF,
    ECHILD,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EBUSY,
    EEXIST,
    EXDEV,
    ENODEV,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENFILE,
    EMFILE,
    ENOTTY,
    ETXTBSY,
    EFBIG,
    ENOSPC,
    ESPIPE,
    EROFS,
    EMLINK,
    EPIPE,
    EDOM,
    ERANGE,
    EDEADLK,
    ENAMETOOLONG,
    ENOLCK,
    ENOSYS,
    ENOTEMPTY,
    ELOOP,
    ENOMSG,
    EIDRM,
    EBADR,
    ENOSTR,
    ENODATA,
    ETIME,
    ENOSR,
    ENOLINK,
    EPROTO,
    EBADMSG,
    EOVERFLOW,
    EILSEQ,
    EUSERS,
    ENOTSOCK,
    EDESTADDRREQ,
    EMSGSIZE,
    EPROTOTYPE,
    ENOPROTOOPT,
    EPROTONOSUPPORT,
    ESOCKTNOSUPPORT,
    EOPNOTSUPP,
    EPFNOSUPPORT,
    EAFNOSUPPORT,
    EADDRINUSE,
    EADDRNOTAVAIL,
    ENETDOWN,
    ENETUNREACH,
    ENETRESET,
    ECONNABORTED,
    ECONNRESET,
    ENOBUFS,
    EISCONN,
    ENOTCONN,
    ESHUTDOWN,
    ETOOMANYREFS,
    ETIMEDOUT,
    ECONNREFUSED,
    EHOSTDOWN,
    EHOSTUNREACH,
    EALREADY,
    EINPROGRESS,
    ESTALE,
    EDQUOT,
    ECANCELED,
    EOWNERDEAD,
    ENOTRECOVERABLE,
];

/// The symbolic name of an errno value (either sign), or `E<n>` for one not in the table.
pub fn errno_name(e: i32) -> String {
    let e = e.saturating_abs();
    ERRNOS
        .iter()
        .find(|(n, _)| *n == e)
        .map_or_else(|| format!("E{e}"), |(_, name)| (*name).to_owned())
}

const SIGNALS: &[(i32, &str)] = named![
    SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGKILL, SIGUSR1, SIGSEGV,
    SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGSTKFLT, SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN,
    SIGTTOU, SIGURG, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGWINCH, SIGIO, SIGPWR, SIGSYS,
];

/// The kernel's first real-time signal (glibc's SIGRTMIN is 34: it keeps two for itself).
const KERNEL_SIGRTMIN: i32 = 32;
const SIGRTMAX: i32 = 64;

/// `SIGTERM`, `SIGRTMIN+3` (counted from glibc's SIGRTMIN, as `kill -l` does), or `SIG<n>`.
pub fn signal_name(sig: i32) -> String {
    if let Some((_, name)) = SIGNALS.iter().find(|(n, _)| *n == sig) {
        return (*name).to_owned();
    }
    let rtmin = KERNEL_SIGRTMIN + 2;
    if (rtmin..=SIGRTMAX).contains(&sig) {
        format!("SIGRTMIN+{}", sig - rtmin)
    } else {
        format!("SIG{sig}")
    }
}

/// The number of a signal name (`SIGTERM`, `TERM`, case-insensitive), as `signal_name` prints it.
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    (1..=SIGRTMAX).find(|&n| signal_name(n) == full)
}

/// Whether a signal's `si_code` says the kernel generated it (the kernel's `SI_FROMKERNEL`:
/// `si_code > 0`, which covers SI_KERNEL and the fault codes of SIGSEGV, SIGBUS, ...; user
/// senders have SI_USER = 0 or negative codes).
pub fn signal_from_kernel(code: i32) -> bool {
    code > 0
}

/// Splits a kernel wait status into (exit code, fatal signal).
pub fn wait_status(code: i32) -> (Option<i32>, Option<i32>) {
    let sig = code & 0x7f;
    if sig == 0 {
        (Some((code >> 8) & 0xff), None)
    } else {
        (None, Some(sig))
    }
}

pub fn tcp_state_name(s: u16) -> &'static str {
    use tcp::state::*;
    match s {
        ESTABLISHED => "ESTABLISHED",
        SYN_SENT => "SYN_SENT",
        SYN_RECV => "SYN_RECV",
        FIN_WAIT1 => "FIN_WAIT1",
        FIN_WAIT2 => "FIN_WAIT2",
        TIME_WAIT => "TIME_WAIT",
        CLOSE => "CLOSE",
        CLOSE_WAIT => "CLOSE_WAIT",
        LAST_ACK => "LAST_ACK",
        LISTEN => "LISTEN",
        CLOSING => "CLOSING",
        NEW_SYN_RECV => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_follow_libc() {
        assert_eq!(errno_name(53), "EBADR", "53 is EBADR, not ECONNABORTED");
        assert_eq!(errno_name(-libc::ECONNABORTED), "ECONNABORTED");
        assert_eq!(errno_name(libc::EMFILE), "EMFILE");
        assert_eq!(errno_name(-24), "EMFILE");
        assert_eq!(errno_name(4095), "E4095");
        assert_eq!(errno_name(i32::MIN), format!("E{}", i32::MAX));
        for (n, name) in ERRNOS {
            assert_eq!(
                ERRNOS.iter().filter(|(m, _)| m == n).count(),
                1,
                "{name} ({n}) listed once"
            );
        }
    }

    #[test]
    fn signal_names_round_trip() {
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(34), "SIGRTMIN+0");
        assert_eq!(signal_name(64), "SIGRTMIN+30");
        assert_eq!(signal_name(0), "SIG0");
        assert_eq!(signal_name(99), "SIG99");
        for n in 1..=64 {
            if (32..34).contains(&n) {
                continue;
            }
            assert_eq!(signal_number(&signal_name(n)), Some(n), "{n}");
        }
        assert_eq!(signal_number("term"), Some(15));
        assert_eq!(signal_number("SIGNOPE"), None);
    }

    #[test]
    fn kernel_codes() {
        assert!(signal_from_kernel(tracer_common::signal::SI_KERNEL));
        assert!(signal_from_kernel(1), "SEGV_MAPERR comes from a fault");
        assert!(!signal_from_kernel(0), "SI_USER: kill()");
        assert!(!signal_from_kernel(-6), "SI_TKILL: tgkill()");
    }
}
