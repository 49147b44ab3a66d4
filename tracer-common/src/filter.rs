//! The `--pid`, `--comm` and `--cgroup` decision as one pure function, used by the eBPF
//! programs (with the kernel's helpers behind [`Subject`]) and by the userspace filter (with
//! the facts a dump stores), so that `live --cgroup X` and `replay --cgroup X` decide alike.
//! No helpers are called in here: each side supplies what it knows about a task.

/// Bits of [`FilterRule::flags`].
pub const FILTER_PID: u32 = 1;
pub const FILTER_COMM: u32 = 2;
pub const FILTER_CGROUP: u32 = 4;

/// The filters as the kernel receives them (a field of [`crate::config::Config`]) and as the
/// userspace filter applies them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterRule {
    pub flags: u32,
    /// Depth of `cgroup` below the cgroup v2 root (the root is level 0).
    pub cgroup_level: u32,
    /// cgroup v2 id (the directory's inode): it and its descendants pass.
    pub cgroup: u64,
    /// NUL-padded process name.
    pub comm: [u8; 16],
}

impl FilterRule {
    pub const fn none() -> FilterRule {
        FilterRule {
            flags: 0,
            cgroup_level: 0,
            cgroup: 0,
            comm: [0; 16],
        }
    }
}

/// Where a rule's fields come from: a plain [`FilterRule`] in userspace; the eBPF side reads
/// its load-time global field by field (volatile reads, so nothing is folded or copied whole).
pub trait Rule {
    fn flags(&self) -> u32;
    fn cgroup_level(&self) -> u32;
    fn cgroup(&self) -> u64;
    fn comm(&self) -> [u8; 16];
}

impl Rule for FilterRule {
    fn flags(&self) -> u32 {
        self.flags
    }
    fn cgroup_level(&self) -> u32 {
        self.cgroup_level
    }
    fn cgroup(&self) -> u64 {
        self.cgroup
    }
    fn comm(&self) -> [u8; 16] {
        self.comm
    }
}

/// What the decision needs to know about a task; asked lazily, only for the filters set.
pub trait Subject {
    /// In the `--pid` set (a followed process or a descendant).
    fn tracked(&self) -> bool;
    fn comm(&self) -> [u8; 16];
    /// The id of the task's cgroup v2 ancestor at `level` (its own cgroup at its own level),
    /// as `bpf_get_current_ancestor_cgroup_id` answers: 0 when the task's cgroup is shallower
    /// than `level` or its ancestry is unknown.
    fn cgroup_ancestor(&self, level: u32) -> u64;
}

/// Whether the task passes every filter set in `rule`.
#[inline(always)]
pub fn allows<R: Rule, S: Subject>(rule: &R, s: &S) -> bool {
    let flags = rule.flags();
    if flags == 0 {
        return true;
    }
    if flags & FILTER_PID != 0 && !s.tracked() {
        return false;
    }
    if flags & FILTER_COMM != 0 && !comm_matches(&s.comm(), &rule.comm()) {
        return false;
    }
    if flags & FILTER_CGROUP != 0 && s.cgroup_ancestor(rule.cgroup_level()) != rule.cgroup() {
        return false;
    }
    true
}

/// NUL-terminated comparison of two kernel process names.
#[inline(always)]
pub fn comm_matches(comm: &[u8; 16], want: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if comm[i] != want[i] {
            return false;
        }
        if comm[i] == 0 {
            return true;
        }
        i += 1;
    }
    true
}

/// The ancestor at `level` of a cgroup whose ancestry is `root_first` (the root's id first,
/// the cgroup's own id last), as the kernel's helper answers it.
pub fn ancestor_at(root_first: &[u64], level: u32) -> u64 {
    root_first.get(level as usize).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct T {
        tracked: bool,
        comm: [u8; 16],
        ancestry: &'static [u64],
    }
    impl Subject for T {
        fn tracked(&self) -> bool {
            self.tracked
        }
        fn comm(&self) -> [u8; 16] {
            self.comm
        }
        fn cgroup_ancestor(&self, level: u32) -> u64 {
            ancestor_at(self.ancestry, level)
        }
    }
    fn name(s: &str) -> [u8; 16] {
        let mut b = [0; 16];
        b[..s.len()].copy_from_slice(s.as_bytes());
        b
    }

    #[test]
    fn cgroup_matches_itself_and_descendants_only() {
        let rule = FilterRule {
            flags: FILTER_CGROUP,
            cgroup_level: 1,
            cgroup: 10,
            comm: [0; 16],
        };
        let t = |ancestry| T {
            tracked: false,
            comm: [0; 16],
            ancestry,
        };
        assert!(allows(&rule, &t(&[1, 10])), "the cgroup itself");
        assert!(allows(&rule, &t(&[1, 10, 11, 12])), "a grandchild");
        assert!(!allows(&rule, &t(&[1, 20, 10])), "same id at another level");
        assert!(!allows(&rule, &t(&[1])), "the root (shallower)");
        assert!(!allows(&rule, &t(&[])), "unknown");
    }

    #[test]
    fn every_filter_set_must_pass() {
        let rule = FilterRule {
            flags: FILTER_PID | FILTER_COMM,
            cgroup_level: 0,
            cgroup: 0,
            comm: name("nginx"),
        };
        let t = |tracked, comm| T {
            tracked,
            comm: name(comm),
            ancestry: &[],
        };
        assert!(allows(&rule, &t(true, "nginx")));
        assert!(!allows(&rule, &t(false, "nginx")));
        assert!(!allows(&rule, &t(true, "nginx2")));
        assert!(!allows(&rule, &t(true, "ngin")));
        assert!(allows(&FilterRule::none(), &t(false, "x")));
    }
}
