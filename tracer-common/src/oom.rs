//! OOM kills from `oom/mark_victim`: the header is the task whose allocation triggered it.

/// Fields this kernel's `mark_victim` provides (older kernels have only the pid).
pub const OOM_HAS_COMM: u32 = 1;
pub const OOM_HAS_MEMORY: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomKill {
    pub victim_pid: u32,
    pub victim_uid: u32,
    pub victim_comm: [u8; 16],
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    pub oom_score_adj: i16,
    pub _pad: u16,
    pub flags: u32,
}
