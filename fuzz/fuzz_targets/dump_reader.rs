//! Any bytes, read as a dump segment: the reader must never panic and never hold more memory
//! than its block limits allow (hangs are caught by libFuzzer's -timeout); every record it
//! yields goes through the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::{
    dump::{DumpReader, Item, format},
    event,
};

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = DumpReader::from_bytes("fuzz.tdump", data.to_vec()) else {
        return;
    };
    while let Ok(Some(item)) = r.next_item() {
        if let Item::Record(raw) | Item::Snapshot(raw) = item {
            let _ = event::decode(raw);
        }
    }
    let limit = 2 * (format::MAX_STORED_LEN.max(format::MAX_RAW_LEN) as usize) + (1 << 20);
    assert!(
        r.peak_buffer() <= limit,
        "reader held {} bytes",
        r.peak_buffer()
    );
});
