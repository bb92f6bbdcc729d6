//! The offset index: committing a WAL segment (offset assignment, idempotence checks,
//! index entries, high watermarks, all in one transaction) and reading it back.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::keys;
use super::producers::{check_batch, record_batch, SequenceCheck};
use super::values::{
    AbortedTxn, IndexEntry, Location, OpenTxn, PartitionState, ProducerState, RecentBatch,
    SegmentRecord,
};
use super::{MetaError, MetaStore, Result};
use crate::kv::{prefix_end, KvStoreExt, KvTxn};

/// Idempotence data of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
}

/// One record batch inside the segment being committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendBatch {
    /// Byte position of the batch in the segment object.
    pub position: u64,
    pub length: u32,
    /// Offsets the batch occupies (`last_offset_delta + 1`).
    pub offset_span: u32,
    pub max_timestamp: i64,
    /// Set for batches of idempotent producers.
    pub producer: Option<ProducerBatch>,
    /// Part of a transaction (data or marker).
    pub transactional: bool,
    /// Set for control batches: the transaction marker they carry.
    pub marker: Option<Marker>,
}

/// The control record of a transaction marker batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Commit,
    Abort,
}

/// The batches one produce request sent to one partition: accepted or refused together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendUnit {
    pub batches: Vec<AppendBatch>,
}

/// Everything a segment holds for one partition, units in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAppend {
    pub topic_id: Uuid,
    pub partition: i32,
    pub units: Vec<AppendUnit>,
}

/// A WAL segment that was written and now needs offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentAppend {
    pub segment: Uuid,
    pub size: u64,
    /// When the segment was named (its uuid v7 time), to refuse commits of segments the
    /// orphan collector may delete.
    pub created_ms: i64,
    pub partitions: Vec<PartitionAppend>,
}

/// The outcome of one [`AppendUnit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitOutcome {
    Appended {
        base_offset: i64,
        log_start_offset: i64,
    },
    /// Every batch was a retry of stored data; `base_offset` is where the first one is.
    Duplicate {
        base_offset: i64,
        log_start_offset: i64,
    },
    UnknownTopicOrPartition,
    OutOfOrderSequence,
    ProducerFenced,
    /// A transactional batch for a partition the coordinator did not add to the
    /// producer's ongoing transaction.
    InvalidTxnState,
}

/// The outcome for one [`PartitionAppend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionResult {
    pub outcomes: Vec<UnitOutcome>,
    /// Index entries written for this partition (empty if nothing was appended).
    pub entries: Vec<IndexEntry>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub last_stable_offset: i64,
}

impl MetaStore {
    /// Assigns offsets to a written segment in one transaction: for each partition, checks
    /// producer sequences, writes index entries for accepted batches (one per contiguous
    /// run of bytes), advances the high watermark, and records the segment. Results follow
    /// the order of `append.partitions`.
    ///
    /// Idempotent: if the segment was already committed (a retry after
    /// [`crate::kv::KvError::UnknownOutcome`]) it fails with
    /// [`MetaError::SegmentAlreadyCommitted`] and changes nothing.
    pub async fn commit_segment(
        &self,
        append: Arc<SegmentAppend>,
        max_age_ms: i64,
    ) -> Result<Vec<PartitionResult>> {
        let mut results = self.commit_segments(vec![append], max_age_ms).await?;
        Ok(results.pop().unwrap_or_default())
    }

    /// Commits several written segments in one transaction, in the order given, as if each
    /// were committed by [`MetaStore::commit_segment`] after the one before it (a later
    /// segment sees the offsets and producer states the earlier ones left). All of them are
    /// committed or none is: any segment's error fails the whole group, and a retry after
    /// an unknown outcome that finds the first one committed knows they all were. One result
    /// list per segment, in order.
    pub async fn commit_segments(
        &self,
        appends: Vec<Arc<SegmentAppend>>,
        max_age_ms: i64,
    ) -> Result<Vec<Vec<PartitionResult>>> {
        let now = self.now_ms();
        if let Some(old) = appends.iter().find(|a| now - a.created_ms > max_age_ms) {
            return Err(MetaError::SegmentTooOld(old.segment));
        }
        let started = std::time::Instant::now();
        let appends = Arc::new(appends);
        let result = self
            .kv
            .transact(|tx| {
                let appends = appends.clone();
                Box::pin(async move {
                    let mut results = Vec::with_capacity(appends.len());
                    for append in appends.iter() {
                        results.push(commit_segment_txn(tx, append, now).await?);
                    }
                    Ok(results)
                })
            })
            .await;
        crate::metrics::observe(
            &crate::metrics::META_COMMIT_SECONDS,
            started.elapsed().as_secs_f64(),
        );
        result
    }

    /// The results a committed segment got, read back from the offset index: for a commit
    /// whose outcome was unknown and whose retry found it already committed
    /// ([`MetaError::SegmentAlreadyCommitted`]), so its producers get the offsets their
    /// batches really have. `None` when a unit's batches cannot all be found (they were
    /// refused or deduplicated, or compaction already moved their entries): the caller
    /// then answers with a retriable error, and idempotent producers recover their offsets
    /// on retry.
    pub async fn committed_segment_results(
        &self,
        append: &SegmentAppend,
    ) -> Result<Option<Vec<PartitionResult>>> {
        /// Entries read back per partition at most, newest first.
        const SCAN: usize = 4096;
        let mut results = Vec::with_capacity(append.partitions.len());
        for p in &append.partitions {
            let Some(state) = self.partition_state(p.topic_id, p.partition).await? else {
                return Ok(None);
            };
            let (topic_id, partition, segment) = (p.topic_id, p.partition, append.segment);
            let entries: Vec<IndexEntry> = self
                .kv
                .read(|tx| {
                    Box::pin(async move {
                        let begin = keys::index(topic_id, partition, 0);
                        let end = prefix_end(&keys::index_prefix(topic_id, partition));
                        let rows = tx.get_range(&begin, &end, SCAN, true).await?;
                        rows.iter()
                            .map(|(k, v)| {
                                IndexEntry::decode(
                                    keys::index_last_offset(k).unwrap_or_default(),
                                    v,
                                )
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .await?
                .into_iter()
                .filter(|e| matches!(e.location, Location::Wal { segment: s, .. } if s == segment))
                .collect();
            // Each accepted batch lies inside one entry, whose offsets follow byte order.
            let mut cursors: Vec<(u64, u64, i64)> = entries
                .iter()
                .filter_map(|e| match e.location {
                    Location::Wal {
                        position, length, ..
                    } => Some((position, position + u64::from(length), e.base_offset)),
                    Location::Table { .. } => None,
                })
                .collect();
            let mut outcomes = Vec::with_capacity(p.units.len());
            for unit in &p.units {
                let mut base = None;
                for b in &unit.batches {
                    let Some(c) = cursors
                        .iter_mut()
                        .find(|(start, end, _)| (*start..*end).contains(&b.position))
                    else {
                        return Ok(None);
                    };
                    base.get_or_insert(c.2);
                    c.2 += i64::from(b.offset_span);
                }
                let Some(base_offset) = base else {
                    return Ok(None);
                };
                outcomes.push(UnitOutcome::Appended {
                    base_offset,
                    log_start_offset: state.log_start_offset,
                });
            }
            results.push(PartitionResult {
                outcomes,
                entries,
                high_watermark: state.high_watermark,
                log_start_offset: state.log_start_offset,
                last_stable_offset: state.last_stable_offset(),
            });
        }
        Ok(Some(results))
    }

    /// The state of one partition, or `None` if it does not exist.
    pub async fn partition_state(
        &self,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Option<PartitionState>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    tx.get(&keys::partition(topic_id, partition))
                        .await?
                        .map(|v| PartitionState::decode(&v))
                        .transpose()
                })
            })
            .await
    }

    /// The last offset of a partition whose records are in its table (the last index entry
    /// that names a table file), or `None` if none is. Entries after it are the WAL not yet
    /// folded, and the runs kept in the WAL (transaction markers, aborted or quarantined
    /// batches): read from the end, a page at a time.
    pub async fn last_table_offset(&self, topic_id: Uuid, partition: i32) -> Result<Option<i64>> {
        const PAGE: usize = 512;
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let begin = keys::index_prefix(topic_id, partition);
                    let mut end = prefix_end(&begin);
                    loop {
                        let rows = tx.get_range(&begin, &end, PAGE, true).await?;
                        for (k, v) in &rows {
                            let last = keys::index_last_offset(k).unwrap_or_default();
                            if let Location::Table { .. } = IndexEntry::decode(last, v)?.location {
                                return Ok(Some(last));
                            }
                        }
                        match rows.last() {
                            Some((k, _)) if rows.len() == PAGE => end = k.to_vec(),
                            _ => return Ok(None),
                        }
                    }
                })
            })
            .await
    }

    /// Index entries of a partition whose last offset is `>= offset`, ascending, at most
    /// `limit` (0 = all).
    pub async fn index_entries(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
        limit: usize,
    ) -> Result<Vec<IndexEntry>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let begin = keys::index(topic_id, partition, offset);
                    let end = prefix_end(&keys::index_prefix(topic_id, partition));
                    let rows = tx.get_range(&begin, &end, limit, false).await?;
                    rows.iter()
                        .map(|(k, v)| {
                            let last = keys::index_last_offset(k).unwrap_or_default();
                            IndexEntry::decode(last, v)
                        })
                        .collect()
                })
            })
            .await
    }
}

async fn commit_segment_txn(
    tx: &mut dyn KvTxn,
    append: &SegmentAppend,
    now: i64,
) -> Result<Vec<PartitionResult>> {
    let segment_key = keys::segment(append.segment);
    if tx.get(&segment_key).await?.is_some() {
        return Err(MetaError::SegmentAlreadyCommitted(append.segment));
    }
    // One round trip for partition states, one for producer states.
    let partition_keys: Vec<Vec<u8>> = append
        .partitions
        .iter()
        .map(|p| keys::partition(p.topic_id, p.partition))
        .collect();
    let states = tx.get_many(&partition_keys).await?;
    let mut producer_keys = Vec::new();
    let mut producer_slots: HashMap<(usize, i64), usize> = HashMap::new();
    for (i, p) in append.partitions.iter().enumerate() {
        for b in p.units.iter().flat_map(|u| &u.batches) {
            if let Some(pb) = b.producer {
                producer_slots
                    .entry((i, pb.producer_id))
                    .or_insert_with(|| {
                        producer_keys.push(keys::producer(p.topic_id, p.partition, pb.producer_id));
                        producer_keys.len() - 1
                    });
            }
        }
    }
    let producer_values = tx.get_many(&producer_keys).await?;
    let mut producers: Vec<Option<ProducerState>> = producer_values
        .iter()
        .map(|v| v.as_ref().map(|v| ProducerState::decode(v)).transpose())
        .collect::<Result<_>>()?;
    let mut dirty_producers = vec![false; producers.len()];

    let mut results = Vec::with_capacity(append.partitions.len());
    let mut live_entries = 0u32;
    for (i, (p, state)) in append.partitions.iter().zip(states).enumerate() {
        let Some(state) = state else {
            results.push(PartitionResult {
                outcomes: vec![UnitOutcome::UnknownTopicOrPartition; p.units.len()],
                entries: Vec::new(),
                high_watermark: -1,
                log_start_offset: -1,
                last_stable_offset: -1,
            });
            continue;
        };
        let mut state = PartitionState::decode(&state)?;
        let mut outcomes = Vec::with_capacity(p.units.len());
        // Accepted batches with their assigned base offsets, in segment order.
        let mut accepted: Vec<(&super::AppendBatch, i64)> = Vec::new();
        let mut aborted = Vec::new();
        for unit in &p.units {
            let outcome = append_unit(
                unit,
                &mut state,
                &mut accepted,
                &mut aborted,
                |pid| producer_slots.get(&(i, pid)).copied(),
                &mut producers,
                &mut dirty_producers,
                now,
            );
            outcomes.push(outcome);
        }
        for a in &aborted {
            tx.set(
                &keys::aborted(p.topic_id, p.partition, a.last_offset),
                &a.encode(),
            );
        }
        let entries = index_runs(append.segment, &accepted);
        for e in &entries {
            tx.set(
                &keys::index(p.topic_id, p.partition, e.last_offset),
                &e.encode(),
            );
            state.size_bytes += e.size_bytes();
        }
        live_entries += entries.len() as u32;
        tx.set(&keys::partition(p.topic_id, p.partition), &state.encode());
        results.push(PartitionResult {
            outcomes,
            entries,
            high_watermark: state.high_watermark,
            log_start_offset: state.log_start_offset,
            last_stable_offset: state.last_stable_offset(),
        });
    }
    for (slot, key) in producer_keys.iter().enumerate() {
        if dirty_producers[slot] {
            if let Some(s) = &producers[slot] {
                tx.set(key, &s.encode());
            }
        }
    }
    let record = SegmentRecord {
        live_entries,
        size: append.size,
        created_ms: append.created_ms,
        unreferenced_ms: if live_entries == 0 { now } else { -1 },
    };
    tx.set(&segment_key, &record.encode());
    Ok(results)
}

/// Applies one unit to a partition: checks every batch against a scratch copy of the
/// producer and partition states, then either assigns offsets to the new batches or
/// refuses the unit.
///
/// Transactions: a transactional data batch is accepted only while its producer has the
/// partition in an ongoing transaction (its producer state carries the epoch the
/// coordinator added it in, or the partition already lists the transaction as open); the
/// first one opens the transaction on the partition (the last stable offset stops there).
/// A marker closes it: an abort marker records the aborted range. A marker for a
/// producer with nothing open here is not stored (a coordinator finishing a transaction
/// again after a crash writes its markers again).
#[allow(clippy::too_many_arguments)]
fn append_unit<'a>(
    unit: &'a AppendUnit,
    state: &mut PartitionState,
    accepted: &mut Vec<(&'a AppendBatch, i64)>,
    aborted: &mut Vec<AbortedTxn>,
    slot_of: impl Fn(i64) -> Option<usize>,
    producers: &mut [Option<ProducerState>],
    dirty: &mut [bool],
    now: i64,
) -> UnitOutcome {
    let mut scratch: HashMap<usize, Option<ProducerState>> = HashMap::new();
    let mut open = state.open_txns.clone();
    let mut new_aborted = Vec::new();
    let mut next = state.high_watermark;
    let mut first_offset = None;
    let mut all_duplicates = true;
    let mut staged = Vec::new();
    for batch in &unit.batches {
        let offset = match batch.producer {
            None if batch.transactional || batch.marker.is_some() => {
                return UnitOutcome::InvalidTxnState;
            }
            None => {
                let o = next;
                next += i64::from(batch.offset_span);
                staged.push((batch, o));
                o
            }
            Some(pb) => {
                let Some(slot) = slot_of(pb.producer_id) else {
                    return UnitOutcome::OutOfOrderSequence;
                };
                let current = scratch
                    .entry(slot)
                    .or_insert_with(|| producers[slot].clone());
                if let Some(marker) = batch.marker {
                    if current.as_ref().is_some_and(|s| pb.epoch < s.epoch) {
                        return UnitOutcome::ProducerFenced;
                    }
                    let s = current.get_or_insert_with(ProducerState::default);
                    if pb.epoch > s.epoch {
                        s.epoch = pb.epoch;
                        s.recent.clear();
                    }
                    s.txn_epoch = None;
                    s.last_write_ms = now;
                    let Some(i) = open.iter().position(|t| t.producer_id == pb.producer_id) else {
                        first_offset.get_or_insert(next);
                        continue;
                    };
                    let txn = open.remove(i);
                    let o = next;
                    next += i64::from(batch.offset_span);
                    if marker == Marker::Abort {
                        new_aborted.push(AbortedTxn {
                            producer_id: pb.producer_id,
                            first_offset: txn.first_offset,
                            last_offset: o,
                        });
                    }
                    staged.push((batch, o));
                    all_duplicates = false;
                    first_offset.get_or_insert(o);
                    continue;
                }
                let is_open = open.iter().any(|t| t.producer_id == pb.producer_id);
                if batch.transactional
                    && !is_open
                    && current.as_ref().and_then(|s| s.txn_epoch) != Some(pb.epoch)
                {
                    return match current.as_ref() {
                        Some(s) if pb.epoch < s.epoch => UnitOutcome::ProducerFenced,
                        _ => UnitOutcome::InvalidTxnState,
                    };
                }
                match check_batch(
                    current.as_ref(),
                    pb.epoch,
                    pb.first_sequence,
                    pb.last_sequence,
                ) {
                    SequenceCheck::Accept => {
                        let o = next;
                        next += i64::from(batch.offset_span);
                        record_batch(
                            current,
                            pb.epoch,
                            RecentBatch {
                                first_sequence: pb.first_sequence,
                                last_sequence: pb.last_sequence,
                                base_offset: o,
                            },
                            now,
                        );
                        if batch.transactional && !is_open {
                            open.push(OpenTxn {
                                producer_id: pb.producer_id,
                                first_offset: o,
                            });
                        }
                        staged.push((batch, o));
                        o
                    }
                    SequenceCheck::Duplicate { base_offset } => {
                        first_offset.get_or_insert(base_offset);
                        continue;
                    }
                    SequenceCheck::Fenced { .. } => return UnitOutcome::ProducerFenced,
                    SequenceCheck::OutOfOrder { .. } => return UnitOutcome::OutOfOrderSequence,
                }
            }
        };
        all_duplicates = false;
        first_offset.get_or_insert(offset);
    }
    for (slot, s) in scratch {
        producers[slot] = s;
        dirty[slot] = true;
    }
    state.high_watermark = next;
    state.open_txns = open;
    aborted.extend(new_aborted);
    accepted.extend(staged);
    let base_offset = first_offset.unwrap_or(state.high_watermark);
    if all_duplicates && !unit.batches.is_empty() {
        UnitOutcome::Duplicate {
            base_offset,
            log_start_offset: state.log_start_offset,
        }
    } else {
        UnitOutcome::Appended {
            base_offset,
            log_start_offset: state.log_start_offset,
        }
    }
}

/// Groups accepted batches into index entries: one per run of batches that are adjacent
/// both in the segment and in offsets.
fn index_runs(segment: Uuid, accepted: &[(&AppendBatch, i64)]) -> Vec<IndexEntry> {
    let mut entries: Vec<IndexEntry> = Vec::new();
    for (batch, offset) in accepted {
        let last_offset = offset + i64::from(batch.offset_span) - 1;
        if let Some(e) = entries.last_mut() {
            if let Location::Wal {
                position, length, ..
            } = &mut e.location
            {
                if *position + u64::from(*length) != batch.position || e.last_offset + 1 != *offset
                {
                    entries.push(new_entry(segment, batch, *offset, last_offset));
                    continue;
                }
                *length += batch.length;
                e.last_offset = last_offset;
                e.batch_count += 1;
                e.max_timestamp = e.max_timestamp.max(batch.max_timestamp);
                continue;
            }
        }
        entries.push(new_entry(segment, batch, *offset, last_offset));
    }
    entries
}

fn new_entry(segment: Uuid, batch: &AppendBatch, offset: i64, last_offset: i64) -> IndexEntry {
    IndexEntry {
        base_offset: offset,
        last_offset,
        location: Location::Wal {
            segment,
            position: batch.position,
            length: batch.length,
        },
        batch_count: 1,
        max_timestamp: batch.max_timestamp,
    }
}

impl MetaStore {
    /// Aborted transactions of a partition that overlap offsets `from..=to`, by marker
    /// offset; at most `limit` markers at or after `from` are examined.
    pub async fn aborted_txns(
        &self,
        topic_id: Uuid,
        partition: i32,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<AbortedTxn>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let begin = keys::aborted(topic_id, partition, from);
                    let end = prefix_end(&keys::aborted_prefix(topic_id, partition));
                    let rows = tx.get_range(&begin, &end, limit, false).await?;
                    let mut out = Vec::new();
                    for (k, v) in &rows {
                        let a =
                            AbortedTxn::decode(keys::index_last_offset(k).unwrap_or_default(), v)?;
                        if a.first_offset <= to {
                            out.push(a);
                        }
                    }
                    Ok(out)
                })
            })
            .await
    }
}
