//! Bounded decompression of record batch bodies (gzip, snappy, lz4, zstd).
//!
//! A compressed batch is at most `message_max_bytes`, but what it expands to is chosen by
//! whoever wrote it: a few kilobytes of zstd can claim gigabytes of zeros. Every reader here
//! yields at most `limit` bytes and fails beyond it, and nothing is allocated from a size
//! the data claims before that size is checked against the limit.

use std::io::{BufRead, BufReader, Read};

use bytes::Bytes;

/// Most bytes the records of one batch may take once decompressed. A batch beyond it is
/// refused at Produce, so every stored batch decompresses within it.
pub const MAX_UNCOMPRESSED_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// The xerial snappy framing used by the Java client (magic, version, compatible version).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    #[error("records decompress to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{codec} data is corrupt: {reason}")]
    Corrupt { codec: &'static str, reason: String },
}

fn corrupt(codec: &'static str, e: impl std::fmt::Display) -> DecompressError {
    DecompressError::Corrupt {
        codec,
        reason: e.to_string(),
    }
}

/// A reader of the decompressed records of `body`, failing with `TooLarge` (as an
/// `io::Error` wrapping [`DecompressError`]) once more than `limit` bytes come out.
pub fn reader<'a>(
    codec: i16,
    body: &'a [u8],
    limit: usize,
) -> Result<Box<dyn BufRead + 'a>, DecompressError> {
    let inner: Box<dyn Read + 'a> = match codec {
        0 => {
            if body.len() > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            return Ok(Box::new(body));
        }
        1 => Box::new(flate2::read::MultiGzDecoder::new(body)),
        2 => Box::new(std::io::Cursor::new(snappy(body, limit)?)),
        3 => return Ok(Box::new(std::io::Cursor::new(lz4_frame(body, limit)?))),
        4 => Box::new(
            zstd::stream::read::Decoder::with_buffer(body).map_err(|e| corrupt("zstd", e))?,
        ),
        other => return Err(DecompressError::UnknownCodec(other)),
    };
    Ok(Box::new(BufReader::with_capacity(
        32 * 1024,
        Limited {
            inner,
            left: limit,
            limit,
        },
    )))
}

/// Decompresses `body` into memory (at most `limit` bytes); uncompressed bodies are
/// returned as they are.
pub fn decompress(codec: i16, body: Bytes, limit: usize) -> Result<Bytes, DecompressError> {
    if codec == 0 {
        if body.len() > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        return Ok(body);
    }
    match codec {
        2 => return snappy(&body, limit).map(Bytes::from),
        3 => return lz4_frame(&body, limit).map(Bytes::from),
        _ => {}
    }
    let mut r = reader(codec, &body, limit)?;
    // Grows with what actually comes out: at most `limit`, never a claimed size.
    let mut out = Vec::with_capacity((body.len() * 4).min(limit));
    r.read_to_end(&mut out).map_err(|e| from_io(codec, e))?;
    Ok(Bytes::from(out))
}

/// The error behind an `io::Error` from a [`reader`].
pub fn from_io(codec: i16, e: std::io::Error) -> DecompressError {
    let name = match codec {
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "records",
    };
    match e.into_inner() {
        Some(inner) => match inner.downcast::<DecompressError>() {
            Ok(d) => *d,
            Err(other) => corrupt(name, other),
        },
        None => corrupt(name, "unexpected end of data"),
    }
}

/// Fails once more than `limit` bytes have been read through it.
struct Limited<R> {
    inner: R,
    left: usize,
    limit: usize,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the limit: anything more is too much.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(DecompressError::TooLarge {
                    limit: self.limit,
                })),
            };
        }
        let n = buf.len().min(self.left);
        let read = self.inner.read(&mut buf[..n])?;
        self.left -= read;
        Ok(read)
    }
}

/// Snappy as Kafka clients write it: xerial-framed blocks (Java) or one raw block
/// (librdkafka and others). Each block's declared length is checked against what is left
/// of `limit` before anything is allocated for it.
fn snappy(body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let raw = |block: &[u8], left: usize, out: &mut Vec<u8>| -> Result<(), DecompressError> {
        let n = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", e))?;
        if n > left {
            return Err(DecompressError::TooLarge { limit });
        }
        let start = out.len();
        out.resize(start + n, 0);
        let written = snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| corrupt("snappy", e))?;
        out.truncate(start + written);
        Ok(())
    };
    let mut out = Vec::new();
    if body.len() < XERIAL_HEADER_LEN || &body[..XERIAL_MAGIC.len()] != XERIAL_MAGIC {
        raw(body, limit, &mut out)?;
        return Ok(out);
    }
    let mut rest = &body[XERIAL_HEADER_LEN..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(corrupt("snappy", "truncated block length"));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if rest.len() < len {
            return Err(corrupt("snappy", "block longer than the batch"));
        }
        let left = limit - out.len();
        raw(&rest[..len], left, &mut out)?;
        rest = &rest[len..];
    }
    Ok(out)
}

const LZ4_MAGIC: u32 = 0x184D_2204;
/// How far back an LZ4 match may reach: the window linked blocks share.
const LZ4_WINDOW: usize = 64 * 1024;

/// One LZ4 frame, as Kafka clients write it (Java's `KafkaLZ4BlockOutputStream`, LZ4F in
/// librdkafka and others), decoded block by block straight into the output; linked blocks
/// see the 64 KiB before them. Bytes after the frame are ignored, as LZ4F does.
///
/// Neither the header, block nor content checksums are verified: the batch's CRC-32C
/// covers these bytes (a legacy message's CRC-32 likewise), and it is checked where they
/// come in and where they are folded into the table. Kafka 0.8–0.9 clients computed the
/// header checksum wrongly (KIP-57), so it could not be trusted anyway.
fn lz4_frame(body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let bad = |reason: &str| corrupt("lz4", reason);
    let mut rest = body;
    let mut take = |n: usize| -> Result<&[u8], DecompressError> {
        if rest.len() < n {
            return Err(bad("frame ends early"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if le32(take(4)?) != LZ4_MAGIC {
        return Err(bad("not an LZ4 frame"));
    }
    let descriptor = take(2)?;
    let (flg, bd) = (descriptor[0], descriptor[1]);
    if flg >> 6 != 1 {
        return Err(bad("unsupported frame version"));
    }
    if flg & 0x02 != 0 || bd & 0x8F != 0 {
        return Err(bad("reserved descriptor bits set"));
    }
    let block_max = match (bd >> 4) & 0x07 {
        4 => 64 * 1024,
        5 => 256 * 1024,
        6 => 1024 * 1024,
        7 => 4 * 1024 * 1024,
        _ => return Err(bad("unknown block size")),
    };
    let linked = flg & 0x20 == 0;
    let block_checksums = flg & 0x10 != 0;
    let content_checksum = flg & 0x04 != 0;
    let content_size = if flg & 0x08 != 0 {
        let b = take(8)?;
        Some(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    } else {
        None
    };
    if flg & 0x01 != 0 {
        return Err(bad("frame needs a dictionary"));
    }
    take(1)?; // header checksum
    if content_size.is_some_and(|n| n > limit as u64) {
        return Err(DecompressError::TooLarge { limit });
    }
    // A claimed size is only a hint: never more than the bytes could expand to (an LZ4
    // sequence yields at most ~255 bytes per byte).
    let hint = content_size.map_or(body.len(), |n| n as usize);
    let mut out = Vec::with_capacity(hint.min(body.len().saturating_mul(255)).min(limit));
    loop {
        let word = le32(take(4)?);
        if word == 0 {
            break;
        }
        let len = (word & 0x7FFF_FFFF) as usize;
        if len > block_max {
            return Err(bad("block larger than the frame's block size"));
        }
        let block = take(len)?;
        if block_checksums {
            take(4)?;
        }
        let left = limit - out.len();
        if word & 0x8000_0000 != 0 {
            if len > left {
                return Err(DecompressError::TooLarge { limit });
            }
            out.extend_from_slice(block);
            continue;
        }
        let start = out.len();
        let room = block_max.min(left);
        out.resize(start + room, 0);
        let (before, dst) = out.split_at_mut(start);
        let window = if linked {
            &before[start.saturating_sub(LZ4_WINDOW)..]
        } else {
            &[][..]
        };
        match lz4_flex::block::decompress_into_with_dict(block, dst, window) {
            Ok(n) => out.truncate(start + n),
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) if room < block_max => {
                return Err(DecompressError::TooLarge { limit })
            }
            Err(e) => return Err(corrupt("lz4", e)),
        }
    }
    if content_checksum {
        take(4)?;
    }
    if content_size.is_some_and(|n| n != out.len() as u64) {
        return Err(bad("content size differs from the frame's"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    use std::io::{Read, Write};

    fn compress(codec: i16, data: &[u8]) -> Bytes {
        let mut out = bytes::BytesMut::new();
        let put = |b: &mut bytes::BytesMut| -> anyhow::Result<()> {
            b.extend_from_slice(data);
            Ok(())
        };
        match codec {
            1 => Gzip::compress(&mut out, put),
            2 => Snappy::compress(&mut out, put),
            3 => Lz4::compress(&mut out, put),
            4 => Zstd::compress(&mut out, put),
            _ => unreachable!(),
        }
        .expect("compress");
        out.freeze()
    }

    #[test]
    fn every_codec_round_trips_within_the_limit() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for codec in 1..=4 {
            let body = compress(codec, &data);
            let out = decompress(codec, body.clone(), data.len()).expect("within limit");
            assert_eq!(&out[..], &data[..], "codec {codec}");
            let err = decompress(codec, body, data.len() - 1).expect_err("over limit");
            assert!(
                matches!(err, DecompressError::TooLarge { .. }),
                "codec {codec}: {err}"
            );
        }
    }

    #[test]
    fn bombs_are_refused_without_allocating_what_they_claim() {
        // 128 MiB of zeros compresses to ~130 KB with gzip and far less with zstd: twice
        // the limit, from a batch well within message_max_bytes.
        let zeros = vec![0u8; 1 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut z = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
        for _ in 0..128 {
            gz.write_all(&zeros).expect("gz");
            z.write_all(&zeros).expect("zstd");
        }
        let gz = Bytes::from(gz.finish().expect("gz"));
        let z = Bytes::from(z.finish().expect("zstd"));
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4");
        for _ in 0..128 {
            lz.write_all(&zeros).expect("lz4");
        }
        let (lz, r) = lz.finish();
        r.expect("lz4");
        let lz = Bytes::from(lz);
        for (codec, body) in [(1, gz), (3, lz), (4, z)] {
            let err = decompress(codec, body, MAX_UNCOMPRESSED_BATCH_BYTES).expect_err("bomb");
            assert!(matches!(err, DecompressError::TooLarge { .. }), "{err}");
        }
        // A raw snappy block that claims 4 GiB: refused before allocating.
        let mut claim = Vec::new();
        let mut v: u64 = 0xffff_fff0;
        while v >= 0x80 {
            claim.push((v as u8) | 0x80);
            v >>= 7;
        }
        claim.push(v as u8);
        claim.extend_from_slice(&[0u8; 16]);
        let err = decompress(2, Bytes::from(claim), MAX_UNCOMPRESSED_BATCH_BYTES)
            .expect_err("snappy claim");
        assert!(matches!(err, DecompressError::TooLarge { .. }), "{err}");
    }

    /// An LZ4 frame written by liblz4 with the given options.
    fn lz4_frame_of(
        data: &[u8],
        size: lz4::BlockSize,
        mode: lz4::BlockMode,
        checksums: bool,
        content_size: bool,
    ) -> Vec<u8> {
        use lz4::liblz4::{BlockChecksum, ContentChecksum};
        let mut b = lz4::EncoderBuilder::new();
        b.block_size(size).block_mode(mode).level(1);
        if checksums {
            b.checksum(ContentChecksum::ChecksumEnabled)
                .block_checksum(BlockChecksum::BlockChecksumEnabled);
        } else {
            b.checksum(ContentChecksum::NoChecksum)
                .block_checksum(BlockChecksum::NoBlockChecksum);
        }
        if content_size {
            b.content_size(data.len() as u64);
        }
        let mut enc = b.build(Vec::new()).expect("encoder");
        enc.write_all(data).expect("lz4");
        let (frame, r) = enc.finish();
        r.expect("lz4");
        frame
    }

    /// What liblz4's own frame decoder makes of `frame`.
    fn liblz4_decode(frame: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        lz4::Decoder::new(frame)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Compressible data whose repeats reach back across block boundaries.
    fn repetitive(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let back = (state % 50_000) as usize;
            if back > 0 && back < out.len() && state & 1 == 0 {
                let from = out.len() - back;
                let n = ((state >> 20) % 300) as usize;
                for i in 0..n.min(len - out.len()) {
                    out.push(out[from + i]);
                }
            } else {
                out.extend_from_slice(&state.to_le_bytes()[..(len - out.len()).min(8)]);
            }
        }
        out
    }

    #[test]
    fn lz4_frames_of_every_layout_decode_as_liblz4_decodes_them() {
        use lz4::{BlockMode, BlockSize};
        for (i, len) in [0usize, 1, 1000, 65_536, 65_537, 300_000, 2_500_000]
            .into_iter()
            .enumerate()
        {
            let data = repetitive(i as u64 + 7, len);
            for size in [
                BlockSize::Max64KB,
                BlockSize::Max256KB,
                BlockSize::Max1MB,
                BlockSize::Max4MB,
            ] {
                for mode in [BlockMode::Linked, BlockMode::Independent] {
                    for checksums in [false, true] {
                        for content_size in [false, true] {
                            let what = format!(
                                "{len} bytes, {size:?}, {mode:?}, checksums {checksums}, size {content_size}"
                            );
                            let frame = lz4_frame_of(
                                &data,
                                size.clone(),
                                mode.clone(),
                                checksums,
                                content_size,
                            );
                            assert_eq!(liblz4_decode(&frame).expect("liblz4"), data, "{what}");
                            let out =
                                decompress(3, Bytes::from(frame), MAX_UNCOMPRESSED_BATCH_BYTES)
                                    .expect(&what);
                            assert_eq!(&out[..], &data[..], "{what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn lz4_frames_that_end_early_or_claim_too_much_are_refused() {
        let data = repetitive(3, 200_000);
        let frame = lz4_frame_of(
            &data,
            lz4::BlockSize::Max64KB,
            lz4::BlockMode::Linked,
            true,
            true,
        );
        // Cut anywhere: corrupt, never a shorter result taken as whole.
        for cut in [5, 7, 20, frame.len() / 2, frame.len() - 5, frame.len() - 1] {
            let err = decompress(3, Bytes::copy_from_slice(&frame[..cut]), 1 << 20)
                .expect_err("truncated");
            assert!(
                matches!(err, DecompressError::Corrupt { .. }),
                "{cut}: {err}"
            );
        }
        // Bytes after the frame are ignored, as LZ4F ignores them.
        let mut trailing = frame.clone();
        trailing.extend_from_slice(b"trailing");
        let out = decompress(3, Bytes::from(trailing), 1 << 20).expect("trailing");
        assert_eq!(&out[..], &data[..]);
        // A content size beyond the limit is refused before anything is decoded.
        let err = decompress(3, Bytes::from(frame.clone()), data.len() - 1).expect_err("limit");
        assert!(matches!(err, DecompressError::TooLarge { .. }), "{err}");
        // A frame whose content size is a lie.
        let mut lying = frame;
        lying[6..14].copy_from_slice(&(data.len() as u64 + 1).to_le_bytes());
        let err = decompress(3, Bytes::from(lying), 1 << 20).expect_err("size");
        assert!(matches!(err, DecompressError::Corrupt { .. }), "{err}");
    }

    proptest::proptest! {
        /// Any byte of an LZ4 frame changed: the decoder either fails cleanly or agrees
        /// with liblz4 (which verifies the checksums this decoder leaves to the batch CRC,
        /// so only frames liblz4 accepts are compared).
        #[test]
        fn mutated_lz4_frames_never_panic(at in 0usize..4096, byte in 0u8..=255, seed in 0u64..4) {
            let data = repetitive(seed, 150_000);
            let mut frame = lz4_frame_of(
                &data,
                lz4::BlockSize::Max64KB,
                lz4::BlockMode::Linked,
                false,
                false,
            );
            let at = at % frame.len();
            frame[at] = byte;
            let ours = decompress(3, Bytes::from(frame.clone()), 1 << 20);
            if let (Ok(ours), Ok(theirs)) = (&ours, liblz4_decode(&frame)) {
                proptest::prop_assert_eq!(&ours[..], &theirs[..]);
            }
        }
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for codec in 1..=4 {
            let err = decompress(codec, Bytes::from_static(b"\x00\x01garbage"), 1 << 20)
                .expect_err("garbage");
            assert!(
                matches!(err, DecompressError::Corrupt { .. }),
                "{codec}: {err}"
            );
        }
    }
}
