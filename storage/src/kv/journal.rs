//! The embedded store's commit journal: each read-write transaction's writes, made durable
//! with one small in-place write and `fdatasync` before the transaction is applied to redb
//! without an `fsync` of its own. redb is made durable (a checkpoint) about once a second,
//! or when the journal fills; after a crash the records redb had not made durable are
//! applied again when the store opens.
//!
//! The file is written full of zeros once, so a record overwrites allocated blocks and its
//! `fdatasync` writes no file metadata. Records follow each other from offset 0, and a
//! checkpoint starts the next one at offset 0 again. A record:
//!
//! ```text
//! length u32 (of the payload) | CRC-32C u32 (of the payload) | payload:
//!   seq u64 | ranges u32 | (begin, end)* | writes u32 | (key, 0 | 1 value)*
//! ```
//! with every byte string as a u32 length and its bytes, all little-endian. Reading stops at
//! a zero length, a length past the end of the file or a CRC that does not match (a record
//! torn by a crash, or the older records a shorter one did not overwrite).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::WriteBuffer;

const HEADER: usize = 8;

/// One transaction's writes, as read back from the journal.
#[derive(Debug, PartialEq)]
pub(super) struct Record {
    pub seq: u64,
    pub cleared: Vec<(Vec<u8>, Vec<u8>)>,
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

pub(super) struct Journal {
    file: File,
    capacity: u64,
    position: u64,
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The journal record of a transaction with sequence number `seq`.
pub(super) fn encode(seq: u64, buffer: &WriteBuffer) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 16 + buffer.size() + 16 * buffer.write_count());
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&seq.to_le_bytes());
    let cleared = buffer.cleared_ranges();
    out.extend_from_slice(&(cleared.len() as u32).to_le_bytes());
    for (begin, end) in cleared {
        put_bytes(&mut out, begin);
        put_bytes(&mut out, end);
    }
    out.extend_from_slice(&(buffer.write_count() as u32).to_le_bytes());
    for (key, value) in buffer.writes() {
        put_bytes(&mut out, key);
        match value {
            Some(v) => {
                out.push(1);
                put_bytes(&mut out, v);
            }
            None => out.push(0),
        }
    }
    let payload_len = (out.len() - HEADER) as u32;
    let crc = crc32c::crc32c(&out[HEADER..]);
    out[..4].copy_from_slice(&payload_len.to_le_bytes());
    out[4..HEADER].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads the payload's fields; `None` when they do not fit it (never for a payload whose
/// CRC matched, unless written by something else).
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        Some(self.take(n)?.to_vec())
    }
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut c = Cursor(payload);
    let seq = c.u64()?;
    // Counts are bounded by the bytes left (each entry takes at least 8), so a corrupt
    // count cannot make these allocate more than the payload holds.
    let ranges = (c.u32()? as usize).min(c.0.len() / 8);
    let mut cleared = Vec::with_capacity(ranges);
    for _ in 0..ranges {
        cleared.push((c.bytes()?, c.bytes()?));
    }
    let writes_count = (c.u32()? as usize).min(c.0.len() / 5);
    let mut writes = Vec::with_capacity(writes_count);
    for _ in 0..writes_count {
        let key = c.bytes()?;
        let value = match c.take(1)?[0] {
            0 => None,
            1 => Some(c.bytes()?),
            _ => return None,
        };
        writes.push((key, value));
    }
    c.0.is_empty().then_some(Record {
        seq,
        cleared,
        writes,
    })
}

/// The records of a journal's contents, from the start to the first one that is not whole.
fn records(data: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while data.len() - at >= HEADER {
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let crc = u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
        if len == 0 || len > data.len() - at - HEADER {
            break;
        }
        let payload = &data[at + HEADER..at + HEADER + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        match decode(payload) {
            Some(record) => out.push(record),
            None => break,
        }
        at += HEADER + len;
    }
    out
}

impl Journal {
    /// Opens the journal at `path` (creating it, `capacity` bytes of zeros, if needed) and
    /// returns the records it holds, in the order they were written.
    pub fn open(path: &Path, capacity: u64) -> io::Result<(Self, Vec<Record>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let found = records(&data);
        if (data.len() as u64) < capacity {
            let zeros = vec![0u8; (capacity - data.len() as u64) as usize];
            file.write_all_at(&zeros, data.len() as u64)?;
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let capacity = capacity.max(data.len() as u64);
        Ok((
            Self {
                file,
                capacity,
                position: 0,
            },
            found,
        ))
    }

    /// Whether a record of `len` bytes fits before the end of the file.
    pub fn fits(&self, len: usize) -> bool {
        self.position + len as u64 <= self.capacity
    }

    /// Writes a record after the previous one and waits until it is on disk.
    pub fn append(&mut self, record: &[u8]) -> io::Result<()> {
        self.file.write_all_at(record, self.position)?;
        self.file.sync_data()?;
        self.position += record.len() as u64;
        Ok(())
    }

    /// After a checkpoint: every record written is in redb's durable state, the next one
    /// starts at offset 0.
    pub fn restart(&mut self) {
        self.position = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer() -> WriteBuffer {
        let mut b = WriteBuffer::default();
        b.clear_range(b"a", b"c");
        b.set(b"k1", b"v1");
        b.clear(b"k2");
        b.set(b"k3", b"");
        b
    }

    #[test]
    fn records_read_back_until_the_first_torn_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let (mut journal, found) = Journal::open(&path, 4096).expect("open");
        assert!(found.is_empty());
        let one = encode(7, &buffer());
        let two = encode(8, &buffer());
        journal.append(&one).expect("append");
        journal.append(&two).expect("append");
        // A third record torn by a crash: its header and half its payload.
        let three = encode(9, &buffer());
        journal.append(&three[..three.len() / 2]).expect("append");
        drop(journal);
        let (_, found) = Journal::open(&path, 4096).expect("reopen");
        let expected = Record {
            seq: 7,
            cleared: vec![(b"a".to_vec(), b"c".to_vec())],
            writes: vec![
                (b"k1".to_vec(), Some(b"v1".to_vec())),
                (b"k2".to_vec(), None),
                (b"k3".to_vec(), Some(Vec::new())),
            ],
        };
        assert_eq!(found.len(), 2);
        assert_eq!(found[0], expected);
        assert_eq!(found[1].seq, 8);
    }

    #[test]
    fn a_shorter_record_hides_the_older_ones_it_did_not_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let (mut journal, _) = Journal::open(&path, 4096).expect("open");
        let mut big = WriteBuffer::default();
        big.set(b"key", &[5u8; 300]);
        for seq in 1..=3 {
            journal.append(&encode(seq, &big)).expect("append");
        }
        journal.restart();
        journal.append(&encode(4, &buffer())).expect("append");
        drop(journal);
        let (_, found) = Journal::open(&path, 4096).expect("reopen");
        assert_eq!(found.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn corrupt_counts_do_not_allocate_past_the_payload() {
        let mut payload = 1u64.to_le_bytes().to_vec();
        payload.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&payload), None);
        let mut data = (payload.len() as u32).to_le_bytes().to_vec();
        data.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        data.extend_from_slice(&payload);
        assert!(records(&data).is_empty());
    }

    #[test]
    fn fits_counts_from_the_last_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(&dir.path().join("j"), 100).expect("open");
        let record = encode(1, &buffer());
        assert!(journal.fits(record.len()));
        journal.append(&record).expect("append");
        assert!(!journal.fits(record.len()));
        journal.restart();
        assert!(journal.fits(record.len()));
    }
}
