//! The workloads `tracer demo` runs to reproduce the incidents of the brief, each as a child
//! process of its own (`tracer scenario ROLE ...`, started through a symlink so its comm is
//! "node", "monit", "ruby"...). Loopback only, bounded in time, memory-hungry roles only
//! inside a memory cgroup the demo creates.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// monit-like: keeps a server running, health-checks it, SIGTERMs and restarts it.
    Supervisor,
    /// A server that never closes client connections (runs out of fds: accept() fails EMFILE).
    LeakyServer,
    /// Long-lived "WebSocket" clients that ping and never read.
    WsClients,
    /// An HTTP proxy that answers and never closes: CLOSE_WAIT, growing memory.
    Proxy,
    /// HTTP clients that close after each answer.
    HttpClients,
    /// Allocates steadily until its memory cgroup's OOM killer stops it.
    Crawler,
    /// A "database" that accepts and never answers.
    Db,
    /// An API worker whose database connections pile up.
    ApiWorker,
}

#[derive(Args, Debug, Clone)]
pub struct ScenarioArgs {
    #[arg(value_enum)]
    pub role: Role,
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Restarts (supervisor), connections per second (clients), MiB per second (crawler).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Stop after this many seconds whatever happens.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn set_nofile(soft: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to an rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = soft.min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn listen(port: u16) -> std::io::Result<TcpListener> {
    // std sets SO_REUSEADDR on Unix listeners, so a restarted server can bind again.
    TcpListener::bind(addr(port))
}

/// Runs one role; the process exits when it returns.
pub fn run(a: &ScenarioArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    match a.role {
        Role::Supervisor => supervisor(a, deadline),
        Role::LeakyServer => leaky_server(a.port, deadline),
        Role::WsClients => ws_clients(a.port, a.rate.max(1), deadline),
        Role::Proxy => proxy(a.port, deadline),
        Role::HttpClients => http_clients(a.port, a.rate.max(1), deadline),
        Role::Crawler => crawler(a.rate.max(1), deadline),
        Role::Db => db(a.port, deadline),
        Role::ApiWorker => api_worker(a.port, a.rate.max(1), deadline),
    }
}

/// Starts `role` as a child through the symlink `name` in `bin_dir` (so its comm is `name`).
/// With `cgroup_procs` (a `cgroup.procs` file), the child joins that cgroup before it execs, so
/// not one allocation happens outside the limit.
pub fn spawn(
    bin_dir: &Path,
    name: &str,
    role: &str,
    port: u16,
    rate: u32,
    seconds: u64,
    cgroup_procs: Option<&Path>,
) -> std::io::Result<Child> {
    let link = bin_dir.join(name);
    let mut cmd = Command::new(&link);
    if let Some(procs) = cgroup_procs {
        let path = std::ffi::CString::new(procs.as_os_str().as_encoded_bytes())
            .map_err(std::io::Error::other)?;
        // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec, on
        // memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" means the writing process itself.
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    cmd.arg0(name)
        .args([
            "scenario",
            role,
            "--port",
            &port.to_string(),
            "--rate",
            &rate.to_string(),
        ])
        .args(["--seconds", &seconds.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    cmd.spawn()
}

fn health_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr(port), Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(400)));
    let mut buf = [0u8; 8];
    s.write_all(b"GET /health\n").is_ok() && matches!(s.read(&mut buf), Ok(n) if n > 0)
}

fn bin_dir() -> PathBuf {
    std::env::var_os("TRACER_DEMO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn supervisor(a: &ScenarioArgs, deadline: Instant) -> anyhow::Result<()> {
    // The low limit the server inherits from its supervisor (the incident's 1024, smaller here).
    set_nofile(64);
    let restarts = if a.rate == 0 { 3 } else { a.rate };
    let mut started = 0;
    while started <= restarts && Instant::now() < deadline {
        let mut child = spawn(
            &bin_dir(),
            "node",
            "leaky-server",
            a.port,
            0,
            a.seconds,
            None,
        )?;
        started += 1;
        let mut failures = 0;
        std::thread::sleep(Duration::from_millis(300));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            if health_ok(a.port) {
                failures = 0;
                continue;
            }
            failures += 1;
            if failures >= 2 {
                break;
            }
        }
        // SIGTERM, as monit does; then reap it.
        // SAFETY: kill with a pid of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn leaky_server(port: u16, deadline: Instant) -> anyhow::Result<()> {
    let l = listen(port)?;
    l.set_nonblocking(true)?;
    let mut kept = Vec::new();
    while Instant::now() < deadline {
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_read_timeout(Some(Duration::from_millis(30)));
                let mut buf = [0u8; 16];
                match s.peek(&mut buf) {
                    Ok(n) if buf[..n].starts_with(b"GET /health") => {
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(b"OK\n");
                    }
                    // A long-lived client: kept open forever, never read (the leak).
                    _ => kept.push(s),
                }
            }
            // Out of fds (EMFILE) or nothing pending: spin like an event loop does.
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    Ok(())
}

fn ws_clients(port: u16, rate: u32, deadline: Instant) -> anyhow::Result<()> {
    set_nofile(4096);
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut last_ping = Instant::now();
    while Instant::now() < deadline {
        if conns.len() < 1000
            && let Ok(s) = TcpStream::connect_timeout(&addr(port), Duration::from_millis(200))
        {
            let _ = s.set_nonblocking(true);
            conns.push(s);
        }
        if last_ping.elapsed() > Duration::from_millis(300) {
            // Data the server never reads: when it dies, its kernel answers with resets.
            conns.retain_mut(|c| c.write_all(b"ping\n").is_ok());
            last_ping = Instant::now();
        }
        std::thread::sleep(Duration::from_secs_f64(1.0 / rate as f64));
    }
    Ok(())
}

fn proxy(port: u16, deadline: Instant) -> anyhow::Result<()> {
    set_nofile(4096);
    let l = listen(port)?;
    l.set_nonblocking(true)?;
    let mut kept = Vec::new();
    let mut buffers: Vec<Vec<u8>> = Vec::new();
    while Instant::now() < deadline {
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                // The bug: the upstream socket and a 1 MiB buffer per request are never freed.
                kept.push(s);
                buffers.push(vec![1u8; 1 << 20]);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    Ok(())
}

fn http_clients(port: u16, rate: u32, deadline: Instant) -> anyhow::Result<()> {
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr(port), Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: proxy\r\n\r\n");
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            // Closes its end; the proxy never closes its own: CLOSE_WAIT.
        }
        std::thread::sleep(Duration::from_secs_f64(1.0 / rate as f64));
    }
    Ok(())
}

fn crawler(mib_per_sec: u32, deadline: Instant) -> anyhow::Result<()> {
    let mut pages: Vec<Vec<u8>> = Vec::new();
    let step = Duration::from_millis(100);
    let chunk = ((mib_per_sec as usize) << 20) / 10;
    while Instant::now() < deadline {
        let mut v = vec![0u8; chunk.max(4096)];
        // Touch every page so it is resident, not just mapped.
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        pages.push(v);
        std::thread::sleep(step);
    }
    Ok(())
}

fn db(port: u16, deadline: Instant) -> anyhow::Result<()> {
    set_nofile(4096);
    let l = listen(port)?;
    l.set_nonblocking(true)?;
    let mut kept = Vec::new();
    while Instant::now() < deadline {
        match l.accept() {
            Ok((s, _)) => kept.push(s), // accepts, never answers
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    Ok(())
}

fn api_worker(port: u16, rate: u32, deadline: Instant) -> anyhow::Result<()> {
    let mut pool = Vec::new();
    while Instant::now() < deadline {
        // Every request takes a new connection and waits forever for the database's answer.
        if pool.len() < 40
            && let Ok(mut s) = TcpStream::connect_timeout(&addr(port), Duration::from_millis(200))
        {
            let _ = s.write_all(b"SELECT 1;\n");
            pool.push(s);
        }
        std::thread::sleep(Duration::from_secs_f64(1.0 / rate as f64));
    }
    Ok(())
}
