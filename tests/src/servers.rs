//! Real servers and load generators from the distribution (nginx + wrk, redis-server +
//! redis-benchmark, PostgreSQL + pgbench), each on loopback on a free port with a private
//! config and data directory, never the system service. Missing programs are installed from
//! Debian's packages; every process started is stopped by pid when its guard is dropped.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::recorder_util::{Output, TempDir, run_bounded};

/// How long a server may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after its stop signal, before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether we run in CI, where a program that cannot be installed or a server that cannot
/// start is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// PostgreSQL's server programs are not on PATH in Debian: they live in
/// /usr/lib/postgresql/<major>/bin. The newest major installed.
pub fn pg_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, p)| p)
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// A program a test needs and the Debian package that has it.
pub struct Needed {
    pub present: fn() -> bool,
    pub package: &'static str,
}

pub fn nginx_present() -> bool {
    on_path("nginx") || Path::new("/usr/sbin/nginx").is_file()
}

/// The programs of the healthy-server tests.
pub fn needed() -> Vec<Needed> {
    vec![
        Needed {
            present: nginx_present,
            package: "nginx-light",
        },
        Needed {
            present: || on_path("wrk"),
            package: "wrk",
        },
        Needed {
            present: || on_path("redis-server"),
            package: "redis-server",
        },
        Needed {
            present: || on_path("redis-benchmark"),
            package: "redis-tools",
        },
        Needed {
            present: || pg_bindir().is_some_and(|b| b.join("initdb").is_file()),
            package: "postgresql",
        },
        // pgbench is in postgresql-contrib up to 15 (Debian 12), in postgresql-client later.
        Needed {
            present: || {
                pg_bindir().is_some_and(|b| b.join("pgbench").is_file()) || on_path("pgbench")
            },
            package: if apt_has_candidate("postgresql-contrib") {
                "postgresql-contrib"
            } else {
                "postgresql-client"
            },
        },
    ]
}

fn apt_has_candidate(pkg: &str) -> bool {
    Command::new("apt-cache")
        .args(["policy", pkg])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim().starts_with("Candidate:") && !l.contains("(none)"))
        })
}

/// Installs the missing programs with apt-get (the package lists are refreshed only when the
/// first attempt fails). Returns what is still missing, with apt's complaint.
pub fn install_missing(needed: &[Needed]) -> Result<(), String> {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|n| !(n.present)())
        .map(|n| n.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("tracer-tests: installing {} (apt-get)", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            // The packages' postinst must not start the system services.
            .env("RUNLEVEL", "1")
            .stdin(Stdio::null())
            .output()
    };
    let mut out = install().map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !out.status.success() {
        let _ = Command::new("apt-get")
            .args(["update", "-qq"])
            .stdin(Stdio::null())
            .status();
        out = install().map_err(|e| format!("cannot run apt-get: {e}"))?;
    }
    let still: Vec<&str> = needed
        .iter()
        .filter(|n| !(n.present)())
        .map(|n| n.package)
        .collect();
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "apt-get install {} did not provide {}: {}",
            missing.join(" "),
            still.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Makes sure the programs are there: installs what is missing. `false` (after a loud SKIP)
/// when they cannot be had outside CI; in CI that is a failure.
pub fn require_programs() -> bool {
    match install_missing(&needed()) {
        Ok(()) => true,
        Err(e) if in_ci() => panic!("CI=true and the real servers are not available: {e}"),
        Err(e) => {
            eprintln!(
                "\n**********************************************************************\n\
                 SKIP: {e}\n\
                 **********************************************************************"
            );
            false
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: another process could take it in
/// between, which a server start then reports).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A process started by a test, stopped by pid (`stop_signal`, then SIGKILL) when dropped.
pub struct Guard {
    name: String,
    child: Option<Child>,
    stop_signal: i32,
}

impl Guard {
    pub fn spawn(name: &str, cmd: &mut Command, stop_signal: i32) -> Guard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Guard {
            name: name.to_owned(),
            child: Some(child),
            stop_signal,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails the test when the process has already exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            panic!("{} (pid {}) exited: {st}", self.name, c.id());
        }
    }

    /// Stops it (its stop signal, SIGKILL after [`STOP_TIMEOUT`]) and reaps it.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(c.id() as i32, self.stop_signal) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    eprintln!(
                        "tracer-tests: {} (pid {}) did not stop within {STOP_TIMEOUT:?}: SIGKILL",
                        self.name,
                        c.id()
                    );
                    let _ = c.kill();
                    let _ = c.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `ready` holds, failing the test (with `what`'s log) if `guard` exits first or
/// [`START_TIMEOUT`] passes. The poll runs in this process: no stream of helper processes.
#[track_caller]
fn wait_ready(guard: &mut Guard, what: &str, log: &Path, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(c) = guard.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            panic!(
                "{what} exited at start ({st}); log {}:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if ready() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what} did not become ready within {START_TIMEOUT:?}; log {}:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One request/response exchange with a loopback server (an HTTP GET, a redis command).
pub fn exchange(port: u16, request: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(request).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // Until the server closes or goes quiet: enough for a status page or an INFO reply.
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if request.starts_with(b"INFO") || request.starts_with(b"PING") {
            // A redis bulk reply: `$<len>\r\n<body>\r\n`, or `+PONG\r\n`.
            if buf.starts_with(b"+") && buf.ends_with(b"\r\n") {
                break;
            }
            if let Some(head) = buf.iter().position(|&b| b == b'\n') {
                let len: usize = std::str::from_utf8(&buf[1..head])
                    .ok()
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(usize::MAX);
                if buf.len() >= head + 1 + len + 2 {
                    break;
                }
            }
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// nginx serving a tiny static file from its own directory, config and logs in the temp dir.
pub struct Nginx {
    pub port: u16,
    pub dir: TempDir,
    pub guard: Guard,
}

impl Nginx {
    pub fn start(workers: u32) -> Nginx {
        let dir = TempDir::new("nginx");
        let port = free_port();
        let root = dir.join("www");
        std::fs::create_dir(&root).expect("create nginx's root");
        std::fs::write(
            root.join("index.html"),
            "<html><body>healthy</body></html>\n",
        )
        .expect("write the static file");
        // nginx's workers run as www-data: they need to reach the static file.
        use std::os::unix::fs::PermissionsExt;
        let perm = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()))
        };
        perm(dir.path(), 0o711);
        perm(&root, 0o755);
        perm(&root.join("index.html"), 0o644);
        let conf = dir.join("nginx.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process on;\nworker_processes {workers};\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 server {{\n    listen 127.0.0.1:{port};\n    root {root};\n\
                 location = /status {{ stub_status; }}\n  }}\n}}\n",
                root = root.display()
            ),
        )
        .expect("write nginx.conf");
        let bin = if on_path("nginx") {
            PathBuf::from("nginx")
        } else {
            PathBuf::from("/usr/sbin/nginx")
        };
        let log = dir.join("error.log");
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SIGQUIT: graceful shutdown (SIGTERM is nginx's fast one; either is fine here).
        let mut guard = Guard::spawn("nginx", &mut cmd, libc::SIGQUIT);
        wait_ready(&mut guard, "nginx", &log, || {
            exchange(port, b"GET / HTTP/1.0\r\n\r\n").is_some_and(|r| r.contains("healthy"))
        });
        Nginx { port, dir, guard }
    }

    /// stub_status's `accepts handled requests` counters.
    pub fn status(&self) -> (u64, u64, u64) {
        let r = exchange(self.port, b"GET /status HTTP/1.0\r\n\r\n").unwrap_or_default();
        let nums: Vec<u64> = r
            .lines()
            .skip_while(|l| !l.contains("accepts"))
            .nth(1)
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(nums.len(), 3, "unexpected nginx stub_status page:\n{r}");
        (nums[0], nums[1], nums[2])
    }
}

/// redis-server without persistence, on loopback.
pub struct Redis {
    pub port: u16,
    pub dir: TempDir,
    pub guard: Guard,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = TempDir::new("redis");
        let port = free_port();
        let log = dir.join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut guard = Guard::spawn("redis-server", &mut cmd, libc::SIGTERM);
        wait_ready(&mut guard, "redis-server", &log, || {
            exchange(port, b"PING\r\n").is_some_and(|r| r.starts_with("+PONG"))
        });
        Redis { port, dir, guard }
    }

    /// A field of `INFO`, as a number.
    pub fn info(&self, field: &str) -> u64 {
        let r = exchange(self.port, b"INFO\r\n").unwrap_or_default();
        r.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in redis INFO:\n{r}"))
    }
}

/// A PostgreSQL cluster of its own (initdb in the temp dir, trust auth on loopback only), run
/// in the foreground as the `postgres` user: PostgreSQL refuses to run as root.
pub struct Postgres {
    pub port: u16,
    pub dir: TempDir,
    pub bindir: PathBuf,
    pub log: PathBuf,
    pub guard: Guard,
}

/// uid and gid of a user, from the password database.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null, points to a valid passwd record.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

impl Postgres {
    pub fn start() -> Postgres {
        let bindir = pg_bindir().expect("PostgreSQL's server programs are installed");
        let (uid, gid) = user_ids("postgres").expect("a postgres user (from the package)");
        let dir = TempDir::new("pg");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the pg dir");
        let data = dir.join("data");
        let as_pg = |cmd: &mut Command| {
            // std drops the supplementary groups when it changes the uid.
            cmd.uid(uid).gid(gid);
            cmd.env("HOME", dir.path()).current_dir(dir.path());
        };
        let mut init = Command::new(bindir.join("initdb"));
        init.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        as_pg(&mut init);
        run_bounded(&mut init, Duration::from_secs(120)).ok();
        let port = free_port();
        let log = dir.join("postgres.log");
        let logf = std::fs::File::create(&log).expect("create postgres.log");
        std::os::unix::fs::chown(&log, Some(uid), Some(gid)).expect("chown postgres.log");
        let mut cmd = Command::new(bindir.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=100", "-c", "log_connections=on"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf.try_clone().expect("dup the log fd"));
        as_pg(&mut cmd);
        // SIGINT: PostgreSQL's fast shutdown (clients are disconnected, no waiting).
        let mut guard = Guard::spawn("postgres", &mut cmd, libc::SIGINT);
        let pidfile = data.join("postmaster.pid");
        wait_ready(&mut guard, "postgres", &log, || {
            // The 8th line of postmaster.pid is the server's status.
            std::fs::read_to_string(&pidfile)
                .is_ok_and(|s| s.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
        });
        Postgres {
            port,
            dir,
            bindir,
            log,
            guard,
        }
    }

    pub fn pgbench(&self) -> Command {
        let bin = self.bindir.join("pgbench");
        let mut cmd = Command::new(if bin.is_file() {
            bin
        } else {
            PathBuf::from("pgbench")
        });
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U"])
            .arg("postgres");
        cmd
    }

    /// `pgbench -i`: the benchmark's tables (scale 1), before anything is traced.
    pub fn init_bench(&self) -> Output {
        let mut cmd = self.pgbench();
        cmd.args(["-i", "-q", "-s", "1", "postgres"]);
        run_bounded(&mut cmd, Duration::from_secs(120)).ok()
    }

    /// How many connections the server logged as received (`log_connections`).
    pub fn connections_received(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("connection received: host=127.0.0.1"))
            .count()
    }
}
