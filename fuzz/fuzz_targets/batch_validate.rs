//! Produce-time validation and compaction-time decoding of record batches.
//!
//! The input is a records buffer as a producer sends it. Each batch's length field and
//! CRC are made consistent first (a random CRC almost never matches, and the fuzzer should
//! explore what lies behind it), then the batch is validated as Produce does and decoded
//! as the compactor and the cold-fetch path do, whether or not validation accepted it
//! (stored bytes are not trusted either). Nothing may panic or over-allocate; a batch that
//! validation accepts must decode to exactly its claimed records.
#![no_main]

use bytes::Bytes;
use icestream_fuzz::batch::{batches, BatchHeader};
use icestream_fuzz::records::decode_batch;
use icestream_fuzz::validate::{finalize, validate, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    if buf.len() >= 61 {
        let len = (buf.len() - 12) as i32;
        buf[8..12].copy_from_slice(&len.to_be_bytes());
        buf[16] = 2;
        let crc = crc32c::crc32c(&buf[21..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let records = Bytes::from(buf);
    let policy = Policy {
        require_keys: records.len() % 2 == 0,
        ..Policy::default()
    };
    for item in batches(&records) {
        let Ok((header, batch)) = item else { break };
        let valid = validate(&header, &batch, policy);
        if let Ok(v) = &valid {
            let (header, batch) = finalize(header, batch.clone(), v, None);
            assert_eq!(BatchHeader::parse(&batch).ok(), Some(header));
            let rows = decode_batch(&batch, 0).expect("a validated batch decodes");
            assert_eq!(rows.len(), v.records as usize);
        } else {
            let _ = decode_batch(&batch, 0);
        }
    }
});
