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
        3 => Box::new(lz4::Decoder::new(body).map_err(|e| corrupt("lz4", e))?),
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
    if codec == 2 {
        return snappy(&body, limit).map(Bytes::from);
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

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    use std::io::Write;

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
        for (codec, body) in [(1, gz), (4, z)] {
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
