//! The operator's screens, driven for real: `tracer top` in a tmux terminal (keys sent, the
//! pane captured) against a workload that leaks sockets, and the terminal it leaves behind
//! after q, Ctrl-C, SIGTERM and a hangup; `tracer report --html` of a recorded incident,
//! rendered by headless Chromium.
//!
//! tmux and chromium are installed with apt-get when missing; in CI (`CI=true`) a tool that
//! cannot be had is a failure, elsewhere a loud SKIP. Every process started here (the tmux
//! server, the workloads, chromium) is stopped by pid.
use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use tracer_tests::{
    http::http_get,
    otlp::{attrs, metric_points, point_value, received, require_otlp_python, start_receiver},
    poll,
    recorder_util::{Bin, TempDir, demo_threshold_args, run_bounded, run_demo},
    require_root,
    servers::{Guard, Needed, free_port, in_ci, install_missing},
    test_pid,
};

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// The tool, installed if missing; false (after a loud SKIP) when it cannot be had outside CI.
fn require_tool(needed: Needed, what: &str) -> bool {
    match install_missing(&[needed]) {
        Ok(()) => true,
        Err(e) if in_ci() => panic!("CI=true and {what} is not available: {e}"),
        Err(e) => {
            eprintln!(
                "\n**********************************************************************\n\
                 SKIP: {what}: {e}\n\
                 **********************************************************************"
            );
            false
        }
    }
}

fn require_tmux() -> bool {
    require_tool(
        Needed {
            present: || on_path("tmux"),
            package: "tmux",
        },
        "tmux",
    )
}

/// A tmux server of this test's own, with one 200x50 pane running a plain bash.
struct Tmux {
    socket: String,
    server_pid: u32,
}

const PROMPT: &str = "TOPTEST$";

impl Tmux {
    fn start(name: &str) -> Tmux {
        let socket = format!("tracer-top-{name}-{}", std::process::id());
        let st = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
            ])
            .args(["-x", "200", "-y", "50"])
            .args([
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm-256color",
            ])
            .args([&format!("PS1={PROMPT} "), "bash", "--norc", "--noprofile"])
            .stdin(Stdio::null())
            .status()
            .expect("run tmux");
        assert!(st.success(), "tmux new-session failed: {st}");
        let mut t = Tmux {
            socket,
            server_pid: 0,
        };
        t.server_pid = t.display("#{pid}").parse().expect("tmux server pid");
        t.wait_for("the shell prompt", Duration::from_secs(10), |s| {
            s.contains(PROMPT)
        });
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn display(&self, format: &str) -> String {
        self.tmux(&["display", "-p", "-t", "t", format])
            .trim()
            .to_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// A command line typed into the shell.
    fn type_line(&self, line: &str) {
        self.keys(&["-l", line]);
        self.keys(&["Enter"]);
    }

    fn capture(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    #[track_caller]
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.capture();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("the pane never showed {what} within {timeout:?}; it shows:\n{s}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The shell's process (the pane's).
    fn shell_pid(&self) -> u32 {
        self.display("#{pane_pid}").parse().expect("pane pid")
    }

    /// Whether the pane shows its alternate screen.
    fn alternate_on(&self) -> bool {
        self.display("#{alternate_on}") == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if self.server_pid != 0 {
            // SAFETY: kill has no memory preconditions; the pid is our tmux server's.
            unsafe { libc::kill(self.server_pid as i32, libc::SIGTERM) };
        }
    }
}

/// Direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Sockets among a process's fds, as /proc/PID/fd says.
fn proc_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Sockets on local port `port` in CLOSE_WAIT, as /proc/net/tcp says.
fn close_wait_on(port: u16) -> usize {
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].rsplit(':').next() == Some(&format!("{port:04X}")) && f[3] == "08"
        })
        .count()
}

/// The table row of `pid`: its whitespace-separated cells, by column name.
fn row_of(screen: &str, pid: u32) -> Option<Vec<(String, String)>> {
    let header: Vec<String> = screen
        .lines()
        .find(|l| l.starts_with("PID"))?
        .split_whitespace()
        .map(|h| h.trim_end_matches(['▲', '▼']).to_owned())
        .collect();
    let line = screen
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))?;
    Some(
        header
            .into_iter()
            .zip(line.split_whitespace().map(str::to_owned))
            .collect(),
    )
}

fn cell(row: &[(String, String)], col: &str) -> String {
    row.iter()
        .find(|(h, _)| h == col)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The first table row after the header.
fn first_row_pid(screen: &str) -> Option<u32> {
    let mut lines = screen.lines().skip_while(|l| !l.starts_with("PID"));
    lines.next()?;
    lines.next()?.split_whitespace().next()?.parse().ok()
}

/// A `tracer scenario ROLE` workload run under its own name (a symlink to the binary).
fn scenario(bin: &Path, dir: &Path, name: &str, role: &str, port: u16, rate: u32) -> Guard {
    let link = dir.join(name);
    if !link.exists() {
        symlink(bin, &link).expect("symlink the tracer binary");
    }
    Guard::spawn(
        name,
        Command::new(&link)
            .args(["scenario", role, "--port", &port.to_string()])
            .args(["--rate", &rate.to_string(), "--seconds", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
        libc::SIGKILL,
    )
}

/// The terminal is usable again: no alternate screen, a prompt, cooked mode with echo.
#[track_caller]
/// A proxy that leaks a socket per client, and clients at 25 a second: (port, proxy, clients).
fn leak(bin: &Path, dir: &Path) -> (u16, Guard, Guard) {
    let port = free_port();
    let proxy = scenario(bin, dir, "leakyproxy", "proxy", port, 0);
    // Its listener first; then clients that each leave a socket behind in the proxy.
    thread::sleep(Duration::from_millis(800));
    let clients = scenario(bin, dir, "topclients", "http-clients", port, 25);
    (port, proxy, clients)
}

fn assert_restored(t: &Tmux, how: &str) {
    let screen = t.wait_for(
        &format!("the prompt after {how}"),
        Duration::from_secs(10),
        |s| s.lines().any(|l| l.starts_with("EXIT=")),
    );
    assert!(
        !t.alternate_on(),
        "{how}: the alternate screen is still on:\n{screen}"
    );
    let code = screen
        .lines()
        .find_map(|l| l.strip_prefix("EXIT="))
        .unwrap_or("")
        .trim()
        .to_owned();
    assert_eq!(code, "0", "{how}: tracer top exited with {code}:\n{screen}");
    t.type_line("clear; stty -a | tr ';' '\\n' | tr ' ' '\\n' | grep -E '^-?(icanon|echo|isig|opost)$' | sort | tr '\\n' ' '; echo STTY-END");
    let s = t.wait_for("stty's answer", Duration::from_secs(10), |s| {
        s.lines()
            .any(|l| l.contains("STTY-END") && !l.contains("echo STTY-END"))
    });
    let line = s
        .lines()
        .find(|l| l.contains("STTY-END") && !l.contains("echo STTY-END"))
        .unwrap_or("");
    for flag in ["icanon", "echo", "isig", "opost"] {
        assert!(
            line.split_whitespace().any(|w| w == flag),
            "{how}: the terminal is not back in cooked mode ({flag} off): {line}"
        );
    }
    // The cursor is shown again.
    assert_eq!(t.display("#{cursor_flag}"), "1", "{how}: cursor hidden");
}

#[test]
fn top_puts_the_socket_leaker_first_with_the_counts_of_proc() {
    if !require_root() || !require_tmux() {
        return;
    }
    let started = Instant::now();
    let bin = Bin::pinned();
    let dir = TempDir::new("top");
    let t = Tmux::start("leak");
    // Only this test's processes: the workloads below are its children.
    t.type_line(&format!(
        "{} top --pid {}; echo EXIT=$?",
        bin.path().display(),
        test_pid()
    ));
    t.wait_for("tracer top's table", Duration::from_secs(30), |s| {
        s.contains("tracer top") && s.lines().any(|l| l.starts_with("PID"))
    });
    assert!(t.alternate_on(), "tracer top draws on the alternate screen");
    let (port, mut proxy, mut clients) = leak(bin.path(), dir.path());
    thread::sleep(Duration::from_secs(3));
    proxy.assert_running();
    t.keys(&["s"]);
    let s = t.wait_for("the table sorted by sockets", Duration::from_secs(5), |s| {
        s.contains("SOCK▼")
    });
    // While it leaks: the screen lags /proc by at most a refresh (1 s) and a drain.
    let before = proc_sockets(proxy.pid());
    thread::sleep(Duration::from_millis(1300));
    let s2 = t.capture();
    let after = proc_sockets(proxy.pid());
    let row = row_of(&s2, proxy.pid()).unwrap_or_else(|| panic!("no row for the proxy:\n{s2}"));
    let shown: usize = cell(&row, "SOCK").parse().expect("SOCK is a number");
    assert!(
        (before..=after).contains(&shown),
        "the leaker's sockets on screen ({shown}) are not between /proc's before ({before}) and \
         after ({after}) the capture:\n{s2}"
    );
    assert_eq!(
        first_row_pid(&s2),
        Some(proxy.pid()),
        "sorted by sockets, the leaker is not first:\n{s}\n{s2}"
    );
    let growth: f64 = cell(&row, "SOCK/MIN").parse().unwrap_or(0.0);
    assert!(
        growth > 300.0,
        "growth per minute {growth} for ~25/s:\n{s2}"
    );

    // The leak stops (the clients are gone, their sockets stay in CLOSE_WAIT in the proxy):
    // now the screen must say exactly what /proc says.
    clients.stop();
    let settled = t.wait_for("CLOSE_WAIT counted", Duration::from_secs(6), |s| {
        row_of(s, proxy.pid()).is_some_and(|r| {
            cell(&r, "SOCK") == proc_sockets(proxy.pid()).to_string()
                && cell(&r, "CLOSE_W") == close_wait_on(port).to_string()
        })
    });
    let row = row_of(&settled, proxy.pid()).expect("row");
    let open = proc_sockets(proxy.pid());
    assert!(open > 40, "the proxy holds {open} sockets");
    assert_eq!(cell(&row, "COMM"), "leakyproxy");
    assert!(
        cell(&row, "TOP_REMOTE").starts_with(&format!("127.0.0.1>:{port}x")),
        "{row:?}"
    );
    assert_eq!(first_row_pid(&settled), Some(proxy.pid()));
    eprintln!("tracer top, sorted by sockets:\n{settled}");

    // Detail view of the selected (first) process, then back, then q.
    t.keys(&["Down", "Enter"]);
    t.wait_for("the detail view", Duration::from_secs(5), |s| {
        s.contains("connections") && s.contains("state CLOSE_WAIT") && s.contains("leakyproxy")
    });
    t.keys(&["Escape"]);
    t.wait_for("the table again", Duration::from_secs(5), |s| {
        s.contains("SOCK▼")
    });
    t.keys(&["q"]);
    assert_restored(&t, "q");
    proxy.stop();
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

/// `tracer top --metrics --otlp` serves the same /metrics and exports the same OTLP metrics as
/// `live` and `record`: the leaker's series carries the open-socket count that /proc gives, at
/// the endpoint and at the OTLP receiver.
#[test]
fn top_serves_the_leakers_metrics_and_exports_them_over_otlp() {
    if !require_root() || !require_tmux() {
        return;
    }
    let Some(python) = require_otlp_python() else {
        return;
    };
    let bin = Bin::pinned();
    let dir = TempDir::new("top-metrics");
    let received_at = dir.path().join("otlp.jsonl");
    let otlp_port = free_port();
    let mut receiver = start_receiver(&python, otlp_port, &received_at);
    let t = Tmux::start("metrics");
    let metrics_port = free_port();
    t.type_line(&format!(
        "{} top --pid {} --metrics 127.0.0.1:{metrics_port} --otlp http://127.0.0.1:{otlp_port} \
         --otlp-interval 1s; echo EXIT=$?",
        bin.path().display(),
        test_pid()
    ));
    t.wait_for("tracer top's table", Duration::from_secs(30), |s| {
        s.lines().any(|l| l.starts_with("PID"))
    });
    let (_, mut proxy, mut clients) = leak(bin.path(), dir.path());
    thread::sleep(Duration::from_secs(3));
    clients.stop();
    proxy.assert_running();
    // Once the leak stopped, the series settles on what /proc says (a snapshot a second),
    // within one: the metrics count sockets apart from the screen's model (metrics/model.rs
    // also counts a conn_close as a close) and may differ from it by the listener.
    let pid = format!("pid=\"{}\"", proxy.pid());
    let near =
        |shown: Option<f64>, open: usize| shown.is_some_and(|v| (v - open as f64).abs() <= 1.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut shown, mut open, mut body) = (None, 0, String::new());
    while Instant::now() < deadline {
        open = proc_sockets(proxy.pid());
        let (code, b) = http_get(metrics_port, "/metrics").unwrap_or((0, String::new()));
        assert!(code == 200 || code == 0, "GET /metrics: {code}\n{b}");
        body = b;
        shown = body
            .lines()
            .filter(|l| l.starts_with("tracer_process_open_sockets{") && l.contains(&pid))
            .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if near(shown, open) {
            break;
        }
        thread::sleep(Duration::from_millis(300));
    }
    assert!(open > 40, "the proxy holds {open} sockets");
    assert!(
        near(shown, open),
        "tracer_process_open_sockets of the leaker ({pid}) is {shown:?}, /proc says {open}:\n{body}"
    );
    assert!(
        body.contains("comm=\"leakyproxy\""),
        "the series names the leaker:\n{body}"
    );
    // The same series at the OTLP receiver (exported every second).
    let proxy_pid = proxy.pid().to_string();
    let exported = poll(
        "the leaker's series over OTLP",
        Duration::from_secs(10),
        || {
            let open = proc_sockets(proxy.pid()) as f64;
            let reqs = received(&received_at);
            let pts = metric_points(&reqs, "tracer_process_open_sockets");
            pts.iter()
                .find(|(kind, p)| {
                    let a = attrs(&p["attributes"]);
                    kind == "gauge"
                        && a.get("pid") == Some(&proxy_pid)
                        && a.get("comm").map(String::as_str) == Some("leakyproxy")
                        && (point_value(p) - open).abs() <= 1.0
                })
                .map(|(_, p)| (point_value(p), open))
                .ok_or_else(|| format!("/proc: {open}; {pts:?}"))
        },
    );
    eprintln!("over OTLP: the leaker's open sockets {exported:?} (exported, /proc)");
    t.keys(&["q"]);
    assert_restored(&t, "q");
    proxy.stop();
    receiver.stop();
}

#[test]
fn top_gives_the_terminal_back_after_ctrl_c_sigterm_and_a_hangup() {
    if !require_root() || !require_tmux() {
        return;
    }
    let started = Instant::now();
    let bin = Bin::pinned();
    let t = Tmux::start("exit");
    let run = format!(
        "{} top --pid {}; echo EXIT=$?",
        bin.path().display(),
        test_pid()
    );
    let up = |t: &Tmux| {
        t.type_line(&format!("clear; {run}"));
        t.wait_for("tracer top's table", Duration::from_secs(30), |s| {
            s.lines().any(|l| l.starts_with("PID"))
        });
        assert!(t.alternate_on());
    };

    up(&t);
    t.keys(&["C-c"]);
    assert_restored(&t, "Ctrl-C");

    up(&t);
    let shell = t.shell_pid();
    let top = children(shell)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.contains("top"))
        })
        .expect("tracer top is the shell's child");
    // SAFETY: kill has no memory preconditions; the pid is the tracer this test started.
    unsafe { libc::kill(top as i32, libc::SIGTERM) };
    assert_restored(&t, "SIGTERM");

    // The terminal goes away: the pane is killed, tracer top gets SIGHUP and must end.
    up(&t);
    let top = children(t.shell_pid())
        .into_iter()
        .find(|p| alive(*p))
        .expect("tracer top is running");
    t.tmux(&["kill-pane", "-t", "t"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(top) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let still = alive(top);
    if still {
        // SAFETY: as above.
        unsafe { libc::kill(top as i32, libc::SIGKILL) };
    }
    assert!(!still, "tracer top did not end when its terminal closed");
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn top_without_a_terminal_says_so() {
    let bin = Bin::pinned();
    let out = Command::new(bin.path())
        .args(["top", "--replay", "/nonexistent"])
        .stdin(Stdio::null())
        .output()
        .expect("run tracer top");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {}", out.status);
    assert!(
        err.contains("needs a terminal") && err.contains("tracer live"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout");
}

fn require_chromium() -> Option<PathBuf> {
    let find = || {
        ["chromium", "chromium-browser"]
            .iter()
            .flat_map(|b| {
                std::env::var_os("PATH")
                    .map(|p| {
                        std::env::split_paths(&p)
                            .map(|d| d.join(b))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .find(|p| p.is_file())
    };
    if find().is_none()
        && !require_tool(
            Needed {
                present: || on_path("chromium"),
                package: "chromium",
            },
            "chromium",
        )
    {
        return None;
    }
    find()
}

/// Runs chromium headless on `page` with `args`, bounded (killed by pid after 90 s): its
/// stdout and stderr.
fn chromium(bin: &Path, args: &[&str], page: &Path) -> (String, String) {
    let out = run_bounded(
        Command::new("nice")
            .args(["-n", "19"])
            .arg(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args([
                "--no-first-run",
                "--disable-extensions",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .args(args)
            .arg(format!("file://{}", page.display())),
        Duration::from_secs(90),
    )
    .ok();
    (out.stdout, out.stderr)
}

#[test]
fn the_html_report_of_an_incident_renders_in_chromium() {
    if !require_root() {
        return;
    }
    let Some(chrome) = require_chromium() else {
        return;
    };
    let started = Instant::now();
    let bin = Bin::pinned();
    let dir = TempDir::new("html");
    let dump = dir.join("dump");
    run_demo(&bin, "close-wait", 8, &dump);
    let page = dir.join("report.html");
    let mut args: Vec<String> = vec![
        "report".into(),
        "--html".into(),
        page.display().to_string(),
        dump.display().to_string(),
    ];
    args.extend(demo_threshold_args());
    bin.run(&args, Duration::from_secs(60)).ok();
    let html = std::fs::read_to_string(&page).expect("the page was written");
    for kind in ["close_wait", "socket_leak"] {
        assert!(html.contains(kind), "{kind} finding missing");
    }

    // What the browser makes of it.
    let (dom, err) = chromium(&chrome, &["--dump-dom"], &page);
    for want in [
        "Findings (",
        "close_wait",
        "socket_leak",
        "Incident timeline",
        "Culprits over time",
        "Open sockets and CLOSE_WAIT",
        "Memory (RSS)",
        "No record was lost",
        "proxy",
    ] {
        assert!(dom.contains(want), "the rendered page has no {want:?}");
    }
    let charts = dom.matches("<svg").count();
    assert!(charts >= 3, "{charts} charts");
    assert!(
        dom.matches("<polyline").count() + dom.matches("<path").count() >= 3,
        "the charts have no lines"
    );
    let problems: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("net::ERR"))
        .collect();
    assert!(
        problems.is_empty(),
        "the browser reported errors:\n{}",
        problems.join("\n")
    );

    // A screenshot, kept for people to look at.
    let shot = std::env::temp_dir().join(format!("tracer-report-{}.png", std::process::id()));
    let shot_arg = format!("--screenshot={}", shot.display());
    chromium(&chrome, &[&shot_arg, "--window-size=1100,2400"], &page);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 30_000,
        "a screenshot of {} bytes is blank",
        png.len()
    );
    eprintln!("screenshot of the HTML report: {}", shot.display());
    if let Ok(keep) = std::env::var("TRACER_KEEP_REPORT") {
        let _ = std::fs::copy(&page, format!("{keep}.html"));
        let _ = std::fs::copy(&shot, format!("{keep}.png"));
    }
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn top_replays_a_dump_with_the_same_screen() {
    if !require_root() || !require_tmux() {
        return;
    }
    let started = Instant::now();
    let bin = Bin::pinned();
    let dir = TempDir::new("top-replay");
    let dump = dir.join("dump");
    run_demo(&bin, "close-wait", 6, &dump);
    let t = Tmux::start("replay");
    let mut line = format!(
        "{} top --replay {} --speed 2 --comm proxy",
        bin.path().display(),
        dump.display()
    );
    for a in demo_threshold_args() {
        line.push(' ');
        line.push_str(&a);
    }
    t.type_line(&format!("{line}; echo EXIT=$?"));
    // Mid-way, as it happened: the proxy holding the sockets it leaks, some in CLOSE_WAIT.
    let proxy_row = |s: &str| {
        let header = s.lines().find(|l| l.starts_with("PID"))?.to_owned();
        let line = s
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("proxy"))?
            .to_owned();
        Some(
            header
                .split_whitespace()
                .map(|h| h.trim_end_matches(['▲', '▼']).to_owned())
                .zip(line.split_whitespace().map(str::to_owned))
                .collect::<Vec<_>>(),
        )
    };
    let num = |r: &[(String, String)], c: &str| cell(r, c).parse::<u64>().unwrap_or(0);
    let mid = t.wait_for("the proxy leaking", Duration::from_secs(30), |s| {
        proxy_row(s).is_some_and(|r| num(&r, "SOCK") > 20 && num(&r, "CLOSE_W") > 5)
    });
    assert!(mid.contains("replay of"), "{mid}");
    assert!(!mid.contains("END OF DUMP"), "seen mid-way:\n{mid}");
    let end = t.wait_for("the end of the dump", Duration::from_secs(30), |s| {
        s.contains("END OF DUMP")
    });
    for kind in ["close_wait", "socket_leak"] {
        assert!(end.contains(kind), "the {kind} finding:\n{end}");
    }
    t.keys(&["q"]);
    assert_restored(&t, "q after a replay");

    // Left at the end of the dump, it idles (an earlier top spun at 73% CPU there), and
    // SIGTERM ends it; then a closed terminal does too.
    let fast = line.replace("--speed 2", "--speed 0");
    let at_end = |t: &Tmux| -> u32 {
        t.type_line(&format!("clear; {fast}; echo EXIT=$?"));
        t.wait_for("the end of the dump", Duration::from_secs(30), |s| {
            s.contains("END OF DUMP")
        });
        children(t.shell_pid())
            .into_iter()
            .find(|p| alive(*p))
            .expect("tracer top is running")
    };
    let top = at_end(&t);
    let before = cpu_ticks(top);
    thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(top) - before;
    // SAFETY: sysconf has no memory preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(
        used * 10 < 2 * hz,
        "tracer top at the end of a replay used {used} ticks of CPU in 2 s (hz {hz})"
    );
    // SAFETY: kill has no memory preconditions; the pid is the tracer this test started.
    unsafe { libc::kill(top as i32, libc::SIGTERM) };
    assert_restored(&t, "SIGTERM at the end of a replay");
    let top = at_end(&t);
    t.tmux(&["kill-pane", "-t", "t"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(top) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let still = alive(top);
    if still {
        // SAFETY: as above.
        unsafe { libc::kill(top as i32, libc::SIGKILL) };
    }
    assert!(
        !still,
        "tracer top --replay did not end when its terminal closed"
    );
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // Fields 14 and 15 (utime, stime); `after` starts at field 3.
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum()
}
