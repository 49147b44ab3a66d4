//! The process snapshot at the head of every segment, so that any segment replays on its own.
use super::Writer;
use crate::{
    dump::format::{self, BlockType, MAX_BLOCK_RAW},
    event::{self, Body, Comm, Event},
};

impl Writer {
    /// The writer's process table as SNAPSHOT blocks of ProcInfo records.
    pub(super) fn encode_snapshot(&mut self, out: &mut Vec<u8>) {
        let ts = self.last_ts;
        let mut raw = Vec::new();
        let mut count = 0u32;
        for p in self.procs.snapshot() {
            let Some(rec) = proc_record(p, ts) else {
                continue;
            };
            if !raw.is_empty() && raw.len() + rec.len() > MAX_BLOCK_RAW {
                out.extend(format::encode_block(
                    BlockType::Snapshot,
                    &raw,
                    count,
                    ts,
                    ts,
                    self.compressor.as_mut(),
                ));
                raw.clear();
                count = 0;
            }
            raw.extend_from_slice(&rec);
            count += 1;
        }
        out.extend(format::encode_block(
            BlockType::Snapshot,
            &raw,
            count,
            ts,
            ts,
            self.compressor.as_mut(),
        ));
    }
}

/// A ProcInfo record as the collector frames it; a command line too long for one record is cut.
fn proc_record(mut p: event::ProcInfo, ts: u64) -> Option<Vec<u8>> {
    let pid = p.pid;
    let uid = p.uid;
    let comm = Comm::new(&p.comm);
    loop {
        let ev = Event {
            ts_ns: ts,
            cpu: 0,
            tgid: pid,
            tid: pid,
            uid,
            cgroup_id: 0,
            comm,
            body: Body::ProcInfo(Box::new(p.clone())),
        };
        if let Some(r) = event::encode_user_record(&ev) {
            return Some(r);
        }
        if p.cmdline.is_empty() && p.exe.len() < 1024 {
            return None;
        }
        p.cmdline.truncate(p.cmdline.len() / 2);
        p.exe.truncate(1024);
    }
}
