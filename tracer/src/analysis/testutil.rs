//! Synthetic event streams for the analysis tests: records are encoded as the kernel writes
//! them and decoded by the real decoder, then fed through the process table and the engine
//! as the pipeline does.
use serde_json::Value;
use tracer_common::{
    AF_INET, Payload, memory, oom,
    process::{self, EXEC_ARGS_LEN, EXEC_FILENAME_LEN},
    signal, tcp,
};

use super::{AnalysisConfig, Engine, Finding};
use crate::{
    event::{Body, Comm, Event, EventHeader, ProcInfo, decode, encode_kernel_record},
    host::HostInfo,
    pipeline::Ctx,
    proc_table::ProcTable,
};

/// Boot time of the first event (so no timestamp is 0).
pub const BASE_NS: u64 = 1_000 * 1_000_000_000;

pub struct Stream {
    pub procs: ProcTable,
    pub host: HostInfo,
    pub engine: Engine,
    pub events: Vec<Event>,
    /// The records of the events made by the helpers below, as a dump stores them.
    pub records: Vec<Vec<u8>>,
    now_ns: u64,
}

impl Stream {
    pub fn new() -> Stream {
        Stream::with_config(AnalysisConfig::default(), 8 << 30)
    }

    pub fn with_host_mem(bytes: u64) -> Stream {
        Stream::with_config(AnalysisConfig::default(), bytes)
    }

    pub fn with_config(cfg: AnalysisConfig, mem_total_bytes: u64) -> Stream {
        Stream {
            procs: ProcTable::new(),
            host: HostInfo {
                hostname: "test".into(),
                kernel: "6.18.0".into(),
                boot_id: "b".into(),
                // 2026-11-24T00:00:00Z at boot.
                boot_to_wall_ns: 1_795_478_400_000_000_000,
                mem_total_bytes,
                page_size: 4096,
            },
            engine: Engine::new(cfg).unwrap(),
            events: Vec::new(),
            records: Vec::new(),
            now_ns: BASE_NS,
        }
    }

    /// Sets the time of the next events, in milliseconds since the stream's start.
    pub fn at(&mut self, ms: u64) -> &mut Stream {
        self.now_ns = BASE_NS + ms * 1_000_000;
        self
    }

    pub fn feed(&mut self, ev: Event) {
        self.procs.apply(&ev);
        let ctx = Ctx {
            procs: &self.procs,
            host: &self.host,
        };
        self.engine.observe(&ev, &ctx);
        self.events.push(ev);
    }

    fn kernel<T: Payload>(&mut self, tgid: u32, comm: &str, p: T) -> &mut Stream {
        let h = EventHeader {
            ts_ns: self.now_ns,
            cpu: 0,
            tgid,
            tid: tgid,
            uid: 1000,
            cgroup_id: 1,
            comm: Comm::new(comm),
        };
        let raw = encode_kernel_record(&h, &p);
        let ev = decode(&raw).expect("synthetic record decodes");
        self.records.push(raw);
        self.feed(ev);
        self
    }

    fn user(&mut self, tgid: u32, body: Body) -> &mut Stream {
        let ev = Event {
            ts_ns: self.now_ns,
            cpu: 0,
            tgid,
            tid: tgid,
            uid: 0,
            cgroup_id: 0,
            comm: Comm::new("tracer"),
            body,
        };
        self.records
            .push(crate::event::encode_user_record(&ev).expect("synthetic record encodes"));
        self.feed(ev);
        self
    }

    pub fn proc_info(
        &mut self,
        pid: u32,
        ppid: u32,
        comm: &str,
        f: impl FnOnce(&mut ProcInfo),
    ) -> &mut Stream {
        let mut i = ProcInfo {
            pid,
            ppid,
            uid: 0,
            comm: comm.into(),
            exe: format!("/usr/bin/{comm}"),
            cmdline: vec![comm.into()],
            cgroup: "/".into(),
            mem_limit: None,
            nofile_limit: Some(1024),
            previous_comm: None,
            forked_by: None,
            open_fds: None,
            open_sockets: None,
            ..ProcInfo::default()
        };
        f(&mut i);
        self.user(pid, Body::ProcInfo(Box::new(i)))
    }

    /// The collector's clock tick: changes nothing but the time.
    pub fn tick(&mut self) -> &mut Stream {
        self.user(0, Body::Tick)
    }

    pub fn accept(&mut self, pid: u32, comm: &str, fd: i32, port: u16) -> &mut Stream {
        self.accept_sk(pid, comm, fd, port, 0)
    }

    pub fn accept_sk(&mut self, pid: u32, comm: &str, fd: i32, port: u16, sk: u64) -> &mut Stream {
        self.kernel(
            pid,
            comm,
            tcp::TcpAccept {
                ret: fd,
                listen_fd: 3,
                sk,
                family: AF_INET,
                sport: port,
                dport: 40000,
                _pad: 0,
                saddr: addr(1),
                daddr: addr(9),
            },
        )
    }

    pub fn accept_failed(&mut self, pid: u32, comm: &str, errno: i32, port: u16) -> &mut Stream {
        self.kernel(
            pid,
            comm,
            tcp::TcpAccept {
                ret: -errno,
                listen_fd: 3,
                sk: 0,
                family: AF_INET,
                sport: port,
                dport: 0,
                _pad: 0,
                saddr: addr(1),
                daddr: [0; 16],
            },
        )
    }

    pub fn socket_open(&mut self, pid: u32, comm: &str, fd: i32) -> &mut Stream {
        self.kernel(
            pid,
            comm,
            tcp::SocketOpen {
                fd,
                family: AF_INET,
                sock_type: 1,
                protocol: 0,
                _pad: 0,
            },
        )
    }

    pub fn socket_close(&mut self, pid: u32, comm: &str, fd: i32) -> &mut Stream {
        self.kernel(
            pid,
            comm,
            tcp::SocketClose {
                fd,
                family: AF_INET,
                sock_type: 1,
            },
        )
    }

    /// dup2(`oldfd`, `newfd`) of a socket fd; `replaced`: `newfd` was a socket fd too.
    pub fn dup(
        &mut self,
        pid: u32,
        comm: &str,
        oldfd: i32,
        newfd: i32,
        replaced: bool,
    ) -> &mut Stream {
        self.kernel(
            pid,
            comm,
            tcp::FdDup {
                oldfd,
                newfd,
                family: AF_INET,
                sock_type: 1,
                flags: if replaced { tcp::DUP_REPLACED } else { 0 },
            },
        )
    }

    /// A state change of socket `sk` from 10.0.0.1:`sport` to 10.0.0.2:`dport`.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_state(
        &mut self,
        tgid: u32,
        comm: &str,
        sk: u64,
        old: u16,
        new: u16,
        owner: u32,
        sport: u16,
        dport: u16,
    ) -> &mut Stream {
        self.kernel(
            tgid,
            comm,
            tcp::TcpState {
                skaddr: sk,
                old_state: old,
                new_state: new,
                family: AF_INET,
                sport,
                dport,
                flags: 0,
                owner_tgid: owner,
                saddr: addr(1),
                daddr: addr(2),
            },
        )
    }

    /// connect() (`role` ROLE_ACTIVE) or accept() (ROLE_PASSIVE) of socket `sk` with fd `fd`,
    /// from 10.0.0.1:`sport` to 10.0.0.2:`dport`.
    #[allow(clippy::too_many_arguments)]
    pub fn conn_open(
        &mut self,
        tgid: u32,
        comm: &str,
        sk: u64,
        fd: i32,
        role: u8,
        sport: u16,
        dport: u16,
    ) -> &mut Stream {
        self.kernel(
            tgid,
            comm,
            tcp::ConnOpen {
                sk,
                fd,
                ret: 0,
                role,
                _pad: 0,
                family: AF_INET,
                sport,
                dport,
                saddr: addr(1),
                daddr: addr(2),
            },
        )
    }

    /// close() of connection `sk` in TCP state `state`, opened at `open_ms` (stream time), its
    /// last byte received at `last_recv_ms` (0: never), `bytes` in each direction.
    #[allow(clippy::too_many_arguments)]
    pub fn conn_close(
        &mut self,
        tgid: u32,
        comm: &str,
        sk: u64,
        role: u8,
        state: u16,
        sport: u16,
        dport: u16,
        open_ms: u64,
        last_recv_ms: u64,
        bytes: u64,
    ) -> &mut Stream {
        let ns = |ms: u64| if ms == 0 { 0 } else { BASE_NS + ms * 1_000_000 };
        self.kernel(
            tgid,
            comm,
            tcp::ConnClose {
                sk,
                open_ns: ns(open_ms),
                wait_ns: 0,
                last_recv_ns: ns(last_recv_ms),
                bytes_in: bytes,
                bytes_out: bytes,
                fd: 3,
                state: state as u8,
                role,
                family: AF_INET,
                sport,
                dport,
                _pad: 0,
                saddr: addr(1),
                daddr: addr(2),
            },
        )
    }

    /// The collector's `conn_status` for connection `sk` of `owner` (a `tcp::status` value),
    /// holding since `since_ms` (stream time), in TCP state `state`.
    #[allow(clippy::too_many_arguments)]
    pub fn conn_status(
        &mut self,
        owner: u32,
        comm: &str,
        sk: u64,
        what: u8,
        since_ms: u64,
        state: u16,
        role: u8,
        sport: u16,
        dport: u16,
    ) -> &mut Stream {
        let since_ns = BASE_NS + since_ms * 1_000_000;
        self.kernel(
            owner,
            comm,
            tcp::ConnStatus {
                sk,
                since_ns,
                open_ns: since_ns,
                last_recv_ns: 0,
                bytes_in: 0,
                bytes_out: 0,
                status: what,
                state: state as u8,
                role,
                _pad: 0,
                family: AF_INET,
                sport,
                dport,
                _pad2: 0,
                _pad3: 0,
                saddr: addr(1),
                daddr: addr(2),
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn reset(
        &mut self,
        tgid: u32,
        comm: &str,
        sk: u64,
        direction: u8,
        owner: u32,
        sport: u16,
        dport: u16,
    ) -> &mut Stream {
        self.reset_why(tgid, comm, sk, direction, owner, sport, dport, 0, 0)
    }

    /// A reset record as given.
    pub fn reset_record(&mut self, tgid: u32, comm: &str, r: tcp::TcpReset) -> &mut Stream {
        self.kernel(tgid, comm, r)
    }

    /// A reset with the socket's TCP `state` and the kernel's `reason` (tracer's code).
    #[allow(clippy::too_many_arguments)]
    pub fn reset_why(
        &mut self,
        tgid: u32,
        comm: &str,
        sk: u64,
        direction: u8,
        owner: u32,
        sport: u16,
        dport: u16,
        state: u16,
        reason: u8,
    ) -> &mut Stream {
        self.kernel(
            tgid,
            comm,
            tcp::TcpReset {
                sk,
                direction,
                reason,
                family: AF_INET,
                sport,
                dport,
                owner_tgid: owner,
                state: state as u32,
                saddr: addr(1),
                daddr: addr(2),
            },
        )
    }

    pub fn signal(
        &mut self,
        sender: u32,
        comm: &str,
        sig: i32,
        code: i32,
        target: u32,
        target_comm: &str,
    ) -> &mut Stream {
        self.signal_result(sender, comm, sig, code, 0, target, target_comm)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn signal_result(
        &mut self,
        sender: u32,
        comm: &str,
        sig: i32,
        code: i32,
        result: i32,
        target: u32,
        target_comm: &str,
    ) -> &mut Stream {
        self.kernel(
            sender,
            comm,
            signal::Signal {
                sig,
                code,
                result,
                target_pid: target as i32,
                group: 1,
                errno: 0,
                target_comm: Comm::new(target_comm).0,
            },
        )
    }

    pub fn fork(&mut self, parent: u32, comm: &str, child: u32) -> &mut Stream {
        self.kernel(
            parent,
            comm,
            process::Fork {
                child_pid: child,
                _pad: 0,
            },
        )
    }

    pub fn exec(&mut self, pid: u32, comm: &str, filename: &str, args: &[&str]) -> &mut Stream {
        let mut e = process::Exec {
            old_pid: pid,
            ppid: self.procs.ppid(pid).unwrap_or(0),
            filename_len: 0,
            args_len: 0,
            _pad: 0,
            filename: [0; EXEC_FILENAME_LEN],
            args: [0; EXEC_ARGS_LEN],
        };
        let f = filename.as_bytes();
        e.filename[..f.len()].copy_from_slice(f);
        e.filename_len = f.len() as u16 + 1;
        let mut a = Vec::new();
        for x in args {
            a.extend_from_slice(x.as_bytes());
            a.push(0);
        }
        e.args[..a.len()].copy_from_slice(&a);
        e.args_len = a.len() as u16;
        self.kernel(pid, comm, e)
    }

    /// A successful setrlimit/prlimit of RLIMIT_NOFILE by `caller` on `target`.
    pub fn rlimit(
        &mut self,
        caller: u32,
        comm: &str,
        target: u32,
        soft: u64,
        hard: u64,
    ) -> &mut Stream {
        self.kernel(
            caller,
            comm,
            process::Rlimit {
                target_pid: target,
                resource: process::RLIMIT_NOFILE,
                soft,
                hard,
            },
        )
    }

    /// `target` renamed from `old` to `new` without exec, by `caller` (whose comm is `comm`).
    pub fn rename(
        &mut self,
        caller: u32,
        comm: &str,
        target: u32,
        old: &str,
        new: &str,
    ) -> &mut Stream {
        self.kernel(
            caller,
            comm,
            process::Rename {
                target_pid: target,
                _pad: 0,
                old_comm: Comm::new(old).0,
                new_comm: Comm::new(new).0,
            },
        )
    }

    /// `mover` moved `target` into the cgroup at `path` of `hierarchy` (0: cgroup v2); `memory`:
    /// that hierarchy holds the memory controller.
    pub fn cgroup_attach(
        &mut self,
        mover: u32,
        comm: &str,
        target: u32,
        hierarchy: u32,
        memory: bool,
        path: &str,
    ) -> &mut Stream {
        let mut c = process::CgroupAttach {
            pid: target,
            hierarchy,
            cgroup_id: 77,
            level: path.matches('/').count() as u32,
            flags: if memory { process::CGROUP_MEMORY } else { 0 },
            path_len: path.len() as u16,
            _pad: [0; 6],
            comm: Comm::new(comm).0,
            path: [0; process::CGROUP_PATH_LEN],
        };
        c.path[..path.len()].copy_from_slice(path.as_bytes());
        self.kernel(mover, comm, c)
    }

    /// Exit with a kernel wait status (`code << 8`, or the signal number).
    pub fn exit(&mut self, pid: u32, comm: &str, status: i32) -> &mut Stream {
        self.kernel(
            pid,
            comm,
            process::Exit {
                exit_code: status,
                flags: process::EXIT_CODE_KNOWN,
            },
        )
    }

    pub fn oom(
        &mut self,
        trigger: u32,
        comm: &str,
        victim: u32,
        victim_comm: &str,
        rss_kb: u64,
    ) -> &mut Stream {
        self.kernel(
            trigger,
            comm,
            oom::OomKill {
                victim_pid: victim,
                victim_uid: 0,
                victim_comm: Comm::new(victim_comm).0,
                total_vm_kb: rss_kb * 2,
                anon_rss_kb: rss_kb,
                file_rss_kb: 0,
                shmem_rss_kb: 0,
                pgtables_kb: 0,
                oom_score_adj: 0,
                _pad: 0,
                flags: oom::OOM_HAS_COMM | oom::OOM_HAS_MEMORY,
            },
        )
    }

    pub fn mem(&mut self, pid: u32, comm: &str, rss: u64) -> &mut Stream {
        self.kernel(
            pid,
            comm,
            memory::MemSample {
                rss_bytes: rss,
                rss_anon: rss,
                rss_file: 0,
                rss_shmem: 0,
                swap_bytes: 0,
                mapped_bytes: rss * 2,
            },
        )
    }

    /// The end of the stream: a last evaluation.
    pub fn finish(&mut self) {
        let ctx = Ctx {
            procs: &self.procs,
            host: &self.host,
        };
        self.engine.evaluate(&ctx);
    }

    pub fn findings_of(&mut self, kind: &str) -> Vec<Finding> {
        self.finish();
        self.engine
            .findings()
            .into_iter()
            .filter(|f| f.kind() == kind)
            .cloned()
            .collect()
    }

    pub fn all_json(&mut self) -> Vec<Value> {
        self.finish();
        self.engine
            .findings()
            .iter()
            .map(|f| f.to_json(&self.host))
            .collect()
    }

    /// The JSON of the one finding of `kind` (panics when there is none or several).
    pub fn json_of(&mut self, kind: &str) -> Value {
        let all: Vec<Value> = self
            .all_json()
            .into_iter()
            .filter(|f| f["kind"] == kind)
            .collect();
        assert_eq!(all.len(), 1, "expected one {kind} finding, got {all:#?}");
        all.into_iter().next().unwrap_or_default()
    }
}

/// 10.0.0.`last` as a 16-byte address field.
pub fn addr(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[10, 0, 0, last]);
    a
}
