//! Decoding the records of a v2 record batch into rows (for the table) and encoding rows
//! back into batches (for consumers reading compacted offsets).
//!
//! `kafka-protocol`'s record type keeps headers in a map, which would merge repeated
//! header keys; Kafka allows them, so rows keep headers as an ordered list and the record
//! format is read here. Nothing read from a batch sizes an allocation before it is checked
//! against the bytes present (decompression is bounded by [`crate::compression`]).

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::batch::{BatchHeader, BATCH_HEADER_LEN};

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("batch: {0}")]
    Batch(#[from] crate::batch::BatchError),
    #[error("decompressing a batch: {0}")]
    Decompress(#[from] crate::compression::DecompressError),
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    #[error("encoding records: {0}")]
    Encode(String),
}

/// One Kafka record as a table row sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

fn varint(buf: &mut Bytes) -> Result<i64, RecordsError> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        if !buf.has_remaining() {
            return Err(RecordsError::Malformed("truncated varint"));
        }
        let b = buf.get_u8();
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(RecordsError::Malformed("varint too long"));
        }
    }
    // zig-zag
    Ok(((value >> 1) as i64) ^ -((value & 1) as i64))
}

fn bytes_field(buf: &mut Bytes) -> Result<Option<Bytes>, RecordsError> {
    let len = varint(buf)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err(RecordsError::Malformed("field longer than record"));
    }
    Ok(Some(buf.split_to(len)))
}

/// Decodes a batch whose records start at `base_offset` (the batch's own base offset
/// field is ignored, so stored batches need not be patched). Control batches yield no
/// rows.
pub fn decode_batch(batch: &Bytes, base_offset: i64) -> Result<Vec<Row>, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    if header.is_control() {
        return Ok(Vec::new());
    }
    let body = batch.slice(BATCH_HEADER_LEN..header.size.min(batch.len()));
    let mut data = crate::compression::decompress(
        header.compression(),
        body,
        crate::compression::MAX_UNCOMPRESSED_BATCH_BYTES,
    )?;
    // The count is the batch's claim: reserve no more than the bytes could hold (every
    // record takes at least 7 bytes).
    let mut rows = Vec::with_capacity((header.record_count.max(0) as usize).min(data.len() / 7));
    for _ in 0..header.record_count {
        let len = varint(&mut data)?;
        if len < 0 || data.remaining() < len as usize {
            return Err(RecordsError::Malformed("record length"));
        }
        let mut rec = data.split_to(len as usize);
        if !rec.has_remaining() {
            return Err(RecordsError::Malformed("empty record"));
        }
        let _attributes = rec.get_i8();
        let timestamp_delta = varint(&mut rec)?;
        let offset_delta = varint(&mut rec)?;
        let key = bytes_field(&mut rec)?;
        let value = bytes_field(&mut rec)?;
        let count = varint(&mut rec)?;
        if count < 0 || count as usize > rec.remaining() / 2 {
            return Err(RecordsError::Malformed("header count"));
        }
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let k = bytes_field(&mut rec)?.ok_or(RecordsError::Malformed("null header key"))?;
            let v = bytes_field(&mut rec)?;
            headers.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        let timestamp = if header.is_log_append_time() {
            header.max_timestamp
        } else {
            // Wrapping, as Java computes deltas: any timestamp survives the round trip.
            header.base_timestamp.wrapping_add(timestamp_delta)
        };
        rows.push(Row {
            offset: base_offset + offset_delta,
            timestamp,
            key,
            value,
            headers,
        });
    }
    Ok(rows)
}

/// Encodes rows (consecutive offsets or not) into uncompressed v2 batches with their
/// original offsets. Rows whose offsets are not consecutive start a new batch.
pub fn encode_batches(rows: &[Row]) -> Result<Bytes, RecordsError> {
    let mut out = BytesMut::new();
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        while end < rows.len() && rows[end].offset == rows[end - 1].offset + 1 {
            end += 1;
        }
        let base = rows[start].offset;
        let records: Vec<Record> = rows[start..end]
            .iter()
            .map(|r| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: r.offset,
                // The encoder starts a new batch whenever offset - sequence changes.
                sequence: (r.offset - base) as i32 - 1,
                timestamp: r.timestamp,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: Default::default(),
            })
            .collect();
        if rows[start..end].iter().any(|r| !r.headers.is_empty()) {
            encode_with_headers(&mut out, &rows[start..end]);
        } else {
            RecordBatchEncoder::encode(
                &mut out,
                &records,
                &RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                },
            )
            .map_err(|e| RecordsError::Encode(e.to_string()))?;
        }
        start = end;
    }
    Ok(out.freeze())
}

/// Encodes `rows` (consecutive offsets from the first row's) as one uncompressed v2 batch,
/// headers and all; nothing for no rows.
pub fn encode_rows(rows: &[Row]) -> Bytes {
    let mut out = BytesMut::new();
    if !rows.is_empty() {
        encode_with_headers(&mut out, rows);
    }
    out.freeze()
}

/// Encodes one batch by hand when headers are present (repeated header keys must
/// survive, which `kafka-protocol`'s header map cannot carry).
fn encode_with_headers(out: &mut BytesMut, rows: &[Row]) {
    use bytes::BufMut;
    fn put_varint(buf: &mut BytesMut, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            buf.put_u8((z as u8) | 0x80);
            z >>= 7;
        }
        buf.put_u8(z as u8);
    }
    fn put_field(buf: &mut BytesMut, b: Option<&[u8]>) {
        match b {
            None => put_varint(buf, -1),
            Some(b) => {
                put_varint(buf, b.len() as i64);
                buf.put_slice(b);
            }
        }
    }
    let base_offset = rows[0].offset;
    let base_ts = rows.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_ts = rows.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut body = BytesMut::new();
    for r in rows {
        let mut rec = BytesMut::new();
        rec.put_i8(0);
        put_varint(&mut rec, r.timestamp.wrapping_sub(base_ts));
        put_varint(&mut rec, r.offset - base_offset);
        put_field(&mut rec, r.key.as_deref());
        put_field(&mut rec, r.value.as_deref());
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_field(&mut rec, Some(k.as_bytes()));
            put_field(&mut rec, v.as_deref());
        }
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let last_delta = (rows[rows.len() - 1].offset - base_offset) as i32;
    let mut tail = BytesMut::with_capacity(40 + body.len());
    tail.put_i16(0); // attributes: no compression, create time
    tail.put_i32(last_delta);
    tail.put_i64(base_ts);
    tail.put_i64(max_ts);
    tail.put_i64(-1); // producer id
    tail.put_i16(-1); // producer epoch
    tail.put_i32(-1); // base sequence
    tail.put_i32(rows.len() as i32);
    tail.extend_from_slice(&body);
    let crc = crc32c::crc32c(&tail);
    out.put_i64(base_offset);
    out.put_i32((4 + 1 + 4 + tail.len()) as i32);
    out.put_i32(0); // partition leader epoch
    out.put_i8(2);
    out.put_u32(crc);
    out.extend_from_slice(&tail);
}

/// An empty v2 batch (no records) spanning offsets `base_offset..=last_offset`, as Kafka's
/// log compaction leaves behind: consumers move their position past it. Served where
/// offsets have no rows in the table (control batches, aborted transactions) at the end
/// of a read, so a consumer reaches the high watermark instead of re-fetching the gap.
pub fn encode_gap(base_offset: i64, last_offset: i64) -> Bytes {
    use bytes::BufMut;
    let mut tail = BytesMut::with_capacity(40);
    tail.put_i16(0); // attributes
    tail.put_i32((last_offset - base_offset).clamp(0, i64::from(i32::MAX)) as i32);
    tail.put_i64(-1); // base timestamp
    tail.put_i64(-1); // max timestamp
    tail.put_i64(-1); // producer id
    tail.put_i16(-1); // producer epoch
    tail.put_i32(-1); // base sequence
    tail.put_i32(0); // records
    let crc = crc32c::crc32c(&tail);
    let mut out = BytesMut::with_capacity(61);
    out.put_i64(base_offset);
    out.put_i32((4 + 1 + 4 + tail.len()) as i32);
    out.put_i32(0); // partition leader epoch
    out.put_i8(2);
    out.put_u32(crc);
    out.extend_from_slice(&tail);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::{encode, record};

    #[test]
    fn gaps_are_valid_empty_batches() {
        let gap = encode_gap(10, 14);
        let header = crate::batch::BatchHeader::parse(&gap).expect("header");
        header.validate(&gap).expect("crc");
        assert_eq!(
            (
                header.base_offset,
                header.last_offset(),
                header.record_count
            ),
            (10, 14, 0)
        );
        assert!(decode_batch(&gap, 10).expect("decode").is_empty());
    }
    use proptest::prelude::*;

    #[test]
    fn decodes_every_codec() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records: Vec<_> = (0..4).map(|i| record(i, b"value")).collect();
            let batch = encode(&records, compression);
            let rows = decode_batch(&batch, 100).expect("decode");
            assert_eq!(rows.len(), 4);
            assert_eq!(rows[2].offset, 102);
            assert_eq!(rows[2].timestamp, 1_700_000_000_002);
            assert_eq!(rows[2].key.as_deref(), Some(&b"k2"[..]));
            assert_eq!(rows[2].value.as_deref(), Some(&b"value"[..]));
            assert_eq!(
                rows[2].headers,
                vec![("h".into(), Some(Bytes::from_static(b"v")))]
            );
        }
    }

    fn row_strategy() -> impl Strategy<Value = Row> {
        (
            0i64..1_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)),
            proptest::collection::vec(
                (
                    "[a-c]{0,3}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..5)),
                ),
                0..4,
            ),
        )
            .prop_map(|(ts, key, value, headers)| Row {
                offset: 0,
                timestamp: 1_700_000_000_000 + ts,
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k, v.map(Bytes::from)))
                    .collect(),
            })
    }

    proptest! {
        // Rows survive encode → decode, including repeated header keys and null fields,
        // with gaps in offsets splitting batches.
        #[test]
        fn rows_round_trip(mut rows in proptest::collection::vec(row_strategy(), 1..30), gap in 0usize..30) {
            let mut offset = 1000;
            for (i, r) in rows.iter_mut().enumerate() {
                if i == gap { offset += 7; }
                r.offset = offset;
                offset += 1;
            }
            let encoded = encode_batches(&rows).expect("encode");
            let mut decoded = Vec::new();
            for item in crate::batch::batches(&encoded) {
                let (header, batch) = item.expect("valid batch");
                header.validate(&batch).expect("crc");
                decoded.extend(decode_batch(&batch, header.base_offset).expect("decode"));
            }
            prop_assert_eq!(decoded, rows);
        }
    }
}
