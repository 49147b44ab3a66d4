//! Workload processes for `cargo xtask bench`, run as `xtask bench-worker KIND` from the
//! release build (so their loops are optimised). Each prints one JSON line with what it did;
//! the long-lived ones (`http-server`, `hold-*`) print `ready` and then run until told to stop.
//! Only loopback, only their own children, and everything they start they stop.
use std::{
    ffi::CString,
    io::{BufRead, Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(subcommand)]
    pub kind: WorkerKind,
}

#[derive(Subcommand, Debug)]
pub enum WorkerKind {
    /// A minimal HTTP/1.1 server on 127.0.0.1:PORT answering every request with a fixed body and
    /// closing the connection (accept + close heavy). Runs until SIGTERM or stdin closes.
    HttpServer {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// mmap/touch/munmap and brk grow/touch/shrink in a loop.
    MemChurn {
        #[arg(long)]
        secs: f64,
    },
    /// fork+exec(/bin/true)+exit, fork+SIGTERM+exit and signals to itself, in a loop.
    ProcChurn {
        #[arg(long)]
        secs: f64,
    },
    /// A paced flood of events tracer records: listen() calls on a listening socket (one bulk
    /// record each) or loopback connections opened and closed (4 bulk records each),
    /// and every `--signal-every` of those one SIGUSR1 to itself (one critical record).
    Flood {
        #[arg(long, value_enum, default_value = "listen")]
        kind: FloodKind,
        /// Target events per second (0: as fast as possible).
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 16)]
        signal_every: u64,
    },
    /// PROCS short-lived processes (fork, _exit) and, on a second thread, CONNS short loopback
    /// connections (connect, accept, close), or as many as fit in SECS.
    ShortLived {
        #[arg(long)]
        procs: u64,
        #[arg(long)]
        conns: u64,
        #[arg(long)]
        secs: f64,
    },
    /// Forks COUNT children that sleep; kills and reaps them when stdin closes.
    HoldProcs {
        #[arg(long)]
        count: usize,
    },
    /// Opens PAIRS loopback TCP connections (2 sockets each); closes them when stdin closes.
    HoldSockets {
        #[arg(long)]
        pairs: usize,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum FloodKind {
    Listen,
    Conn,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    match args.kind {
        WorkerKind::HttpServer { port, threads } => http_server(port, threads),
        WorkerKind::MemChurn { secs } => mem_churn(secs),
        WorkerKind::ProcChurn { secs } => proc_churn(secs),
        WorkerKind::Flood {
            kind,
            rate,
            secs,
            signal_every,
        } => flood(kind, rate, secs, signal_every),
        WorkerKind::ShortLived { procs, conns, secs } => short_lived(procs, conns, secs),
        WorkerKind::HoldProcs { count } => hold_procs(count),
        WorkerKind::HoldSockets { pairs } => hold_sockets(pairs),
    }
}

fn report(ops: u64, secs: f64, extra: serde_json::Value) {
    let mut v = json!({ "ops": ops, "secs": secs });
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    println!("{v}");
}

/// Blocks until stdin is closed (the bench dropped its end, or died).
fn wait_for_stdin_eof() {
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin();
    while let Ok(n) = stdin.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

extern "C" fn on_signal(_: libc::c_int) {}

fn set_handler(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> anyhow::Result<()> {
    // SAFETY: a zeroed sigaction with a handler that does nothing is a valid argument.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        bail!("sigaction({sig}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello, world\n";

fn http_server(port: u16, threads: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    println!("ready");
    std::io::stdout().flush()?;
    for _ in 0..threads.max(1) {
        let l = listener.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let Ok((mut s, _)) = l.accept() else { continue };
                let mut got = 0;
                // Read until the end of the request head (wrk sends it in one segment).
                while got < buf.len() {
                    match s.read(&mut buf[got..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                    if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = s.write_all(RESPONSE);
                        break;
                    }
                }
            }
        });
    }
    wait_for_stdin_eof();
    Ok(())
}

fn brk(addr: usize) -> usize {
    // SAFETY: the raw brk syscall only moves the program break; we restore it to where it was
    // and never hand the memory to the allocator.
    unsafe { libc::syscall(libc::SYS_brk, addr) as usize }
}

fn mem_churn(secs: f64) -> anyhow::Result<()> {
    const MAP: usize = 256 << 10;
    const PAGE: usize = 4096;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let base = brk(0);
    let mut ops = 0u64;
    loop {
        for _ in 0..64 {
            // SAFETY: a fresh private anonymous mapping, touched within its length and unmapped.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    MAP,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    bail!("mmap: {}", std::io::Error::last_os_error());
                }
                for i in 0..4 {
                    std::ptr::write_volatile((p as *mut u8).add(i * PAGE * 16), 1);
                }
                libc::munmap(p, MAP);
            }
            let top = brk(base + MAP);
            if top >= base + MAP {
                // SAFETY: [base, base + MAP) is ours until the break moves back below it.
                unsafe {
                    for i in 0..4 {
                        std::ptr::write_volatile((base as *mut u8).add(i * PAGE * 16), 1);
                    }
                }
            }
            brk(base);
            ops += 1;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    report(ops, start.elapsed().as_secs_f64(), json!({}));
    Ok(())
}

/// fork(); the child runs `child` (async-signal-safe calls only) and exits.
fn fork_child(child: impl FnOnce()) -> anyhow::Result<libc::pid_t> {
    // SAFETY: the child only makes async-signal-safe calls (execve, pause, prctl, _exit).
    match unsafe { libc::fork() } {
        -1 => bail!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            child();
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        pid => Ok(pid),
    }
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

fn proc_churn(secs: f64) -> anyhow::Result<()> {
    let path = CString::new("/bin/true")?;
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    set_handler(libc::SIGUSR1, on_signal)?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut ops = 0u64;
    while Instant::now() < deadline {
        let pid = fork_child(|| unsafe {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127)
        })?;
        reap(pid);
        let pid = fork_child(|| unsafe {
            loop {
                libc::pause();
            }
        })?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        reap(pid);
        for _ in 0..8 {
            // SAFETY: SIGUSR1 has a no-op handler.
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
        }
        ops += 1;
    }
    report(ops, start.elapsed().as_secs_f64(), json!({}));
    Ok(())
}

fn short_lived(procs: u64, conns: u64, secs: f64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let net = std::thread::spawn(move || -> anyhow::Result<u64> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = l.local_addr()?;
        let mut n = 0;
        while n < conns && Instant::now() < deadline {
            let c = TcpStream::connect(addr)?;
            let (s, _) = l.accept()?;
            // The server closes first (as in `flood`): client ports are reused.
            drop(s);
            drop(c);
            n += 1;
        }
        Ok(n)
    });
    let mut forked = 0u64;
    while forked < procs && Instant::now() < deadline {
        // SAFETY: the child only calls _exit.
        let pid = fork_child(|| unsafe { libc::_exit(0) })?;
        reap(pid);
        forked += 1;
    }
    let connected = net
        .join()
        .map_err(|_| anyhow::anyhow!("connection thread panicked"))??;
    report(
        forked + connected,
        start.elapsed().as_secs_f64(),
        json!({"procs": forked, "conns": connected}),
    );
    Ok(())
}

/// Records one unit of flood produces (for pacing only): a loopback connection opened and
/// closed is 4 in the default mode (conn_open and conn_close at each end; it was about 16 when
/// every state change was a record, and pacing at 16 offered a quarter of the asked rate).
const CONN_EVENTS: f64 = 4.0;

fn flood(kind: FloodKind, rate: u64, secs: f64, signal_every: u64) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    set_handler(libc::SIGUSR1, on_signal)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let signal_every = signal_every.max(1);
    let per_unit = match kind {
        FloodKind::Listen => 1.0,
        FloodKind::Conn => CONN_EVENTS,
    };
    let units_per_sec = (rate as f64) / (per_unit + 1.0 / signal_every as f64);
    let (mut units, mut signals) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let due = if rate == 0 {
            units + 256
        } else {
            (now.duration_since(start).as_secs_f64() * units_per_sec) as u64
        };
        if due <= units {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // Catch up in bounded batches so the deadline is kept.
        for _ in 0..(due - units).min(1024) {
            match kind {
                // listen() on a socket that already listens only updates its backlog: one cheap
                // syscall, and tracer writes one record for each.
                // SAFETY: listen on our own listening socket.
                FloodKind::Listen => {
                    if unsafe { libc::listen(fd, 128) } != 0 {
                        bail!("listen: {}", std::io::Error::last_os_error());
                    }
                }
                FloodKind::Conn => {
                    let c = TcpStream::connect(addr).context("connect")?;
                    let (srv, _) = listener.accept().context("accept")?;
                    // The server closes first, as an HTTP server with `Connection: close`
                    // does: TIME_WAIT stays on its side and client ports are reused.
                    drop(srv);
                    drop(c);
                }
            }
            units += 1;
            if units.is_multiple_of(signal_every) {
                // SAFETY: SIGUSR1 has a no-op handler.
                unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
                signals += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Exact for listen(); for connections the tracer's own count is the reference.
    let events = match kind {
        FloodKind::Listen => units + signals,
        FloodKind::Conn => 0,
    };
    report(
        units,
        elapsed,
        json!({ "events": events, "signals": signals }),
    );
    Ok(())
}

fn hold_procs(count: usize) -> anyhow::Result<()> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut pids = Vec::with_capacity(count);
    let result = (|| -> anyhow::Result<()> {
        for _ in 0..count {
            pids.push(fork_child(|| unsafe {
                // Die with the parent even if it is killed before it can reap us.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != me {
                    libc::_exit(0);
                }
                loop {
                    libc::pause();
                }
            })?);
        }
        Ok(())
    })();
    if result.is_ok() {
        println!("ready {}", pids.len());
        std::io::stdout().flush()?;
        wait_for_stdin_eof();
    }
    for &pid in &pids {
        // SAFETY: our own children, by pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in &pids {
        reap(pid);
    }
    result
}

fn raise_nofile(want: u64) -> anyhow::Result<()> {
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        if rl.rlim_cur >= want {
            return Ok(());
        }
        if rl.rlim_max < want {
            bail!(
                "RLIMIT_NOFILE hard limit {} < {want}: spread the sockets over more processes",
                rl.rlim_max
            );
        }
        rl.rlim_cur = want;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
            bail!("setrlimit(NOFILE): {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn hold_sockets(pairs: usize) -> anyhow::Result<()> {
    raise_nofile(2 * pairs as u64 + 64)?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let mut held = Vec::with_capacity(2 * pairs);
    for _ in 0..pairs {
        let c = TcpStream::connect(addr).context("connect")?;
        let (s, _) = listener.accept().context("accept")?;
        held.push(c);
        held.push(s);
    }
    println!("ready {}", held.len());
    std::io::stdout().flush()?;
    wait_for_stdin_eof();
    drop(held);
    Ok(())
}

/// Reads lines from a child's stdout until one starts with `ready` (used by the bench).
pub fn wait_ready(out: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            bail!("the worker exited before it was ready");
        }
        if line.starts_with("ready") {
            return Ok(line.trim().to_owned());
        }
    }
}
