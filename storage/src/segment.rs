//! The WAL segment object format (version 1).
//!
//! One segment holds the record batches of many partitions, exactly as producers sent them
//! (v2, still compressed, base offset 0), grouped into one chunk per partition:
//!
//! ```text
//! header   16 bytes  "ICESTWAL" | version u16 | flags u16 | reserved u32
//! chunks   ...       record batches, partition after partition
//! footer   ...       chunk count u32, then per chunk (64 bytes):
//!                    topic id [16] | partition i32 | position u64 | length u32 |
//!                    batch count u32 | offset span u32 | first timestamp i64 |
//!                    max timestamp i64 | producer id i64
//! trailer  16 bytes  footer length u32 | footer crc32c u32 | "ICESTEND"
//! ```
//!
//! Zero bytes may sit between the last chunk and the footer: a writer pads a segment to a
//! multiple of its store's block size ([`padded_footer`]), so the local store writes
//! whole blocks and never reads a partial one back.
//!
//! All integers are big-endian. The footer makes a segment self-describing: debugging,
//! recovery and compaction can read it without the offset index. `producer id` is the
//! producer of the chunk's first batch, or -1.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

pub const SEGMENT_MAGIC: &[u8; 8] = b"ICESTWAL";
pub const TRAILER_MAGIC: &[u8; 8] = b"ICESTEND";
pub const SEGMENT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 16;
pub const TRAILER_LEN: usize = 16;
const CHUNK_ENTRY_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error("segment is too short ({0} bytes)")]
    TooShort(usize),
    #[error("segment header magic is wrong")]
    BadMagic,
    #[error("segment format version {0} is not supported")]
    UnsupportedVersion(u16),
    #[error("segment footer crc mismatch")]
    FooterCrc,
    #[error("segment footer is malformed: {0}")]
    MalformedFooter(&'static str),
}

/// Where one partition's batches sit in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    pub topic_id: Uuid,
    pub partition: i32,
    pub position: u64,
    pub length: u32,
    pub batch_count: u32,
    /// Number of offsets the chunk's batches occupy.
    pub offset_span: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
}

/// Key of a segment object under the store prefix: `wal/<uuid-v7>.seg`.
pub fn segment_key(id: Uuid) -> String {
    format!("wal/{}.seg", id.as_hyphenated())
}

/// The segment id in a `wal/<uuid>.seg` key, if it is one.
pub fn parse_segment_key(key: &str) -> Option<Uuid> {
    let name = key.rsplit('/').next()?;
    Uuid::parse_str(name.strip_suffix(".seg")?).ok()
}

/// The segment id of a staging file the local store left for it (`wal/<uuid>.seg#<hex>`:
/// a put that a crash interrupted), if `key` is one. The object itself never has a `#`.
pub fn parse_staging_key(key: &str) -> Option<Uuid> {
    // As `direct_fs::staged_for`; this file is also built alone, in the fuzz crate.
    let (object, suffix) = key.rsplit_once('#')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    parse_segment_key(object)
}

pub fn encode_header() -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_LEN);
    b.put_slice(SEGMENT_MAGIC);
    b.put_u16(SEGMENT_VERSION);
    b.put_u16(0);
    b.put_u32(0);
    b.freeze()
}

/// Encodes footer and trailer for the given chunks.
pub fn encode_footer(chunks: &[ChunkInfo]) -> Bytes {
    let footer_len = 4 + chunks.len() * CHUNK_ENTRY_LEN;
    let mut b = BytesMut::with_capacity(footer_len + TRAILER_LEN);
    b.put_u32(chunks.len() as u32);
    for c in chunks {
        b.put_slice(c.topic_id.as_bytes());
        b.put_i32(c.partition);
        b.put_u64(c.position);
        b.put_u32(c.length);
        b.put_u32(c.batch_count);
        b.put_u32(c.offset_span);
        b.put_i64(c.first_timestamp);
        b.put_i64(c.max_timestamp);
        b.put_i64(c.producer_id);
    }
    let crc = crc32c::crc32c(&b);
    b.put_u32(footer_len as u32);
    b.put_u32(crc);
    b.put_slice(TRAILER_MAGIC);
    b.freeze()
}

/// Zero padding, footer and trailer for the given chunks, for a segment whose chunks end
/// at `data_end`: the segment's length becomes a multiple of `align` (1 or 0: no padding).
pub fn padded_footer(chunks: &[ChunkInfo], data_end: u64, align: usize) -> Bytes {
    static ZEROS: [u8; 4096] = [0; 4096];
    let footer = encode_footer(chunks);
    let align = align.max(1) as u64;
    let end = data_end + footer.len() as u64;
    let pad = ((align - end % align) % align) as usize;
    if pad == 0 {
        return footer;
    }
    let mut b = BytesMut::with_capacity(pad + footer.len());
    let mut rest = pad;
    while rest > 0 {
        let n = rest.min(ZEROS.len());
        b.put_slice(&ZEROS[..n]);
        rest -= n;
    }
    b.put_slice(&footer);
    b.freeze()
}

/// Checks the header of a segment (its first [`HEADER_LEN`] bytes).
pub fn check_header(header: &[u8]) -> Result<(), SegmentError> {
    if header.len() < HEADER_LEN {
        return Err(SegmentError::TooShort(header.len()));
    }
    if &header[..8] != SEGMENT_MAGIC {
        return Err(SegmentError::BadMagic);
    }
    let version = u16::from_be_bytes([header[8], header[9]]);
    if version != SEGMENT_VERSION {
        return Err(SegmentError::UnsupportedVersion(version));
    }
    Ok(())
}

/// Length of the footer, read from the trailer (the last [`TRAILER_LEN`] bytes).
pub fn footer_len(trailer: &[u8]) -> Result<usize, SegmentError> {
    if trailer.len() != TRAILER_LEN {
        return Err(SegmentError::TooShort(trailer.len()));
    }
    if &trailer[8..] != TRAILER_MAGIC {
        return Err(SegmentError::BadMagic);
    }
    Ok(u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as usize)
}

/// Decodes the footer given the footer bytes followed by the trailer.
pub fn decode_footer(tail: &[u8]) -> Result<Vec<ChunkInfo>, SegmentError> {
    if tail.len() < TRAILER_LEN {
        return Err(SegmentError::TooShort(tail.len()));
    }
    let (footer, trailer) = tail.split_at(tail.len() - TRAILER_LEN);
    let len = footer_len(trailer)?;
    if len != footer.len() {
        return Err(SegmentError::MalformedFooter(
            "length does not match trailer",
        ));
    }
    let crc = u32::from_be_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    if crc32c::crc32c(footer) != crc {
        return Err(SegmentError::FooterCrc);
    }
    let mut b = footer;
    if b.remaining() < 4 {
        return Err(SegmentError::MalformedFooter("missing chunk count"));
    }
    let count = b.get_u32() as usize;
    if b.remaining() != count * CHUNK_ENTRY_LEN {
        return Err(SegmentError::MalformedFooter(
            "chunk count does not match length",
        ));
    }
    let mut chunks = Vec::with_capacity(count);
    for _ in 0..count {
        let mut id = [0u8; 16];
        b.copy_to_slice(&mut id);
        chunks.push(ChunkInfo {
            topic_id: Uuid::from_bytes(id),
            partition: b.get_i32(),
            position: b.get_u64(),
            length: b.get_u32(),
            batch_count: b.get_u32(),
            offset_span: b.get_u32(),
            first_timestamp: b.get_i64(),
            max_timestamp: b.get_i64(),
            producer_id: b.get_i64(),
        });
    }
    Ok(chunks)
}

/// Decodes a whole segment held in memory: checks header and footer and returns the chunks.
pub fn decode_segment(bytes: &[u8]) -> Result<Vec<ChunkInfo>, SegmentError> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN + 4 {
        return Err(SegmentError::TooShort(bytes.len()));
    }
    check_header(&bytes[..HEADER_LEN])?;
    let len = footer_len(&bytes[bytes.len() - TRAILER_LEN..])?;
    if len + TRAILER_LEN + HEADER_LEN > bytes.len() {
        return Err(SegmentError::MalformedFooter("footer longer than segment"));
    }
    let chunks = decode_footer(&bytes[bytes.len() - TRAILER_LEN - len..])?;
    let data_end = (bytes.len() - TRAILER_LEN - len) as u64;
    for c in &chunks {
        if c.position < HEADER_LEN as u64 || c.position + u64::from(c.length) > data_end {
            return Err(SegmentError::MalformedFooter(
                "chunk outside the data region",
            ));
        }
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(partition: i32, position: u64, length: u32) -> ChunkInfo {
        ChunkInfo {
            topic_id: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
            partition,
            position,
            length,
            batch_count: 2,
            offset_span: 10,
            first_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_123,
            producer_id: -1,
        }
    }

    fn build(chunks: &[ChunkInfo], data: &[u8]) -> Vec<u8> {
        let mut v = encode_header().to_vec();
        v.extend_from_slice(data);
        v.extend_from_slice(&encode_footer(chunks));
        v
    }

    #[test]
    fn round_trip() {
        let chunks = vec![chunk(0, 16, 100), chunk(3, 116, 50)];
        let bytes = build(&chunks, &[7u8; 150]);
        assert_eq!(decode_segment(&bytes).expect("decode"), chunks);
    }

    #[test]
    fn padded_segments_decode_to_the_same_chunks() {
        let chunks = vec![chunk(0, 16, 100), chunk(3, 116, 7)];
        let mut segment = encode_header().to_vec();
        segment.extend_from_slice(&[0xab; 107]);
        let data_end = segment.len() as u64;
        for align in [0, 1, 512, 4096, 8192] {
            let mut padded = segment.clone();
            padded.extend_from_slice(&padded_footer(&chunks, data_end, align));
            assert_eq!(padded.len() % align.max(1), 0, "align {align}");
            assert_eq!(decode_segment(&padded), Ok(chunks.clone()), "align {align}");
        }
        // Already a multiple: nothing is added.
        let exact = 4096 - encode_footer(&chunks).len() as u64;
        assert_eq!(padded_footer(&chunks, exact, 4096), encode_footer(&chunks));
    }

    #[test]
    fn rejects_damage() {
        let chunks = vec![chunk(0, 16, 100)];
        let mut bytes = build(&chunks, &[7u8; 100]);
        let n = bytes.len();
        bytes[n - TRAILER_LEN - 10] ^= 1;
        assert_eq!(decode_segment(&bytes), Err(SegmentError::FooterCrc));
        let mut bytes = build(&chunks, &[7u8; 100]);
        bytes[0] = b'X';
        assert_eq!(decode_segment(&bytes), Err(SegmentError::BadMagic));
        let bytes = build(&[chunk(0, 16, 500)], &[7u8; 100]);
        assert!(matches!(
            decode_segment(&bytes),
            Err(SegmentError::MalformedFooter(_))
        ));
    }

    /// The checked-in fixture pins format version 1: a change to the format must be a
    /// visible diff of this file.
    #[test]
    fn fixture_v1() {
        let fixture = include_bytes!("../fixtures/segment-v1.seg");
        let chunks = decode_segment(fixture).expect("fixture decodes");
        assert_eq!(chunks, vec![chunk(0, 16, 4), chunk(3, 20, 4)]);
        assert_eq!(&fixture[16..24], b"abcdwxyz");
    }

    #[test]
    fn segment_keys() {
        let id = Uuid::now_v7();
        assert_eq!(parse_segment_key(&segment_key(id)), Some(id));
        assert_eq!(parse_segment_key("wal/nope.seg"), None);
        let staging = format!("{}#{}", segment_key(id), Uuid::new_v4().simple());
        assert_eq!(parse_segment_key(&staging), None);
        assert_eq!(parse_staging_key(&staging), Some(id));
        assert_eq!(parse_staging_key(&segment_key(id)), None);
        assert_eq!(parse_staging_key(&format!("{}#", segment_key(id))), None);
        assert_eq!(parse_staging_key(&format!("{}#x1", segment_key(id))), None);
    }
}
