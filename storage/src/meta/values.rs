//! The values stored in the metadata store and their versioned encodings.
//!
//! Hot values (partition state, index entries, producer state, segment records) use a
//! compact big-endian binary layout whose first byte is the format version; cold values
//! (topic records) are JSON with a `"v"` field. Fixture files in `fixtures/` pin every
//! version, so a format change shows up as a diff.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::MetaError;

fn corrupt(what: &'static str, reason: impl Into<String>) -> MetaError {
    MetaError::Corrupt {
        what,
        reason: reason.into(),
    }
}

fn need(buf: &[u8], n: usize, what: &'static str) -> Result<(), MetaError> {
    if buf.len() < n {
        Err(corrupt(what, format!("{} bytes, need {n}", buf.len())))
    } else {
        Ok(())
    }
}

/// A topic as stored (`t` keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Format version of this record.
    pub v: u32,
    pub id: Uuid,
    pub name: String,
    pub partitions: i32,
    /// Topic-level configs that differ from the broker defaults.
    pub configs: BTreeMap<String, String>,
    pub created_ms: i64,
}

impl TopicMeta {
    pub const VERSION: u32 = 1;

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        let topic: Self =
            serde_json::from_slice(bytes).map_err(|e| corrupt("topic", e.to_string()))?;
        if topic.v != Self::VERSION {
            return Err(corrupt("topic", format!("unknown version {}", topic.v)));
        }
        Ok(topic)
    }
}

/// A transaction with data on a partition that is not decided yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTxn {
    pub producer_id: i64,
    /// Offset of the transaction's first batch on this partition.
    pub first_offset: i64,
}

/// The replicated state of one partition (`p` keys).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionState {
    /// The next offset to assign; every offset below it is committed.
    pub high_watermark: i64,
    /// The first offset still readable.
    pub log_start_offset: i64,
    /// Bytes of record batches between the log start and the high watermark.
    pub size_bytes: u64,
    /// Transactions with data here and no commit or abort marker yet, oldest first.
    pub open_txns: Vec<OpenTxn>,
}

impl PartitionState {
    /// Version 1: no open transactions; version 2 lists them after the version-1 fields.
    const VERSION: u8 = 1;
    const VERSION_TXNS: u8 = 2;
    const LEN: usize = 25;

    /// The last stable offset: every offset below it is decided (not part of an open
    /// transaction); read_committed consumers and the compactor stop there.
    pub fn last_stable_offset(&self) -> i64 {
        self.open_txns
            .iter()
            .map(|t| t.first_offset)
            .min()
            .unwrap_or(self.high_watermark)
            .min(self.high_watermark)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::LEN + 2 + self.open_txns.len() * 16);
        b.put_u8(if self.open_txns.is_empty() {
            Self::VERSION
        } else {
            Self::VERSION_TXNS
        });
        b.put_i64(self.high_watermark);
        b.put_i64(self.log_start_offset);
        b.put_u64(self.size_bytes);
        if !self.open_txns.is_empty() {
            b.put_u16(self.open_txns.len() as u16);
            for t in &self.open_txns {
                b.put_i64(t.producer_id);
                b.put_i64(t.first_offset);
            }
        }
        b
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Self, MetaError> {
        need(bytes, Self::LEN, "partition state")?;
        let v = bytes.get_u8();
        if v != Self::VERSION && v != Self::VERSION_TXNS {
            return Err(corrupt("partition state", format!("unknown version {v}")));
        }
        let mut state = Self {
            high_watermark: bytes.get_i64(),
            log_start_offset: bytes.get_i64(),
            size_bytes: bytes.get_u64(),
            open_txns: Vec::new(),
        };
        if v == Self::VERSION_TXNS {
            need(bytes, 2, "partition state")?;
            let n = bytes.get_u16() as usize;
            need(bytes, n * 16, "partition state")?;
            state.open_txns = (0..n)
                .map(|_| OpenTxn {
                    producer_id: bytes.get_i64(),
                    first_offset: bytes.get_i64(),
                })
                .collect();
        }
        Ok(state)
    }
}

/// An aborted transaction on a partition (`a` keys, by the offset of its abort marker):
/// read_committed fetches report it so consumers drop its records, and the compactor
/// leaves them out of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
}

impl AbortedTxn {
    const VERSION: u8 = 1;

    /// Encodes the value; `last_offset` is in the key.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(17);
        b.put_u8(Self::VERSION);
        b.put_i64(self.producer_id);
        b.put_i64(self.first_offset);
        b
    }

    pub fn decode(last_offset: i64, mut bytes: &[u8]) -> Result<Self, MetaError> {
        need(bytes, 17, "aborted transaction")?;
        let v = bytes.get_u8();
        if v != Self::VERSION {
            return Err(corrupt(
                "aborted transaction",
                format!("unknown version {v}"),
            ));
        }
        Ok(Self {
            producer_id: bytes.get_i64(),
            first_offset: bytes.get_i64(),
            last_offset,
        })
    }

    /// Whether a batch of this producer at `offset` belongs to this aborted transaction.
    pub fn covers(&self, producer_id: i64, offset: i64) -> bool {
        producer_id == self.producer_id && (self.first_offset..=self.last_offset).contains(&offset)
    }
}

/// Where the batches of an index entry live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A byte range of a WAL segment: whole record batches, back to back, as produced.
    Wal {
        segment: Uuid,
        position: u64,
        length: u32,
    },
    /// Rows of a table data file (Parquet), named by its URL in the object store.
    Table {
        file: String,
        /// Rows of this entry's offsets in the file.
        rows: u32,
        /// Bytes the offsets took as record batches in the WAL (for retention by size).
        bytes: u64,
    },
}

/// One entry of the offset index (`x` keys): offsets `base_offset..=last_offset` of a
/// partition live at `location`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub base_offset: i64,
    pub last_offset: i64,
    pub location: Location,
    pub batch_count: u32,
    pub max_timestamp: i64,
}

impl IndexEntry {
    const VERSION: u8 = 1;
    const KIND_WAL: u8 = 1;
    const KIND_TABLE: u8 = 2;

    /// Encodes the value; `last_offset` is in the key.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(58);
        b.put_u8(Self::VERSION);
        b.put_i64(self.base_offset);
        b.put_u32(self.batch_count);
        b.put_i64(self.max_timestamp);
        match &self.location {
            Location::Wal {
                segment,
                position,
                length,
            } => {
                b.put_u8(Self::KIND_WAL);
                b.put_slice(segment.as_bytes());
                b.put_u64(*position);
                b.put_u32(*length);
            }
            Location::Table { file, rows, bytes } => {
                b.put_u8(Self::KIND_TABLE);
                b.put_u32(*rows);
                b.put_u64(*bytes);
                b.put_u16(file.len() as u16);
                b.put_slice(file.as_bytes());
            }
        }
        b
    }

    pub fn decode(last_offset: i64, mut bytes: &[u8]) -> Result<Self, MetaError> {
        need(bytes, 22, "index entry")?;
        let v = bytes.get_u8();
        if v != Self::VERSION {
            return Err(corrupt("index entry", format!("unknown version {v}")));
        }
        let base_offset = bytes.get_i64();
        let batch_count = bytes.get_u32();
        let max_timestamp = bytes.get_i64();
        let location = match bytes.get_u8() {
            Self::KIND_WAL => {
                need(bytes, 28, "index entry")?;
                let mut id = [0u8; 16];
                bytes.copy_to_slice(&mut id);
                Location::Wal {
                    segment: Uuid::from_bytes(id),
                    position: bytes.get_u64(),
                    length: bytes.get_u32(),
                }
            }
            Self::KIND_TABLE => {
                need(bytes, 14, "index entry")?;
                let rows = bytes.get_u32();
                let size = bytes.get_u64();
                let len = bytes.get_u16() as usize;
                need(bytes, len, "index entry")?;
                let file = String::from_utf8(bytes[..len].to_vec())
                    .map_err(|e| corrupt("index entry", e.to_string()))?;
                Location::Table {
                    file,
                    rows,
                    bytes: size,
                }
            }
            kind => return Err(corrupt("index entry", format!("unknown location {kind}"))),
        };
        Ok(Self {
            base_offset,
            last_offset,
            location,
            batch_count,
            max_timestamp,
        })
    }

    /// Bytes of record batches this entry covers.
    pub fn size_bytes(&self) -> u64 {
        match &self.location {
            Location::Wal { length, .. } => u64::from(*length),
            Location::Table { bytes, .. } => *bytes,
        }
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset + 1
    }
}

/// A batch a producer wrote recently, for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
}

/// Idempotence state of one producer on one partition (`q` keys): its epoch and its last
/// (at most [`ProducerState::RECENT`]) batches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerState {
    pub epoch: i16,
    pub recent: Vec<RecentBatch>,
    pub last_write_ms: i64,
    /// The epoch in which the transaction coordinator added this partition to the
    /// producer's ongoing transaction (AddPartitionsToTxn): transactional batches are
    /// accepted only then, so no transaction can hang without a coordinator to end it.
    pub txn_epoch: Option<i16>,
}

impl ProducerState {
    /// How many batches Kafka producers may have in flight per partition.
    pub const RECENT: usize = 5;
    /// Version 1; version 2 appends the transaction epoch.
    const VERSION: u8 = 1;
    const VERSION_TXN: u8 = 2;

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(14 + self.recent.len() * 16);
        b.put_u8(if self.txn_epoch.is_some() {
            Self::VERSION_TXN
        } else {
            Self::VERSION
        });
        b.put_i16(self.epoch);
        b.put_i64(self.last_write_ms);
        b.put_u8(self.recent.len() as u8);
        for r in &self.recent {
            b.put_i32(r.first_sequence);
            b.put_i32(r.last_sequence);
            b.put_i64(r.base_offset);
        }
        if let Some(e) = self.txn_epoch {
            b.put_i16(e);
        }
        b
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Self, MetaError> {
        need(bytes, 12, "producer state")?;
        let v = bytes.get_u8();
        if v != Self::VERSION && v != Self::VERSION_TXN {
            return Err(corrupt("producer state", format!("unknown version {v}")));
        }
        let epoch = bytes.get_i16();
        let last_write_ms = bytes.get_i64();
        let n = bytes.get_u8() as usize;
        need(bytes, n * 16, "producer state")?;
        let recent = (0..n)
            .map(|_| RecentBatch {
                first_sequence: bytes.get_i32(),
                last_sequence: bytes.get_i32(),
                base_offset: bytes.get_i64(),
            })
            .collect();
        let txn_epoch = if v == Self::VERSION_TXN {
            need(bytes, 2, "producer state")?;
            Some(bytes.get_i16())
        } else {
            None
        };
        Ok(Self {
            epoch,
            recent,
            last_write_ms,
            txn_epoch,
        })
    }
}

/// Lifecycle record of a WAL segment (`s` keys): how many index entries still point into
/// it, and since when none does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRecord {
    pub live_entries: u32,
    pub size: u64,
    pub created_ms: i64,
    /// When `live_entries` dropped to zero; -1 while entries remain.
    pub unreferenced_ms: i64,
}

impl SegmentRecord {
    const VERSION: u8 = 1;
    const LEN: usize = 29;

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::LEN);
        b.put_u8(Self::VERSION);
        b.put_u32(self.live_entries);
        b.put_u64(self.size);
        b.put_i64(self.created_ms);
        b.put_i64(self.unreferenced_ms);
        b
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Self, MetaError> {
        need(bytes, Self::LEN, "segment record")?;
        let v = bytes.get_u8();
        if v != Self::VERSION {
            return Err(corrupt("segment record", format!("unknown version {v}")));
        }
        Ok(Self {
            live_entries: bytes.get_u32(),
            size: bytes.get_u64(),
            created_ms: bytes.get_i64(),
            unreferenced_ms: bytes.get_i64(),
        })
    }
}

pub fn encode_i64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn decode_i64(bytes: &[u8], what: &'static str) -> Result<i64, MetaError> {
    let a: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(what, format!("{} bytes, need 8", bytes.len())))?;
    Ok(i64::from_be_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiled in, so a test binary reused from another checkout still finds them.
    fn fixture(name: &str) -> Vec<u8> {
        let bytes: &[u8] = match name {
            "partition-state-v1.bin" => include_bytes!("../../fixtures/partition-state-v1.bin"),
            "index-entry-v1.bin" => include_bytes!("../../fixtures/index-entry-v1.bin"),
            "producer-state-v1.bin" => include_bytes!("../../fixtures/producer-state-v1.bin"),
            "topic-v1.json" => include_bytes!("../../fixtures/topic-v1.json"),
            other => panic!("no fixture {other}"),
        };
        bytes.to_vec()
    }

    fn sample_entry() -> IndexEntry {
        IndexEntry {
            base_offset: 100,
            last_offset: 149,
            location: Location::Wal {
                segment: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
                position: 16,
                length: 4096,
            },
            batch_count: 3,
            max_timestamp: 1_700_000_000_000,
        }
    }

    fn sample_producer() -> ProducerState {
        ProducerState {
            epoch: 3,
            recent: vec![RecentBatch {
                first_sequence: 10,
                last_sequence: 19,
                base_offset: 1000,
            }],
            last_write_ms: 1_700_000_000_000,
            txn_epoch: None,
        }
    }

    /// Version-1 encodings are pinned by fixtures; regenerate them only with a version bump.
    #[test]
    fn fixtures_v1() {
        let state = PartitionState {
            high_watermark: 150,
            log_start_offset: 0,
            size_bytes: 4096,
            open_txns: Vec::new(),
        };
        assert_eq!(state.encode(), fixture("partition-state-v1.bin"));
        assert_eq!(
            PartitionState::decode(&fixture("partition-state-v1.bin")).expect("decode"),
            state
        );
        assert_eq!(sample_entry().encode(), fixture("index-entry-v1.bin"));
        assert_eq!(
            IndexEntry::decode(149, &fixture("index-entry-v1.bin")).expect("decode"),
            sample_entry()
        );
        assert_eq!(sample_producer().encode(), fixture("producer-state-v1.bin"));
        assert_eq!(
            ProducerState::decode(&fixture("producer-state-v1.bin")).expect("decode"),
            sample_producer()
        );
        let topic = TopicMeta::decode(&fixture("topic-v1.json")).expect("topic");
        assert_eq!(topic.name, "orders");
        assert_eq!(topic.partitions, 8);
        assert_eq!(
            topic.configs.get("retention.ms").map(String::as_str),
            Some("3600000")
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(PartitionState::decode(&[9; 25]).is_err());
        assert!(IndexEntry::decode(0, &[1, 2, 3]).is_err());
        assert!(ProducerState::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]).is_err());
        let seg = SegmentRecord {
            live_entries: 2,
            size: 10,
            created_ms: 5,
            unreferenced_ms: -1,
        };
        assert_eq!(SegmentRecord::decode(&seg.encode()).expect("decode"), seg);
        let table = IndexEntry {
            base_offset: 5,
            last_offset: 9,
            location: Location::Table {
                file: "s3://b/warehouse/kafka/t/data/partition=0/x.parquet".into(),
                rows: 5,
                bytes: 700,
            },
            batch_count: 1,
            max_timestamp: 3,
        };
        assert_eq!(
            IndexEntry::decode(9, &table.encode()).expect("decode"),
            table
        );
    }
}
