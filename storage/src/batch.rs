//! Kafka record batches (magic v2) as they travel through icestream: header parsing and
//! validation without decompression, and in-place patching of the base offset and leader
//! epoch (neither is covered by the batch CRC, which starts at the attributes field).
//!
//! `kafka-protocol`'s `BatchDecodeInfo` does not expose the batch length, the last offset
//! delta or the max timestamp, all of which the write path needs, so the fixed 61-byte
//! header is read here.

use bytes::{Buf, Bytes};

/// Size of the fixed record batch header (v2).
pub const BATCH_HEADER_LEN: usize = 61;
/// Offset of the CRC-covered region inside a batch.
const CRC_START: usize = 21;
/// Bytes before and including the batch length field; `batch_length` counts what follows.
const LOG_OVERHEAD: usize = 12;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub(crate) const ATTR_TIMESTAMP_TYPE: i16 = 1 << 3;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;

/// Why a record batch was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("record batch magic {0} is not supported (only v2 record batches are)")]
    UnsupportedMagic(i8),
    #[error("record batch crc mismatch: header says {expected:#010x}, data gives {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch length {0} is invalid")]
    InvalidLength(i32),
    #[error("record batch has {records} records but a last offset delta of {last_offset_delta}")]
    InvalidRecordCount {
        records: i32,
        last_offset_delta: i32,
    },
    #[error("record batch uses unknown compression codec {0}")]
    UnknownCompression(i16),
}

/// The decoded fixed header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total size of the batch in bytes, header included.
    pub size: usize,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Checks the magic byte and that the batch
    /// length is plausible; does not require the whole batch to be present.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        let mut b = &buf[..BATCH_HEADER_LEN];
        let base_offset = b.get_i64();
        let batch_length = b.get_i32();
        let partition_leader_epoch = b.get_i32();
        let magic = b.get_i8();
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::InvalidLength(batch_length));
        }
        let crc = b.get_u32();
        let attributes = b.get_i16();
        let last_offset_delta = b.get_i32();
        let base_timestamp = b.get_i64();
        let max_timestamp = b.get_i64();
        let producer_id = b.get_i64();
        let producer_epoch = b.get_i16();
        let base_sequence = b.get_i32();
        let record_count = b.get_i32();
        Ok(Self {
            base_offset,
            size: LOG_OVERHEAD + batch_length as usize,
            partition_leader_epoch,
            magic,
            crc,
            attributes,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            record_count,
        })
    }

    /// Validates what a producer sent: the CRC over the whole batch, the record count
    /// against the offset delta, and the compression codec. `batch` is exactly the batch.
    pub fn validate(&self, batch: &[u8]) -> Result<(), BatchError> {
        if batch.len() != self.size {
            return Err(BatchError::Truncated {
                needed: self.size,
                available: batch.len(),
            });
        }
        let actual = crc32c::crc32c(&batch[CRC_START..]);
        if actual != self.crc {
            return Err(BatchError::CrcMismatch {
                expected: self.crc,
                actual,
            });
        }
        if self.record_count < 0
            || self.last_offset_delta < 0
            || (self.record_count > 0 && self.last_offset_delta < self.record_count - 1)
        {
            return Err(BatchError::InvalidRecordCount {
                records: self.record_count,
                last_offset_delta: self.last_offset_delta,
            });
        }
        let codec = self.attributes & ATTR_COMPRESSION_MASK;
        if codec > 4 {
            return Err(BatchError::UnknownCompression(codec));
        }
        Ok(())
    }

    /// Number of offsets the batch occupies (`last_offset_delta + 1`).
    pub fn offset_span(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence number of the last record; sequences wrap from `i32::MAX` to 0.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// `sequence + delta`, wrapping at `i32::MAX` as Kafka producers do.
pub fn increment_sequence(sequence: i32, delta: i32) -> i32 {
    if sequence > i32::MAX - delta {
        delta - (i32::MAX - sequence) - 1
    } else {
        sequence + delta
    }
}

/// Iterates over the batches in a records buffer, yielding each header with its bytes
/// (zero-copy slices of `records`). Stops at the first malformed batch with its error.
pub fn batches(records: &Bytes) -> BatchIter<'_> {
    BatchIter {
        records,
        position: 0,
    }
}

pub struct BatchIter<'a> {
    records: &'a Bytes,
    position: usize,
}

impl BatchIter<'_> {
    /// Byte position of the next batch in the buffer.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(BatchHeader, Bytes), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.records[self.position..];
        if rest.is_empty() {
            return None;
        }
        let header = match BatchHeader::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                self.position = self.records.len();
                return Some(Err(e));
            }
        };
        if header.size > rest.len() {
            self.position = self.records.len();
            return Some(Err(BatchError::Truncated {
                needed: header.size,
                available: rest.len(),
            }));
        }
        let bytes = self
            .records
            .slice(self.position..self.position + header.size);
        self.position += header.size;
        Some(Ok((header, bytes)))
    }
}

/// Byte position of the attributes field inside a batch.
const ATTRIBUTES_AT: usize = 21;
/// Byte position of the max timestamp field inside a batch.
const MAX_TIMESTAMP_AT: usize = 35;
/// Byte position of the CRC field inside a batch.
const CRC_AT: usize = 17;

/// Sets the attributes and max timestamp of the whole batch in `batch` and recomputes its
/// CRC (both fields are covered by it).
pub fn rewrite_header(batch: &mut [u8], attributes: i16, max_timestamp: i64) {
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The CRC field of a batch (at least a header long).
pub fn stored_crc(batch: &[u8]) -> u32 {
    u32::from_be_bytes([
        batch[CRC_AT],
        batch[CRC_AT + 1],
        batch[CRC_AT + 2],
        batch[CRC_AT + 3],
    ])
}

/// Rewrites the base offset and partition leader epoch of every batch in `buf`, which holds
/// whole batches back to back, assigning consecutive offsets from `base_offset`. Returns
/// the offset after the last batch. The CRC stays valid: it does not cover these fields.
pub fn patch_offsets(
    buf: &mut [u8],
    base_offset: i64,
    leader_epoch: i32,
) -> Result<i64, BatchError> {
    let mut position = 0;
    let mut next = base_offset;
    while position < buf.len() {
        let header = BatchHeader::parse(&buf[position..])?;
        if position + header.size > buf.len() {
            return Err(BatchError::Truncated {
                needed: header.size,
                available: buf.len() - position,
            });
        }
        buf[position..position + 8].copy_from_slice(&next.to_be_bytes());
        buf[position + 12..position + 16].copy_from_slice(&leader_epoch.to_be_bytes());
        next += header.offset_span();
        position += header.size;
    }
    Ok(next)
}

/// Control record type of a commit marker (an abort marker's is 0).
pub const MARKER_COMMIT: i16 = 1;
pub const MARKER_ABORT: i16 = 0;

/// Encodes a transaction marker as Kafka writes it: a transactional control batch of one
/// record whose key is `(version 0, type)` and value `(version 0, coordinator epoch)`,
/// base offset 0 (offsets are assigned when it is indexed).
pub fn encode_marker(
    producer_id: i64,
    epoch: i16,
    marker_type: i16,
    coordinator_epoch: i32,
    timestamp: i64,
) -> bytes::Bytes {
    use bytes::BufMut;
    let mut b = bytes::BytesMut::with_capacity(BATCH_HEADER_LEN + 17);
    b.put_i64(0); // base offset
    b.put_i32(0); // batch length, set below
    b.put_i32(0); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, set below
    b.put_i16(ATTR_TRANSACTIONAL | ATTR_CONTROL);
    b.put_i32(0); // last offset delta
    b.put_i64(timestamp);
    b.put_i64(timestamp);
    b.put_i64(producer_id);
    b.put_i16(epoch);
    b.put_i32(-1); // base sequence
    b.put_i32(1); // records
                  // One record of 16 bytes (zig-zag varint 16 = 0x20): attributes, timestamp delta,
                  // offset delta, key length 4, key, value length 6, value, no headers.
    b.put_slice(&[0x20, 0, 0, 0, 0x08]);
    b.put_i16(0);
    b.put_i16(marker_type);
    b.put_u8(0x0c);
    b.put_i16(0);
    b.put_i32(coordinator_epoch);
    b.put_u8(0);
    let len = (b.len() - LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// The control record type of a control batch (its first record's key), if it is one and
/// its first record can be read.
pub fn control_type(batch: &[u8]) -> Option<i16> {
    fn varint(buf: &[u8], at: &mut usize) -> Option<i64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *buf.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        None
    }
    let header = BatchHeader::parse(batch).ok()?;
    if !header.is_control() || header.compression() != 0 || header.record_count < 1 {
        return None;
    }
    let mut at = BATCH_HEADER_LEN;
    varint(batch, &mut at)?; // record length
    at += 1; // attributes
    varint(batch, &mut at)?; // timestamp delta
    varint(batch, &mut at)?; // offset delta
    if varint(batch, &mut at)? < 4 {
        return None;
    }
    let key = batch.get(at..at + 4)?;
    Some(i16::from_be_bytes([key[2], key[3]]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };
    use proptest::prelude::*;

    #[test]
    fn markers_decode_as_kafka_control_batches() {
        for kind in [MARKER_COMMIT, MARKER_ABORT] {
            let m = encode_marker(4242, 3, kind, 0, 1_700_000_000_000);
            let header = BatchHeader::parse(&m).expect("header");
            header.validate(&m).expect("crc");
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(
                (
                    header.producer_id,
                    header.producer_epoch,
                    header.offset_span()
                ),
                (4242, 3, 1)
            );
            assert_eq!(control_type(&m), Some(kind));
            let mut buf = m.clone();
            let set = RecordBatchDecoder::decode(&mut buf).expect("decode");
            let r = &set.records[0];
            assert!(r.control && r.transactional);
            let key = r.key.as_ref().expect("key");
            assert_eq!(i16::from_be_bytes([key[2], key[3]]), kind);
        }
    }

    pub(crate) fn record(offset: i64, value: &[u8]) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 7,
            producer_epoch: 1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: 10 + offset as i32,
            timestamp: 1_700_000_000_000 + offset,
            key: Some(Bytes::from(format!("k{offset}"))),
            value: Some(Bytes::copy_from_slice(value)),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"v")),
            )]
            .into_iter()
            .collect(),
        }
    }

    pub(crate) fn encode(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    #[test]
    fn parses_what_the_encoder_writes() {
        let records: Vec<_> = (0..5).map(|i| record(i, b"hello")).collect();
        let bytes = encode(&records, Compression::Gzip);
        let (header, batch) = batches(&bytes).next().expect("one batch").expect("valid");
        assert_eq!(header.size, bytes.len());
        assert_eq!(header.record_count, 5);
        assert_eq!(header.last_offset_delta, 4);
        assert_eq!(header.producer_id, 7);
        assert_eq!(header.base_sequence, 10);
        assert_eq!(header.last_sequence(), 14);
        assert_eq!(header.max_timestamp, 1_700_000_000_004);
        assert_eq!(header.compression(), 1);
        header.validate(&batch).expect("valid batch");
    }

    #[test]
    fn detects_corruption() {
        let bytes = encode(&[record(0, b"payload")], Compression::None);
        let mut corrupt = bytes.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let header = BatchHeader::parse(&corrupt).expect("header");
        assert!(matches!(
            header.validate(&corrupt),
            Err(BatchError::CrcMismatch { .. })
        ));
        let mut v1 = bytes.to_vec();
        v1[16] = 1;
        assert_eq!(
            BatchHeader::parse(&v1),
            Err(BatchError::UnsupportedMagic(1))
        );
        let truncated = bytes.slice(..bytes.len() - 3);
        assert!(matches!(
            batches(&truncated).next(),
            Some(Err(BatchError::Truncated { .. }))
        ));
    }

    #[test]
    fn sequence_wraps() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 3), 8);
    }

    proptest! {
        // Patching offsets keeps every batch decodable with the same records at new offsets.
        #[test]
        fn patching_keeps_batches_valid(
            sizes in proptest::collection::vec(1usize..20, 1..6),
            base in 0i64..1_000_000_000,
            codec in 0usize..5,
        ) {
            let compression = [Compression::None, Compression::Gzip, Compression::Snappy,
                Compression::Lz4, Compression::Zstd][codec];
            let mut buf = BytesMut::new();
            for n in &sizes {
                let records: Vec<_> = (0..*n as i64).map(|i| record(i, b"v")).collect();
                buf.extend_from_slice(&encode(&records, compression));
            }
            let next = patch_offsets(&mut buf, base, 0).expect("patch");
            let total: usize = sizes.iter().sum();
            prop_assert_eq!(next, base + total as i64);
            let mut bytes = buf.freeze();
            let sets = RecordBatchDecoder::decode_all(&mut bytes).expect("decode");
            let offsets: Vec<i64> = sets.iter().flat_map(|s| s.records.iter().map(|r| r.offset)).collect();
            let expected: Vec<i64> = (base..base + total as i64).collect();
            prop_assert_eq!(offsets, expected);
        }
    }
}
