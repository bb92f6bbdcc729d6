//! Decode and validation costs on real client traffic (the fuzzing corpus):
//! - request decoding with the patched kafka-protocol against the published 0.18.0, per
//!   API (ns per request; the same frames, interleaved runs, best of several);
//! - produce-time validation of record batches per codec, in CPU-seconds per GiB of
//!   batches: the CRC check the broker did before, and the full walk it does now.
//!
//! Usage: decode-bench CORPUS_DIR (fuzz/corpus)

#[path = "../../../storage/src/batch.rs"]
#[allow(dead_code)]
mod batch;
#[path = "../../../storage/src/compression.rs"]
#[allow(dead_code)]
mod compression;
#[path = "../../../storage/src/records.rs"]
#[allow(dead_code)]
mod records;
#[path = "../../../storage/src/validate.rs"]
#[allow(dead_code)]
mod validate;

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

fn read_dir(dir: &std::path::Path) -> Vec<Bytes> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                out.push(Bytes::from(b));
            }
        }
    }
    out
}

/// The broker's decode sequence (header, then body) with one copy of the crate.
macro_rules! decode_with {
    ($name:ident, $krate:ident) => {
        fn $name(frame: &Bytes) -> bool {
            use $krate::messages::{ApiKey, RequestHeader, RequestKind};
            use $krate::protocol::Decodable;
            let api = i16::from_be_bytes([frame[0], frame[1]]);
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            let Ok(api) = ApiKey::try_from(api) else {
                return false;
            };
            let mut b = frame.clone();
            RequestHeader::decode(&mut b, api.request_header_version(version)).is_ok()
                && RequestKind::decode(api, &mut b, version).is_ok()
        }
    };
}
decode_with!(decode_patched, kafka_protocol);
decode_with!(decode_published, kafka_protocol_published);

/// Best-of-5 nanoseconds per call of `f` over `items`, `reps` passes each.
fn time_per_item<T>(items: &[T], reps: usize, f: impl Fn(&T) -> bool) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut ok = 0usize;
        for _ in 0..reps {
            for i in items {
                ok += usize::from(f(i));
            }
        }
        std::hint::black_box(ok);
        best = best.min(start.elapsed().as_nanos() as f64 / (reps * items.len()) as f64);
    }
    best
}

fn api_name(frame: &Bytes) -> String {
    let api = i16::from_be_bytes([frame[0], frame[1]]);
    kafka_protocol::messages::ApiKey::try_from(api)
        .map(|a| format!("{a:?}"))
        .unwrap_or_else(|_| format!("api {api}"))
}

fn main() {
    let corpus = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let frames: Vec<Bytes> = read_dir(&corpus.join("request_decode"))
        .into_iter()
        .filter(|f| f.len() >= 8 && decode_patched(f) && decode_published(f))
        .collect();
    let mut by_api: BTreeMap<String, Vec<Bytes>> = BTreeMap::new();
    for f in &frames {
        by_api.entry(api_name(f)).or_default().push(f.clone());
    }
    println!("### request decoding: published kafka-protocol 0.18.0 vs patched (ns per request, best of 5)");
    println!(
        "{:<24} {:>8} {:>12} {:>12} {:>8}",
        "api", "frames", "published", "patched", "change"
    );
    let mut total = (0.0, 0.0);
    for (api, fs) in &by_api {
        let reps = (200_000 / fs.len()).max(1);
        let before = time_per_item(fs, reps, decode_published);
        let after = time_per_item(fs, reps, decode_patched);
        total.0 += before * fs.len() as f64;
        total.1 += after * fs.len() as f64;
        println!(
            "{api:<24} {:>8} {before:>12.0} {after:>12.0} {:>+7.1}%",
            fs.len(),
            (after / before - 1.0) * 100.0
        );
    }
    println!(
        "{:<24} {:>8} {:>12.0} {:>12.0} {:>+7.1}%",
        "all (weighted)",
        frames.len(),
        total.0 / frames.len() as f64,
        total.1 / frames.len() as f64,
        (total.1 / total.0 - 1.0) * 100.0
    );

    // Produce-time validation: batches of 1 KiB records in every codec.
    println!();
    println!(
        "### produce-time validation, 100 batches of 16 x 1 KiB records (CPU-s per GiB of batches)"
    );
    println!(
        "{:<8} {:>10} {:>14} {:>14}",
        "codec", "batch KiB", "CRC only", "full walk"
    );
    for codec in [0i16, 1, 2, 3, 4] {
        let batches: Vec<Bytes> = (0..100).map(|i| make_batch(codec, i)).collect();
        let bytes: usize = batches.iter().map(Bytes::len).sum();
        let headers: Vec<(batch::BatchHeader, Bytes)> = batches
            .iter()
            .map(|b| (batch::BatchHeader::parse(b).expect("header"), b.clone()))
            .collect();
        for (h, b) in &headers {
            assert_eq!(h.size, b.len(), "one batch");
            let v = validate::validate(h, b, validate::Policy::default()).expect("valid");
            assert_eq!(v.records, 16);
        }
        let reps = 20;
        let crc = time_per_item(&headers, reps, |(h, b)| h.validate(b).is_ok());
        let full = time_per_item(&headers, reps, |(h, b)| {
            validate::validate(h, b, validate::Policy::default()).is_ok()
        });
        let per_gib = |ns: f64| ns * 100.0 / bytes as f64 * (1u64 << 30) as f64 / 1e9;
        println!(
            "{:<8} {:>10.1} {:>14.3} {:>14.3}",
            ["none", "gzip", "snappy", "lz4", "zstd"][codec as usize],
            bytes as f64 / 100.0 / 1024.0,
            per_gib(crc),
            per_gib(full)
        );
    }
}

/// A v2 batch of 16 records with 1 KiB values (half random, half repeated text), as a
/// client would write it with `codec`.
fn make_batch(codec: i16, seed: u64) -> Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let records: Vec<Record> = (0..16)
        .map(|i| {
            let value: Vec<u8> = (0..1024)
                .map(|j| {
                    if j < 512 {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (x >> 56) as u8
                    } else {
                        b"order-line-item "[j % 16]
                    }
                })
                .collect();
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                // One batch for all records: the encoder splits when offset - sequence changes.
                sequence: i as i32 - 1,
                timestamp: 1_700_000_000_000 + i,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(value)),
                headers: Default::default(),
            }
        })
        .collect();
    let compression = match codec {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    buf.freeze()
}
