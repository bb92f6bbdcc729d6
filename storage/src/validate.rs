//! Record batch validation at the edge, after Kafka's `LogValidator`: nothing a producer
//! says in a batch header is believed until the records confirm it.
//!
//! [`validate`] checks the header ([`BatchHeader::validate`]: size, CRC, codec) and then
//! walks every record of the (decompressed, streamed, bounded) body: each record's length
//! frames exactly its fields, offset deltas run 0, 1, ... n-1, the count and the last offset
//! delta match what is there, no bytes trail, header keys are present, and the batch's max
//! timestamp is recomputed from the records. Memory stays bounded by the decompression
//! buffer whatever the batch claims: record fields are skipped, not collected.
//!
//! [`finalize`] then makes the stored header tell the truth: the recomputed max timestamp
//! (sarama sends -1) or, on LogAppendTime topics, the broker's clock — rewriting the CRC
//! only when a byte changed.

use std::io::BufRead;

use bytes::{Bytes, BytesMut};

use crate::batch::{BatchError, BatchHeader, BATCH_HEADER_LEN};
use crate::compression::{self, DecompressError};

/// Kafka's "no timestamp".
pub const NO_TIMESTAMP: i64 = -1;

/// Why a batch was refused; [`ValidationError::record`] names the offending record.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("{0}")]
    Batch(#[from] BatchError),
    #[error("{0}")]
    Decompress(#[from] DecompressError),
    #[error("record {index}: {reason}")]
    Corrupt { index: i32, reason: &'static str },
    #[error("batch header says {claimed} records, the batch holds {actual}")]
    RecordCount { claimed: i32, actual: i64 },
    #[error("batch header says last offset delta {claimed}, the records end at {actual}")]
    LastOffsetDelta { claimed: i32, actual: i64 },
    #[error("record {index}: offset delta {delta}, expected {index}")]
    OffsetDelta { index: i32, delta: i64 },
    #[error("record {index}: a header with a null key")]
    NullHeaderKey { index: i32 },
    #[error("record {index}: compacted topics accept only records with a key")]
    MissingKey { index: i32 },
    #[error("empty record batch")]
    Empty,
    #[error("producers may not set LogAppendTime; the topic decides it")]
    LogAppendTimeFromProducer,
    #[error("idempotent batch without a valid epoch or sequence")]
    ProducerFields,
    #[error("control batches are written by transaction coordinators, not by producers")]
    Control,
    #[error("transactional batch without a producer id")]
    Transactional,
    #[error(
        "record {index}: timestamp {timestamp} is out of range; the topic accepts [{low}, {high}]"
    )]
    Timestamp {
        index: i32,
        timestamp: i64,
        low: i64,
        high: i64,
    },
}

impl ValidationError {
    /// The index of the record at fault, when one is.
    pub fn record(&self) -> Option<i32> {
        match self {
            Self::Corrupt { index, .. }
            | Self::OffsetDelta { index, .. }
            | Self::NullHeaderKey { index }
            | Self::MissingKey { index }
            | Self::Timestamp { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// What the topic asks of its batches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Every record needs a key (`cleanup.policy=compact`).
    pub require_keys: bool,
    /// The broker stamps the batch (`message.timestamp.type=LogAppendTime`).
    pub log_append_time: bool,
    /// Create times must lie in this window (`message.timestamp.before.max.ms` /
    /// `after.max.ms` around the broker's clock); records without a timestamp pass.
    pub timestamps: Option<TimestampWindow>,
}

/// The create times a topic accepts: `[now - before_max_ms, now + after_max_ms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampWindow {
    pub now_ms: i64,
    pub before_max_ms: i64,
    pub after_max_ms: i64,
}

impl TimestampWindow {
    fn low(&self) -> i64 {
        self.now_ms.saturating_sub(self.before_max_ms)
    }

    fn high(&self) -> i64 {
        self.now_ms.saturating_add(self.after_max_ms)
    }
}

/// What the records of a valid batch say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validated {
    pub records: i32,
    /// Largest record timestamp (create time), or `NO_TIMESTAMP` when no record has one.
    pub max_timestamp: i64,
}

/// Checks `batch` (exactly one v2 batch, header included) completely.
pub fn validate(
    header: &BatchHeader,
    batch: &[u8],
    policy: Policy,
) -> Result<Validated, ValidationError> {
    header.validate(batch)?;
    if header.is_log_append_time() {
        return Err(ValidationError::LogAppendTimeFromProducer);
    }
    if header.has_producer_id() && (header.producer_epoch < 0 || header.base_sequence < 0) {
        return Err(ValidationError::ProducerFields);
    }
    if header.is_control() {
        return Err(ValidationError::Control);
    }
    if header.is_transactional() && !header.has_producer_id() {
        return Err(ValidationError::Transactional);
    }
    let body = &batch[BATCH_HEADER_LEN..];
    let codec = header.compression();
    let mut reader = compression::reader(codec, body, compression::MAX_UNCOMPRESSED_BATCH_BYTES)?;
    if codec == 0 {
        // Uncompressed records are read from the slice itself, without dynamic calls.
        let mut records = body;
        return validate_records(header, &mut records, codec, policy);
    }
    validate_records(header, &mut *reader, codec, policy)
}

/// Checks the (decompressed) records of a batch against its header.
fn validate_records<R: BufRead + ?Sized>(
    header: &BatchHeader,
    reader: &mut R,
    codec: i16,
    policy: Policy,
) -> Result<Validated, ValidationError> {
    let mut r = Records { r: reader, codec };
    let mut max_timestamp = NO_TIMESTAMP;
    let mut index: i64 = 0;
    while r.more()? {
        let i = i32::try_from(index).map_err(|_| ValidationError::RecordCount {
            claimed: header.record_count,
            actual: index,
        })?;
        let corrupt = |reason| ValidationError::Corrupt { index: i, reason };
        let len = r
            .varint()?
            .ok_or_else(|| corrupt("truncated record length"))?;
        if len <= 0 {
            return Err(corrupt("record length is not positive"));
        }
        let mut field = Framed {
            r: &mut r,
            left: len as u64,
            index: i,
        };
        field.skip(1)?; // attributes (unused in v2)
        let timestamp_delta = field.varint()?;
        let offset_delta = field.varint()?;
        if offset_delta != index {
            return Err(ValidationError::OffsetDelta {
                index: i,
                delta: offset_delta,
            });
        }
        let key = field.varint()?;
        if key < -1 {
            return Err(corrupt("key length below -1"));
        }
        if key == -1 && policy.require_keys {
            return Err(ValidationError::MissingKey { index: i });
        }
        field.skip(key.max(0) as u64)?;
        let value = field.varint()?;
        if value < -1 {
            return Err(corrupt("value length below -1"));
        }
        field.skip(value.max(0) as u64)?;
        let headers = field.varint()?;
        if headers < 0 {
            return Err(corrupt("negative header count"));
        }
        for _ in 0..headers {
            let k = field.varint()?;
            if k < 0 {
                return Err(ValidationError::NullHeaderKey { index: i });
            }
            field.skip(k as u64)?;
            let v = field.varint()?;
            if v < -1 {
                return Err(corrupt("header value length below -1"));
            }
            field.skip(v.max(0) as u64)?;
        }
        if field.left != 0 {
            return Err(corrupt("record length does not match its fields"));
        }
        if header.base_timestamp != NO_TIMESTAMP {
            let timestamp = header.base_timestamp.saturating_add(timestamp_delta);
            max_timestamp = max_timestamp.max(timestamp);
            if let Some(w) = policy.timestamps {
                if timestamp != NO_TIMESTAMP && (timestamp < w.low() || timestamp > w.high()) {
                    return Err(ValidationError::Timestamp {
                        index: i,
                        timestamp,
                        low: w.low(),
                        high: w.high(),
                    });
                }
            }
        }
        index += 1;
    }
    if index == 0 {
        return Err(ValidationError::Empty);
    }
    if index != i64::from(header.record_count) {
        return Err(ValidationError::RecordCount {
            claimed: header.record_count,
            actual: index,
        });
    }
    if index - 1 != i64::from(header.last_offset_delta) {
        return Err(ValidationError::LastOffsetDelta {
            claimed: header.last_offset_delta,
            actual: index - 1,
        });
    }
    Ok(Validated {
        records: header.record_count,
        max_timestamp,
    })
}

/// Makes the header of a validated batch true: max timestamp recomputed from the records
/// or, with `log_append_time`, the LogAppendTime bit set and the max timestamp `now_ms`.
/// Returns the (possibly rewritten, CRC updated) batch and its header.
pub fn finalize(
    header: BatchHeader,
    batch: Bytes,
    validated: &Validated,
    log_append_time: Option<i64>,
) -> (BatchHeader, Bytes) {
    let (attributes, max_timestamp) = match log_append_time {
        Some(now) => (header.attributes | crate::batch::ATTR_TIMESTAMP_TYPE, now),
        None => (header.attributes, validated.max_timestamp),
    };
    if attributes == header.attributes && max_timestamp == header.max_timestamp {
        return (header, batch);
    }
    let mut b = BytesMut::from(&batch[..]);
    crate::batch::rewrite_header(&mut b, attributes, max_timestamp);
    let header = BatchHeader {
        attributes,
        max_timestamp,
        crc: crate::batch::stored_crc(&b),
        ..header
    };
    (header, b.freeze())
}

/// The decompressed record stream.
struct Records<'a, R: BufRead + ?Sized> {
    r: &'a mut R,
    codec: i16,
}

impl<R: BufRead + ?Sized> Records<'_, R> {
    fn io(codec: i16) -> impl Fn(std::io::Error) -> ValidationError {
        move |e| compression::from_io(codec, e).into()
    }

    /// Whether another record starts here.
    fn more(&mut self) -> Result<bool, ValidationError> {
        let buf = self.r.fill_buf().map_err(Self::io(self.codec))?;
        Ok(!buf.is_empty())
    }

    fn byte(&mut self) -> Result<Option<u8>, ValidationError> {
        let buf = self.r.fill_buf().map_err(Self::io(self.codec))?;
        let Some(&b) = buf.first() else {
            return Ok(None);
        };
        self.r.consume(1);
        Ok(Some(b))
    }

    /// A zig-zag varint read at once from what the stream has buffered, with its length,
    /// when all of it (at most 10 bytes, and at most `limit`) is there; `None` otherwise,
    /// and then nothing is consumed (the byte-wise readers take over and say what is wrong).
    fn buffered_varint(&mut self, limit: u64) -> Result<Option<(i64, usize)>, ValidationError> {
        let buf = self.r.fill_buf().map_err(Self::io(self.codec))?;
        let window = &buf[..buf.len().min(limit.min(10) as usize)];
        let Some(last) = window.iter().position(|b| b & 0x80 == 0) else {
            return Ok(None);
        };
        let value = window[..=last]
            .iter()
            .enumerate()
            .fold(0u64, |v, (k, b)| v | (u64::from(b & 0x7f) << (7 * k)));
        self.r.consume(last + 1);
        Ok(Some((
            ((value >> 1) as i64) ^ -((value & 1) as i64),
            last + 1,
        )))
    }

    /// A zig-zag varint (up to 64 bits); `None` at the end of the stream.
    fn varint(&mut self) -> Result<Option<i64>, ValidationError> {
        if let Some((value, _)) = self.buffered_varint(10)? {
            return Ok(Some(value));
        }
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let Some(b) = self.byte()? else {
                return if shift == 0 {
                    Ok(None)
                } else {
                    Err(ValidationError::Corrupt {
                        index: -1,
                        reason: "truncated varint",
                    })
                };
            };
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(Some(((value >> 1) as i64) ^ -((value & 1) as i64)));
            }
            shift += 7;
            if shift > 63 {
                return Err(ValidationError::Corrupt {
                    index: -1,
                    reason: "varint longer than 10 bytes",
                });
            }
        }
    }

    /// Skips `n` bytes; false when the stream ends first.
    fn skip(&mut self, mut n: u64) -> Result<bool, ValidationError> {
        while n > 0 {
            let buf = self.r.fill_buf().map_err(Self::io(self.codec))?;
            if buf.is_empty() {
                return Ok(false);
            }
            let step = (buf.len() as u64).min(n) as usize;
            self.r.consume(step);
            n -= step as u64;
        }
        Ok(true)
    }
}

/// The fields of one record: reads may not pass the record's declared length.
struct Framed<'r, 'a, R: BufRead + ?Sized> {
    r: &'r mut Records<'a, R>,
    left: u64,
    index: i32,
}

impl<R: BufRead + ?Sized> Framed<'_, '_, R> {
    fn overrun(&self) -> ValidationError {
        ValidationError::Corrupt {
            index: self.index,
            reason: "record fields run past the record length",
        }
    }

    fn varint(&mut self) -> Result<i64, ValidationError> {
        if let Some((value, len)) = self.r.buffered_varint(self.left)? {
            self.left -= len as u64;
            return Ok(value);
        }
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            if self.left == 0 {
                return Err(self.overrun());
            }
            let b = self.r.byte()?.ok_or_else(|| self.overrun())?;
            self.left -= 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
            shift += 7;
            if shift > 63 {
                return Err(ValidationError::Corrupt {
                    index: self.index,
                    reason: "varint longer than 10 bytes",
                });
            }
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), ValidationError> {
        if n > self.left || !self.r.skip(n)? {
            return Err(self.overrun());
        }
        self.left -= n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::{encode, record};
    use kafka_protocol::records::Compression;

    fn one(records: &[kafka_protocol::records::Record], c: Compression) -> (BatchHeader, Bytes) {
        let b = encode(records, c);
        (BatchHeader::parse(&b).expect("header"), b)
    }

    #[test]
    fn what_clients_write_is_valid_in_every_codec() {
        let records: Vec<_> = (0..50).map(|i| record(i, b"value")).collect();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let (h, b) = one(&records, c);
            let v = validate(&h, &b, Policy::default()).expect("valid");
            assert_eq!(v.records, 50);
            assert_eq!(v.max_timestamp, h.max_timestamp, "{c:?}");
        }
    }

    /// Rewrites header fields and fixes the CRC, as a lying client would.
    fn lie(b: &Bytes, patches: &[(usize, &[u8])]) -> (BatchHeader, Bytes) {
        let mut m = BytesMut::from(&b[..]);
        for (at, bytes) in patches {
            m[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        let crc = crc32c::crc32c(&m[21..]);
        m[17..21].copy_from_slice(&crc.to_be_bytes());
        let m = m.freeze();
        (BatchHeader::parse(&m).expect("header"), m)
    }

    const LAST_OFFSET_DELTA: usize = 23;
    const MAX_TIMESTAMP: usize = 35;
    const RECORD_COUNT: usize = 57;

    #[test]
    fn a_crc_valid_header_lying_about_its_count_is_refused() {
        // Regression: records_count = 2^31-1 over one record aborted the compactor.
        let (_, b) = one(&[record(0, b"x")], Compression::None);
        let (h, lying) = lie(
            &b,
            &[
                (LAST_OFFSET_DELTA, &(i32::MAX - 1).to_be_bytes()),
                (RECORD_COUNT, &i32::MAX.to_be_bytes()),
            ],
        );
        let e = validate(&h, &lying, Policy::default()).expect_err("lying count");
        assert!(matches!(e, ValidationError::RecordCount { .. }), "{e}");
        // Regression: count 5 over one record stalled the topic's compaction forever.
        let (h, lying) = lie(
            &b,
            &[
                (LAST_OFFSET_DELTA, &4i32.to_be_bytes()),
                (RECORD_COUNT, &5i32.to_be_bytes()),
            ],
        );
        let e = validate(&h, &lying, Policy::default()).expect_err("count 5");
        assert!(matches!(e, ValidationError::RecordCount { .. }), "{e}");
        // Right count, wrong last offset delta.
        let (h, lying) = lie(&b, &[(LAST_OFFSET_DELTA, &3i32.to_be_bytes())]);
        let e = validate(&h, &lying, Policy::default()).expect_err("delta");
        assert!(matches!(e, ValidationError::LastOffsetDelta { .. }), "{e}");
    }

    #[test]
    fn sarama_max_timestamp_is_recomputed() {
        let (_, b) = one(&[record(0, b"a"), record(1, b"b")], Compression::None);
        // Regression: sarama's -1 was indexed as is and retention deleted fresh records.
        let (h, b) = lie(&b, &[(MAX_TIMESTAMP, &(-1i64).to_be_bytes())]);
        assert_eq!(h.max_timestamp, -1);
        let v = validate(&h, &b, Policy::default()).expect("valid");
        assert!(v.max_timestamp > 0);
        let (h2, b2) = finalize(h, b, &v, None);
        assert_eq!(h2.max_timestamp, v.max_timestamp);
        let parsed = BatchHeader::parse(&b2).expect("parse");
        assert_eq!(parsed, h2);
        parsed.validate(&b2).expect("crc rewritten");
    }

    #[test]
    fn log_append_time_stamps_the_batch() {
        let (h, b) = one(&[record(0, b"a")], Compression::Gzip);
        let v = validate(&h, &b, Policy::default()).expect("valid");
        let (h2, b2) = finalize(h, b, &v, Some(1_700_000_000_000));
        assert!(h2.is_log_append_time());
        assert_eq!(h2.max_timestamp, 1_700_000_000_000);
        BatchHeader::parse(&b2)
            .expect("parse")
            .validate(&b2)
            .expect("crc");
        let rows = crate::records::decode_batch(&b2, 0).expect("decode");
        assert_eq!(rows[0].timestamp, 1_700_000_000_000);
    }

    #[test]
    fn create_times_outside_the_window_are_refused_with_their_record() {
        let now = 1_700_000_000_000;
        let policy = Policy {
            timestamps: Some(TimestampWindow {
                now_ms: now,
                before_max_ms: 60_000,
                after_max_ms: 1_000,
            }),
            ..Policy::default()
        };
        let mut r0 = record(0, b"a");
        r0.timestamp = now - 59_000;
        let mut r1 = record(1, b"b");
        r1.timestamp = now + 500;
        let (h, b) = one(&[r0.clone(), r1.clone()], Compression::Lz4);
        validate(&h, &b, policy).expect("inside the window");
        let mut late = record(2, b"c");
        late.timestamp = now - 61_000;
        let (h, b) = one(&[r0.clone(), r1.clone(), late], Compression::None);
        let e = validate(&h, &b, policy).expect_err("too old");
        assert_eq!(e.record(), Some(2));
        let mut early = record(1, b"d");
        early.timestamp = now + 2_000;
        let (h, b) = one(&[r0, early], Compression::Snappy);
        let e = validate(&h, &b, policy).expect_err("from the future");
        assert_eq!(e.record(), Some(1));
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn compacted_topics_need_keys() {
        let (h, b) = one(&[record(0, b"a")], Compression::None);
        let policy = Policy {
            require_keys: true,
            ..Policy::default()
        };
        // `record` sets a key; a keyless record is refused with its index.
        validate(&h, &b, policy).expect("keyed");
        let mut keyless = record(1, b"a");
        keyless.key = None;
        let (h, b) = one(&[record(0, b"k"), keyless], Compression::Zstd);
        let e = validate(&h, &b, policy).expect_err("keyless");
        assert_eq!(e.record(), Some(1));
    }

    proptest::proptest! {
        /// Any single-byte change in the records of a CRC-fixed batch is either still a
        /// valid batch or refused: never a panic, never an over-allocation.
        #[test]
        fn mutated_records_never_panic(at in 61usize..200, byte in 0u8..=255) {
            let records: Vec<_> = (0..5).map(|i| record(i, b"some value")).collect();
            let (_, b) = one(&records, Compression::None);
            let at = at.min(b.len() - 1);
            let (h, b) = lie(&b, &[(at, &[byte])]);
            let _ = validate(&h, &b, Policy::default());
        }

        /// Varints read at once from the buffer and byte by byte (as from a decompressor
        /// that hands out little at a time) give the same verdict on any batch.
        #[test]
        fn buffered_and_bytewise_reads_agree(at in 61usize..200, byte in 0u8..=255) {
            let mut records: Vec<_> = (0..5).map(|i| record(i, &[7u8; 200])).collect();
            records[2].timestamp += 1 << 40;
            let (_, b) = one(&records, Compression::None);
            let at = at.min(b.len() - 1);
            let (h, b) = lie(&b, &[(at, &[byte])]);
            let whole = validate(&h, &b, Policy::default());
            let mut bytewise = std::io::BufReader::with_capacity(1, &b[BATCH_HEADER_LEN..]);
            let slow = h
                .validate(&b)
                .map_err(ValidationError::from)
                .and_then(|()| validate_records(&h, &mut bytewise, 0, Policy::default()));
            proptest::prop_assert_eq!(format!("{whole:?}"), format!("{slow:?}"));
        }
    }
}
