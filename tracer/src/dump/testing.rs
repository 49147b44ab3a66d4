//! Synthetic record streams and in-memory segments for the dump tests (compiled only for
//! `cargo test`).
use tracer_common::{AF_INET, memory, oom, process, signal, tcp};

use super::format::{self, BlockType, SegmentMeta};
use crate::{
    event::{self, Comm, EventHeader},
    host::HostInfo,
};

/// A small deterministic PRNG (splitmix64), so tests need no crate and replay the same bytes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

struct Task {
    pid: u32,
    threads: u32,
    comm: &'static str,
    cgroup: u64,
    uid: u32,
}

const TASKS: [Task; 6] = [
    Task {
        pid: 1210,
        threads: 4,
        comm: "nginx",
        cgroup: 4021,
        uid: 33,
    },
    Task {
        pid: 2301,
        threads: 11,
        comm: "node",
        cgroup: 4188,
        uid: 1000,
    },
    Task {
        pid: 3120,
        threads: 1,
        comm: "postgres",
        cgroup: 4305,
        uid: 113,
    },
    Task {
        pid: 4410,
        threads: 6,
        comm: "python3",
        cgroup: 4411,
        uid: 1000,
    },
    Task {
        pid: 880,
        threads: 1,
        comm: "monit",
        cgroup: 3001,
        uid: 0,
    },
    Task {
        pid: 1,
        threads: 1,
        comm: "systemd",
        cgroup: 1,
        uid: 0,
    },
];

/// A realistic mix for a busy API host: connection churn through a proxy to an app server and a
/// database (TCP state changes, accepts, connects, socket opens and closes, a few resets), the
/// kernel's periodic memory samples and the mappings of a growing worker, and now and then a
/// fork, exec, exit or signal from a supervisor. Records come in time order, several hundred
/// microseconds apart, from 8 CPUs, as the kernel would write them.
pub struct Mix {
    rng: Rng,
    ts: u64,
    queue: Vec<Vec<u8>>,
    next_pid: u32,
    rss: u64,
}

impl Mix {
    pub fn new(seed: u64) -> Mix {
        Mix {
            rng: Rng(seed),
            ts: 3_600_000_000_000,
            queue: Vec::new(),
            next_pid: 50_000,
            rss: 300 << 20,
        }
    }

    fn hdr(&mut self, t: usize) -> EventHeader {
        let task = &TASKS[t];
        let tid = if task.threads > 1 {
            task.pid + self.rng.below(task.threads as u64) as u32
        } else {
            task.pid
        };
        EventHeader {
            ts_ns: self.ts,
            cpu: self.rng.below(8) as u32,
            tgid: task.pid,
            tid,
            uid: task.uid,
            cgroup_id: task.cgroup,
            comm: Comm::new(task.comm),
        }
    }

    fn tick(&mut self) {
        self.ts += 20_000 + self.rng.below(600_000);
    }

    fn push<T: tracer_common::Payload>(&mut self, h: EventHeader, p: &T) {
        self.queue.push(event::encode_kernel_record(&h, p));
    }

    fn tcp_state(
        &mut self,
        t: usize,
        sk: u64,
        (from, to): (u16, u16),
        (sport, dport, daddr): (u16, u16, [u8; 4]),
    ) {
        self.tick();
        // State changes often run in softirq context, on whatever task was current.
        let mut h = self.hdr(t);
        if self.rng.below(3) == 0 {
            h.tgid = 0;
            h.tid = 0;
            h.comm = Comm::new(&format!("swapper/{}", h.cpu));
            h.cgroup_id = 1;
            h.uid = 0;
        }
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[10, 0, 3, 17]);
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(&daddr);
        let p = tcp::TcpState {
            skaddr: sk,
            old_state: from,
            new_state: to,
            family: AF_INET,
            sport,
            dport,
            flags: 0,
            owner_tgid: TASKS[t].pid,
            saddr,
            daddr: d,
        };
        self.push(h, &p);
    }

    /// One client connection through the proxy, to the app and sometimes to the database.
    fn connection(&mut self) {
        use tcp::state::*;
        // Slab addresses: random within a few GiB of the direct map, 64-byte aligned.
        let sk = 0xffff_8881_0000_0000 + (self.rng.below(1 << 32) & !0x3f);
        let client = [203, 0, 113, self.rng.below(250) as u8 + 1];
        let cport = 32768 + self.rng.below(28000) as u16;
        self.tcp_state(0, sk, (SYN_RECV, ESTABLISHED), (443, cport, client));
        self.tick();
        let fd = 10 + self.rng.below(500) as i32;
        let h = self.hdr(0);
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[10, 0, 3, 17]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&client);
        let acc = tcp::TcpAccept {
            ret: fd,
            listen_fd: 6,
            sk,
            family: AF_INET,
            sport: 443,
            dport: cport,
            _pad: 0,
            saddr,
            daddr,
        };
        self.push(h, &acc);
        // Proxy to the app server.
        let up_sk = sk + 0x400;
        let up_port = 32768 + self.rng.below(28000) as u16;
        self.tick();
        let h = self.hdr(0);
        let ufd = fd + 1;
        self.push(
            h,
            &tcp::SocketOpen {
                fd: ufd,
                family: AF_INET,
                sock_type: 1,
                protocol: 6,
                _pad: 0,
            },
        );
        self.tcp_state(0, up_sk, (CLOSE, SYN_SENT), (up_port, 8080, [127, 0, 0, 1]));
        self.tcp_state(
            0,
            up_sk,
            (SYN_SENT, ESTABLISHED),
            (up_port, 8080, [127, 0, 0, 1]),
        );
        self.tick();
        let h = self.hdr(0);
        let mut lo = [0u8; 16];
        lo[..4].copy_from_slice(&[127, 0, 0, 1]);
        self.push(
            h,
            &tcp::TcpConnect {
                fd: ufd,
                ret: 0,
                family: AF_INET,
                dport: 8080,
                _pad: 0,
                daddr: lo,
            },
        );
        if self.rng.below(4) == 0 {
            self.tick();
            let h = self.hdr(1);
            self.push(
                h,
                &tcp::SockOwner {
                    sk: up_sk + 0x200,
                    prev_tgid: 0,
                    _pad: 0,
                },
            );
            let db_sk = up_sk + 0x100;
            let p = 32768 + self.rng.below(28000) as u16;
            self.tcp_state(1, db_sk, (CLOSE, SYN_SENT), (p, 5432, [10, 0, 3, 40]));
            self.tcp_state(1, db_sk, (SYN_SENT, ESTABLISHED), (p, 5432, [10, 0, 3, 40]));
        }
        // Teardown.
        if self.rng.below(40) == 0 {
            self.tick();
            let h = self.hdr(0);
            self.push(
                h,
                &tcp::TcpReset {
                    sk,
                    direction: tcp::RESET_RECEIVED,
                    reason: 0,
                    family: AF_INET,
                    sport: 443,
                    dport: cport,
                    owner_tgid: TASKS[0].pid,
                    state: ESTABLISHED as u32,
                    saddr,
                    daddr,
                },
            );
        }
        self.tcp_state(0, sk, (ESTABLISHED, FIN_WAIT1), (443, cport, client));
        self.tcp_state(0, sk, (FIN_WAIT1, FIN_WAIT2), (443, cport, client));
        self.tick();
        let h = self.hdr(0);
        self.push(
            h,
            &tcp::SocketClose {
                fd,
                family: AF_INET,
                sock_type: 1,
            },
        );
        self.tcp_state(
            0,
            up_sk,
            (ESTABLISHED, CLOSE_WAIT),
            (up_port, 8080, [127, 0, 0, 1]),
        );
        self.tcp_state(
            0,
            up_sk,
            (CLOSE_WAIT, LAST_ACK),
            (up_port, 8080, [127, 0, 0, 1]),
        );
        self.tcp_state(0, up_sk, (LAST_ACK, CLOSE), (up_port, 8080, [127, 0, 0, 1]));
        self.tick();
        let h = self.hdr(0);
        self.push(
            h,
            &tcp::SocketClose {
                fd: ufd,
                family: AF_INET,
                sock_type: 1,
            },
        );
    }

    fn memory(&mut self) {
        for t in [1usize, 3] {
            self.tick();
            let h = self.hdr(t);
            if t == 3 {
                self.rss += self.rng.below(4 << 20);
            }
            let rss = if t == 3 { self.rss } else { 180 << 20 } + self.rng.below(64) * 4096;
            let s = memory::MemSample {
                rss_bytes: rss,
                rss_anon: rss - (40 << 20),
                rss_file: 38 << 20,
                rss_shmem: 2 << 20,
                swap_bytes: 0,
                mapped_bytes: rss * 3,
            };
            self.push(h, &s);
        }
        self.tick();
        let h = self.hdr(3);
        let len = (1 + self.rng.below(16)) << 20;
        let addr = 0x7f00_0000_0000 + (self.rng.below(1 << 20) << 12);
        self.push(
            h,
            &memory::Mmap {
                ret: addr as i64,
                len,
                prot: 3,
                flags: 0x22,
                fd: -1,
                _pad: 0,
            },
        );
        if self.rng.below(2) == 0 {
            self.tick();
            let h = self.hdr(3);
            self.push(h, &memory::Munmap { addr, len });
        }
        if self.rng.below(3) == 0 {
            self.tick();
            let h = self.hdr(1);
            let prev = 0x5555_5600_0000 + (self.rng.below(1 << 16) << 12);
            self.push(
                h,
                &memory::Brk {
                    brk: prev + (132 << 10),
                    prev,
                },
            );
        }
    }

    fn process(&mut self) {
        self.next_pid += 1 + self.rng.below(3) as u32;
        let child = self.next_pid;
        self.tick();
        let h = self.hdr(4);
        self.push(
            h,
            &process::Fork {
                child_pid: child,
                _pad: 0,
            },
        );
        self.tick();
        let mut h = self.hdr(4);
        h.tgid = child;
        h.tid = child;
        let mut e = process::Exec {
            old_pid: child,
            ppid: 880,
            filename_len: 0,
            args_len: 0,
            _pad: 0,
            filename: [0; process::EXEC_FILENAME_LEN],
            args: [0; process::EXEC_ARGS_LEN],
        };
        let f = b"/usr/bin/curl";
        e.filename[..f.len()].copy_from_slice(f);
        e.filename_len = f.len() as u16 + 1;
        let a = b"curl\0-sf\0--max-time\x005\0http://127.0.0.1:8080/health\0";
        e.args[..a.len()].copy_from_slice(a);
        e.args_len = a.len() as u16;
        h.comm = Comm::new("curl");
        self.push(h, &e);
        self.tick();
        self.push(
            h,
            &process::Exit {
                exit_code: 0,
                flags: process::EXIT_CODE_KNOWN,
            },
        );
        self.tick();
        let h = self.hdr(4);
        self.push(
            h,
            &signal::Signal {
                sig: 17,
                code: 1,
                result: 0,
                target_pid: 880,
                group: 1,
                errno: 0,
                target_comm: Comm::new("monit").0,
            },
        );
    }

    fn rare(&mut self) {
        self.tick();
        let h = self.hdr(4);
        self.push(
            h,
            &signal::Signal {
                sig: 15,
                code: 0,
                result: 0,
                target_pid: 2301,
                group: 1,
                errno: 0,
                target_comm: Comm::new("node").0,
            },
        );
        if self.rng.below(4) == 0 {
            self.tick();
            let h = self.hdr(3);
            self.push(
                h,
                &oom::OomKill {
                    victim_pid: 4410,
                    victim_uid: 1000,
                    victim_comm: Comm::new("python3").0,
                    total_vm_kb: 9_000_000,
                    anon_rss_kb: 7_000_000,
                    file_rss_kb: 10_000,
                    shmem_rss_kb: 0,
                    pgtables_kb: 14_000,
                    oom_score_adj: 0,
                    _pad: 0,
                    flags: oom::OOM_HAS_COMM | oom::OOM_HAS_MEMORY,
                },
            );
        }
    }

    /// The next record.
    pub fn next_record(&mut self) -> Vec<u8> {
        while self.queue.is_empty() {
            match self.rng.below(100) {
                0..60 => self.connection(),
                60..92 => self.memory(),
                92..99 => self.process(),
                _ => self.rare(),
            }
            self.queue.reverse();
        }
        self.queue.pop().unwrap_or_default()
    }

    pub fn take(&mut self, n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|_| self.next_record()).collect()
    }
}

/// Host facts for synthetic dumps.
pub fn host() -> HostInfo {
    HostInfo {
        hostname: "api-1".into(),
        kernel: "6.8.0".into(),
        boot_id: "7d3c6a8e-0000-4000-8000-000000000001".into(),
        boot_to_wall_ns: 1_795_400_000_000_000_000,
        mem_total_bytes: 16 << 30,
        page_size: 4096,
    }
}

/// A whole segment in memory: preamble, META, an empty snapshot, then the records in blocks of
/// `per_block`. What the recorder writes, without files or threads (fuzz seeds, reader tests).
pub fn segment_bytes(records: &[Vec<u8>], per_block: usize) -> Vec<u8> {
    segment_bytes_of(host(), 1, records, per_block)
}

/// [`segment_bytes`] of another host or boot, numbered `seq` (a dump that spans a reboot has
/// segments of two boot ids).
pub fn segment_bytes_of(
    host: HostInfo,
    seq: u64,
    records: &[Vec<u8>],
    per_block: usize,
) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(format::ZSTD_LEVEL).ok();
    let meta = SegmentMeta {
        tracer_version: env!("CARGO_PKG_VERSION").into(),
        created_wall_ns: host.boot_to_wall_ns,
        host,
        seq,
        created_boot_ns: 0,
    };
    let mut out = format::encode_preamble().to_vec();
    let json = serde_json::to_vec(&meta).unwrap_or_default();
    out.extend(format::encode_block(BlockType::Meta, &json, 0, 0, 0, None));
    out.extend(format::encode_block(
        BlockType::Snapshot,
        &[],
        0,
        0,
        0,
        None,
    ));
    for chunk in records.chunks(per_block.max(1)) {
        let raw: Vec<u8> = chunk.concat();
        let first = chunk
            .iter()
            .map(|r| format::record_ts(r))
            .min()
            .unwrap_or(0);
        let last = chunk
            .iter()
            .map(|r| format::record_ts(r))
            .max()
            .unwrap_or(0);
        out.extend(format::encode_block(
            BlockType::Records,
            &raw,
            chunk.len() as u32,
            first,
            last,
            c.as_mut(),
        ));
    }
    out
}
