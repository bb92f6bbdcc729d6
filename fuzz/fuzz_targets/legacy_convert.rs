//! Message format v0/v1 (clients before Kafka 0.11): up-conversion of a produced message
//! set into a v2 batch, and down-conversion back for Fetch v0–v3.
//!
//! The input is a message set as an old producer sends it. The CRCs of its top-level
//! messages are made true first (a random CRC almost never matches, and the fuzzer should
//! explore what lies behind it). Nothing may panic or over-allocate; a set that converts
//! must give a batch that Produce's validation accepts, whose records survive a round trip
//! through both old formats.
#![no_main]

use bytes::Bytes;
use icestream_fuzz::batch::BatchHeader;
use icestream_fuzz::legacy::{down_convert, up_convert};
use icestream_fuzz::records::decode_batch;
use icestream_fuzz::validate::{validate, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let size = i32::from_be_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]);
        if size < 4 || at + 12 + size as usize > buf.len() {
            break;
        }
        let end = at + 12 + size as usize;
        let crc = crc32fast::hash(&buf[at + 16..end]);
        buf[at + 12..at + 16].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
    let Ok(batch) = up_convert(&Bytes::from(buf)) else {
        return;
    };
    let header = BatchHeader::parse(&batch).expect("a converted set is one batch");
    let valid = validate(&header, &batch, Policy::default()).expect("a converted set is valid");
    let rows = decode_batch(&batch, 0).expect("a converted set decodes");
    assert_eq!(rows.len(), valid.records as usize);
    for magic in [0, 1] {
        let down = down_convert(&batch, magic, 0, usize::MAX);
        let again = up_convert(&down).expect("a down-converted set converts up");
        let back = decode_batch(&again, 0).expect("decodes");
        assert_eq!(back.len(), rows.len());
        for (a, b) in rows.iter().zip(&back) {
            assert_eq!((&a.key, &a.value, a.offset), (&b.key, &b.value, b.offset));
            if magic == 1 {
                assert_eq!(a.timestamp, b.timestamp);
            }
        }
    }
});
