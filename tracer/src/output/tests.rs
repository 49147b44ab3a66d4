//! The printers' tests: any field values render, the JSON bytes are the golden ones.
#[cfg(test)]
mod render_tests {
    use super::super::json::ip_json;
    use crate::output::*;
    use crate::pipeline::Ctx;
    use crate::{host::HostInfo, proc_table::ProcTable};
    use tracer_common::{HEADER_LEN, Kind};

    /// The hand-written IPv4 formatter against std's, for every octet value in every place,
    /// and IPv6 and other families as before.
    #[test]
    fn ip_formats_as_std() {
        let mut a = [0u8; 16];
        for v in 0..=255u8 {
            for i in 0..4 {
                a[..4].copy_from_slice(&[7, 70, 255, 0]);
                a[i] = v;
                for fam in [tracer_common::AF_INET, 0, 1, 99] {
                    assert_eq!(ip_json(fam, &a), format!("\"{}\"", ip(fam, &a)));
                }
            }
        }
        a = [0; 16];
        a[0] = 0x20;
        a[15] = 1;
        assert_eq!(ip_json(tracer_common::AF_INET6, &a), "\"2000::1\"");
        assert_eq!(ip(tracer_common::AF_INET6, &a), "2000::1");
    }

    /// Any bytes that decode, whatever their values, render without panicking (dumps are
    /// untrusted input, and debug builds check arithmetic).
    #[test]
    fn every_kind_renders_any_field_values() {
        let procs = ProcTable::new();
        let host = HostInfo {
            boot_to_wall_ns: i64::MAX / 2,
            ..HostInfo::default()
        };
        let ctx = Ctx {
            procs: &procs,
            host: &host,
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let sizes = [
            56, 56, 56, 16, 8, 16, 32, 8, 56, 96, 96, 16, 40, 8, 528, 8, 24, 40, 304, 72, 32, 16,
            16, 48,
        ];
        let mut decoded = 0;
        for round in 0..2000 {
            let kind = Kind::ALL[round % Kind::ALL.len()];
            let len = sizes[round % sizes.len()];
            let mut rec = vec![0u8; HEADER_LEN + len];
            for b in rec.iter_mut() {
                *b = next() as u8;
            }
            rec[0..2].copy_from_slice(&(kind as u16).to_ne_bytes());
            rec[2..4].copy_from_slice(&(len as u16).to_ne_bytes());
            if let Ok(ev) = crate::event::decode(&rec) {
                let _ = to_json(&ev, &ctx);
                let _ = to_line(&ev, &ctx);
                decoded += 1;
            }
        }
        assert_eq!(decoded, 2000, "every record of the right size decodes");
    }
}

#[cfg(test)]
mod golden_tests {
    use crate::event::{Body, Comm, Event};
    use crate::output::*;
    use crate::pipeline::Ctx;
    use crate::{
        event::{Drops, Exec, ProcInfo},
        host::HostInfo,
        proc_table::ProcTable,
    };
    use serde_json::Value;
    use tracer_common::tcp;
    use tracer_common::{AF_INET, memory as m, oom, process as p, signal as sg};

    fn comm(b: &[u8]) -> Comm {
        let mut c = [0u8; 16];
        c[..b.len()].copy_from_slice(b);
        Comm(c)
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    fn v6() -> [u8; 16] {
        let mut x = [0u8; 16];
        x[0] = 0x20;
        x[1] = 0x01;
        x[2] = 0x0d;
        x[3] = 0xb8;
        x[15] = 1;
        x
    }

    /// Bodies covering every kind and every branch of the JSON shape, with awkward comms.
    fn golden_events() -> Vec<Event> {
        let comms = [
            comm(b"a\"b\\c\n\t\x01\x1f\x7f"),
            comm(&[0xff, b'x', 0xc3, 0x28, b'\r', 0x08, 0x0c, b'/']),
            comm("é€😀ok".as_bytes()),
            Comm([b'z'; 16]),
            comm(b""),
        ];
        let bodies = vec![
            Body::TcpState(tcp::TcpState {
                skaddr: 0xffff_8880_1234_5678,
                old_state: tcp::state::SYN_SENT,
                new_state: tcp::state::ESTABLISHED,
                family: AF_INET,
                sport: 43210,
                dport: 443,
                flags: 0,
                owner_tgid: 4242,
                saddr: v4([10, 0, 0, 1]),
                daddr: v4([192, 168, 1, 2]),
            }),
            Body::TcpState(tcp::TcpState {
                skaddr: 0,
                old_state: 99,
                new_state: tcp::state::CLOSE,
                family: tracer_common::AF_INET6,
                sport: 0,
                dport: 65535,
                flags: 0,
                owner_tgid: 0,
                saddr: v6(),
                daddr: [0; 16],
            }),
            Body::TcpAccept(tcp::TcpAccept {
                ret: 7,
                listen_fd: 3,
                sk: 1,
                family: AF_INET,
                sport: 80,
                dport: 50000,
                _pad: 0,
                saddr: v4([127, 0, 0, 1]),
                daddr: v4([127, 0, 0, 2]),
            }),
            Body::TcpAccept(tcp::TcpAccept {
                ret: -24,
                listen_fd: -1,
                sk: 0,
                family: tracer_common::AF_INET6,
                sport: 8080,
                dport: 1,
                _pad: 0,
                saddr: v6(),
                daddr: v6(),
            }),
            Body::TcpAccept(tcp::TcpAccept {
                ret: -11,
                listen_fd: 5,
                sk: 0,
                family: 0,
                sport: 1,
                dport: 2,
                _pad: 0,
                saddr: [0; 16],
                daddr: [0; 16],
            }),
            Body::TcpReset(tcp::TcpReset {
                sk: 5,
                direction: tcp::RESET_SENT,
                reason: 11,
                family: AF_INET,
                sport: 1,
                dport: 2,
                owner_tgid: 0,
                state: 1,
                saddr: v4([1, 2, 3, 4]),
                daddr: v4([5, 6, 7, 8]),
            }),
            Body::TcpReset(tcp::TcpReset {
                sk: 5,
                direction: tcp::RESET_RECEIVED,
                reason: 0,
                family: tracer_common::AF_INET6,
                sport: 1,
                dport: 2,
                owner_tgid: 77,
                state: 1,
                saddr: v6(),
                daddr: v6(),
            }),
            Body::SocketOpen(tcp::SocketOpen {
                fd: 9,
                family: 1,
                sock_type: 2,
                protocol: 0,
                _pad: 0,
            }),
            Body::SocketOpen(tcp::SocketOpen {
                fd: -97,
                family: 17,
                sock_type: 65535,
                protocol: 0,
                _pad: 0,
            }),
            Body::SocketClose(tcp::SocketClose {
                fd: i32::MIN,
                family: 16,
                sock_type: 1,
            }),
            Body::SockOwner(tcp::SockOwner {
                sk: u64::MAX,
                prev_tgid: 0,
                _pad: 0,
            }),
            Body::SockOwner(tcp::SockOwner {
                sk: 0,
                prev_tgid: u32::MAX,
                _pad: 0,
            }),
            Body::TcpConnect(tcp::TcpConnect {
                fd: 4,
                ret: 0,
                family: AF_INET,
                dport: 5432,
                _pad: 0,
                daddr: v4([10, 1, 2, 3]),
            }),
            Body::TcpConnect(tcp::TcpConnect {
                fd: 4,
                ret: -115,
                family: tracer_common::AF_INET6,
                dport: 5432,
                _pad: 0,
                daddr: v6(),
            }),
            Body::TcpConnect(tcp::TcpConnect {
                fd: 4,
                ret: -9999,
                family: AF_INET,
                dport: 0,
                _pad: 0,
                daddr: [0; 16],
            }),
            Body::TcpListen(tcp::TcpListen {
                fd: 3,
                backlog: i32::MAX,
            }),
            Body::Signal(sg::Signal {
                sig: 9,
                code: sg::SI_KERNEL,
                result: 0,
                target_pid: -1,
                group: 1,
                errno: 0,
                target_comm: comm(b"t\"a\\r\x00junk").0,
            }),
            Body::Signal(sg::Signal {
                sig: 40,
                code: 0,
                result: 2,
                target_pid: 1,
                group: 0,
                errno: 0,
                target_comm: [0xfe; 16],
            }),
            Body::Signal(sg::Signal {
                sig: 0,
                code: -6,
                result: 0,
                target_pid: 1,
                group: 0,
                errno: 0,
                target_comm: [0; 16],
            }),
            Body::Fork(p::Fork {
                child_pid: 1234,
                _pad: 0,
            }),
            Body::Exec(Box::new(Exec {
                old_pid: 1,
                ppid: 2,
                filename: "/usr/bin/\"x\\y\"\u{1}é".into(),
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo \"hi\"\n\tthere\\\u{7f}\u{1b}[0m\u{fffd}".into(),
                    String::new(),
                ],
            })),
            Body::Exec(Box::new(Exec {
                old_pid: 0,
                ppid: 0,
                filename: String::new(),
                args: vec![],
            })),
            Body::Exit(p::Exit {
                exit_code: 3 << 8,
                flags: p::EXIT_CODE_KNOWN,
            }),
            Body::Exit(p::Exit {
                exit_code: 11 | 0x80,
                flags: p::EXIT_CODE_KNOWN,
            }),
            Body::Exit(p::Exit {
                exit_code: 0x7f,
                flags: p::EXIT_CODE_KNOWN,
            }),
            Body::Exit(p::Exit {
                exit_code: 0,
                flags: 0,
            }),
            Body::OomKill(oom::OomKill {
                victim_pid: 666,
                victim_uid: 0,
                victim_comm: comm(b"v\"\\\x02\xc3").0,
                total_vm_kb: 8_000_000,
                anon_rss_kb: 7_000_000,
                file_rss_kb: 10_000,
                shmem_rss_kb: 1,
                pgtables_kb: 14_000,
                oom_score_adj: -1000,
                _pad: 0,
                flags: oom::OOM_HAS_COMM | oom::OOM_HAS_MEMORY,
            }),
            Body::OomKill(oom::OomKill {
                victim_pid: 0,
                victim_uid: 0,
                victim_comm: [0; 16],
                total_vm_kb: u64::MAX,
                anon_rss_kb: u64::MAX,
                file_rss_kb: u64::MAX,
                shmem_rss_kb: 0,
                pgtables_kb: 0,
                oom_score_adj: 1000,
                _pad: 0,
                flags: oom::OOM_HAS_COMM,
            }),
            Body::OomKill(oom::OomKill {
                victim_pid: 1,
                victim_uid: 0,
                victim_comm: [b'q'; 16],
                total_vm_kb: u64::MAX,
                anon_rss_kb: u64::MAX,
                file_rss_kb: 1,
                shmem_rss_kb: 0,
                pgtables_kb: 0,
                oom_score_adj: 0,
                _pad: 0,
                flags: oom::OOM_HAS_MEMORY,
            }),
            Body::Mmap(m::Mmap {
                ret: 0x7f00_dead_b000,
                len: 1 << 30,
                prot: m::PROT_READ | m::PROT_WRITE,
                flags: m::MAP_ANONYMOUS,
                fd: -1,
                _pad: 0,
            }),
            Body::Mmap(m::Mmap {
                ret: -12,
                len: u64::MAX,
                prot: 7,
                flags: m::MAP_SHARED,
                fd: 5,
                _pad: 0,
            }),
            Body::Mmap(m::Mmap {
                ret: i64::MIN,
                len: 0,
                prot: 0,
                flags: 0,
                fd: 0,
                _pad: 0,
            }),
            Body::Munmap(m::Munmap {
                addr: 0x1000,
                len: 4096,
            }),
            Body::Brk(m::Brk {
                brk: 0x5000,
                prev: 0x1000,
            }),
            Body::Brk(m::Brk {
                brk: 0,
                prev: u64::MAX,
            }),
            Body::MemSample(m::MemSample {
                rss_bytes: 1,
                rss_anon: 2,
                rss_file: 3,
                rss_shmem: 0,
                swap_bytes: u64::MAX,
                mapped_bytes: 1 << 40,
            }),
            Body::ProcInfo(Box::new(ProcInfo {
                pid: 10,
                ppid: 1,
                uid: 1000,
                comm: "p\"\\\n".into(),
                exe: "/bin/x".into(),
                cmdline: vec!["x".into(), "\u{0}y".into()],
                cgroup: "/sys/fs".into(),
                mem_limit: Some(1 << 30),
                nofile_limit: None,
                previous_comm: None,
                forked_by: None,
                open_fds: Some(3),
                open_sockets: None,
                ..ProcInfo::default()
            })),
            Body::ProcInfo(Box::default()),
            Body::Drops(Box::new(Drops {
                per_kind: vec![
                    ("tcp_state".into(), 5),
                    ("exec".into(), 1),
                    ("tcp_state".into(), 7),
                    ("a\"b".into(), u64::MAX),
                ],
            })),
            Body::Drops(Box::default()),
            Body::ConnOpen(tcp::ConnOpen {
                sk: 0xffff_8880_0000_1000,
                fd: 5,
                ret: -115,
                role: tcp::ROLE_ACTIVE,
                _pad: 0,
                family: AF_INET,
                sport: 50123,
                dport: 80,
                saddr: v4([127, 0, 0, 1]),
                daddr: v4([127, 0, 0, 2]),
            }),
            Body::ConnOpen(tcp::ConnOpen {
                sk: 0,
                fd: -1,
                ret: -111,
                role: 9,
                _pad: 0,
                family: tracer_common::AF_INET6,
                sport: 0,
                dport: 443,
                saddr: v6(),
                daddr: [0; 16],
            }),
            Body::ConnClose(Box::new(tcp::ConnClose {
                sk: 0xffff_8880_0000_2000,
                open_ns: 1,
                wait_ns: 0,
                last_recv_ns: 3_600_000_000_000,
                bytes_in: 123,
                bytes_out: u64::MAX,
                fd: 7,
                state: tcp::state::CLOSE_WAIT as u8,
                role: tcp::ROLE_PASSIVE,
                family: AF_INET,
                sport: 80,
                dport: 50123,
                _pad: 0,
                saddr: v4([10, 0, 0, 1]),
                daddr: v4([10, 0, 0, 2]),
            })),
            Body::ConnClose(Box::new(tcp::ConnClose {
                sk: 1,
                open_ns: 0,
                wait_ns: u64::MAX,
                last_recv_ns: 0,
                bytes_in: 0,
                bytes_out: 0,
                fd: -1,
                state: 200,
                role: tcp::ROLE_ACTIVE,
                family: tracer_common::AF_INET6,
                sport: 1,
                dport: 2,
                _pad: 0,
                saddr: v6(),
                daddr: v6(),
            })),
            Body::ConnStatus(Box::new(tcp::ConnStatus {
                sk: 0xffff_8880_0000_3000,
                since_ns: 2,
                open_ns: 1,
                last_recv_ns: 0,
                bytes_in: 4096,
                bytes_out: 17,
                status: tcp::status::CLOSE_WAIT,
                state: tcp::state::CLOSE_WAIT as u8,
                role: tcp::ROLE_PASSIVE,
                _pad: 0,
                family: AF_INET,
                sport: 8080,
                dport: 40000,
                _pad2: 0,
                _pad3: 0,
                saddr: v4([192, 168, 0, 1]),
                daddr: v4([192, 168, 0, 9]),
            })),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Event {
                ts_ns: 3_600_000_000_000u64.wrapping_mul(i as u64 + 1) + i as u64 * 7,
                cpu: i as u32,
                tgid: if i % 3 == 0 { 2301 } else { 40_000 + i as u32 },
                tid: 2301 + i as u32,
                uid: if i % 4 == 0 { u32::MAX } else { i as u32 },
                cgroup_id: 0,
                comm: comms[i % comms.len()],
                body,
            })
            .collect()
    }

    fn golden_ctx() -> (ProcTable, HostInfo) {
        let mut procs = ProcTable::new();
        procs.apply(&Event {
            ts_ns: 0,
            cpu: 0,
            tgid: 2301,
            tid: 2301,
            uid: 0,
            cgroup_id: 0,
            comm: Comm::new("node"),
            body: Body::ProcInfo(Box::new(ProcInfo {
                pid: 2301,
                ppid: 1,
                comm: "node".into(),
                ..ProcInfo::default()
            })),
        });
        let host = HostInfo {
            boot_to_wall_ns: 1_795_400_000_000_000_000,
            ..HostInfo::default()
        };
        (procs, host)
    }

    /// What the JSON printer wrote for these events when it still built a `serde_json::Value`
    /// per event: the streaming writer must produce exactly these bytes.
    const GOLDEN: [&str; 45] = [
        "{\"ts\":\"2026-11-23T03:13:20.000000000Z\",\"kind\":\"tcp_state\",\"pid\":2301,\"tid\":2301,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":1,\"uid\":4294967295,\"old_state\":\"SYN_SENT\",\"new_state\":\"ESTABLISHED\",\"family\":\"inet\",\"saddr\":\"10.0.0.1\",\"sport\":43210,\"daddr\":\"192.168.1.2\",\"dport\":443,\"owner_pid\":4242,\"sk\":\"0xffff888012345678\"}",
        "{\"ts\":\"2026-11-23T04:13:20.000000007Z\",\"kind\":\"tcp_state\",\"pid\":40001,\"tid\":2302,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":null,\"uid\":1,\"old_state\":\"UNKNOWN\",\"new_state\":\"CLOSE\",\"family\":\"inet6\",\"saddr\":\"2001:db8::1\",\"sport\":0,\"daddr\":\"::\",\"dport\":65535,\"owner_pid\":null,\"sk\":\"0x0\"}",
        "{\"ts\":\"2026-11-23T05:13:20.000000014Z\",\"kind\":\"tcp_accept\",\"pid\":40002,\"tid\":2303,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":2,\"fd\":7,\"listen_fd\":3,\"family\":\"inet\",\"saddr\":\"127.0.0.1\",\"sport\":80,\"daddr\":\"127.0.0.2\",\"dport\":50000}",
        "{\"ts\":\"2026-11-23T06:13:20.000000021Z\",\"kind\":\"tcp_accept\",\"pid\":2301,\"tid\":2304,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":1,\"uid\":3,\"error\":\"EMFILE\",\"listen_fd\":-1,\"family\":\"inet6\",\"saddr\":\"2001:db8::1\",\"sport\":8080}",
        "{\"ts\":\"2026-11-23T07:13:20.000000028Z\",\"kind\":\"tcp_accept\",\"pid\":40004,\"tid\":2305,\"comm\":\"\",\"ppid\":null,\"uid\":4294967295,\"error\":\"EAGAIN\",\"listen_fd\":5}",
        "{\"ts\":\"2026-11-23T08:13:20.000000035Z\",\"kind\":\"tcp_reset\",\"pid\":40005,\"tid\":2306,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":null,\"uid\":5,\"direction\":\"sent\",\"cause\":\"abort_on_close\",\"reason\":\"TCP_ABORT_ON_CLOSE\",\"family\":\"inet\",\"saddr\":\"1.2.3.4\",\"sport\":1,\"daddr\":\"5.6.7.8\",\"dport\":2,\"owner_pid\":null}",
        "{\"ts\":\"2026-11-23T09:13:20.000000042Z\",\"kind\":\"tcp_reset\",\"pid\":2301,\"tid\":2307,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":1,\"uid\":6,\"direction\":\"received\",\"cause\":\"received\",\"family\":\"inet6\",\"saddr\":\"2001:db8::1\",\"sport\":1,\"daddr\":\"2001:db8::1\",\"dport\":2,\"owner_pid\":77}",
        "{\"ts\":\"2026-11-23T10:13:20.000000049Z\",\"kind\":\"socket_open\",\"pid\":40007,\"tid\":2308,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":7,\"fd\":9,\"family\":\"unix\",\"sock_type\":2}",
        "{\"ts\":\"2026-11-23T11:13:20.000000056Z\",\"kind\":\"socket_open\",\"pid\":40008,\"tid\":2309,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":null,\"uid\":4294967295,\"error\":\"EAFNOSUPPORT\",\"family\":\"packet\",\"sock_type\":65535}",
        "{\"ts\":\"2026-11-23T12:13:20.000000063Z\",\"kind\":\"socket_close\",\"pid\":2301,\"tid\":2310,\"comm\":\"\",\"ppid\":1,\"uid\":9,\"fd\":-2147483648,\"family\":\"netlink\"}",
        "{\"ts\":\"2026-11-23T13:13:20.000000070Z\",\"kind\":\"sock_owner\",\"pid\":40010,\"tid\":2311,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":null,\"uid\":10,\"sk\":\"0xffffffffffffffff\",\"prev_owner_pid\":null}",
        "{\"ts\":\"2026-11-23T14:13:20.000000077Z\",\"kind\":\"sock_owner\",\"pid\":40011,\"tid\":2312,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":null,\"uid\":11,\"sk\":\"0x0\",\"prev_owner_pid\":4294967295}",
        "{\"ts\":\"2026-11-23T15:13:20.000000084Z\",\"kind\":\"tcp_connect\",\"pid\":2301,\"tid\":2313,\"comm\":\"é€😀ok\",\"ppid\":1,\"uid\":4294967295,\"fd\":4,\"daddr\":\"10.1.2.3\",\"dport\":5432}",
        "{\"ts\":\"2026-11-23T16:13:20.000000091Z\",\"kind\":\"tcp_connect\",\"pid\":40013,\"tid\":2314,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":null,\"uid\":13,\"fd\":4,\"error\":\"EINPROGRESS\",\"daddr\":\"2001:db8::1\",\"dport\":5432}",
        "{\"ts\":\"2026-11-23T17:13:20.000000098Z\",\"kind\":\"tcp_connect\",\"pid\":40014,\"tid\":2315,\"comm\":\"\",\"ppid\":null,\"uid\":14,\"fd\":4,\"error\":\"E9999\",\"daddr\":\"0.0.0.0\",\"dport\":0}",
        "{\"ts\":\"2026-11-23T18:13:20.000000105Z\",\"kind\":\"tcp_listen\",\"pid\":2301,\"tid\":2316,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":1,\"uid\":15,\"fd\":3,\"backlog\":2147483647}",
        "{\"ts\":\"2026-11-23T19:13:20.000000112Z\",\"kind\":\"signal\",\"pid\":40016,\"tid\":2317,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":null,\"uid\":4294967295,\"signal\":9,\"signal_name\":\"SIGKILL\",\"target_pid\":-1,\"target_comm\":\"t\\\"a\\\\r\",\"code\":128,\"from_kernel\":true,\"result\":0}",
        "{\"ts\":\"2026-11-23T20:13:20.000000119Z\",\"kind\":\"signal\",\"pid\":40017,\"tid\":2318,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":17,\"signal\":40,\"signal_name\":\"SIGRTMIN+6\",\"target_pid\":1,\"target_comm\":\"����������������\",\"code\":0,\"from_kernel\":false,\"result\":2}",
        "{\"ts\":\"2026-11-23T21:13:20.000000126Z\",\"kind\":\"signal\",\"pid\":2301,\"tid\":2319,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":1,\"uid\":18,\"signal\":0,\"signal_name\":\"SIG0\",\"target_pid\":1,\"target_comm\":\"\",\"code\":-6,\"from_kernel\":false,\"result\":0}",
        "{\"ts\":\"2026-11-23T22:13:20.000000133Z\",\"kind\":\"fork\",\"pid\":40019,\"tid\":2320,\"comm\":\"\",\"ppid\":null,\"uid\":19,\"child_pid\":1234}",
        "{\"ts\":\"2026-11-23T23:13:20.000000140Z\",\"kind\":\"exec\",\"pid\":40020,\"tid\":2321,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":null,\"uid\":4294967295,\"filename\":\"/usr/bin/\\\"x\\\\y\\\"\\u0001é\",\"args\":[\"sh\",\"-c\",\"echo \\\"hi\\\"\\n\\tthere\\\\\u{7f}\\u001b[0m�\",\"\"]}",
        "{\"ts\":\"2026-11-24T00:13:20.000000147Z\",\"kind\":\"exec\",\"pid\":2301,\"tid\":2322,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":1,\"uid\":21,\"filename\":\"\",\"args\":[]}",
        "{\"ts\":\"2026-11-24T01:13:20.000000154Z\",\"kind\":\"exit\",\"pid\":40022,\"tid\":2323,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":22,\"exit_code\":3,\"signal\":null,\"signal_name\":null}",
        "{\"ts\":\"2026-11-24T02:13:20.000000161Z\",\"kind\":\"exit\",\"pid\":40023,\"tid\":2324,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":null,\"uid\":23,\"exit_code\":null,\"signal\":11,\"signal_name\":\"SIGSEGV\"}",
        "{\"ts\":\"2026-11-24T03:13:20.000000168Z\",\"kind\":\"exit\",\"pid\":2301,\"tid\":2325,\"comm\":\"\",\"ppid\":1,\"uid\":4294967295,\"exit_code\":null,\"signal\":127,\"signal_name\":\"SIG127\"}",
        "{\"ts\":\"2026-11-24T04:13:20.000000175Z\",\"kind\":\"exit\",\"pid\":40025,\"tid\":2326,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":null,\"uid\":25,\"exit_code\":null,\"signal\":null,\"signal_name\":null}",
        "{\"ts\":\"2026-11-24T05:13:20.000000182Z\",\"kind\":\"oom_kill\",\"pid\":40026,\"tid\":2327,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":null,\"uid\":26,\"victim_pid\":666,\"victim_comm\":\"v\\\"\\\\\\u0002�\",\"victim_rss_bytes\":7178241024,\"victim_total_vm_bytes\":8192000000,\"victim_anon_rss_bytes\":7168000000,\"oom_score_adj\":-1000}",
        "{\"ts\":\"2026-11-24T06:13:20.000000189Z\",\"kind\":\"oom_kill\",\"pid\":2301,\"tid\":2328,\"comm\":\"é€😀ok\",\"ppid\":1,\"uid\":27,\"victim_pid\":0,\"victim_comm\":\"\",\"victim_rss_bytes\":null,\"victim_total_vm_bytes\":null,\"victim_anon_rss_bytes\":null,\"oom_score_adj\":1000}",
        "{\"ts\":\"2026-11-24T07:13:20.000000196Z\",\"kind\":\"oom_kill\",\"pid\":40028,\"tid\":2329,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":null,\"uid\":4294967295,\"victim_pid\":1,\"victim_comm\":\"qqqqqqqqqqqqqqqq\",\"victim_rss_bytes\":18446744073709551615,\"victim_total_vm_bytes\":18446744073709551615,\"victim_anon_rss_bytes\":18446744073709551615,\"oom_score_adj\":0}",
        "{\"ts\":\"2026-11-24T08:13:20.000000203Z\",\"kind\":\"mmap\",\"pid\":40029,\"tid\":2330,\"comm\":\"\",\"ppid\":null,\"uid\":29,\"addr\":\"0x7f00deadb000\",\"len\":1073741824,\"prot\":\"rw-\",\"anonymous\":true,\"shared\":false}",
        "{\"ts\":\"2026-11-24T09:13:20.000000210Z\",\"kind\":\"mmap\",\"pid\":2301,\"tid\":2331,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":1,\"uid\":30,\"error\":\"ENOMEM\",\"len\":18446744073709551615,\"prot\":\"rwx\",\"anonymous\":false,\"shared\":true,\"fd\":5}",
        "{\"ts\":\"2026-11-24T10:13:20.000000217Z\",\"kind\":\"mmap\",\"pid\":40031,\"tid\":2332,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":null,\"uid\":31,\"error\":\"E0\",\"len\":0,\"prot\":\"---\",\"anonymous\":false,\"shared\":false,\"fd\":0}",
        "{\"ts\":\"2026-11-24T11:13:20.000000224Z\",\"kind\":\"munmap\",\"pid\":40032,\"tid\":2333,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":4294967295,\"addr\":\"0x1000\",\"len\":4096}",
        "{\"ts\":\"2026-11-24T12:13:20.000000231Z\",\"kind\":\"brk\",\"pid\":2301,\"tid\":2334,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":1,\"uid\":33,\"addr\":\"0x5000\",\"prev_addr\":\"0x1000\",\"len\":16384}",
        "{\"ts\":\"2026-11-24T13:13:20.000000238Z\",\"kind\":\"brk\",\"pid\":40034,\"tid\":2335,\"comm\":\"\",\"ppid\":null,\"uid\":34,\"addr\":\"0x0\",\"prev_addr\":\"0xffffffffffffffff\",\"len\":1}",
        "{\"ts\":\"2026-11-24T14:13:20.000000245Z\",\"kind\":\"mem_sample\",\"pid\":40035,\"tid\":2336,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":null,\"uid\":35,\"rss_bytes\":1,\"rss_anon_bytes\":2,\"rss_file_bytes\":3,\"rss_shmem_bytes\":0,\"swap_bytes\":18446744073709551615,\"mapped_bytes\":1099511627776}",
        "{\"ts\":\"2026-11-24T15:13:20.000000252Z\",\"kind\":\"proc_info\",\"pid\":2301,\"tid\":2337,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":1,\"uid\":4294967295,\"info\":{\"pid\":10,\"ppid\":1,\"uid\":1000,\"comm\":\"p\\\"\\\\\\n\",\"exe\":\"/bin/x\",\"cmdline\":[\"x\",\"\\u0000y\"],\"cgroup\":\"/sys/fs\",\"mem_limit\":1073741824,\"nofile_limit\":null,\"open_fds\":3,\"open_sockets\":null}}",
        "{\"ts\":\"2026-11-24T16:13:20.000000259Z\",\"kind\":\"proc_info\",\"pid\":40037,\"tid\":2338,\"comm\":\"é€😀ok\",\"ppid\":null,\"uid\":37,\"info\":{\"pid\":0,\"ppid\":0,\"uid\":0,\"comm\":\"\",\"exe\":\"\",\"cmdline\":[],\"cgroup\":\"\",\"mem_limit\":null,\"nofile_limit\":null,\"open_fds\":null,\"open_sockets\":null}}",
        "{\"ts\":\"2026-11-24T17:13:20.000000266Z\",\"kind\":\"drops\",\"pid\":40038,\"tid\":2339,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":null,\"uid\":38,\"drops\":{\"a\\\"b\":18446744073709551615,\"exec\":1,\"tcp_state\":7}}",
        "{\"ts\":\"2026-11-24T18:13:20.000000273Z\",\"kind\":\"drops\",\"pid\":2301,\"tid\":2340,\"comm\":\"\",\"ppid\":1,\"uid\":39,\"drops\":{}}",
        "{\"ts\":\"2026-11-24T19:13:20.000000280Z\",\"kind\":\"conn_open\",\"pid\":40040,\"tid\":2341,\"comm\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\u{7f}\",\"ppid\":null,\"uid\":4294967295,\"role\":\"connect\",\"fd\":5,\"family\":\"inet\",\"saddr\":\"127.0.0.1\",\"sport\":50123,\"daddr\":\"127.0.0.2\",\"dport\":80,\"sk\":\"0xffff888000001000\"}",
        "{\"ts\":\"2026-11-24T20:13:20.000000287Z\",\"kind\":\"conn_open\",\"pid\":40041,\"tid\":2342,\"comm\":\"�x�(\\r\\b\\f/\",\"ppid\":null,\"uid\":41,\"role\":\"unknown\",\"fd\":-1,\"error\":\"ECONNREFUSED\",\"family\":\"inet6\",\"saddr\":\"2001:db8::1\",\"sport\":0,\"daddr\":\"::\",\"dport\":443,\"sk\":\"0x0\"}",
        "{\"ts\":\"2026-11-24T21:13:20.000000294Z\",\"kind\":\"conn_close\",\"pid\":2301,\"tid\":2343,\"comm\":\"é€😀ok\",\"ppid\":1,\"uid\":42,\"role\":\"accept\",\"fd\":7,\"state\":\"CLOSE_WAIT\",\"closed_first\":\"peer\",\"family\":\"inet\",\"saddr\":\"10.0.0.1\",\"sport\":80,\"daddr\":\"10.0.0.2\",\"dport\":50123,\"duration_ms\":154800000,\"bytes_in\":123,\"bytes_out\":18446744073709551615,\"last_recv_ms_ago\":151200000,\"unanswered_ms\":null,\"sk\":\"0xffff888000002000\"}",
        "{\"ts\":\"2026-11-24T22:13:20.000000301Z\",\"kind\":\"conn_close\",\"pid\":40043,\"tid\":2344,\"comm\":\"zzzzzzzzzzzzzzzz\",\"ppid\":null,\"uid\":43,\"role\":\"connect\",\"fd\":-1,\"state\":\"UNKNOWN\",\"closed_first\":\"unknown\",\"family\":\"inet6\",\"saddr\":\"2001:db8::1\",\"sport\":1,\"daddr\":\"2001:db8::1\",\"dport\":2,\"duration_ms\":null,\"bytes_in\":0,\"bytes_out\":0,\"last_recv_ms_ago\":null,\"unanswered_ms\":0,\"sk\":\"0x1\"}",
        "{\"ts\":\"2026-11-24T23:13:20.000000308Z\",\"kind\":\"conn_status\",\"pid\":40044,\"tid\":2345,\"comm\":\"\",\"ppid\":null,\"uid\":4294967295,\"status\":\"close_wait\",\"for_ms\":162000000,\"state\":\"CLOSE_WAIT\",\"role\":\"accept\",\"family\":\"inet\",\"saddr\":\"192.168.0.1\",\"sport\":8080,\"daddr\":\"192.168.0.9\",\"dport\":40000,\"age_ms\":162000000,\"bytes_in\":4096,\"bytes_out\":17,\"owner_pid\":40044,\"sk\":\"0xffff888000003000\"}",
    ];

    #[test]
    fn json_lines_are_byte_identical_to_golden() {
        let (procs, host) = golden_ctx();
        let ctx = Ctx {
            procs: &procs,
            host: &host,
        };
        let events = golden_events();
        assert_eq!(events.len(), GOLDEN.len());
        let mut buf = Vec::new();
        for (ev, want) in events.iter().zip(GOLDEN) {
            assert_eq!(to_json(ev, &ctx).to_string(), want);
            buf.clear();
            write_json_line(&mut buf, ev, &ctx).unwrap();
            assert_eq!(buf, format!("{want}\n").as_bytes(), "{}", ev.kind_name());
            let v: Value = serde_json::from_slice(&buf).unwrap();
            assert_eq!(v["kind"], ev.kind_name());
        }
    }
}
