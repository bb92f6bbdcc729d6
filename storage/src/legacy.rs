//! Kafka's message formats v0 and v1 (the "message sets" of clients older than Kafka
//! 0.11): produced message sets are up-converted into one v2 batch, and stored batches are
//! down-converted for Fetch v0–v3.
//!
//! A message on the wire: offset `i64`, size `i32`, then `size` bytes: CRC `u32` (CRC-32
//! of the rest), magic `i8`, attributes `i8` (bits 0–2 the codec, bit 3 LogAppendTime in
//! v1), timestamp `i64` (v1 only), key and value (`i32` length, -1 for null). A compressed
//! message's value is the compressed message set of its inner messages, which have the
//! wrapper's magic and no compression of their own.
//!
//! As everywhere in the produce path, nothing read from the bytes sizes an allocation
//! before it is checked against the bytes present, and decompression is bounded.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::batch::batches;
use crate::compression::{self, DecompressError, MAX_UNCOMPRESSED_BATCH_BYTES};
use crate::records::{decode_batch, encode_rows, Row};

/// Where the magic byte sits in a message and in a v2 batch alike.
pub const MAGIC_AT: usize = 16;
/// Offset and size, in front of every message.
const LOG_OVERHEAD: usize = 12;
/// CRC, magic, attributes and the two lengths: the smallest v0 message.
const MIN_MESSAGE: usize = 4 + 1 + 1 + 4 + 4;
const ATTR_CODEC: u8 = 0x07;
const ATTR_LOG_APPEND_TIME: u8 = 0x08;

#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("message {index}: CRC is {stored:#010x}, the message's bytes give {computed:#010x}")]
    Crc {
        index: usize,
        stored: u32,
        computed: u32,
    },
    #[error("message {index}: {reason}")]
    Malformed { index: usize, reason: &'static str },
    #[error("message {index}: {source}")]
    Decompress {
        index: usize,
        source: DecompressError,
    },
    #[error("message {index}: {reason}")]
    Invalid { index: usize, reason: &'static str },
    #[error("a message set without messages")]
    Empty,
}

impl LegacyError {
    /// Whether the bytes are damaged (Kafka's CORRUPT_MESSAGE), rather than well-formed
    /// but not acceptable (INVALID_RECORD).
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            Self::Crc { .. } | Self::Malformed { .. } | Self::Decompress { .. }
        )
    }
}

/// The magic of the first message or batch in `records`, if it is long enough to say.
pub fn magic(records: &[u8]) -> Option<i8> {
    records.get(MAGIC_AT).map(|&m| m as i8)
}

/// One decoded message.
struct Message {
    magic: i8,
    attributes: u8,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

fn length_prefixed(buf: &mut Bytes, index: usize) -> Result<Option<Bytes>, LegacyError> {
    let malformed = |reason| LegacyError::Malformed { index, reason };
    if buf.remaining() < 4 {
        return Err(malformed("truncated length"));
    }
    let len = buf.get_i32();
    if len < 0 {
        return Ok(None);
    }
    if buf.remaining() < len as usize {
        return Err(malformed("key or value longer than the message"));
    }
    Ok(Some(buf.split_to(len as usize)))
}

/// Splits off and checks the next message of `set` (`index` numbers it in errors).
fn next_message(set: &mut Bytes, index: usize) -> Result<Message, LegacyError> {
    let malformed = |reason| LegacyError::Malformed { index, reason };
    if set.remaining() < LOG_OVERHEAD {
        return Err(malformed("truncated offset and size"));
    }
    let _offset = set.get_i64();
    let size = set.get_i32();
    if size < MIN_MESSAGE as i32 {
        return Err(malformed("message size too small"));
    }
    if set.remaining() < size as usize {
        return Err(malformed("message size beyond the message set"));
    }
    let mut m = set.split_to(size as usize);
    let stored = m.get_u32();
    let computed = crc32fast::hash(&m);
    if stored != computed {
        return Err(LegacyError::Crc {
            index,
            stored,
            computed,
        });
    }
    let magic = m.get_i8();
    let attributes = m.get_u8();
    let timestamp = match magic {
        0 => crate::validate::NO_TIMESTAMP,
        1 if m.remaining() >= 8 => match m.get_i64() {
            // Kafka's LegacyRecord: -1 is "no timestamp", other negatives are invalid.
            t if t < crate::validate::NO_TIMESTAMP => {
                return Err(LegacyError::Invalid {
                    index,
                    reason: "a negative timestamp other than -1",
                })
            }
            t => t,
        },
        1 => return Err(malformed("truncated timestamp")),
        _ => {
            return Err(LegacyError::Invalid {
                index,
                reason: "a message set mixes magic 0/1 with record batches",
            })
        }
    };
    let key = length_prefixed(&mut m, index)?;
    let value = length_prefixed(&mut m, index)?;
    if m.has_remaining() {
        return Err(malformed("bytes after the value"));
    }
    Ok(Message {
        magic,
        attributes,
        timestamp,
        key,
        value,
    })
}

/// The record of a message as a row (offsets are given later).
fn row(m: Message, offset: i64) -> Row {
    Row {
        offset,
        timestamp: m.timestamp,
        key: m.key,
        value: m.value,
        headers: Vec::new(),
    }
}

/// Converts a produced message set (magic 0 or 1, compressed or not) into one v2 batch
/// holding the same records in order, with base offset 0: keys, values and (v1) create
/// timestamps kept, v0's missing timestamps as -1, as Kafka's LogValidator converts them.
/// Every message's CRC is checked; a compressed message must hold uncompressed messages
/// of its own magic. The result is uncompressed and at most
/// [`MAX_UNCOMPRESSED_BATCH_BYTES`] of records.
pub fn up_convert(set: &Bytes) -> Result<Bytes, LegacyError> {
    let mut rest = set.clone();
    let mut rows: Vec<Row> = Vec::new();
    let mut budget = MAX_UNCOMPRESSED_BATCH_BYTES;
    let mut first_magic = None;
    let mut index = 0usize;
    while rest.has_remaining() {
        let m = next_message(&mut rest, index)?;
        if *first_magic.get_or_insert(m.magic) != m.magic {
            return Err(LegacyError::Invalid {
                index,
                reason: "messages of magic 0 and 1 in one message set",
            });
        }
        let codec = i16::from(m.attributes & ATTR_CODEC);
        if codec == 0 {
            let size =
                m.key.as_ref().map_or(0, Bytes::len) + m.value.as_ref().map_or(0, Bytes::len);
            budget = budget.checked_sub(size).ok_or(LegacyError::Decompress {
                index,
                source: DecompressError::TooLarge {
                    limit: MAX_UNCOMPRESSED_BATCH_BYTES,
                },
            })?;
            rows.push(row(m, rows.len() as i64));
            index += 1;
            continue;
        }
        let Some(value) = m.value else {
            return Err(LegacyError::Invalid {
                index,
                reason: "a compressed message without a value",
            });
        };
        // LZ4 frames of magic 0 carry a wrong header checksum (KIP-57); the decoder does
        // not read it.
        let mut inner = compression::decompress(codec, value, budget)
            .map_err(|source| LegacyError::Decompress { index, source })?;
        budget -= inner.len();
        let before = rows.len();
        while inner.has_remaining() {
            let im = next_message(&mut inner, index)?;
            if im.magic != m.magic {
                return Err(LegacyError::Invalid {
                    index,
                    reason: "an inner message whose magic differs from its wrapper's",
                });
            }
            if im.attributes & ATTR_CODEC != 0 {
                return Err(LegacyError::Invalid {
                    index,
                    reason: "a compressed message inside a compressed message",
                });
            }
            rows.push(row(im, rows.len() as i64));
        }
        if rows.len() == before {
            return Err(LegacyError::Invalid {
                index,
                reason: "a compressed message without inner messages",
            });
        }
        index += 1;
    }
    if rows.is_empty() {
        return Err(LegacyError::Empty);
    }
    Ok(encode_rows(&rows))
}

/// Appends one message (magic 0 or 1, uncompressed) for `row` to `out`.
fn put_message(out: &mut BytesMut, magic: i8, log_append_time: bool, row: &Row) {
    let key_len = row.key.as_ref().map_or(0, Bytes::len);
    let value_len = row.value.as_ref().map_or(0, Bytes::len);
    let size = MIN_MESSAGE + if magic == 1 { 8 } else { 0 } + key_len + value_len;
    out.reserve(LOG_OVERHEAD + size);
    out.put_i64(row.offset);
    out.put_i32(size as i32);
    let crc_at = out.len();
    out.put_u32(0);
    out.put_i8(magic);
    let attributes = if magic == 1 && log_append_time {
        ATTR_LOG_APPEND_TIME
    } else {
        0
    };
    out.put_u8(attributes);
    if magic == 1 {
        out.put_i64(row.timestamp);
    }
    for field in [&row.key, &row.value] {
        match field {
            None => out.put_i32(-1),
            Some(b) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
        }
    }
    let crc = crc32fast::hash(&out[crc_at + 4..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Converts the v2 batches of a fetch answer into an uncompressed message set of `magic`
/// (0 for Fetch v0–v1, 1 for v2–v3): one message per record at or after `from_offset`,
/// control batches and record headers left out (the old formats have neither). Stops
/// before the message that would take the set past `max_bytes`, but always holds the
/// first one, so a consumer makes progress. A batch that cannot be read ends the set.
pub fn down_convert(records: &Bytes, magic: i8, from_offset: i64, max_bytes: usize) -> Bytes {
    let mut out = BytesMut::new();
    for item in batches(records) {
        let Ok((header, batch)) = item else {
            break;
        };
        if header.is_control() || header.last_offset() < from_offset {
            continue;
        }
        let Ok(rows) = decode_batch(&batch, header.base_offset) else {
            break;
        };
        let log_append_time = header.is_log_append_time();
        for r in rows.iter().filter(|r| r.offset >= from_offset) {
            let before = out.len();
            put_message(&mut out, magic, log_append_time, r);
            if out.len() > max_bytes && before > 0 {
                out.truncate(before);
                return out.freeze();
            }
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchHeader;

    fn message(
        magic: i8,
        attributes: u8,
        ts: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> BytesMut {
        let row = Row {
            offset: 0,
            timestamp: ts,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers: Vec::new(),
        };
        let mut out = BytesMut::new();
        put_message(&mut out, magic, false, &row);
        if attributes != 0 {
            out[LOG_OVERHEAD + 5] = attributes;
            let crc = crc32fast::hash(&out[LOG_OVERHEAD + 4..]);
            out[LOG_OVERHEAD..LOG_OVERHEAD + 4].copy_from_slice(&crc.to_be_bytes());
        }
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("valid test input");
        e.finish().expect("valid test input")
    }

    fn rows_of(batch: &Bytes) -> Vec<Row> {
        let header = BatchHeader::parse(batch).expect("valid test input");
        header.validate(batch).expect("valid test input");
        decode_batch(batch, 0).expect("valid test input")
    }

    #[test]
    fn v0_and_v1_messages_become_one_batch() {
        let mut set = message(1, 0, 1_700_000_000_000, Some(b"k1"), Some(b"v1"));
        set.extend_from_slice(&message(1, 0, 1_700_000_000_005, None, Some(b"v2")));
        set.extend_from_slice(&message(1, 0, 1_700_000_000_001, Some(b"k3"), None));
        let rows = rows_of(&up_convert(&set.freeze()).expect("valid test input"));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(rows[1].key, None);
        assert_eq!(rows[2].value, None);
        assert_eq!(
            rows.iter()
                .map(|r| (r.offset, r.timestamp))
                .collect::<Vec<_>>(),
            [
                (0, 1_700_000_000_000),
                (1, 1_700_000_000_005),
                (2, 1_700_000_000_001)
            ]
        );

        let set = message(0, 0, 0, Some(b"k"), Some(b"v"));
        let rows = rows_of(&up_convert(&set.freeze()).expect("valid test input"));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].timestamp, -1);
    }

    #[test]
    fn compressed_wrappers_are_unpacked() {
        let mut inner = message(1, 0, 10, Some(b"a"), Some(b"1"));
        inner.extend_from_slice(&message(1, 0, 11, Some(b"b"), Some(b"2")));
        let mut set = message(1, 1, 11, None, Some(&gzip(&inner)));
        set.extend_from_slice(&message(1, 0, 12, Some(b"c"), Some(b"3")));
        let rows = rows_of(&up_convert(&set.freeze()).expect("valid test input"));
        let keys: Vec<_> = rows
            .iter()
            .map(|r| r.key.clone().expect("valid test input"))
            .collect();
        assert_eq!(keys, [&b"a"[..], b"b", b"c"]);
        assert_eq!(rows.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn damaged_or_invalid_sets_are_refused() {
        let good = message(1, 0, 10, Some(b"k"), Some(b"v"));
        // A flipped value byte: the CRC no longer matches.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let e = up_convert(&bad.freeze()).expect_err("refused");
        assert!(
            matches!(e, LegacyError::Crc { index: 0, .. }) && e.is_corrupt(),
            "{e}"
        );
        // A size beyond the bytes present.
        let mut long = good.clone();
        long[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(up_convert(&long.freeze())
            .expect_err("refused")
            .is_corrupt());
        // A key length beyond the message (CRC made valid).
        let mut key = good.clone();
        key[LOG_OVERHEAD + 14..LOG_OVERHEAD + 18].copy_from_slice(&1000i32.to_be_bytes());
        let crc = crc32fast::hash(&key[LOG_OVERHEAD + 4..]);
        key[LOG_OVERHEAD..LOG_OVERHEAD + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            up_convert(&key.freeze()),
            Err(LegacyError::Malformed { .. })
        ));
        // Mixed magic, nested compression, empty wrappers, empty sets.
        let mut mixed = good.clone();
        mixed.extend_from_slice(&message(0, 0, 0, Some(b"k"), Some(b"v")));
        assert!(!up_convert(&mixed.freeze())
            .expect_err("refused")
            .is_corrupt());
        let nested = message(
            1,
            1,
            0,
            None,
            Some(&gzip(&message(1, 1, 0, None, Some(&gzip(&good))))),
        );
        assert!(matches!(
            up_convert(&nested.freeze()),
            Err(LegacyError::Invalid { .. })
        ));
        let empty_wrapper = message(1, 1, 0, None, Some(&gzip(b"")));
        assert!(matches!(
            up_convert(&empty_wrapper.freeze()),
            Err(LegacyError::Invalid { .. })
        ));
        assert!(matches!(up_convert(&Bytes::new()), Err(LegacyError::Empty)));
        // A gzip bomb stops at the bound.
        let mut zeros_inner = BytesMut::new();
        let big = vec![0u8; 1 << 20];
        for _ in 0..70 {
            zeros_inner.extend_from_slice(&message(1, 0, 0, None, Some(&big)));
        }
        let bomb = message(1, 1, 0, None, Some(&gzip(&zeros_inner)));
        assert!(matches!(
            up_convert(&bomb.freeze()),
            Err(LegacyError::Decompress {
                source: DecompressError::TooLarge { .. },
                ..
            })
        ));
    }

    #[test]
    fn batches_convert_down_and_back() {
        let rows: Vec<Row> = (0..5)
            .map(|i| Row {
                offset: 100 + i,
                timestamp: 1_000 + i,
                key: Some(Bytes::from(format!("k{i}"))),
                value: (i != 2).then(|| Bytes::from(format!("value {i}"))),
                headers: vec![("h".into(), None)],
            })
            .collect();
        let batch = crate::records::encode_batches(&rows).expect("valid test input");
        for magic in [0, 1] {
            let set = down_convert(&batch, magic, 101, usize::MAX);
            let mut rest = set.clone();
            let mut seen = Vec::new();
            while rest.has_remaining() {
                let offset = i64::from_be_bytes(rest[..8].try_into().expect("valid test input"));
                let m = next_message(&mut rest, 0).expect("valid test input");
                assert_eq!(m.magic, magic);
                seen.push((offset, m.timestamp, m.key, m.value));
            }
            let expected: Vec<_> = rows[1..]
                .iter()
                .map(|r| {
                    let ts = if magic == 0 { -1 } else { r.timestamp };
                    (r.offset, ts, r.key.clone(), r.value.clone())
                })
                .collect();
            assert_eq!(seen, expected);
            // And up again: the same keys and values.
            let back = rows_of(&up_convert(&set).expect("valid test input"));
            assert_eq!(back.len(), 4);
            assert_eq!(back[1].value, None);
        }
        // The limit keeps whole messages, and always the first.
        let one = down_convert(&batch, 1, 100, 1);
        assert_eq!(
            rows_of(&up_convert(&one).expect("valid test input")).len(),
            1
        );
        // Records 0 and 1 have messages of one size: twice it holds exactly two.
        let two = down_convert(&batch, 1, 100, one.len() * 2);
        assert_eq!(
            rows_of(&up_convert(&two).expect("valid test input")).len(),
            2
        );
    }

    #[test]
    fn magic_zero_lz4_header_checksum_is_repaired() {
        use std::io::Write;
        let inner = message(0, 0, 0, Some(b"k"), Some(b"lz4 v0"));
        let mut enc = lz4::EncoderBuilder::new()
            .build(Vec::new())
            .expect("valid test input");
        enc.write_all(&inner).expect("valid test input");
        let (mut frame, r) = enc.finish();
        r.expect("valid test input");
        // Break the header checksum the way Kafka 0.8–0.9 clients did: over the magic too.
        let flg = frame[4];
        let end = 6 + if flg & 0x08 != 0 { 8 } else { 0 } + if flg & 0x01 != 0 { 4 } else { 0 };
        frame[end] = (twox_hash::XxHash32::oneshot(0, &frame[..end]) >> 8) as u8;
        let set = message(0, 3, 0, None, Some(&frame));
        let rows = rows_of(&up_convert(&set.freeze()).expect("valid test input"));
        assert_eq!(rows[0].value.as_deref(), Some(&b"lz4 v0"[..]));
    }
}
