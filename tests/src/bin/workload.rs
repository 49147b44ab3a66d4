//! The programs the end-to-end tests trace. Each subcommand does one thing the tracer must see,
//! with raw syscalls where the test asserts on their details, and reports what it did (fds,
//! addresses, ports) as one JSON object per line on stdout, `{"event": "...", ...}`, so that the
//! test can compare the tracer's view with the truth. Commands come on stdin, one per line.
//!
//! Subcommands that allocate refuse to run outside a memory cgroup with a limit.
use std::{
    ffi::CString,
    io::{self, BufRead, Write},
    mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::ExitCode,
    ptr,
};

use serde_json::{Value, json};

fn say(v: Value) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn fail(what: &str) -> ! {
    let e = io::Error::last_os_error();
    say(json!({"event": "error", "what": what, "error": e.to_string(), "errno": e.raw_os_error()}));
    std::process::exit(3)
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: workload COMMAND [OPTIONS]\n\
         \x20 tcp-server --bind ADDR [--backlog N]   listen, accept one connection, then obey stdin:\n\
         \x20                                        close | abort (SO_LINGER 0) | exit\n\
         \x20 accept-emfile --bind ADDR --nofile N [--sync]\n\
         \x20                                        queue a connection, use up RLIMIT_NOFILE, accept(),\n\
         \x20                                        wait for EOF (--sync: wait for a line after listen())\n\
         \x20 idle [--secs N]                        say ready, then obey stdin: exit N (EOF: exit 0)\n\
         \x20 exit --code N                          exit with status N\n\
         \x20 fork-exit --code N                     fork a child that exits with N, reap it\n\
         \x20 hog --mib N | --unbounded [--mib-per-s R]\n\
         \x20                                        touch N MiB (then wait for stdin EOF), or touch until\n\
         \x20                                        killed (at R MiB/s: 1 MiB at a time, paced by the clock)\n\
         \x20 wait-hog [--mib-per-s R]               wait for a line on stdin (meanwhile moved into a\n\
         \x20                                        memory cgroup), then hog --unbounded\n\
         \x20 mmap --mib N                           mmap N MiB anonymous rw-, then munmap it\n\
         \x20 brk --mib N                            grow the heap with sbrk by N MiB\n\
         \x20 reexec COMMAND...                      exec this program again with COMMAND"
    );
    ExitCode::from(2)
}

/// `--name value` from the arguments.
fn opt(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn opt_num(args: &[String], name: &str, default: Option<u64>) -> u64 {
    match opt(args, name) {
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("workload: {name} wants a number, got {v:?}");
            std::process::exit(2)
        }),
        None => default.unwrap_or_else(|| {
            eprintln!("workload: {name} is required");
            std::process::exit(2)
        }),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "tcp-server" => tcp_server(rest),
        "accept-emfile" => accept_emfile(rest),
        "idle" => idle(rest),
        "exit" => std::process::exit(opt_num(rest, "--code", None) as i32),
        "fork-exit" => fork_exit(rest),
        "hog" => hog(rest),
        "mmap" => mmap(rest),
        "brk" => brk(rest),
        "reexec" => reexec(rest),
        "rename" => rename(rest),
        "kernel-matrix" => kernel_matrix(),
        "join-hog" => join_hog(rest),
        "wait-hog" => wait_hog(rest),
        _ => usage(),
    }
}

// ---- sockets ----------------------------------------------------------------------------

fn to_sockaddr(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match a {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be(sin6.sin6_port),
            ))
        }
        _ => None,
    }
}

fn name_of(fd: i32, peer: bool) -> Option<SocketAddr> {
    // SAFETY: zeroed storage; getsockname/getpeername write at most `len` bytes into it.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = &mut ss as *mut _ as *mut libc::sockaddr;
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r < 0 { None } else { from_sockaddr(&ss) }
}

fn addr_json(a: Option<SocketAddr>) -> Value {
    match a {
        Some(a) => json!({"ip": a.ip().to_string(), "port": a.port()}),
        None => Value::Null,
    }
}

fn parse_bind(args: &[String]) -> SocketAddr {
    let b = opt(args, "--bind").unwrap_or_else(|| "127.0.0.1:0".into());
    b.parse().unwrap_or_else(|_| {
        eprintln!("workload: --bind wants ADDR:PORT ([::1]:0 for IPv6), got {b:?}");
        std::process::exit(2)
    })
}

fn tcp_socket(a: &SocketAddr) -> i32 {
    let af = if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(af, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        fail("socket");
    }
    fd
}

fn set_int_opt(fd: i32, level: i32, name: i32, v: i32) {
    // SAFETY: the option value is a live c_int of the stated size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const i32 as *const libc::c_void,
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        fail("setsockopt");
    }
}

/// SO_LINGER {on, 0}: close() then aborts the connection with a RST.
fn set_linger_zero(fd: i32) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a live linger struct of the stated size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r < 0 {
        fail("setsockopt(SO_LINGER)");
    }
}

/// socket + bind + listen; returns (fd, bound address).
fn listen_on(a: &SocketAddr, backlog: i32) -> (i32, SocketAddr) {
    let fd = tcp_socket(a);
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    if a.is_ipv6() {
        set_int_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1);
    }
    let (ss, len) = to_sockaddr(a);
    // SAFETY: ss/len describe a valid sockaddr.
    if unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) } < 0 {
        fail("bind");
    }
    // SAFETY: plain syscall.
    if unsafe { libc::listen(fd, backlog) } < 0 {
        fail("listen");
    }
    (
        fd,
        name_of(fd, false).unwrap_or_else(|| fail("getsockname")),
    )
}

fn close(fd: i32) {
    // SAFETY: closing an fd this program owns.
    if unsafe { libc::close(fd) } < 0 {
        fail("close");
    }
}

fn tcp_server(args: &[String]) -> ExitCode {
    let bind = parse_bind(args);
    let backlog = opt_num(args, "--backlog", Some(16)) as i32;
    let (lfd, local) = listen_on(&bind, backlog);
    say(json!({
        "event": "listening", "pid": std::process::id(), "fd": lfd, "backlog": backlog,
        "ip": local.ip().to_string(), "port": local.port(), "addr": local.to_string(),
    }));
    // SAFETY: null address pointers are allowed.
    let cfd = unsafe { libc::accept4(lfd, ptr::null_mut(), ptr::null_mut(), libc::SOCK_CLOEXEC) };
    if cfd < 0 {
        fail("accept4");
    }
    say(json!({
        "event": "accepted", "fd": cfd,
        "local": addr_json(name_of(cfd, false)), "peer": addr_json(name_of(cfd, true)),
    }));
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "close" => {
                close(cfd);
                say(json!({"event": "closed", "fd": cfd}));
            }
            "abort" => {
                set_linger_zero(cfd);
                close(cfd);
                say(json!({"event": "aborted", "fd": cfd}));
            }
            "exit" => break,
            other => eprintln!("workload: unknown command {other:?}"),
        }
    }
    ExitCode::SUCCESS
}

fn accept_emfile(args: &[String]) -> ExitCode {
    let bind = parse_bind(args);
    let nofile = opt_num(args, "--nofile", Some(16));
    let late = args.iter().any(|a| a == "--late-limit");
    if let Some(name) = opt(args, "--rename") {
        set_name(&name);
    }
    let set_limit = || {
        let lim = libc::rlimit {
            rlim_cur: nofile,
            rlim_max: nofile,
        };
        // SAFETY: plain syscall on a live struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } < 0 {
            fail("setrlimit");
        }
    };
    // The limit first, as a program (or its supervisor) sets it at start-up; or (--late-limit)
    // once the tracer knows the process with the limit it had at exec.
    if !late {
        set_limit();
    }
    let (lfd, local) = listen_on(&bind, 4);
    if late || args.iter().any(|a| a == "--sync") {
        // Let the test see the tracer take in this process before the burst below.
        say(json!({"event": "listening", "fd": lfd, "port": local.port()}));
        let mut line = String::new();
        let _ = io::stdin().lock().read_line(&mut line);
    }
    if late {
        set_limit();
    }
    // A connection waiting in the backlog, so that accept() has something to fail on.
    let client = tcp_socket(&local);
    let (ss, len) = to_sockaddr(&local);
    // SAFETY: ss/len describe a valid sockaddr.
    if unsafe { libc::connect(client, &ss as *const _ as *const libc::sockaddr, len) } < 0 {
        fail("connect");
    }
    let client_addr = name_of(client, false);
    let null = CString::new("/dev/null").expect("no NUL");
    let mut filler = Vec::new();
    loop {
        // SAFETY: plain syscall with a valid C string.
        let fd = unsafe { libc::open(null.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            break;
        }
        filler.push(fd);
    }
    let open_errno = io::Error::last_os_error().raw_os_error();
    // SAFETY: plain syscall.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    let socket_errno = if s < 0 {
        io::Error::last_os_error().raw_os_error()
    } else {
        None
    };
    // SAFETY: null address pointers are allowed.
    let a = unsafe { libc::accept(lfd, ptr::null_mut(), ptr::null_mut()) };
    let accept_errno = if a < 0 {
        io::Error::last_os_error().raw_os_error()
    } else {
        None
    };
    say(json!({
        "event": "emfile", "pid": std::process::id(), "listen_fd": lfd,
        "ip": local.ip().to_string(), "port": local.port(),
        "client_fd": client, "client": addr_json(client_addr),
        "nofile": nofile, "fillers": filler.len(), "open_errno": open_errno,
        "socket_errno": socket_errno, "accept_errno": accept_errno, "accept_ret": a,
    }));
    // Stay alive at the limit, as a stuck server does, until stdin closes.
    watchdog(60);
    for line in io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

// ---- processes --------------------------------------------------------------------------

/// Renames this process without exec, as daemons do (prctl PR_SET_NAME on the main thread).
fn set_name(name: &str) {
    let c = CString::new(name).expect("no NUL in the name");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    if unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) } < 0 {
        fail("prctl(PR_SET_NAME)");
    }
}

/// `rename --name NAME`: renames itself, says so, then idles until a signal or stdin EOF.
fn rename(args: &[String]) -> ExitCode {
    let Some(name) = opt(args, "--name") else {
        eprintln!("workload: --name is required");
        return ExitCode::from(2);
    };
    set_name(&name);
    say(json!({"event": "renamed", "pid": std::process::id(), "name": name}));
    watchdog(60);
    for line in io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// Bounds the lifetime of a waiting workload: SIGALRM (default action: terminate).
fn watchdog(secs: u64) {
    // SAFETY: plain syscall.
    unsafe { libc::alarm(secs as u32) };
}

fn idle(args: &[String]) -> ExitCode {
    watchdog(opt_num(args, "--secs", Some(60)));
    say(json!({"event": "ready", "pid": std::process::id()}));
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if let Some(code) = line.trim().strip_prefix("exit ") {
            std::process::exit(code.trim().parse().unwrap_or(1));
        }
    }
    ExitCode::SUCCESS
}

fn fork_exit(args: &[String]) -> ExitCode {
    let code = opt_num(args, "--code", None) as i32;
    // SAFETY: the child only calls _exit.
    let child = unsafe { libc::fork() };
    if child < 0 {
        fail("fork");
    }
    if child == 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: plain syscall on a live int.
    if unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
        fail("waitpid");
    }
    say(json!({"event": "reaped", "pid": std::process::id(), "child": child, "status": status}));
    ExitCode::SUCCESS
}

fn reexec(args: &[String]) -> ExitCode {
    say(json!({
        "event": "before-exec", "pid": std::process::id(),
        "brk": format!("{:#x}", current_brk()), "start_brk": format!("{:#x}", start_brk()),
    }));
    let exe = CString::new("/proc/self/exe").expect("no NUL");
    let argv: Vec<CString> = std::iter::once("workload".to_owned())
        .chain(args.iter().cloned())
        .map(|a| CString::new(a).expect("no NUL in arguments"))
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(ptr::null());
    // SAFETY: NUL-terminated strings and a null-terminated argv that outlive the call.
    unsafe { libc::execv(exe.as_ptr(), ptrs.as_ptr()) };
    fail("execv")
}

// ---- memory -----------------------------------------------------------------------------

/// Refuses to allocate unless this process sits in a memory cgroup limited to at most 2 GiB.
fn require_memory_limit() -> u64 {
    match tracer_tests::cgroup::current_memory_limit() {
        Some(l) if l <= 2 << 30 => l,
        other => {
            say(json!({
                "event": "error",
                "what": "refusing to allocate outside a memory cgroup limited to 2 GiB or less",
                "limit": other,
            }));
            std::process::exit(3)
        }
    }
}

fn map_anon(len: usize, flags: i32) -> *mut u8 {
    // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        fail("mmap");
    }
    p.cast()
}

fn touch(p: *mut u8, len: usize) {
    for off in (0..len).step_by(4096) {
        // SAFETY: inside the mapping of `len` bytes at `p`.
        unsafe { ptr::write_volatile(p.add(off), 1) };
    }
}

fn hog(args: &[String]) -> ExitCode {
    let limit = require_memory_limit();
    if args.iter().any(|a| a == "--unbounded") {
        watchdog(60);
        // Far more than any test cgroup allows; NORESERVE so only touched pages count.
        let len = 4usize << 30;
        let p = map_anon(len, libc::MAP_NORESERVE);
        say(json!({"event": "hogging", "pid": std::process::id(), "limit": limit}));
        match opt(args, "--mib-per-s") {
            None => touch(p, len),
            Some(_) => {
                let rate = opt_num(args, "--mib-per-s", None).max(1) as f64;
                let start = std::time::Instant::now();
                for mib in 0..len >> 20 {
                    // SAFETY: the k-th MiB of the mapping of `len` bytes at `p`.
                    touch(unsafe { p.add(mib << 20) }, 1 << 20);
                    let due = std::time::Duration::from_secs_f64((mib + 1) as f64 / rate);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
        }
        say(json!({"event": "error", "what": "touched 4 GiB and was not killed"}));
        return ExitCode::from(4);
    }
    let mib = opt_num(args, "--mib", None) as usize;
    watchdog(60);
    let len = mib << 20;
    let p = map_anon(len, 0);
    touch(p, len);
    say(json!({
        "event": "touched", "pid": std::process::id(), "mib": mib,
        "addr": format!("{:#x}", p as usize), "vm_rss_kb": status_kb("VmRSS"),
    }));
    // Hold the memory until told to go.
    for line in io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

fn mmap(args: &[String]) -> ExitCode {
    require_memory_limit();
    let len = (opt_num(args, "--mib", None) as usize) << 20;
    // `--file`: a shared read-only mapping of a sparse file of `len` bytes made in the temp
    // directory (never touched: it costs no memory), instead of an anonymous one.
    let file = args.iter().any(|a| a == "--file").then(|| {
        let path = std::env::temp_dir().join(format!("workload-mmap-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap_or_else(|_| fail("create the file to map"));
        let _ = std::fs::remove_file(&path);
        f.set_len(len as u64)
            .unwrap_or_else(|_| fail("size the file to map"));
        f
    });
    let (p, fd) = match &file {
        Some(f) => {
            use std::os::fd::AsRawFd;
            let fd = f.as_raw_fd();
            // SAFETY: a fresh shared read-only mapping of our own file; nothing reads it.
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                fail("mmap");
            }
            (p.cast::<u8>(), fd)
        }
        None => (map_anon(len, 0), -1),
    };
    say(
        json!({"event": "mapped", "pid": std::process::id(), "addr": format!("{:#x}", p as usize), "len": len, "fd": fd}),
    );
    // SAFETY: unmapping exactly the mapping made above, never used again.
    if unsafe { libc::munmap(p.cast(), len) } < 0 {
        fail("munmap");
    }
    say(json!({"event": "unmapped", "addr": format!("{:#x}", p as usize), "len": len}));
    ExitCode::SUCCESS
}

fn current_brk() -> usize {
    // SAFETY: sbrk(0) only reads the break.
    unsafe { libc::sbrk(0) as usize }
}

/// `start_brk` from /proc/self/stat (field 47): where this image's heap begins.
fn start_brk() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // Fields after the comm start at field 3.
    after_comm
        .split_whitespace()
        .nth(47 - 3)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn status_kb(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn brk(args: &[String]) -> ExitCode {
    require_memory_limit();
    let by = (opt_num(args, "--mib", None) as isize) << 20;
    let prev = current_brk();
    // SAFETY: moves the break up; the new memory is never used through pointers here.
    if unsafe { libc::sbrk(by) } as isize == -1 {
        fail("sbrk");
    }
    let new = current_brk();
    say(json!({
        "event": "brk", "pid": std::process::id(), "start_brk": format!("{:#x}", start_brk()),
        "prev": format!("{:#x}", prev), "new": format!("{:#x}", new),
    }));
    ExitCode::SUCCESS
}

// ---- every kind at once (the kernel matrix in `cargo xtask vm-test`) ----------------------

fn connect_to(a: &SocketAddr) -> (i32, i32) {
    let fd = tcp_socket(a);
    let (ss, len) = to_sockaddr(a);
    // SAFETY: ss/len describe a valid sockaddr.
    let r = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
    let errno = if r < 0 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    (fd, errno)
}

fn accept_one(lfd: i32) -> i32 {
    // SAFETY: null address pointers are allowed.
    let fd = unsafe { libc::accept4(lfd, ptr::null_mut(), ptr::null_mut(), libc::SOCK_CLOEXEC) };
    if fd < 0 {
        fail("accept4");
    }
    fd
}

fn send_recv(from: i32, to: i32, n: usize) {
    let buf = vec![7u8; n];
    // SAFETY: writing from and reading into live buffers of `n` bytes.
    if unsafe { libc::write(from, buf.as_ptr().cast(), n) } != n as isize {
        fail("write");
    }
    let mut got = vec![0u8; n];
    let mut off = 0;
    while off < n {
        // SAFETY: as above, the rest of `got`.
        let r = unsafe { libc::read(to, got[off..].as_mut_ptr().cast(), n - off) };
        if r <= 0 {
            fail("read");
        }
        off += r as usize;
    }
}

fn wait_child(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: plain syscall on a live int.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        fail("waitpid");
    }
    status
}

/// `kernel-matrix`: one of every event kind the tracer reports, on loopback, then one JSON line
/// with the truth (pids, ports, signals) for the VM test to compare with the tracer's view.
/// Allocates (mmap, brk): refuses outside a memory cgroup with a limit.
fn kernel_matrix() -> ExitCode {
    require_memory_limit();
    watchdog(60);
    let me = std::process::id();
    let lo: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let (lfd, server) = listen_on(&lo, 16);
    // A connection that carries data both ways and closes cleanly, client first.
    let (c1, e1) = connect_to(&server);
    if e1 != 0 {
        fail("connect");
    }
    let a1 = accept_one(lfd);
    send_recv(c1, a1, 1000);
    send_recv(a1, c1, 2000);
    let c1_port = name_of(c1, false).map_or(0, |a| a.port());
    close(c1);
    close(a1);
    // One aborted with SO_LINGER 0: a reset sent by the client, received by the server side.
    let (c2, _) = connect_to(&server);
    let a2 = accept_one(lfd);
    let c2_port = name_of(c2, false).map_or(0, |a| a.port());
    set_linger_zero(c2);
    close(c2);
    close(a2);
    // One refused: a port bound and closed again has no listener.
    let (tmp, refused) = listen_on(&lo, 1);
    close(tmp);
    let (c3, refused_errno) = connect_to(&refused);
    close(c3);
    close(lfd);
    // RLIMIT_NOFILE, and a rename without exec.
    let lim = libc::rlimit {
        rlim_cur: 900,
        rlim_max: 1000,
    };
    // SAFETY: plain syscall on a live struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } < 0 {
        fail("setrlimit");
    }
    set_name("vm-renamed");
    // A child killed with SIGTERM, one that exits with 7, one that execs `exit --code 3`.
    let fork = || {
        // SAFETY: the child only calls async-signal-safe functions (pause, _exit, execv).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            fail("fork");
        }
        pid
    };
    let sleeper = fork();
    if sleeper == 0 {
        loop {
            // SAFETY: plain syscall.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: plain syscall, to our own child.
    if unsafe { libc::kill(sleeper, libc::SIGTERM) } < 0 {
        fail("kill");
    }
    let sleeper_status = wait_child(sleeper);
    let exiter = fork();
    if exiter == 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(7) };
    }
    let exiter_status = wait_child(exiter);
    let execer = fork();
    if execer == 0 {
        let exe = CString::new("/proc/self/exe").expect("no NUL");
        let argv: Vec<CString> = ["workload", "exit", "--code", "3"]
            .iter()
            .map(|a| CString::new(*a).expect("no NUL"))
            .collect();
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(ptr::null());
        // SAFETY: NUL-terminated strings and a null-terminated argv that outlive the call.
        unsafe { libc::execv(exe.as_ptr(), ptrs.as_ptr()) };
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(127) };
    }
    let execer_status = wait_child(execer);
    // Memory: an 8 MiB mapping touched and unmapped, and the heap grown by 8 MiB.
    let len = 8usize << 20;
    let p = map_anon(len, 0);
    touch(p, len);
    // SAFETY: unmapping exactly the mapping made above, never used again.
    if unsafe { libc::munmap(p.cast(), len) } < 0 {
        fail("munmap");
    }
    let brk_before = current_brk();
    // SAFETY: moves the break up; the new memory is never used through pointers here.
    if unsafe { libc::sbrk(8 << 20) } as isize == -1 {
        fail("sbrk");
    }
    say(json!({
        "event": "matrix", "pid": me, "server_port": server.port(),
        "client_port": c1_port, "reset_client_port": c2_port,
        "refused_port": refused.port(), "refused_errno": refused_errno,
        "sent": 1000, "received": 2000, "nofile_soft": 900, "nofile_hard": 1000,
        "renamed": "vm-renamed", "sleeper": sleeper, "sleeper_status": sleeper_status,
        "exiter": exiter, "exiter_status": exiter_status,
        "execer": execer, "execer_status": execer_status,
        "mmap_len": len, "brk_before": format!("{brk_before:#x}"),
    }));
    ExitCode::SUCCESS
}

/// `wait-hog [--mib-per-s R]`: says `waiting`, waits for a line on stdin (its parent moves it
/// into a memory cgroup meanwhile, as runc or systemd move a process after fork), then hogs as
/// `hog --unbounded` does, which refuses to start outside a limited cgroup.
fn wait_hog(args: &[String]) -> ExitCode {
    say(json!({"event": "waiting", "pid": std::process::id()}));
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line).is_err() || line.is_empty() {
        return ExitCode::SUCCESS;
    }
    let mut rest: Vec<String> = vec!["--unbounded".into()];
    if let Some(r) = opt(args, "--mib-per-s") {
        rest.extend(["--mib-per-s".into(), r]);
    }
    hog(&rest)
}

/// `join-hog --cgroup DIR`: joins memory cgroup DIR itself (so a tracer that learnt its cgroup
/// at fork has the old one), then touches memory until the cgroup's OOM killer stops it.
fn join_hog(args: &[String]) -> ExitCode {
    let Some(dir) = opt(args, "--cgroup") else {
        eprintln!("workload: --cgroup is required");
        return ExitCode::from(2);
    };
    let procs = std::path::Path::new(&dir).join("cgroup.procs");
    if let Err(e) = std::fs::write(&procs, std::process::id().to_string()) {
        say(
            json!({"event": "error", "what": format!("joining {}", procs.display()), "error": e.to_string()}),
        );
        return ExitCode::from(3);
    }
    let mut rest: Vec<String> = vec!["--unbounded".into()];
    if let Some(r) = opt(args, "--mib-per-s") {
        rest.extend(["--mib-per-s".into(), r]);
    }
    hog(&rest)
}
