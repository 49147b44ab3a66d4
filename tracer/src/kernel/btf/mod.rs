//! Offsets of kernel struct members, read from the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya's Rust eBPF has no CO-RE, so the programs get these offsets as a load-time global
//! ([`TaskOffsets`]). The parsing is in [`parse`]; this module says which members the programs
//! need and what a missing one becomes.
use std::path::Path;

use tracer_common::config::TaskOffsets;

mod parse;

use parse::{Btf, MAGIC};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("no BTF at {VMLINUX}: kernel built without CONFIG_DEBUG_INFO_BTF")]
    Missing,
    #[error("cannot read {VMLINUX}: {0}")]
    Read(#[source] std::io::Error),
    #[error("not BTF: magic is {0:#06x}, expected {MAGIC:#06x}")]
    BadMagic(u16),
    #[error("unsupported BTF version {0} (only version 1 is known)")]
    Version(u8),
    #[error("corrupt or truncated BTF: {0}")]
    Corrupt(&'static str),
    #[error("BTF type {id} has kind {kind}, which this parser does not know (newer kernel?)")]
    UnknownKind { id: u32, kind: u32 },
}

/// Reads `/sys/kernel/btf/vmlinux` (world-readable, no root needed) and resolves the offsets.
pub fn task_offsets() -> Result<TaskOffsets, BtfError> {
    let bytes = std::fs::read(Path::new(VMLINUX)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BtfError::Missing,
        _ => BtfError::Read(e),
    })?;
    task_offsets_from(&bytes)
}

/// Resolves the offsets from raw BTF. Members this kernel lacks (or has as bitfields) are left
/// at [`TaskOffsets::UNKNOWN`]; only an unreadable file is an error.
pub fn task_offsets_from(bytes: &[u8]) -> Result<TaskOffsets, BtfError> {
    let btf = Btf::parse(bytes)?;
    let task = btf.find_struct("task_struct");
    let mm = btf.find_struct("mm_struct");
    let files = btf.find_struct("files_struct");
    let fdtable = btf.find_struct("fdtable");
    let file = btf.find_struct("file");
    let socket = btf.find_struct("socket");
    let sock = btf.find_struct("sock");
    let inet_sock = btf.find_struct("inet_sock");
    let regs = btf.find_struct("pt_regs");
    let cred = btf.find_struct("cred");
    let css_set = btf.find_struct("css_set");
    let cgroup = btf.find_struct("cgroup");
    let kernfs_node = btf.find_struct("kernfs_node");
    let off = |outer: Option<u32>, path: &[&str]| {
        outer
            .and_then(|id| btf.offset_of(id, path))
            .unwrap_or(TaskOffsets::UNKNOWN)
    };
    // struct sock embeds struct sock_common as `__sk_common`: offsets are from the struct sock.
    let skc = |member: &str| off(sock, &["__sk_common", member]);
    let u = TaskOffsets::UNKNOWN;
    let (rss_at, rss_stride, rss_count) = mm
        .and_then(|mm| rss_counters(&btf, mm))
        .unwrap_or((u, u, u));
    Ok(TaskOffsets {
        task_pid: off(task, &["pid"]),
        task_tgid: off(task, &["tgid"]),
        task_real_parent: off(task, &["real_parent"]),
        task_comm: off(task, &["comm"]),
        task_exit_code: off(task, &["exit_code"]),
        task_mm: off(task, &["mm"]),
        task_files: off(task, &["files"]),
        mm_total_vm: off(mm, &["total_vm"]),
        mm_arg_start: off(mm, &["arg_start"]),
        mm_arg_end: off(mm, &["arg_end"]),
        files_fdt: off(files, &["fdt"]),
        fdtable_max_fds: off(fdtable, &["max_fds"]),
        fdtable_fd: off(fdtable, &["fd"]),
        file_private_data: off(file, &["private_data"]),
        socket_sk: off(socket, &["sk"]),
        skc_daddr: skc("skc_daddr"),
        skc_rcv_saddr: skc("skc_rcv_saddr"),
        skc_dport: skc("skc_dport"),
        skc_num: skc("skc_num"),
        skc_family: skc("skc_family"),
        skc_v6_daddr: skc("skc_v6_daddr"),
        skc_v6_rcv_saddr: skc("skc_v6_rcv_saddr"),
        sk_protocol: off(sock, &["sk_protocol"]),
        inet_sport: off(inet_sock, &["inet_sport"]),
        mm_rss_stat: rss_at,
        mm_rss_stride: rss_stride,
        mm_rss_count: rss_count,
        regs_arg: syscall_arg_regs(&btf, regs),
        task_cred: off(task, &["cred"]),
        cred_uid: off(cred, &["uid", "val"]),
        task_cgroups: off(task, &["cgroups"]),
        css_set_dfl_cgrp: off(css_set, &["dfl_cgrp"]),
        cgroup_kn: off(cgroup, &["kn"]),
        kernfs_node_id: off(kernfs_node, &["id"]),
    })
}

/// Where `struct pt_regs` keeps a syscall's six arguments as the task entered it (see
/// [`TaskOffsets::regs_arg`]); unknown on other architectures or shapes.
fn syscall_arg_regs(btf: &Btf, regs: Option<u32>) -> [u32; 6] {
    let u = TaskOffsets::UNKNOWN;
    let Some(regs) = regs else {
        return [u; 6];
    };
    let named = |names: [&str; 6]| names.map(|n| btf.offset_of(regs, &[n]).unwrap_or(u));
    if cfg!(target_arch = "x86_64") {
        named(["di", "si", "dx", "r10", "r8", "r9"])
    } else if cfg!(target_arch = "aarch64") {
        // x0 holds the return value at exit; the first argument survives in orig_x0.
        let first = btf.offset_of(regs, &["orig_x0"]).unwrap_or(u);
        let base = btf
            .member_of(regs, &["regs"])
            .filter(|&(_, ty)| btf.array(ty).is_some_and(|(_, len)| len >= 6))
            .map(|(at, _)| at);
        let mut out = [u; 6];
        out[0] = first;
        for (i, slot) in out.iter_mut().enumerate().skip(1) {
            *slot = base.map_or(u, |b| b + 8 * i as u32);
        }
        out
    } else {
        [u; 6]
    }
}

/// The RSS counters of `struct mm_struct`: where they start, the distance between two of them,
/// and where the `i64` page count sits in one. 6.2 and later: `struct percpu_counter
/// rss_stat[NR_MM_COUNTERS]`, the count being the counter's `count` (its approximate value,
/// what `get_mm_counter` reads); before: `struct mm_rss_stat { atomic_long_t
/// count[NR_MM_COUNTERS]; } rss_stat`, each an `atomic_long_t` (`{ s64 counter; }`). `None`
/// for any other shape (the BTF `rss_stat` program is then not attached).
fn rss_counters(btf: &Btf, mm: u32) -> Option<(u32, u32, u32)> {
    /// MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES.
    const COUNTERS: u32 = 4;
    let (at, ty) = btf.member_of(mm, &["rss_stat"])?;
    let (at, (elem, len)) = match btf.array(ty) {
        Some(array) => (at, array),
        None => {
            let (inner, ty) = btf.member_of(ty, &["count"])?;
            (at.checked_add(inner)?, btf.array(ty)?)
        }
    };
    let (count, count_ty) = if btf.is_int(elem) {
        (0, elem)
    } else {
        btf.member_of(elem, &["count"])
            .or_else(|| btf.member_of(elem, &["counter"]))?
    };
    let stride = btf.size_of(elem)?;
    let fits = btf.size_of(count_ty) == Some(8) && btf.is_int(count_ty);
    (fits && len >= COUNTERS && count.checked_add(8)? <= stride).then_some((at, stride, count))
}

#[cfg(test)]
mod tests {
    use super::{parse::*, *};

    const KIND_PTR: u32 = 2;
    const KIND_FWD: u32 = 7;

    /// Writes BTF blobs type by type, as pahole would.
    struct Builder {
        strings: Vec<u8>,
        /// Every type record is a sequence of u32 words.
        words: Vec<u32>,
        next_id: u32,
    }

    /// (name, type id, bit offset, bitfield size)
    type M<'s> = (&'s str, u32, u32, u32);

    impl Builder {
        fn new() -> Builder {
            Builder {
                strings: vec![0],
                words: Vec::new(),
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn record(&mut self, name: &str, info: u32, size_or_type: u32, extra: &[u32]) -> u32 {
            let name = self.str(name);
            self.words.extend([name, info, size_or_type]);
            self.words.extend_from_slice(extra);
            self.next_id += 1;
            self.next_id - 1
        }

        fn int_bits(&mut self, name: &str, size: u32, bits: u32) -> u32 {
            self.record(name, KIND_INT << 24, size, &[bits])
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.int_bits(name, size, size * 8)
        }

        fn ptr(&mut self, to: u32) -> u32 {
            self.record("", KIND_PTR << 24, to, &[])
        }

        fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.record(name, KIND_TYPEDEF << 24, to, &[])
        }

        fn array(&mut self, elem: u32, index: u32, len: u32) -> u32 {
            self.record("", KIND_ARRAY << 24, 0, &[elem, index, len])
        }

        fn aggregate(&mut self, kind: u32, name: &str, size: u32, members: &[M]) -> u32 {
            let kind_flag = members.iter().any(|m| m.3 != 0);
            let mut extra = Vec::new();
            for &(member, ty, bit_offset, bits) in members {
                let offset = if kind_flag {
                    bits << 24 | bit_offset
                } else {
                    bit_offset
                };
                extra.extend([self.str(member), ty, offset]);
            }
            let info = u32::from(kind_flag) << 31 | kind << 24 | members.len() as u32;
            self.record(name, info, size, &extra)
        }

        fn strukt(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
            self.aggregate(KIND_STRUCT, name, size, members)
        }

        fn union(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
            self.aggregate(KIND_UNION, name, size, members)
        }

        fn build(&self, big_endian: bool) -> Vec<u8> {
            let word = |w: u32| {
                if big_endian {
                    w.to_be_bytes()
                } else {
                    w.to_le_bytes()
                }
            };
            let type_len = self.words.len() as u32 * 4;
            let mut out = Vec::new();
            out.extend(if big_endian {
                MAGIC.to_be_bytes()
            } else {
                MAGIC.to_le_bytes()
            });
            out.extend([1, 0]);
            for w in [24, 0, type_len, type_len, self.strings.len() as u32] {
                out.extend(word(w));
            }
            for &w in &self.words {
                out.extend(word(w));
            }
            out.extend(&self.strings);
            out
        }
    }

    /// Layout choices for [`kernel_like`].
    struct Shape {
        /// Byte offset of `__sk_common` in struct sock.
        sk_common_at: u32,
        /// Make `sk_protocol` an 8-bit bitfield (pre-5.6) with kind_flag encoding.
        protocol_bitfield: bool,
        /// `mm_struct.rss_stat` as before 6.2: `struct mm_rss_stat { atomic_long_t count[4]; }`
        /// instead of `struct percpu_counter rss_stat[4]`.
        atomic_rss: bool,
    }

    const PLAIN: Shape = Shape {
        sk_common_at: 0,
        protocol_bitfield: false,
        atomic_rss: false,
    };

    /// The structs the tracer reads, shaped like 6.x: mm_struct's fields in an anonymous
    /// struct, sock_common's addresses and ports in anonymous unions of anonymous structs.
    fn kernel_like(shape: Shape) -> Builder {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let u16_ = b.int("unsigned short", 2);
        let u32_ = b.int("unsigned int", 4);
        let u64_ = b.int("long long unsigned int", 8);
        let ul = b.int("long unsigned int", 8);
        let pid_t = b.typedef("pid_t", int);
        let void_ptr = b.ptr(0);
        // Decoys: a forward declaration and a union with a wanted name come first.
        b.record("task_struct", KIND_FWD << 24, 0, &[]);
        b.union("file", 8, &[("private_data", u64_, 0, 0)]);

        b.strukt(
            "task_struct",
            64,
            &[
                ("__state", u32_, 0, 0),
                ("pid", pid_t, 8 * 8, 0),
                ("tgid", pid_t, 12 * 8, 0),
                ("exit_code", int, 16 * 8, 0),
                ("mm", void_ptr, 24 * 8, 0),
                ("files", void_ptr, 32 * 8, 0),
            ],
        );
        let s64 = b.int("long long int", 8);
        let s64 = b.typedef("s64", s64);
        let rss_stat = if shape.atomic_rss {
            // typedef struct { s64 counter; } atomic64_t; typedef atomic64_t atomic_long_t;
            let atomic64 = b.strukt("", 8, &[("counter", s64, 0, 0)]);
            let atomic64 = b.typedef("atomic64_t", atomic64);
            let atomic_long = b.typedef("atomic_long_t", atomic64);
            let counts = b.array(atomic_long, int, 4);
            b.strukt("mm_rss_stat", 32, &[("count", counts, 0, 0)])
        } else {
            let lock = b.strukt("raw_spinlock", 4, &[("raw_lock", u32_, 0, 0)]);
            let list = b.strukt("list_head", 16, &[("next", void_ptr, 0, 0)]);
            let counter = b.strukt(
                "percpu_counter",
                40,
                &[
                    ("lock", lock, 0, 0),
                    ("count", s64, 8 * 8, 0),
                    ("list", list, 16 * 8, 0),
                    ("counters", void_ptr, 32 * 8, 0),
                ],
            );
            b.array(counter, int, 4)
        };
        let mm_fields = b.strukt(
            "",
            192,
            &[
                ("mm_count", ul, 0, 0),
                ("total_vm", ul, 8 * 8, 0),
                ("arg_start", ul, 16 * 8, 0),
                ("arg_end", ul, 24 * 8, 0),
                ("rss_stat", rss_stat, 32 * 8, 0),
            ],
        );
        b.strukt("mm_struct", 200, &[("", mm_fields, 8 * 8, 0)]);
        b.strukt(
            "files_struct",
            16,
            &[("count", int, 0, 0), ("fdt", void_ptr, 8 * 8, 0)],
        );
        b.strukt(
            "fdtable",
            16,
            &[("max_fds", u32_, 0, 0), ("fd", void_ptr, 8 * 8, 0)],
        );
        b.strukt(
            "file",
            256,
            &[
                ("f_mode", u32_, 0, 0),
                ("private_data", void_ptr, 200 * 8, 0),
            ],
        );
        b.strukt(
            "socket",
            32,
            &[("state", int, 0, 0), ("sk", void_ptr, 24 * 8, 0)],
        );

        let addrs = b.strukt(
            "",
            8,
            &[("skc_daddr", u32_, 0, 0), ("skc_rcv_saddr", u32_, 32, 0)],
        );
        let addrpair = b.union("", 8, &[("skc_addrpair", u64_, 0, 0), ("", addrs, 0, 0)]);
        let ports = b.strukt(
            "",
            4,
            &[("skc_dport", u16_, 0, 0), ("skc_num", u16_, 16, 0)],
        );
        let portpair = b.union("", 4, &[("skc_portpair", u32_, 0, 0), ("", ports, 0, 0)]);
        let in6 = b.strukt("in6_addr", 16, &[]);
        let sock_common = b.strukt(
            "sock_common",
            136,
            &[
                ("", addrpair, 0, 0),
                ("", portpair, 12 * 8, 0),
                ("skc_family", u16_, 16 * 8, 0),
                ("skc_v6_daddr", in6, 56 * 8, 0),
                ("skc_v6_rcv_saddr", in6, 72 * 8, 0),
            ],
        );
        let protocol = if shape.protocol_bitfield {
            ("sk_protocol", u32_, 400 * 8 + 8, 8)
        } else {
            ("sk_protocol", u16_, 400 * 8 + 16, 0)
        };
        b.strukt(
            "sock",
            512,
            &[
                ("__sk_common", sock_common, shape.sk_common_at * 8, 0),
                protocol,
            ],
        );
        b
    }

    fn expected(sk: u32) -> TaskOffsets {
        TaskOffsets {
            task_pid: 8,
            task_tgid: 12,
            task_exit_code: 16,
            task_mm: 24,
            task_files: 32,
            task_real_parent: TaskOffsets::UNKNOWN,
            task_comm: TaskOffsets::UNKNOWN,
            mm_total_vm: 16,
            mm_arg_start: 24,
            mm_arg_end: 32,
            files_fdt: 8,
            fdtable_max_fds: 0,
            fdtable_fd: 8,
            file_private_data: 200,
            socket_sk: 24,
            skc_daddr: sk,
            skc_rcv_saddr: sk + 4,
            skc_dport: sk + 12,
            skc_num: sk + 14,
            skc_family: sk + 16,
            skc_v6_daddr: sk + 56,
            skc_v6_rcv_saddr: sk + 72,
            sk_protocol: 402,
            inet_sport: TaskOffsets::UNKNOWN,
            mm_rss_stat: 40,
            mm_rss_stride: 40,
            mm_rss_count: 8,
            regs_arg: [TaskOffsets::UNKNOWN; 6],
            task_cred: TaskOffsets::UNKNOWN,
            cred_uid: TaskOffsets::UNKNOWN,
            task_cgroups: TaskOffsets::UNKNOWN,
            css_set_dfl_cgrp: TaskOffsets::UNKNOWN,
            cgroup_kn: TaskOffsets::UNKNOWN,
            kernfs_node_id: TaskOffsets::UNKNOWN,
        }
    }

    #[test]
    fn resolves_through_anonymous_members() {
        let blob = kernel_like(PLAIN).build(false);
        assert_eq!(task_offsets_from(&blob).unwrap(), expected(0));
    }

    #[test]
    fn big_endian_blob_parses_the_same() {
        let blob = kernel_like(PLAIN).build(true);
        assert_eq!(task_offsets_from(&blob).unwrap(), expected(0));
    }

    #[test]
    fn adds_the_offset_of_sk_common_in_sock() {
        let shape = Shape {
            sk_common_at: 8,
            ..PLAIN
        };
        let blob = kernel_like(shape).build(false);
        assert_eq!(task_offsets_from(&blob).unwrap(), expected(8));
    }

    #[test]
    fn rss_counters_in_the_layout_before_6_2() {
        let shape = Shape {
            atomic_rss: true,
            ..PLAIN
        };
        let offsets = task_offsets_from(&kernel_like(shape).build(false)).unwrap();
        assert_eq!(
            (
                offsets.mm_rss_stat,
                offsets.mm_rss_stride,
                offsets.mm_rss_count
            ),
            (40, 8, 0)
        );
        assert!(offsets.rss_counters_known());
        assert!(
            task_offsets_from(&kernel_like(PLAIN).build(true))
                .unwrap()
                .rss_counters_known()
        );
    }

    /// Any other shape of `rss_stat` leaves all three unknown: the program would read garbage.
    #[test]
    fn unexpected_rss_counters_are_unknown() {
        let rss = |counters: u32, count_size: u32, stat: Option<&str>| {
            let mut b = Builder::new();
            let int = b.int("int", 4);
            let count = b.int("long long int", count_size);
            let elem = b.strukt("percpu_counter", 40, &[("count", count, 64, 0)]);
            let array = b.array(elem, int, counters);
            let rss_stat = match stat {
                Some(name) => b.strukt("mm_rss_stat", 160, &[(name, array, 0, 0)]),
                None => array,
            };
            b.strukt("mm_struct", 200, &[("rss_stat", rss_stat, 64, 0)]);
            let o = task_offsets_from(&b.build(false)).unwrap();
            (o.mm_rss_stat, o.mm_rss_stride, o.mm_rss_count)
        };
        let u = TaskOffsets::UNKNOWN;
        assert_eq!(rss(4, 8, None), (8, 40, 8));
        assert_eq!(rss(4, 8, Some("count")), (8, 40, 8));
        // Fewer counters than MM_SHMEMPAGES needs, a 4-byte count, a struct without `count`.
        assert_eq!(rss(3, 8, None), (u, u, u));
        assert_eq!(rss(4, 4, None), (u, u, u));
        assert_eq!(rss(4, 8, Some("counts")), (u, u, u));
        // rss_stat a plain integer.
        let mut b = Builder::new();
        let long = b.int("long", 8);
        b.strukt("mm_struct", 16, &[("rss_stat", long, 0, 0)]);
        let o = task_offsets_from(&b.build(false)).unwrap();
        assert!(!o.rss_counters_known(), "{o:?}");
    }

    #[test]
    fn bitfield_member_is_unknown() {
        let shape = Shape {
            protocol_bitfield: true,
            ..PLAIN
        };
        let blob = kernel_like(shape).build(false);
        let offsets = task_offsets_from(&blob).unwrap();
        assert_eq!(offsets.sk_protocol, TaskOffsets::UNKNOWN);
        assert_eq!(
            TaskOffsets {
                sk_protocol: 402,
                inet_sport: TaskOffsets::UNKNOWN,
                ..offsets
            },
            expected(0)
        );
    }

    #[test]
    fn old_style_int_bitfield_is_unknown() {
        // Without kind_flag, the width sits in the INT type: a byte-aligned 8-bit "int".
        let mut b = Builder::new();
        let narrow = b.int_bits("unsigned int", 4, 8);
        let u16_ = b.int("unsigned short", 2);
        b.strukt(
            "sock",
            16,
            &[("sk_protocol", narrow, 64, 0), ("sk_type", u16_, 96, 0)],
        );
        let offsets = task_offsets_from(&b.build(false)).unwrap();
        assert_eq!(offsets.sk_protocol, TaskOffsets::UNKNOWN);
    }

    #[test]
    fn missing_structs_and_members_are_unknown() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.strukt("task_struct", 8, &[("pid", int, 0, 0)]);
        let offsets = task_offsets_from(&b.build(false)).unwrap();
        assert_eq!(
            offsets,
            TaskOffsets {
                task_pid: 0,
                ..TaskOffsets::unknown()
            }
        );
        let empty = Builder::new().build(false);
        assert_eq!(task_offsets_from(&empty).unwrap(), TaskOffsets::unknown());
    }

    #[test]
    fn cyclic_anonymous_members_terminate() {
        // A struct made of anonymous copies of itself: a corrupt file must not hang or
        // overflow the stack.
        let mut b = Builder::new();
        let me = b.next_id;
        let members: Vec<M> = (0..200).map(|_| ("", me, 0, 0)).collect();
        b.strukt("task_struct", 8, &members);
        let offsets = task_offsets_from(&b.build(false)).unwrap();
        assert_eq!(offsets, TaskOffsets::unknown());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let blob = kernel_like(PLAIN).build(false);
        for len in 0..blob.len() {
            assert!(task_offsets_from(&blob[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn lying_lengths_are_errors() {
        let blob = kernel_like(PLAIN).build(false);
        let with = |at: usize, value: u32| {
            let mut b = blob.clone();
            b[at..at + 4].copy_from_slice(&value.to_le_bytes());
            task_offsets_from(&b)
        };
        for (at, value) in [
            (4, 8),         // hdr_len shorter than the header
            (4, u32::MAX),  // hdr_len past the end
            (8, u32::MAX),  // type_off + type_len overflows
            (12, u32::MAX), // type_len
            (20, 1 << 30),  // str_len
            (16, u32::MAX), // str_off
        ] {
            let result = with(at, value);
            assert!(
                matches!(result, Err(BtfError::Corrupt(_))),
                "{at}={value}: {result:?}"
            );
        }
        let mut unterminated = blob.clone();
        *unterminated.last_mut().unwrap() = b'x';
        let result = task_offsets_from(&unterminated);
        assert!(matches!(result, Err(BtfError::Corrupt(_))), "{result:?}");
        // A struct claiming 65535 members with the section ending right after.
        let mut b = Builder::new();
        b.record("task_struct", KIND_STRUCT << 24 | 0xffff, 8, &[]);
        let result = task_offsets_from(&b.build(false));
        assert!(
            matches!(result, Err(BtfError::Corrupt("type record cut short"))),
            "{result:?}"
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(task_offsets_from(b""), Err(BtfError::Corrupt(_))));
        let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        let err = task_offsets_from(elf).unwrap_err();
        assert!(matches!(err, BtfError::BadMagic(0x457f)), "{err:?}");
        assert_eq!(err.to_string(), "not BTF: magic is 0x457f, expected 0xeb9f");
        let mut blob = kernel_like(PLAIN).build(false);
        blob[2] = 2;
        assert!(matches!(
            task_offsets_from(&blob),
            Err(BtfError::Version(2))
        ));
        let mut b = Builder::new();
        b.int("int", 4);
        b.record("future", 25 << 24, 0, &[]);
        let err = task_offsets_from(&b.build(false)).unwrap_err();
        assert!(
            matches!(err, BtfError::UnknownKind { id: 2, kind: 25 }),
            "{err:?}"
        );
    }

    #[test]
    fn missing_file_message_says_why() {
        assert_eq!(
            BtfError::Missing.to_string(),
            "no BTF at /sys/kernel/btf/vmlinux: kernel built without CONFIG_DEBUG_INFO_BTF"
        );
    }

    /// Mutated and random blobs: any result is fine, a panic or a hang is not.
    #[test]
    fn mutated_blobs_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let bases = [
            kernel_like(PLAIN).build(false),
            kernel_like(Shape {
                protocol_bitfield: true,
                ..PLAIN
            })
            .build(true),
        ];
        let interesting = [0, 1, 7, 8, 12, 24, 0xff, 0xffff, 0x8000_0000, u32::MAX];
        for round in 0..20_000 {
            let mut blob = bases[round % bases.len()].clone();
            for _ in 0..1 + next() % 6 {
                let len = blob.len() as u64;
                let at = (next() % len) as usize;
                match next() % 4 {
                    0 => blob[at] = next() as u8,
                    1 if at + 4 <= blob.len() => {
                        let v = interesting[(next() % interesting.len() as u64) as usize];
                        blob[at & !3..(at & !3) + 4].copy_from_slice(&v.to_le_bytes());
                    }
                    2 => blob.truncate(at.max(1)),
                    _ => blob[at] ^= 1 << (next() % 8),
                }
            }
            let _ = task_offsets_from(&blob);
            // Pure noise behind a valid magic and version.
            let mut noise: Vec<u8> = (0..next() % 256).map(|_| next() as u8).collect();
            noise.splice(0..noise.len().min(3), [0x9f, 0xeb, 1]);
            let _ = task_offsets_from(&noise);
        }
    }

    /// This machine's kernel (6.18 on the dev and CI hosts) has BTF: in CI its absence fails.
    #[test]
    fn real_vmlinux() {
        let missing = (!Path::new(VMLINUX).exists()).then(|| format!("no {VMLINUX}"));
        if !crate::kernel::can_read_kernel("the kernel's BTF", missing) {
            return;
        }
        let o = task_offsets().unwrap();
        eprintln!("{o:#?}");
        let all = [
            o.task_pid,
            o.task_tgid,
            o.task_exit_code,
            o.task_mm,
            o.task_files,
            o.mm_total_vm,
            o.mm_arg_start,
            o.mm_arg_end,
            o.files_fdt,
            o.fdtable_max_fds,
            o.fdtable_fd,
            o.file_private_data,
            o.socket_sk,
            o.skc_daddr,
            o.skc_rcv_saddr,
            o.skc_dport,
            o.skc_num,
            o.skc_family,
            o.skc_v6_daddr,
            o.skc_v6_rcv_saddr,
            o.sk_protocol,
        ];
        assert!(all.iter().all(|&v| v != TaskOffsets::UNKNOWN), "{o:#?}");
        // What the record headers and the mmap exit read with plain loads.
        assert!(o.header_known(), "{o:#?}");
        assert!(o.regs_args_known(), "{o:#?}");
        // 6.2 and later: percpu_counters, whose `count` follows the lock.
        assert!(o.rss_counters_known(), "{o:#?}");
        assert!(
            o.mm_rss_stride > 8 && o.mm_rss_count + 8 <= o.mm_rss_stride,
            "{o:#?}"
        );
        // Layout facts that have held for a long time: pid and tgid are adjacent pid_ts,
        // skc_addrpair is daddr then rcv_saddr, skc_portpair is dport then num.
        assert_eq!(o.task_tgid, o.task_pid + 4);
        assert_eq!(o.skc_rcv_saddr, o.skc_daddr + 4);
        assert_eq!(o.skc_num, o.skc_dport + 2);
        assert_eq!(o.mm_arg_end, o.mm_arg_start + 8);
        assert!(o.skc_family < 64, "{o:#?}");
        let task = [o.task_pid, o.task_exit_code, o.task_mm, o.task_files];
        assert!(
            task.iter()
                .enumerate()
                .all(|(i, a)| !task[i + 1..].contains(a))
        );
    }
}
