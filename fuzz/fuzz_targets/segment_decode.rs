//! WAL segment decoding: the footer, then every chunk's batches through the compactor's
//! record decoder. Segments are read back from the object store, where anything may have
//! happened to them; nothing may panic or over-allocate.
#![no_main]

use bytes::Bytes;
use icestream_fuzz::batch::batches;
use icestream_fuzz::records::decode_batch;
use icestream_fuzz::segment::decode_segment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(chunks) = decode_segment(data) else {
        return;
    };
    let segment = Bytes::copy_from_slice(data);
    for chunk in chunks {
        let start = chunk.position as usize;
        let Some(end) = start.checked_add(chunk.length as usize) else {
            continue;
        };
        if end > segment.len() {
            continue;
        }
        let bytes = segment.slice(start..end);
        for item in batches(&bytes) {
            let Ok((_, batch)) = item else { break };
            let _ = decode_batch(&batch, 0);
        }
    }
});
