//! The log of every partition as this broker sees it.
//!
//! Writes go through the [`appender`]: produced batches are grouped into WAL segments,
//! put in the object store and committed to the offset index. This module is the read
//! side: high watermarks, a window of recent index entries per partition, and the
//! [`cache`] of record batch data with base offsets already patched.
//!
//! The appender calls [`Log::on_commit`] after every segment commit, so a single broker's
//! view is always current; entries and states it has not seen are read from the metadata
//! store on demand.

pub mod appender;
mod cache;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use icestream_storage::batch::{batches, patch_offsets, BatchHeader};
use icestream_storage::meta::{IndexEntry, Location, PartitionResult};
use icestream_storage::segment::segment_key;
use icestream_storage::{MetaError, MetaStore, Objects};
use kafka_protocol::records::RecordBatchDecoder;
use object_store::ObjectStoreExt;
use tokio::sync::watch;
use uuid::Uuid;

use cache::{ByteCache, Weighed};

/// Index entries kept in memory per partition.
const INDEX_WINDOW: usize = 4096;
/// Index entries read from the metadata store per lookup.
const INDEX_PAGE: usize = 64;
/// The leader epoch icestream reports: there are no leader elections.
pub const LEADER_EPOCH: i32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        high_watermark: i64,
    },
    #[error("unknown partition")]
    UnknownPartition,
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("reading {key}: {source}")]
    Object {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("reading table file {file}: {reason}")]
    Table { file: String, reason: String },
}

/// One partition's read state.
pub struct PartitionLog {
    high_watermark: AtomicI64,
    log_start: AtomicI64,
    last_stable: AtomicI64,
    /// Recent index entries by last offset.
    entries: Mutex<BTreeMap<i64, IndexEntry>>,
}

impl PartitionLog {
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_start(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// The last stable offset: below it no transaction is undecided.
    pub fn last_stable(&self) -> i64 {
        self.last_stable
            .load(Ordering::Acquire)
            .min(self.high_watermark())
    }

    /// The offset reads stop at: the high watermark, or the last stable offset for
    /// read_committed.
    pub fn read_limit(&self, committed: bool) -> i64 {
        if committed {
            self.last_stable()
        } else {
            self.high_watermark()
        }
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, IndexEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached entry holding `offset`, if any.
    fn find(&self, offset: i64) -> Option<IndexEntry> {
        let entries = self.lock_entries();
        let (_, e) = entries.range(offset..).next()?;
        (e.base_offset <= offset).then(|| e.clone())
    }

    fn remember(&self, new: impl IntoIterator<Item = IndexEntry>) {
        let mut entries = self.lock_entries();
        for e in new {
            entries.insert(e.last_offset, e);
        }
        while entries.len() > INDEX_WINDOW {
            entries.pop_first();
        }
    }
}

/// Record batches read from a partition.
pub struct ReadResult {
    pub batches: Vec<Bytes>,
    pub bytes: usize,
    pub high_watermark: i64,
    pub log_start: i64,
    pub last_stable: i64,
    /// Offsets `..next` are covered by the batches.
    pub next: i64,
    /// Some batch is transactional (read_committed readers need the aborted ranges).
    pub transactional: bool,
}

/// Batch data in the cache: as served (offsets and leader epoch set), or as produced, set
/// when first read, so that a log nobody tails costs no copy of what it appends.
#[derive(Clone)]
enum Cached {
    Served(Bytes),
    Produced {
        batches: Arc<[Bytes]>,
        base_offset: i64,
        len: usize,
    },
}

impl Weighed for Cached {
    fn weight(&self) -> usize {
        match self {
            Cached::Served(b) => b.len(),
            Cached::Produced { len, .. } => *len,
        }
    }
}

pub struct Log {
    meta: MetaStore,
    objects: Objects,
    partitions: DashMap<(Uuid, i32), Arc<PartitionLog>>,
    data: ByteCache<(Uuid, u64), Cached>,
    /// Rows per table read when nothing better is known.
    table_read_rows: usize,
    commits: watch::Sender<u64>,
}

impl Log {
    pub fn new(meta: MetaStore, objects: Objects, cache_bytes: usize) -> Self {
        Self {
            meta,
            objects,
            partitions: DashMap::new(),
            data: ByteCache::new(cache_bytes),
            table_read_rows: 4096,
            commits: watch::Sender::new(0),
        }
    }

    /// A receiver that changes whenever a segment commit advanced some partition.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// The read state of a partition, loading it on first use; `None` if it does not exist.
    pub async fn partition(
        &self,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Option<Arc<PartitionLog>>, MetaError> {
        if let Some(p) = self.partitions.get(&(topic_id, partition)) {
            return Ok(Some(p.clone()));
        }
        let Some(state) = self.meta.partition_state(topic_id, partition).await? else {
            return Ok(None);
        };
        let entry = self
            .partitions
            .entry((topic_id, partition))
            .or_insert_with(|| {
                Arc::new(PartitionLog {
                    high_watermark: AtomicI64::new(state.high_watermark),
                    log_start: AtomicI64::new(state.log_start_offset),
                    last_stable: AtomicI64::new(state.last_stable_offset()),
                    entries: Mutex::new(BTreeMap::new()),
                })
            });
        Ok(Some(entry.clone()))
    }

    /// Re-reads the states of the partitions this broker serves (other brokers append and
    /// trim them too) and wakes long polls when a high watermark moved.
    pub async fn refresh(&self) -> Result<(), MetaError> {
        let keys: Vec<(Uuid, i32)> = self.partitions.iter().map(|e| *e.key()).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let states = self.meta.partition_states(&keys).await?;
        let mut moved = false;
        for (key, state) in keys.iter().zip(states) {
            match (self.partitions.get(key), state) {
                (Some(p), Some(state)) => {
                    let before = p
                        .high_watermark
                        .fetch_max(state.high_watermark, Ordering::AcqRel);
                    moved |= before < state.high_watermark;
                    p.log_start
                        .fetch_max(state.log_start_offset, Ordering::AcqRel);
                    let lso = state.last_stable_offset();
                    moved |= p.last_stable.fetch_max(lso, Ordering::AcqRel) < lso;
                }
                (Some(_), None) => {
                    // Deleted topic.
                    self.partitions.remove(key);
                }
                _ => {}
            }
        }
        if moved {
            self.commits.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// Forgets a deleted topic's partitions.
    pub fn forget_topic(&self, topic_id: Uuid) {
        self.partitions.retain(|(t, _), _| *t != topic_id);
    }

    /// Publishes a commit: new entries, high watermark, and the entries' data (patched
    /// from `batch_data`, the batches the segment holds for this partition by position).
    pub fn on_commit(
        &self,
        topic_id: Uuid,
        partition: i32,
        result: &PartitionResult,
        batch_data: &[(u64, Bytes)],
    ) {
        for entry in &result.entries {
            let Location::Wal {
                segment,
                position,
                length,
            } = entry.location
            else {
                continue;
            };
            let end = position + u64::from(length);
            let batches: Arc<[Bytes]> = batch_data
                .iter()
                .filter(|(p, _)| *p >= position && *p < end)
                .map(|(_, b)| b.clone())
                .collect();
            let len = batches.iter().map(Bytes::len).sum();
            if len == length as usize {
                self.data.insert(
                    (segment, position),
                    Cached::Produced {
                        batches,
                        base_offset: entry.base_offset,
                        len,
                    },
                );
            }
        }
        if let Some(p) = self.partitions.get(&(topic_id, partition)) {
            p.remember(result.entries.iter().cloned());
            p.high_watermark
                .fetch_max(result.high_watermark, Ordering::AcqRel);
            p.log_start
                .fetch_max(result.log_start_offset, Ordering::AcqRel);
            p.last_stable
                .fetch_max(result.last_stable_offset, Ordering::AcqRel);
        }
        self.commits.send_modify(|n| *n += 1);
    }

    /// The entry holding `offset`, from the window or the metadata store.
    async fn entry_for(
        &self,
        topic_id: Uuid,
        partition: i32,
        plog: &PartitionLog,
        offset: i64,
    ) -> Result<Option<IndexEntry>, ReadError> {
        if let Some(e) = plog.find(offset) {
            return Ok(Some(e));
        }
        let page = self
            .meta
            .index_entries(topic_id, partition, offset, INDEX_PAGE)
            .await?;
        let found = page
            .first()
            .filter(|e| e.base_offset <= offset && offset <= e.last_offset)
            .cloned();
        plog.remember(page);
        Ok(found)
    }

    /// The batches of a WAL index entry, base offsets patched.
    async fn wal_data(
        &self,
        entry: &IndexEntry,
        segment: Uuid,
        position: u64,
        length: u32,
    ) -> Result<Bytes, ReadError> {
        // The cache holds what was read at this position, which may be a longer run than
        // this entry (an entry the compactor narrowed to the batches kept in the WAL
        // starts where the original did): whole batches, the same offsets, so the prefix.
        if let Some(b) = self.cached_wal_data(segment, position) {
            if b.len() == length as usize {
                return Ok(b);
            }
            if b.len() > length as usize {
                return Ok(b.slice(..length as usize));
            }
        }
        let key = segment_key(segment);
        let raw = self
            .objects
            .store
            .get_range(
                &self.objects.path(&key),
                position..position + u64::from(length),
            )
            .await
            .map_err(|source| ReadError::Object {
                key: key.clone(),
                source,
            })?;
        let mut buf = BytesMut::from(raw.as_ref());
        let next = patch_offsets(&mut buf, entry.base_offset, LEADER_EPOCH)
            .map_err(|e| ReadError::Corrupt(format!("{key} at {position}: {e}")))?;
        if next != entry.next_offset() {
            return Err(ReadError::Corrupt(format!(
                "{key} at {position}: batches end at offset {next}, index says {}",
                entry.next_offset()
            )));
        }
        let bytes = buf.freeze();
        self.data
            .insert((segment, position), Cached::Served(bytes.clone()));
        Ok(bytes)
    }

    /// The cached batches at `position` of `segment`, ready to serve; produced ones get
    /// their offsets and leader epoch now, once.
    fn cached_wal_data(&self, segment: Uuid, position: u64) -> Option<Bytes> {
        match self.data.get(&(segment, position))? {
            Cached::Served(b) => Some(b),
            Cached::Produced {
                batches,
                base_offset,
                len,
            } => {
                let mut buf = BytesMut::with_capacity(len);
                for b in batches.iter() {
                    buf.extend_from_slice(b);
                }
                patch_offsets(&mut buf, base_offset, LEADER_EPOCH).ok()?;
                let bytes = buf.freeze();
                self.data
                    .insert((segment, position), Cached::Served(bytes.clone()));
                Some(bytes)
            }
        }
    }

    /// Batches holding offsets `from..` of `entry` (at least `from`'s), and the offset after
    /// the last one they cover. WAL entries come whole from the segment; table entries are
    /// rebuilt from the Parquet rows (only the row groups needed, about `max_bytes` worth).
    pub async fn entry_data(
        &self,
        entry: &IndexEntry,
        from: i64,
        max_bytes: usize,
    ) -> Result<(Bytes, i64), ReadError> {
        match &entry.location {
            Location::Wal {
                segment,
                position,
                length,
            } => Ok((
                self.wal_data(entry, *segment, *position, *length).await?,
                entry.next_offset(),
            )),
            Location::Table { file, rows, bytes } => {
                let per_row = if *rows > 0 {
                    (*bytes / u64::from(*rows)).max(1)
                } else {
                    1
                };
                let want = ((max_bytes as u64 / per_row) as i64)
                    .clamp(1, self.table_read_rows as i64 * 16);
                let to = entry.last_offset.min(from.saturating_add(want - 1));
                // Batches rebuilt from Parquet share the bounded cache with WAL data, keyed
                // by file, range end and start: readers replaying the same offsets with the
                // same fetch sizes (several groups, or a restarted one) read the file once.
                let key = (table_read_key(file, to), from as u64);
                if let Some(Cached::Served(data)) = self.data.get(&key) {
                    crate::metrics::inc(&crate::metrics::TABLE_READ_CACHE_HITS);
                    return Ok((data, to + 1));
                }
                crate::metrics::inc(&crate::metrics::TABLE_READS);
                let (store, path) = self.objects.resolve_url(file).ok_or_else(|| {
                    ReadError::Corrupt(format!("{file} is outside the object store"))
                })?;
                let rows = icestream_catalog::reader::read_rows(store, path, from, to)
                    .await
                    .map_err(|e| ReadError::Table {
                        file: file.clone(),
                        reason: e.to_string(),
                    })?;
                let data = icestream_storage::records::encode_batches(&rows)
                    .map_err(|e| ReadError::Corrupt(format!("re-encoding rows of {file}: {e}")))?;
                // Offsets at the end with no rows (markers, aborted transactions) are
                // covered by an empty batch, so consumers move past them.
                let covered = rows.last().map_or(from, |r| r.offset + 1).max(from);
                let data = if covered <= to {
                    let mut buf = BytesMut::from(data.as_ref());
                    buf.extend_from_slice(&icestream_storage::records::encode_gap(covered, to));
                    buf.freeze()
                } else {
                    data
                };
                self.data.insert(key, Cached::Served(data.clone()));
                Ok((data, to + 1))
            }
        }
    }

    /// Replaces the window's WAL entries covered by a compaction swap with the new table
    /// entries.
    pub fn on_swap(&self, topic_id: Uuid, partition: i32, entries: &[IndexEntry]) {
        let Some(p) = self.partitions.get(&(topic_id, partition)) else {
            return;
        };
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let mut window = p.lock_entries();
        let covered: Vec<i64> = window
            .range(first.base_offset..=last.last_offset)
            .map(|(k, _)| *k)
            .collect();
        for k in covered {
            window.remove(&k);
        }
        for e in entries {
            window.insert(e.last_offset, e.clone());
        }
    }

    /// Moves a partition's log start forward (retention) and forgets entries before it.
    pub fn on_trim(&self, topic_id: Uuid, partition: i32, log_start: i64) {
        if let Some(p) = self.partitions.get(&(topic_id, partition)) {
            p.log_start.fetch_max(log_start, Ordering::AcqRel);
            let mut window = p.lock_entries();
            let gone: Vec<i64> = window.range(..log_start).map(|(k, _)| *k).collect();
            for k in gone {
                window.remove(&k);
            }
        }
    }

    /// Drops a partition's cached index entries (they may point at deleted segments).
    fn forget_window(&self, topic_id: Uuid, partition: i32) {
        if let Some(p) = self.partitions.get(&(topic_id, partition)) {
            p.lock_entries().clear();
        }
    }

    /// Reads whole batches from `offset` on, up to `max_bytes`, stopping at the last stable
    /// offset when `committed` (read_committed). With `min_one` the first batch is returned
    /// whole even when larger, as KIP-74 asks of the first non-empty partition of a fetch,
    /// so consumers make progress past large batches; without it nothing goes past
    /// `max_bytes`.
    pub async fn read(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        committed: bool,
    ) -> Result<ReadResult, ReadError> {
        let plog = self
            .partition(topic_id, partition)
            .await?
            .ok_or(ReadError::UnknownPartition)?;
        let high_watermark = plog.high_watermark();
        let last_stable = plog.last_stable();
        let limit = if committed {
            last_stable
        } else {
            high_watermark
        };
        let log_start = plog.log_start();
        if offset < log_start || offset > high_watermark {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start,
                high_watermark,
            });
        }
        let mut result = ReadResult {
            batches: Vec::new(),
            bytes: 0,
            high_watermark,
            log_start,
            last_stable,
            next: offset,
            transactional: false,
        };
        let mut next = offset;
        let mut retried = false;
        'entries: while next < limit && (min_one || max_bytes > 0) {
            let Some(entry) = self.entry_for(topic_id, partition, &plog, next).await? else {
                tracing::warn!(%topic_id, partition, offset = next, "no index entry for offset");
                break;
            };
            let want = max_bytes.saturating_sub(result.bytes).max(1);
            let (data, after) = match self.entry_data(&entry, next, want).await {
                Err(ReadError::Object {
                    source: object_store::Error::NotFound { .. },
                    ..
                })
                | Err(ReadError::Table { .. })
                    if !retried =>
                {
                    // The segment was compacted and collected since the entry was cached,
                    // or the data file was rewritten into another (by another broker's
                    // compactor) and deleted: read the index again.
                    retried = true;
                    self.forget_window(topic_id, partition);
                    continue;
                }
                other => other?,
            };
            for item in batches(&data) {
                let (header, batch) =
                    item.map_err(|e| ReadError::Corrupt(format!("batch in index entry: {e}")))?;
                if header.last_offset() < next {
                    continue;
                }
                if header.base_offset >= limit {
                    break 'entries;
                }
                if result.bytes + batch.len() > max_bytes
                    && (!min_one || !result.batches.is_empty())
                {
                    break 'entries;
                }
                result.bytes += batch.len();
                result.transactional |= header.is_transactional();
                result.next = header.last_offset() + 1;
                result.batches.push(batch);
                if result.bytes >= max_bytes {
                    break 'entries;
                }
            }
            next = after;
            result.next = result.next.max(next.min(limit));
        }
        Ok(result)
    }

    /// The first offset whose record timestamp is `>= timestamp`, with that timestamp, or
    /// `None` if every record is older.
    pub async fn offset_for_timestamp(
        &self,
        topic_id: Uuid,
        partition: i32,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, ReadError> {
        let plog = self
            .partition(topic_id, partition)
            .await?
            .ok_or(ReadError::UnknownPartition)?;
        let mut from = plog.log_start();
        loop {
            let page = self
                .meta
                .index_entries(topic_id, partition, from, 256)
                .await?;
            let Some(last) = page.last() else {
                return Ok(None);
            };
            from = last.next_offset();
            for entry in page.iter().filter(|e| e.max_timestamp >= timestamp) {
                if let Some(found) = self.find_in_entry(entry, |ts| ts >= timestamp).await? {
                    return Ok(Some(found));
                }
            }
        }
    }

    /// The offset and timestamp of the record with the largest timestamp (the first such
    /// record), for ListOffsets with timestamp -3.
    pub async fn max_timestamp_offset(
        &self,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Option<(i64, i64)>, ReadError> {
        let plog = self
            .partition(topic_id, partition)
            .await?
            .ok_or(ReadError::UnknownPartition)?;
        let mut from = plog.log_start();
        let mut best: Option<IndexEntry> = None;
        loop {
            let page = self
                .meta
                .index_entries(topic_id, partition, from, 256)
                .await?;
            let Some(last) = page.last() else { break };
            from = last.next_offset();
            for e in page {
                if best
                    .as_ref()
                    .is_none_or(|b| e.max_timestamp > b.max_timestamp)
                {
                    best = Some(e);
                }
            }
        }
        match best {
            Some(entry) => {
                let max = entry.max_timestamp;
                self.find_in_entry(&entry, |ts| ts >= max).await
            }
            None => Ok(None),
        }
    }

    /// Decodes the batches of an entry to find the first record whose timestamp satisfies
    /// `hit`.
    async fn find_in_entry(
        &self,
        entry: &IndexEntry,
        hit: impl Fn(i64) -> bool,
    ) -> Result<Option<(i64, i64)>, ReadError> {
        let mut from = entry.base_offset;
        loop {
            let (data, after) = self.entry_data(entry, from, 8 << 20).await?;
            for item in batches(&data) {
                let (header, batch): (BatchHeader, Bytes) =
                    item.map_err(|e| ReadError::Corrupt(e.to_string()))?;
                if !hit(header.max_timestamp) || header.is_control() {
                    continue;
                }
                let mut buf = batch.clone();
                let set = RecordBatchDecoder::decode(&mut buf)
                    .map_err(|e| ReadError::Corrupt(format!("decoding batch: {e}")))?;
                if let Some(r) = set.records.iter().find(|r| hit(r.timestamp)) {
                    return Ok(Some((r.offset, r.timestamp)));
                }
            }
            if after > entry.last_offset {
                break;
            }
            from = after;
        }
        Ok(None)
    }
}

/// Cache key part of a table read: the file and the last offset read, hashed (WAL keys are
/// segment ids, random UUIDs: no collisions in practice).
fn table_read_key(file: &str, to: i64) -> Uuid {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    file.hash(&mut h);
    Uuid::from_u64_pair(h.finish(), to as u64)
}
