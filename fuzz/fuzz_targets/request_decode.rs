//! Request decoding as the broker does it (`broker/src/api/mod.rs`): a request frame (without
//! its 4-byte size prefix) → api key and version peeked → header → body, for every API and
//! version `kafka-protocol` knows (a superset of what icestream serves), and the pre-0.11
//! versions icestream decodes itself (`broker/src/api/legacy.rs`). Decoding may fail;
//! it must never panic, abort or allocate more than the frame can hold.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let api_key = i16::from_be_bytes([data[0], data[1]]);
    let version = i16::from_be_bytes([data[2], data[3]]);
    let Ok(api) = ApiKey::try_from(api_key) else {
        return;
    };
    let range = api.valid_versions();
    let legacy = icestream_fuzz::legacy_requests::is_legacy(api, version);
    if !legacy && (version < range.min || version > range.max) {
        return;
    }
    let mut frame = Bytes::copy_from_slice(data);
    if RequestHeader::decode(&mut frame, api.request_header_version(version)).is_err() {
        return;
    }
    if legacy {
        let _ = icestream_fuzz::legacy_requests::decode(api, version, frame);
    } else {
        let _ = RequestKind::decode(api, &mut frame, version);
    }
});
