//! WAL segment lifecycle records: a segment is committed with a count of index entries
//! pointing into it; entries are released as they are removed (topic deletion, retention,
//! compaction); a segment with none left is deleted after a grace period.

use std::collections::HashMap;

use uuid::Uuid;

use super::keys;
use super::values::{IndexEntry, Location, SegmentRecord};
use super::{MetaStore, Result};
use crate::kv::{prefix_end, KvStoreExt, KvTxn};

/// A segment the garbage collector may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentGcCandidate {
    pub segment: Uuid,
    pub unreferenced_ms: i64,
}

/// Decrements the live-entry counts of the segments `entries` point into (entries being
/// removed in the same transaction), stamping segments that reach zero with `now`.
pub(crate) async fn release_entries(
    tx: &mut dyn KvTxn,
    entries: &[IndexEntry],
    now: i64,
) -> Result<()> {
    adjust_segments(tx, entries, &[], now).await
}

/// Counts index entries out of (`removed`) and into (`added`) the segments they point at,
/// marking segments no entry points at any more as unreferenced since `now`.
pub(crate) async fn adjust_segments(
    tx: &mut dyn KvTxn,
    removed: &[IndexEntry],
    added: &[IndexEntry],
    now: i64,
) -> Result<()> {
    let mut delta: HashMap<Uuid, i64> = HashMap::new();
    for (entries, sign) in [(removed, -1), (added, 1)] {
        for e in entries {
            if let Location::Wal { segment, .. } = &e.location {
                *delta.entry(*segment).or_default() += sign;
            }
        }
    }
    delta.retain(|_, d| *d != 0);
    let ids: Vec<Uuid> = delta.keys().copied().collect();
    let keys: Vec<Vec<u8>> = ids.iter().map(|id| keys::segment(*id)).collect();
    let values = tx.get_many(&keys).await?;
    for ((id, key), value) in ids.iter().zip(&keys).zip(values) {
        let Some(value) = value else {
            tracing::warn!(segment = %id, "index entry points at a segment without a record");
            continue;
        };
        let mut record = SegmentRecord::decode(&value)?;
        let live = (i64::from(record.live_entries) + delta[id]).clamp(0, i64::from(u32::MAX));
        record.live_entries = live as u32;
        if record.live_entries == 0 && record.unreferenced_ms < 0 {
            record.unreferenced_ms = now;
        } else if record.live_entries > 0 {
            record.unreferenced_ms = -1;
        }
        tx.set(key, &record.encode());
    }
    Ok(())
}

impl MetaStore {
    pub async fn segment_record(&self, segment: Uuid) -> Result<Option<SegmentRecord>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    tx.get(&keys::segment(segment))
                        .await?
                        .map(|v| SegmentRecord::decode(&v))
                        .transpose()
                })
            })
            .await
    }

    /// Which of `segments` have a record (committed, not yet collected).
    pub async fn segments_known(&self, segments: &[Uuid]) -> Result<Vec<bool>> {
        let keys: Vec<Vec<u8>> = segments.iter().map(|s| keys::segment(*s)).collect();
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    Ok(tx
                        .get_many(&keys)
                        .await?
                        .into_iter()
                        .map(|v| v.is_some())
                        .collect())
                })
            })
            .await
    }

    /// Segments no index entry points at since before `unreferenced_before_ms`.
    pub async fn unreferenced_segments(
        &self,
        unreferenced_before_ms: i64,
    ) -> Result<Vec<SegmentGcCandidate>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let begin = [keys::SEGMENT];
                    let rows = tx.get_range(&begin, &prefix_end(&begin), 0, false).await?;
                    let mut out = Vec::new();
                    for (k, v) in rows {
                        let record = SegmentRecord::decode(&v)?;
                        if record.live_entries == 0
                            && record.unreferenced_ms >= 0
                            && record.unreferenced_ms < unreferenced_before_ms
                        {
                            if let Some(segment) = keys::uuid_after_tag(&k) {
                                out.push(SegmentGcCandidate {
                                    segment,
                                    unreferenced_ms: record.unreferenced_ms,
                                });
                            }
                        }
                    }
                    Ok(out)
                })
            })
            .await
    }

    /// Forgets a collected segment, if it is still unreferenced. Call after deleting the
    /// object; returns false (and keeps the record) if entries point at it again.
    pub async fn forget_segment(&self, segment: Uuid) -> Result<bool> {
        self.kv
            .transact(|tx| {
                Box::pin(async move {
                    let key = keys::segment(segment);
                    match tx.get(&key).await? {
                        None => Ok(true),
                        Some(v) if SegmentRecord::decode(&v)?.live_entries == 0 => {
                            tx.clear(&key);
                            Ok(true)
                        }
                        Some(_) => Ok(false),
                    }
                })
            })
            .await
    }
}
