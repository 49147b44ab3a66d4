//! The kernel's per-process maps that no event empties: SOCK_FDS holds the socket fds a
//! process still had when it exited (the kernel closes them without a close() the programs
//! see), and FORKED_FROM who forked whom (kept past a parent's exit, because a daemon's
//! grandchild looks its inherited sockets up through it). Both are LRU maps, so they are
//! bounded anyway; the sweep evicts what belongs to processes that are gone, so that a host
//! running for days with many short-lived processes keeps only live ones there, and a reused
//! pid does not meet a dead process's fds.
use std::collections::{HashMap, HashSet};

use aya::maps::{HashMap as BpfHashMap, MapData};
use tracer_common::tcp::FORK_DEPTH;

/// A SOCK_FDS value, whose fields the sweep does not need.
type SockFdBytes = [u8; 16];

/// The two maps, taken from the loaded object.
pub struct PidMaps {
    pub(super) sock_fds: BpfHashMap<MapData, u64, SockFdBytes>,
    pub(super) forked_from: BpfHashMap<MapData, u32, u32>,
}

/// What one sweep found and deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub sock_fds: usize,
    pub sock_fds_deleted: usize,
    pub forked_from: usize,
    pub forked_from_deleted: usize,
}

impl PidMaps {
    /// Deletes the entries of processes that are gone (no /proc/PID) and that no live process
    /// may still search for an inherited fd.
    pub fn sweep(&mut self) -> Swept {
        let mut seen: HashMap<u32, bool> = HashMap::new();
        let mut alive = |tgid: u32| {
            *seen
                .entry(tgid)
                .or_insert_with(|| std::path::Path::new(&format!("/proc/{tgid}")).exists())
        };
        let forked_from: HashMap<u32, u32> = self.forked_from.iter().flatten().collect();
        let fd_keys: Vec<u64> = self.sock_fds.keys().flatten().collect();
        let stale = stale(
            &forked_from,
            fd_keys.iter().map(|k| tgid_of(*k)),
            &mut alive,
        );
        let mut out = Swept {
            sock_fds: fd_keys.len(),
            forked_from: forked_from.len(),
            ..Swept::default()
        };
        for k in fd_keys {
            if stale.contains(&tgid_of(k)) && self.sock_fds.remove(&k).is_ok() {
                out.sock_fds_deleted += 1;
            }
        }
        for child in forked_from.keys() {
            if stale.contains(child) && self.forked_from.remove(child).is_ok() {
                out.forked_from_deleted += 1;
            }
        }
        out
    }
}

/// The process of a SOCK_FDS key (tgid << 32 | fd).
fn tgid_of(key: u64) -> u32 {
    (key >> 32) as u32
}

/// Of the processes named in `forked_from` (as children) and in `tgids`, those that are gone
/// and that no live process reaches within [`FORK_DEPTH`] generations up: a live child's
/// inherited fd is looked up under its parent, grandparent... even after they exited.
fn stale(
    forked_from: &HashMap<u32, u32>,
    tgids: impl Iterator<Item = u32>,
    alive: &mut impl FnMut(u32) -> bool,
) -> HashSet<u32> {
    let mut needed = HashSet::new();
    for &child in forked_from.keys() {
        if !alive(child) {
            continue;
        }
        let mut t = child;
        for _ in 0..FORK_DEPTH {
            match forked_from.get(&t) {
                Some(&p) => {
                    needed.insert(p);
                    t = p;
                }
                None => break,
            }
        }
    }
    let mut stale = HashSet::new();
    for t in forked_from.keys().copied().chain(tgids) {
        if !needed.contains(&t) && !alive(t) {
            stale.insert(t);
        }
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dead_go_unless_a_live_descendant_may_look_them_up() {
        // 10 (alive) forked 11 (dead), which forked 12 (alive: a daemon's grandchild); 20
        // (dead) forked 21 (dead); 30 is dead with socket fds and no children; 40 is alive.
        let ff: HashMap<u32, u32> = [(11, 10), (12, 11), (21, 20)].into_iter().collect();
        let live = [10, 12, 40];
        let mut alive = |t: u32| live.contains(&t);
        let s = stale(&ff, [10, 11, 20, 30, 40].into_iter(), &mut alive);
        let mut s: Vec<u32> = s.into_iter().collect();
        s.sort_unstable();
        // 11 stays (12 looks its fds up through it), and so does 10 (alive); 20, 21 and 30 go.
        assert_eq!(s, vec![20, 21, 30]);
    }

    #[test]
    fn lookups_reach_only_fork_depth_generations() {
        // 1 <- 2 <- 3 <- 4 <- 5: only 5 is alive; its search reaches 4, 3 and 2, not 1.
        let ff: HashMap<u32, u32> = [(2, 1), (3, 2), (4, 3), (5, 4)].into_iter().collect();
        let mut alive = |t: u32| t == 5;
        let s = stale(&ff, std::iter::once(1), &mut alive);
        assert_eq!(s, HashSet::from([1]));
    }

    #[test]
    fn keys_name_their_process() {
        assert_eq!(tgid_of((4242u64 << 32) | 7), 4242);
    }
}
