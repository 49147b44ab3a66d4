//! The collector's periodic read of the kernel's connection map (`CONNS`).
//!
//! The kernel emits a record when a connection opens and when its fd is closed, and nothing in
//! between: state changes only update the map. What sits in between (a socket left in
//! CLOSE_WAIT, a connection that waits for an answer) is found here, once a second, and turned
//! into `conn_status` records that go through the pipeline like kernel records, so dumps keep
//! them and replay sees what live saw. A status is reported once when it begins and once when
//! it ends (`cleared`), not on every read.
use std::collections::HashMap;

use aya::maps::MapData;
use tracer_common::tcp::{
    CONN_ALLOWED, CONN_CLOSED, ConnInfo, ConnStatus, ROLE_ACTIVE, state, status,
};

use crate::event::{self, Body, Comm, Event, EventHeader};

/// A condition must have lasted this long to be reported: most connections pass through
/// CLOSE_WAIT or wait for an answer for far less.
pub const REPORT_AFTER_NS: u64 = 1_000_000_000;

/// The notable condition of a connection now, if any: (status, since).
pub fn classify(c: &ConnInfo, now_ns: u64) -> Option<(u8, u64)> {
    if c.flags & CONN_ALLOWED == 0 || c.flags & CONN_CLOSED != 0 {
        return None;
    }
    let aged = |since: u64| since != 0 && now_ns.saturating_sub(since) >= REPORT_AFTER_NS;
    let st = u16::from(c.state);
    if st == state::CLOSE_WAIT && aged(c.state_ns) {
        return Some((status::CLOSE_WAIT, c.state_ns));
    }
    if c.role == ROLE_ACTIVE {
        if st == state::SYN_SENT && aged(c.open_ns) {
            return Some((status::UNANSWERED, c.open_ns));
        }
        if st == state::ESTABLISHED && aged(c.wait_ns) {
            return Some((status::UNANSWERED, c.wait_ns));
        }
    }
    None
}

/// A `conn_status` record (header and payload, as the kernel would frame it) and its event.
pub fn status_record(sk: u64, c: &ConnInfo, what: u8, since: u64, now_ns: u64) -> (Event, Vec<u8>) {
    let p = ConnStatus {
        sk,
        since_ns: since,
        open_ns: c.open_ns,
        last_recv_ns: c.last_recv_ns,
        bytes_in: c.bytes_in,
        bytes_out: c.bytes_out,
        status: what,
        state: c.state,
        role: c.role,
        _pad: 0,
        family: c.family,
        sport: c.sport,
        dport: c.dport,
        _pad2: 0,
        _pad3: 0,
        saddr: c.saddr,
        daddr: c.daddr,
    };
    let h = EventHeader {
        ts_ns: now_ns,
        cpu: 0,
        tgid: c.owner_tgid,
        tid: c.owner_tgid,
        uid: 0,
        cgroup_id: c.cgroup_id,
        comm: Comm(c.comm),
    };
    let raw = event::encode_kernel_record(&h, &p);
    let ev = Event {
        ts_ns: now_ns,
        cpu: 0,
        tgid: c.owner_tgid,
        tid: c.owner_tgid,
        uid: 0,
        cgroup_id: c.cgroup_id,
        comm: Comm(c.comm),
        body: Body::ConnStatus(Box::new(p)),
    };
    (ev, raw)
}

/// What was reported and is still in force, per socket.
#[derive(Default)]
pub struct Reported {
    open: HashMap<u64, (u8, u64, ConnInfo)>,
}

impl Reported {
    /// The records for one read of the map (`entries`): conditions that began, changed or
    /// ended since the previous read.
    pub fn diff(
        &mut self,
        entries: impl IntoIterator<Item = (u64, ConnInfo)>,
        now_ns: u64,
    ) -> Vec<(Event, Vec<u8>)> {
        let mut out = Vec::new();
        let mut seen: HashMap<u64, (u8, u64, ConnInfo)> = HashMap::new();
        for (sk, c) in entries {
            if let Some((what, since)) = classify(&c, now_ns) {
                seen.insert(sk, (what, since, c));
            }
        }
        for (sk, (what, since, c)) in &seen {
            if self
                .open
                .get(sk)
                .is_none_or(|(w, s, _)| (w, s) != (what, since))
            {
                out.push(status_record(*sk, c, *what, *since, now_ns));
            }
        }
        for (sk, (_, _, c)) in &self.open {
            if !seen.contains_key(sk) {
                out.push(status_record(*sk, c, status::CLEARED, 0, now_ns));
            }
        }
        self.open = seen;
        out.sort_by_key(|(ev, _)| match &ev.body {
            Body::ConnStatus(s) => (s.status != status::CLEARED, s.sk),
            _ => (true, 0),
        });
        out
    }
}

/// Reads the kernel's map each second and reports what changed.
pub struct Scanner {
    map: aya::maps::HashMap<MapData, u64, ConnInfo>,
    reported: Reported,
    /// Whether this kernel's map takes batch lookups (5.6+); one that refuses is read entry by
    /// entry from then on.
    batch: bool,
}

impl Scanner {
    pub fn new(map: aya::maps::HashMap<MapData, u64, ConnInfo>) -> Scanner {
        Scanner {
            map,
            reported: Reported::default(),
            batch: true,
        }
    }

    pub fn scan(&mut self, now_ns: u64) -> Vec<(Event, Vec<u8>)> {
        let entries = self.entries();
        self.reported.diff(entries, now_ns)
    }

    /// Every entry of the map. The map holds live connections and the tombstones of closed
    /// ones (up to its 65,536 entries on a busy host): read in batches of 4,096 entries a
    /// system call, where reading entry by entry cost two calls per entry, each second.
    fn entries(&mut self) -> Vec<(u64, ConnInfo)> {
        use std::os::fd::{AsFd as _, AsRawFd as _};

        use aya::maps::IterableMap as _;
        if self.batch {
            let fd = self.map.map().fd().as_fd().as_raw_fd();
            match lookup_batch(fd) {
                Ok(v) => return v,
                Err(e) => {
                    tracing::debug!("CONNS: batch lookup refused ({e}); reading entry by entry");
                    self.batch = false;
                }
            }
        }
        // Entries come and go while we read: one that vanished between its key and its value
        // is simply not there.
        self.map.iter().filter_map(Result::ok).collect()
    }
}

/// `union bpf_attr`'s `batch` member (BPF_MAP_LOOKUP_BATCH).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BATCH: usize = 4096;

/// Every (key, value) of hash map `fd` through BPF_MAP_LOOKUP_BATCH (a hash map's batch token
/// is a bucket index, a u32). Entries that come and go meanwhile are read or not, each bucket
/// consistently.
fn lookup_batch(fd: std::os::fd::RawFd) -> std::io::Result<Vec<(u64, ConnInfo)>> {
    let mut keys = vec![0u64; BATCH];
    // SAFETY: ConnInfo is plain integers and byte arrays: all-zero is a valid value.
    let mut values = vec![unsafe { std::mem::zeroed::<ConnInfo>() }; BATCH];
    let mut out = Vec::new();
    let mut token: Option<u32> = None;
    loop {
        let mut next: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: token.as_ref().map_or(0, |t| std::ptr::from_ref(t) as u64),
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers of `count` keys and values of the map's sizes (u64
        // keys, ConnInfo values) and at a u32 token, all alive for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr),
                std::mem::size_of::<BatchAttr>() as u32,
            )
        };
        let err = (r < 0).then(std::io::Error::last_os_error);
        // The kernel reports the entries it copied in `count`, also with ENOENT (the end).
        let n = (attr.count as usize).min(BATCH);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match err {
            None => token = Some(next),
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Some(e) => return Err(e),
        }
    }
}

/// `tcp::ConnStatus` field names, for people.
pub fn status_name(s: u8) -> &'static str {
    match s {
        status::CLOSE_WAIT => "close_wait",
        status::UNANSWERED => "unanswered",
        status::CLEARED => "cleared",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::tcp::{CONN_ANNOUNCED, ROLE_PASSIVE};

    const S: u64 = 1_000_000_000;

    fn conn(role: u8, st: u16, state_ns: u64) -> ConnInfo {
        ConnInfo {
            owner_tgid: 42,
            fd: 7,
            cgroup_id: 1,
            comm: *b"proxy\0\0\0\0\0\0\0\0\0\0\0",
            open_ns: S,
            wait_ns: 0,
            last_recv_ns: 0,
            bytes_in: 0,
            bytes_out: 0,
            state_ns,
            state: st as u8,
            role,
            flags: CONN_ALLOWED | CONN_ANNOUNCED,
            _pad: 0,
            family: tracer_common::AF_INET,
            sport: 8080,
            dport: 40000,
            _pad2: 0,
            _pad3: 0,
            saddr: [0; 16],
            daddr: [0; 16],
        }
    }

    fn statuses(v: &[(Event, Vec<u8>)]) -> Vec<(u64, u8)> {
        v.iter()
            .map(|(ev, raw)| {
                // What is stored decodes to what is fed.
                assert_eq!(&event::decode(raw).unwrap(), ev);
                match &ev.body {
                    Body::ConnStatus(s) => (s.sk, s.status),
                    _ => unreachable!(),
                }
            })
            .collect()
    }

    #[test]
    fn close_wait_is_reported_once_then_cleared() {
        let mut r = Reported::default();
        let cw = conn(ROLE_PASSIVE, state::CLOSE_WAIT, 2 * S);
        // Not yet a second old.
        assert!(r.diff([(1, cw)], 2 * S + S / 2).is_empty());
        assert_eq!(
            statuses(&r.diff([(1, cw)], 3 * S)),
            [(1, status::CLOSE_WAIT)]
        );
        assert!(r.diff([(1, cw)], 4 * S).is_empty(), "reported once");
        // Closed by its owner: cleared.
        let mut closed = cw;
        closed.flags |= CONN_CLOSED;
        assert_eq!(
            statuses(&r.diff([(1, closed)], 5 * S)),
            [(1, status::CLEARED)]
        );
        assert!(r.diff([], 6 * S).is_empty());
    }

    #[test]
    fn an_active_connection_waiting_for_an_answer_is_unanswered_until_it_gets_one() {
        let mut r = Reported::default();
        let mut c = conn(ROLE_ACTIVE, state::ESTABLISHED, S);
        c.wait_ns = 2 * S;
        c.bytes_out = 10;
        assert_eq!(
            statuses(&r.diff([(9, c)], 4 * S)),
            [(9, status::UNANSWERED)]
        );
        c.wait_ns = 0;
        c.last_recv_ns = 5 * S;
        assert_eq!(statuses(&r.diff([(9, c)], 5 * S)), [(9, status::CLEARED)]);
        // A new request without answer is a new status.
        c.wait_ns = 6 * S;
        assert_eq!(
            statuses(&r.diff([(9, c)], 8 * S)),
            [(9, status::UNANSWERED)]
        );
    }

    #[test]
    fn healthy_and_filtered_connections_are_not_reported() {
        let mut r = Reported::default();
        let idle_pool = conn(ROLE_ACTIVE, state::ESTABLISHED, S); // answered, idle
        let server = conn(ROLE_PASSIVE, state::ESTABLISHED, S);
        let mut syn = conn(ROLE_ACTIVE, state::SYN_SENT, S);
        syn.flags &= !CONN_ALLOWED; // owner filtered out
        assert!(
            r.diff([(1, idle_pool), (2, server), (3, syn)], 60 * S)
                .is_empty()
        );
        syn.flags |= CONN_ALLOWED;
        assert_eq!(
            statuses(&r.diff([(3, syn)], 60 * S)),
            [(3, status::UNANSWERED)]
        );
    }

    #[test]
    fn names() {
        assert_eq!(status_name(status::CLOSE_WAIT), "close_wait");
    }
}
