//! The engine on whole incidents (BRIEF.md): the findings each must produce, the ones a healthy
//! host must not, determinism, and NEW/UPDATED reporting.
use serde_json::Value;
use tracer_common::tcp::{RESET_RECEIVED, state::*};

use super::{AnalysisConfig, Engine, UpdateKind, testutil::Stream};
use crate::{filter::Filter, pipeline::Pipeline};

const MIB: u64 = 1 << 20;

/// The leaking HTTP proxy: sockets pile up, memory grows from 0.8 to 2.4 GiB, the OOM killer
/// kills it, clients are reset.
pub(crate) fn leaking_proxy(s: &mut Stream) {
    s.proc_info(1, 0, "systemd", |_| {});
    s.proc_info(3000, 1, "node", |i| {
        i.cmdline = vec!["node".into(), "proxy.js".into()];
        i.cgroup = "/system.slice/proxy.service".into();
        i.mem_limit = Some(2560 * MIB);
        i.open_sockets = Some(10);
        i.open_fds = Some(20);
    });
    for sec in 0..100u64 {
        let t = sec * 1000;
        for k in 0..6u64 {
            let sk = 0x10_0000 + sec * 10 + k;
            s.at(t + k * 100)
                .tcp_state(0, "swapper/0", sk, SYN_RECV, ESTABLISHED, 0, 8080, 40000);
            s.at(t + k * 100 + 1)
                .accept_sk(3000, "node", 100 + k as i32, 8080, sk);
        }
        // Only 2 of 6 are ever closed.
        s.at(t + 700).socket_close(3000, "node", 100);
        s.at(t + 701).socket_close(3000, "node", 101);
        // 16 MiB a second: 0.8 GiB -> 2.4 GiB.
        s.at(t + 800).mem(3000, "node", 800 * MIB + sec * 16 * MIB);
    }
    s.at(100_000).signal(3000, "node", 9, 0x80, 3000, "node");
    s.at(100_001).oom(3000, "node", 3000, "node", 2400 * 1024);
    for k in 0..40u64 {
        s.at(100_002 + k).reset(
            0,
            "swapper/0",
            0x10_0000 + k,
            RESET_RECEIVED,
            3000,
            8080,
            40000,
        );
    }
    s.at(100_100).exit(3000, "node", 9);
}

/// The API server that hung: 20 database connections that never close, workers restarted by
/// the process manager.
pub(crate) fn hung_api(s: &mut Stream) {
    s.proc_info(1, 0, "systemd", |_| {});
    s.proc_info(600, 1, "pm2", |i| {
        i.cmdline = vec!["pm2".into(), "daemon".into()]
    });
    s.proc_info(601, 600, "api", |i| {
        i.cmdline = vec!["node".into(), "api.js".into()]
    });
    for k in 0..20u64 {
        let sk = 0x20_0000 + k;
        s.at(k * 1000)
            .tcp_state(601, "api", sk, CLOSE, SYN_SENT, 601, 45000 + k as u16, 5432);
        s.at(k * 1000 + 1).tcp_state(
            0,
            "swapper/0",
            sk,
            SYN_SENT,
            ESTABLISHED,
            601,
            45000 + k as u16,
            5432,
        );
    }
    for c in 0..3u64 {
        let pid = 601 + c as u32;
        let t = 60_000 + c * 10_000;
        s.at(t).signal(600, "pm2", 9, 0, pid, "api");
        s.at(t + 5).exit(pid, "api", 9);
        s.at(t + 500).fork(600, "pm2", pid + 1);
        s.at(t + 501)
            .exec(pid + 1, "node", "/usr/bin/node", &["node", "api.js"]);
    }
}

fn json_of_all(s: &mut Stream) -> Vec<Value> {
    s.all_json()
}

fn find<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|f| f["kind"] == kind).collect()
}

#[test]
fn the_leaking_proxy_shows_sockets_memory_and_the_oom_kill() {
    let mut s = Stream::with_host_mem(16 << 30);
    leaking_proxy(&mut s);
    let all = json_of_all(&mut s);
    let leak = find(&all, "socket_leak");
    assert_eq!(leak.len(), 1, "{all:#?}");
    assert_eq!(leak[0]["pid"], 3000);
    assert_eq!(leak[0]["comm"], "node");
    assert!(leak[0]["growth_per_min"].as_f64().unwrap() > 150.0);
    let mem = find(&all, "runaway_alloc");
    assert_eq!(mem.len(), 1, "{all:#?}");
    assert_eq!(mem[0]["pid"], 3000);
    assert_eq!(mem[0]["limit_source"], "cgroup");
    assert_eq!(mem[0]["growth_bytes_per_sec"], 16 * MIB);
    let oom = find(&all, "oom_kill");
    assert_eq!(oom.len(), 1);
    assert_eq!(oom[0]["victim_pid"], 3000);
    assert_eq!(oom[0]["trigger_pid"], 3000);
    assert_eq!(oom[0]["victim_rss_bytes"], 2400 * MIB);
    assert_eq!(oom[0]["cgroup"], "/system.slice/proxy.service");
    assert_eq!(oom[0]["victim_growth_bytes_per_sec"], 16 * MIB);
    let sig = find(&all, "signal_source");
    assert_eq!(sig[0]["reason"], "oom");
    let resets = find(&all, "reset_storm");
    assert_eq!(resets[0]["pid"], 3000);
    assert_eq!(resets[0]["port"], 8080);
}

#[test]
fn the_hung_api_shows_the_pileup_the_restarts_and_who_issued_them() {
    let mut s = Stream::new();
    hung_api(&mut s);
    let all = json_of_all(&mut s);
    let pile = find(&all, "conn_pileup");
    assert_eq!(pile.len(), 1, "{all:#?}");
    assert_eq!(pile[0]["pid"], 601);
    assert_eq!(pile[0]["remote"], "10.0.0.2:5432");
    assert_eq!(pile[0]["open"], 20);
    let r = find(&all, "restart_loop");
    assert_eq!(r.len(), 1, "{all:#?}");
    assert_eq!(r[0]["supervisor_pid"], 600);
    assert_eq!(r[0]["supervisor_comm"], "pm2");
    assert_eq!(r[0]["restarts"], 3);
    assert_eq!(r[0]["pids"], serde_json::json!([601, 602, 603, 604]));
    let sig = find(&all, "signal_source");
    assert_eq!(sig[0]["sender_comm"], "pm2");
    assert_eq!(sig[0]["signal"], "SIGKILL");
    assert_eq!(sig[0]["count"], 3);
}

#[test]
fn a_healthy_host_raises_nothing() {
    let mut s = Stream::with_host_mem(16 << 30);
    s.proc_info(1, 0, "systemd", |_| {});
    s.proc_info(80, 1, "nginx", |i| i.open_sockets = Some(4));
    s.proc_info(90, 1, "supervisord", |_| {});
    s.proc_info(91, 90, "worker", |i| i.cmdline = vec!["worker".into()]);
    for sec in 0..200u64 {
        let t = sec * 1000;
        for k in 0..10u64 {
            let sk = 0x30_0000 + sec * 10 + k;
            s.at(t + k * 50)
                .tcp_state(0, "swapper/0", sk, SYN_RECV, ESTABLISHED, 0, 80, 50000);
            s.at(t + k * 50 + 1)
                .accept_sk(80, "nginx", 10 + k as i32, 80, sk);
            s.at(t + k * 50 + 20).tcp_state(
                0,
                "swapper/0",
                sk,
                ESTABLISHED,
                CLOSE_WAIT,
                80,
                80,
                50000,
            );
            s.at(t + k * 50 + 21)
                .socket_close(80, "nginx", 10 + k as i32);
            s.at(t + k * 50 + 21)
                .tcp_state(80, "nginx", sk, CLOSE_WAIT, LAST_ACK, 80, 80, 50000);
            s.at(t + k * 50 + 22)
                .tcp_state(0, "swapper/0", sk, LAST_ACK, CLOSE, 80, 80, 50000);
        }
        // A batch job allocating and freeing.
        let phase = sec % 20;
        let rss = if phase < 10 {
            100 * MIB + phase * 32 * MIB
        } else {
            100 * MIB + (19 - phase) * 32 * MIB
        };
        s.at(t + 900).mem(95, "batch", rss);
        // Children exiting: SIGCHLD to their parents.
        s.at(t + 950).signal(96, "sh", 17, 1, 1, "systemd");
    }
    // supervisord restarts its worker once.
    s.at(150_000).signal(90, "supervisord", 15, 0, 91, "worker");
    s.at(150_010).exit(91, "worker", 0);
    s.at(151_000).fork(90, "supervisord", 92);
    s.at(151_001)
        .exec(92, "worker", "/usr/bin/worker", &["worker"]);
    s.at(200_000).tick();
    let all = json_of_all(&mut s);
    let kinds: Vec<&str> = all
        .iter()
        .map(|f| f["kind"].as_str().unwrap_or(""))
        .collect();
    // The one SIGTERM is worth knowing about; nothing else is a problem.
    assert_eq!(kinds, vec!["signal_source"], "{all:#?}");
}

#[test]
fn the_same_events_give_the_same_findings() {
    let run = |take_updates: bool| {
        let mut s = Stream::with_host_mem(16 << 30);
        leaking_proxy(&mut s);
        hung_api(&mut s);
        if take_updates {
            s.engine.take_updates();
        }
        s.finish();
        let doc = crate::report::json(&s.engine, &s.host, true);
        serde_json::to_string(&doc).unwrap()
    };
    let a = run(false);
    let b = run(true);
    assert_eq!(a, b);
    assert!(a.contains("oom_kill") && a.contains("restart_loop"));

    // Replaying the recorded events through the real pipeline gives the same document.
    let mut s = Stream::with_host_mem(16 << 30);
    leaking_proxy(&mut s);
    hung_api(&mut s);
    let (sink, engine) = Engine::new(AnalysisConfig::default())
        .unwrap()
        .into_shared();
    let mut p = Pipeline::new(s.host.clone(), Filter::default());
    p.add_sink(Box::new(sink));
    for ev in &s.events {
        p.feed(ev, &[]).unwrap();
    }
    p.finish().unwrap();
    let e = engine.lock().unwrap();
    let c = serde_json::to_string(&crate::report::json(&e, &s.host, true)).unwrap();
    assert_eq!(a, c);
}

#[test]
fn findings_are_raised_once_then_updated_not_repeated() {
    let mut s = Stream::with_host_mem(16 << 30);
    s.proc_info(3000, 1, "node", |i| i.open_sockets = Some(0));
    let mut updates = Vec::new();
    // A leak of 4 sockets a second for 10 minutes.
    for sec in 0..600u64 {
        for k in 0..4 {
            s.at(sec * 1000 + k * 200)
                .socket_open(3000, "node", 10 + k as i32);
        }
        updates.extend(s.engine.take_updates());
    }
    let leak: Vec<_> = updates
        .iter()
        .filter(|u| u.finding.kind() == "socket_leak")
        .collect();
    assert_eq!(leak.iter().filter(|u| u.kind == UpdateKind::New).count(), 1);
    let n = leak
        .iter()
        .filter(|u| u.kind == UpdateKind::Updated)
        .count();
    // From ~80 to 2400 sockets with 25 % steps: a dozen or so updates, not one per event.
    assert!((3..30).contains(&n), "{n} updates");
    // Each update is materially larger than the previous report, or more severe (the leak
    // nears the fd limit).
    assert!(
        leak.windows(2).all(
            |w| w[1].finding.magnitude() >= w[0].finding.magnitude() * 1.25
                || w[1].finding.severity > w[0].finding.severity
        ),
        "{leak:#?}"
    );
    assert_eq!(
        leak.last().unwrap().finding.severity,
        super::Severity::Critical
    );
}

/// Random records of every kind (any bit pattern is a valid payload), with timestamps that jump
/// back and forth and pids drawn from a small set so processes collide: nothing may panic, and
/// the report renders.
#[test]
fn garbage_streams_never_panic() {
    use tracer_common::{HEADER_LEN, Header, Kind, memory, oom, process, signal, tcp};

    use crate::event::{decode, header_bytes};

    fn size_of_kind(k: Kind) -> usize {
        use std::mem::size_of;
        match k {
            Kind::TcpState => size_of::<tcp::TcpState>(),
            Kind::TcpAccept => size_of::<tcp::TcpAccept>(),
            Kind::TcpReset => size_of::<tcp::TcpReset>(),
            Kind::SocketOpen => size_of::<tcp::SocketOpen>(),
            Kind::SocketClose => size_of::<tcp::SocketClose>(),
            Kind::SockOwner => size_of::<tcp::SockOwner>(),
            Kind::TcpConnect => size_of::<tcp::TcpConnect>(),
            Kind::TcpListen => size_of::<tcp::TcpListen>(),
            Kind::ConnOpen => size_of::<tcp::ConnOpen>(),
            Kind::ConnClose => size_of::<tcp::ConnClose>(),
            Kind::ConnStatus => size_of::<tcp::ConnStatus>(),
            Kind::FdDup => size_of::<tcp::FdDup>(),
            Kind::Signal => size_of::<signal::Signal>(),
            Kind::Fork => size_of::<process::Fork>(),
            Kind::Exec => size_of::<process::Exec>(),
            Kind::Exit => size_of::<process::Exit>(),
            Kind::Rlimit => size_of::<process::Rlimit>(),
            Kind::Rename => size_of::<process::Rename>(),
            Kind::CgroupAttach => size_of::<process::CgroupAttach>(),
            Kind::OomKill => size_of::<oom::OomKill>(),
            Kind::Mmap => size_of::<memory::Mmap>(),
            Kind::Munmap => size_of::<memory::Munmap>(),
            Kind::Brk => size_of::<memory::Brk>(),
            Kind::MemSample => size_of::<memory::MemSample>(),
        }
    }

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..4 {
        let mut cfg = AnalysisConfig::default();
        if round == 1 {
            // Thresholds at their most eager.
            cfg.restart_min_count = 1;
            cfg.socket_leak_min_growth = 0;
            cfg.socket_leak_min_span_s = 0.0;
            cfg.mem_min_samples = 2;
            cfg.mem_min_duration_s = 0.0;
            cfg.mem_min_growth_bytes = 0;
            cfg.mem_min_rate_bytes_per_sec = 0;
            cfg.pileup_min_open = 1;
            cfg.pileup_min_age_s = 0.0;
            cfg.close_wait_min_age_s = 0.0;
            cfg.reset_min_count = 1;
            cfg.timeline_max = 10;
        }
        let mut s = Stream::with_config(cfg, rnd() % 3 * (8 << 30));
        let mut ts = 1_000_000_000_000u64;
        for _ in 0..4_000 {
            let kind = Kind::ALL[(rnd() % Kind::ALL.len() as u64) as usize];
            let len = size_of_kind(kind);
            ts = match rnd() % 10 {
                0 => ts.saturating_sub(rnd() % 5_000_000_000),
                // (Anything up to 146 years after boot: HostInfo::wall_ns does not take more.)
                1 => rnd() % (1 << 62),
                _ => ts + rnd() % 200_000_000,
            };
            let tgid = [0, 1, 2, 3, 100, u32::MAX][(rnd() % 6) as usize];
            let h = Header {
                kind: kind as u16,
                payload_len: len as u16,
                cpu: 0,
                ts_ns: ts,
                tgid,
                pid: tgid,
                uid: 0,
                _pad: 0,
                cgroup_id: 0,
                comm: *b"garbage\0\0\0\0\0\0\0\0\0",
            };
            let mut raw = header_bytes(&h).to_vec();
            for i in 0..len {
                // Small values most of the time, so fields line up with pids, states and ports.
                let b = rnd();
                raw.push(if b % 4 == 0 {
                    (b >> 8) as u8
                } else {
                    (b % 4) as u8 * (i % 3) as u8
                });
            }
            assert_eq!(raw.len(), HEADER_LEN + len);
            let ev = decode(&raw).expect("any payload bits decode");
            s.feed(ev);
            s.engine.take_updates();
        }
        s.finish();
        let _ = crate::report::text(&s.engine, &s.host);
        let _ = crate::report::json(&s.engine, &s.host, true);
    }
}
