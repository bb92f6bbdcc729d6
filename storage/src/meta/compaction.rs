//! What the compactor needs agreed: per-topic leases, the intent of a compaction round
//! (written before its snapshot is committed, so a crash at any point can be resolved),
//! the swap of WAL index entries to the table's data files, and retention trims.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys;
use super::segments::{adjust_segments, release_entries};
use super::values::{IndexEntry, Location, PartitionState};
use super::{MetaError, MetaStore, Result};
use crate::kv::{prefix_end, KvStoreExt};

const LEASE: u8 = b'l';
const INTENT: u8 = b'k';
const REWRITE_INTENT: u8 = b'r';

fn lease_key(name: &str) -> Vec<u8> {
    let mut k = vec![LEASE];
    k.extend_from_slice(name.as_bytes());
    k
}

fn intent_key(topic_id: Uuid) -> Vec<u8> {
    let mut k = vec![INTENT];
    k.extend_from_slice(topic_id.as_bytes());
    k
}

fn rewrite_intent_key(topic_id: Uuid) -> Vec<u8> {
    let mut k = vec![REWRITE_INTENT];
    k.extend_from_slice(topic_id.as_bytes());
    k
}

/// A run of one partition's data files rewritten into `added` (which hold exactly the
/// rows of `removed`, in offset order).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RewriteGroup {
    pub partition: i32,
    /// URLs of the data files replaced.
    pub removed: Vec<String>,
    pub added: Vec<RoundFile>,
    /// The partition's next offset to fold when the rewrite was planned: the replaced
    /// files' index entries (which may reach past their last row, over commit markers)
    /// all lie below it.
    #[serde(default)]
    pub until: Option<i64>,
}

/// A file rewrite about to commit: if its `replace` snapshot (tagged `commit_id`) is in the
/// table, the index must be moved to the added files; if not, the added files are garbage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RewriteIntent {
    pub v: u32,
    pub commit_id: String,
    pub groups: Vec<RewriteGroup>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Lease {
    holder: String,
    expires_ms: i64,
}

/// Batches of one partition a compaction round left out of the table — transaction
/// markers, records of aborted transactions, batches that could not be decoded — which
/// stay readable where they are in their WAL segment, as Kafka consumers expect (markers
/// for read_committed readers, aborted records for read_uncommitted ones).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeptRun {
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub segment: Uuid,
    pub position: u64,
    pub length: u32,
    pub batch_count: u32,
    pub max_timestamp: i64,
}

impl KeptRun {
    pub fn entry(&self) -> IndexEntry {
        IndexEntry {
            base_offset: self.base_offset,
            last_offset: self.last_offset,
            location: Location::Wal {
                segment: self.segment,
                position: self.position,
                length: self.length,
            },
            batch_count: self.batch_count,
            max_timestamp: self.max_timestamp,
        }
    }
}

/// Index entries for a data file holding rows `f.first_offset..=f.last_offset`, around the
/// kept WAL runs inside that range: one entry per stretch between them, each with its
/// share of the file's rows and of `bytes`.
fn file_entries(f: &RoundFile, kept: &[(i64, i64)], bytes: u64) -> Vec<IndexEntry> {
    let mut stretches = Vec::new();
    let mut start = f.first_offset;
    let mut inside: Vec<(i64, i64)> = kept
        .iter()
        .copied()
        .filter(|&(b, l)| l >= f.first_offset && b <= f.last_offset)
        .collect();
    inside.sort_unstable();
    for (b, l) in inside {
        if b > start {
            stretches.push((start, b - 1));
        }
        start = start.max(l + 1);
    }
    if start <= f.last_offset {
        stretches.push((start, f.last_offset));
    }
    let span = (f.last_offset - f.first_offset + 1).max(1) as u64;
    stretches
        .into_iter()
        .map(|(b, l)| {
            let share = (l - b + 1) as u64;
            IndexEntry {
                base_offset: b,
                last_offset: l,
                location: Location::Table {
                    file: f.file.clone(),
                    rows: ((u64::from(f.rows) * share).div_ceil(span)).max(1) as u32,
                    bytes: bytes * share / span,
                },
                batch_count: 1,
                max_timestamp: f.max_timestamp,
            }
        })
        .collect()
}

/// One data file a compaction round wrote: a run of one partition's offsets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoundFile {
    pub partition: i32,
    /// URL of the data file.
    pub file: String,
    pub first_offset: i64,
    pub last_offset: i64,
    pub rows: u32,
    pub max_timestamp: i64,
}

/// A compaction round about to commit: if its snapshot (tagged `commit_id`) is in the
/// table, the index must be swapped to `files`; if not, `files` are garbage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoundIntent {
    pub v: u32,
    pub commit_id: String,
    pub files: Vec<RoundFile>,
    /// Batches left out of the table that stay in the WAL (absent in older intents).
    #[serde(default)]
    pub kept: Vec<KeptRun>,
}

fn decode_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &'static str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| MetaError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

impl MetaStore {
    /// Takes or renews the lease `name` for `holder` until `now + ttl_ms`. Returns false if
    /// another holder has it and it has not expired.
    pub async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let now = self.now_ms();
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.kv
            .transact(|tx| {
                let (name, holder) = (name.clone(), holder.clone());
                Box::pin(async move {
                    let key = lease_key(&name);
                    if let Some(v) = tx.get(&key).await? {
                        let lease: Lease = decode_json(&v, "lease")?;
                        if lease.holder != holder && lease.expires_ms > now {
                            return Ok(false);
                        }
                    }
                    let lease = Lease {
                        holder,
                        expires_ms: now + ttl_ms,
                    };
                    tx.set(&key, &serde_json::to_vec(&lease).unwrap_or_default());
                    Ok(true)
                })
            })
            .await
    }

    /// Gives a lease up if `holder` has it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.kv
            .transact(|tx| {
                let (name, holder) = (name.clone(), holder.clone());
                Box::pin(async move {
                    let key = lease_key(&name);
                    if let Some(v) = tx.get(&key).await? {
                        let lease: Lease = decode_json(&v, "lease")?;
                        if lease.holder == holder {
                            tx.clear(&key);
                        }
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn get_json<T: for<'de> Deserialize<'de> + Send + 'static>(
        &self,
        key: Vec<u8>,
        what: &'static str,
    ) -> Result<Option<T>> {
        self.kv
            .read(|tx| {
                let key = key.clone();
                Box::pin(async move {
                    tx.get(&key)
                        .await?
                        .map(|v| decode_json(&v, what))
                        .transpose()
                })
            })
            .await
    }

    /// Sets `key` to `value`, or clears it when `value` is `None`.
    async fn put_json<T: Serialize>(&self, key: Vec<u8>, value: Option<&T>) -> Result<()> {
        let value = value.map(|v| serde_json::to_vec(v).unwrap_or_default());
        self.kv
            .transact(|tx| {
                let (key, value) = (key.clone(), value.clone());
                Box::pin(async move {
                    match value {
                        Some(v) => tx.set(&key, &v),
                        None => tx.clear(&key),
                    }
                    Ok(())
                })
            })
            .await
    }

    pub async fn round_intent(&self, topic_id: Uuid) -> Result<Option<RoundIntent>> {
        self.get_json(intent_key(topic_id), "round intent").await
    }

    pub async fn set_round_intent(&self, topic_id: Uuid, intent: &RoundIntent) -> Result<()> {
        self.put_json(intent_key(topic_id), Some(intent)).await
    }

    pub async fn clear_round_intent(&self, topic_id: Uuid) -> Result<()> {
        self.put_json::<RoundIntent>(intent_key(topic_id), None)
            .await
    }

    pub async fn rewrite_intent(&self, topic_id: Uuid) -> Result<Option<RewriteIntent>> {
        self.get_json(rewrite_intent_key(topic_id), "rewrite intent")
            .await
    }

    pub async fn set_rewrite_intent(&self, topic_id: Uuid, intent: &RewriteIntent) -> Result<()> {
        self.put_json(rewrite_intent_key(topic_id), Some(intent))
            .await
    }

    pub async fn clear_rewrite_intent(&self, topic_id: Uuid) -> Result<()> {
        self.put_json::<RewriteIntent>(rewrite_intent_key(topic_id), None)
            .await
    }

    /// Points the index at the files of a committed rewrite: per group, in one transaction,
    /// the entries of the removed files within the added files' offsets are replaced by one
    /// entry per added file; then the intent is cleared. Idempotent (entries already moved
    /// are left alone). An added file's entry starts at the first offset an old entry still
    /// covered (retention may have trimmed the start), and carries the old entries' bytes.
    /// Returns the new entries.
    pub async fn swap_rewritten(
        &self,
        topic_id: Uuid,
        groups: &[RewriteGroup],
    ) -> Result<Vec<(i32, IndexEntry)>> {
        let mut created = Vec::new();
        for g in groups {
            let group = g.clone();
            let entries = self
                .kv
                .transact(|tx| {
                    let group = group.clone();
                    Box::pin(async move { swap_group(tx, topic_id, group).await })
                })
                .await?;
            created.extend(entries.into_iter().map(|e| (g.partition, e)));
        }
        self.clear_rewrite_intent(topic_id).await?;
        Ok(created)
    }

    /// Points the index at a committed round's data files: for each partition, in its own
    /// transaction (so appends to the topic never wait behind one large swap), the WAL
    /// entries covering the round's offsets are replaced by entries for the files (around
    /// the `kept` runs, which stay WAL entries of their own) and their segments released;
    /// then the intent is cleared. Idempotent: entries already swapped are left alone, so a
    /// swap interrupted between partitions is finished by running it again (the intent
    /// stays until every partition is done). Returns the new entries.
    pub async fn swap_to_table(
        &self,
        topic_id: Uuid,
        files: &[RoundFile],
        kept: &[KeptRun],
    ) -> Result<Vec<(i32, IndexEntry)>> {
        let mut partitions: Vec<i32> = files
            .iter()
            .map(|f| f.partition)
            .chain(kept.iter().map(|k| k.partition))
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        let mut created = Vec::new();
        for p in partitions {
            let mut mine: Vec<RoundFile> =
                files.iter().filter(|f| f.partition == p).cloned().collect();
            mine.sort_by_key(|f| f.first_offset);
            let runs: Vec<KeptRun> = kept.iter().filter(|k| k.partition == p).cloned().collect();
            created.extend(
                self.swap_partition(topic_id, p, mine, runs)
                    .await?
                    .into_iter()
                    .map(|e| (p, e)),
            );
        }
        self.clear_round_intent(topic_id).await?;
        Ok(created)
    }

    async fn swap_partition(
        &self,
        topic_id: Uuid,
        p: i32,
        mine: Vec<RoundFile>,
        kept: Vec<KeptRun>,
    ) -> Result<Vec<IndexEntry>> {
        let now = self.now_ms();
        self.kv
            .transact(|tx| {
                let (mine, kept) = (mine.clone(), kept.clone());
                Box::pin(async move {
                    let bounds = mine
                        .iter()
                        .map(|f| (f.first_offset, f.last_offset))
                        .chain(kept.iter().map(|k| (k.base_offset, k.last_offset)));
                    let (Some(start), Some(end)) = (
                        bounds.clone().map(|(b, _)| b).min(),
                        bounds.map(|(_, l)| l).max(),
                    ) else {
                        return Ok(Vec::new());
                    };
                    let kept_entries: Vec<IndexEntry> = kept.iter().map(KeptRun::entry).collect();
                    let begin = keys::index(topic_id, p, start);
                    let stop = prefix_end(&keys::index(topic_id, p, end));
                    let rows = tx.get_range(&begin, &stop, 0, false).await?;
                    let mut old = Vec::new();
                    // Kept runs already in the index as they are (a batch left in the WAL
                    // whose entry is unchanged, or a swap run again after a crash) are
                    // neither removed nor counted into their segment again.
                    let mut present = vec![false; kept_entries.len()];
                    for (k, v) in &rows {
                        let e =
                            IndexEntry::decode(keys::index_last_offset(k).unwrap_or_default(), v)?;
                        if let Some(i) = kept_entries.iter().position(|k| *k == e) {
                            present[i] = true;
                            continue;
                        }
                        if matches!(e.location, Location::Table { .. }) {
                            // Already swapped (a swap run again after a crash).
                            continue;
                        }
                        if e.base_offset < start {
                            return Err(MetaError::Corrupt {
                                what: "index entry",
                                reason: format!(
                                    "entry {}..={} straddles the compacted range start {start}",
                                    e.base_offset, e.last_offset
                                ),
                            });
                        }
                        old.push((k.clone(), e));
                    }
                    if old.is_empty() {
                        return Ok(Vec::new());
                    }
                    let kept_bytes: u64 = kept_entries.iter().map(IndexEntry::size_bytes).sum();
                    let total_bytes: u64 = old
                        .iter()
                        .map(|(_, e)| e.size_bytes())
                        .sum::<u64>()
                        .saturating_sub(kept_bytes);
                    let total_rows: u64 =
                        mine.iter().map(|f| u64::from(f.rows)).sum::<u64>().max(1);
                    for (k, _) in &old {
                        tx.clear(k);
                    }
                    let removed: Vec<IndexEntry> = old.into_iter().map(|(_, e)| e).collect();
                    let added: Vec<IndexEntry> = kept_entries
                        .iter()
                        .zip(&present)
                        .filter(|(_, present)| !**present)
                        .map(|(e, _)| e.clone())
                        .collect();
                    adjust_segments(tx, &removed, &added, now).await?;
                    let kept_ranges: Vec<(i64, i64)> = kept_entries
                        .iter()
                        .map(|e| (e.base_offset, e.last_offset))
                        .collect();
                    let mut created = kept_entries;
                    for f in &mine {
                        let bytes = total_bytes * u64::from(f.rows) / total_rows;
                        created.extend(file_entries(f, &kept_ranges, bytes));
                    }
                    for entry in &created {
                        tx.set(
                            &keys::index(topic_id, p, entry.last_offset),
                            &entry.encode(),
                        );
                    }
                    created.sort_by_key(|e| e.base_offset);
                    Ok(created)
                })
            })
            .await
    }

    /// Removes a partition's index entries that end before `new_start` (never past the
    /// high watermark), releasing their segments, and advances the log start to
    /// `new_start` if it is behind. Returns the new partition state. Entries straddling
    /// `new_start` stay (the log start may point inside an entry, as in Kafka); a
    /// `new_start` below the log start only removes entries (those DeleteRecords left
    /// below it until the table held their rows).
    pub async fn trim_log(
        &self,
        topic_id: Uuid,
        partition: i32,
        new_start: i64,
    ) -> Result<Option<PartitionState>> {
        let now = self.now_ms();
        self.kv
            .transact(|tx| {
                Box::pin(async move {
                    let pkey = keys::partition(topic_id, partition);
                    let Some(v) = tx.get(&pkey).await? else {
                        return Ok(None);
                    };
                    let mut state = PartitionState::decode(&v)?;
                    let target = new_start.min(state.high_watermark);
                    let begin = keys::index_prefix(topic_id, partition);
                    let stop = keys::index(topic_id, partition, target);
                    let rows = tx.get_range(&begin, &stop, 0, false).await?;
                    if rows.is_empty() && target <= state.log_start_offset {
                        return Ok(Some(state));
                    }
                    let mut removed = Vec::with_capacity(rows.len());
                    for (k, v) in &rows {
                        let e =
                            IndexEntry::decode(keys::index_last_offset(k).unwrap_or_default(), v)?;
                        tx.clear(k);
                        state.size_bytes = state.size_bytes.saturating_sub(e.size_bytes());
                        removed.push(e);
                    }
                    release_entries(tx, &removed, now).await?;
                    // Aborted transactions wholly before the new start concern no one.
                    tx.clear_range(
                        &keys::aborted_prefix(topic_id, partition),
                        &keys::aborted(topic_id, partition, target),
                    );
                    state.log_start_offset = state.log_start_offset.max(target);
                    tx.set(&pkey, &state.encode());
                    Ok(Some(state))
                })
            })
            .await
    }

    /// DeleteRecords: moves a partition's log start forward to `offset`, which must not be
    /// past the high watermark. Index entries stay (the compactor still folds their rows
    /// into the table); `trim_log` removes them once the table holds them. Returns the
    /// partition state after the move, or `Err(state)` (unchanged) when `offset` is past
    /// its high watermark; `None` if the partition does not exist.
    pub async fn advance_log_start(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    ) -> Result<Option<std::result::Result<PartitionState, PartitionState>>> {
        self.kv
            .transact(|tx| {
                Box::pin(async move {
                    let pkey = keys::partition(topic_id, partition);
                    let Some(v) = tx.get(&pkey).await? else {
                        return Ok(None);
                    };
                    let mut state = PartitionState::decode(&v)?;
                    if offset > state.high_watermark {
                        return Ok(Some(Err(state)));
                    }
                    if offset > state.log_start_offset {
                        state.log_start_offset = offset;
                        tx.set(&pkey, &state.encode());
                    }
                    Ok(Some(Ok(state)))
                })
            })
            .await
    }
}

async fn swap_group(
    tx: &mut dyn crate::kv::KvTxn,
    topic_id: Uuid,
    group: RewriteGroup,
) -> Result<Vec<IndexEntry>> {
    /// Index entries read per page while looking for the replaced files' entries.
    const PAGE: usize = 256;
    let mut added = group.added;
    added.sort_by_key(|f| f.first_offset);
    let (Some(first), Some(last)) = (added.first(), added.last()) else {
        return Ok(Vec::new());
    };
    let p = group.partition;
    // The replaced files' entries, from their first row on, with the WAL runs kept between
    // them; past their last row only while more of their entries follow.
    let until = group
        .until
        .unwrap_or(last.last_offset + 1)
        .max(last.last_offset + 1);
    let end = keys::index(topic_id, p, until);
    let mut old = Vec::new();
    let mut kept = Vec::new();
    let mut pending_wal = Vec::new();
    // Before their first row: entries that reach back over commit markers and kept runs.
    let floor = keys::index_prefix(topic_id, p);
    let mut below = keys::index(topic_id, p, first.first_offset);
    'back: loop {
        let rows = tx.get_range(&floor, &below, PAGE, true).await?;
        for (k, v) in &rows {
            let e = IndexEntry::decode(keys::index_last_offset(k).unwrap_or_default(), v)?;
            match &e.location {
                Location::Table { file, .. } if group.removed.contains(file) => {
                    kept.append(&mut pending_wal);
                    old.push((k.clone(), e));
                }
                Location::Wal { .. } => pending_wal.push((e.base_offset, e.last_offset)),
                _ => break 'back,
            }
        }
        match rows.last() {
            Some((k, _)) if rows.len() == PAGE => below = k.to_vec(),
            _ => break,
        }
    }
    pending_wal.clear();
    let mut from = keys::index(topic_id, p, first.first_offset);
    'scan: loop {
        let rows = tx.get_range(&from, &end, PAGE, false).await?;
        for (k, v) in &rows {
            let e = IndexEntry::decode(keys::index_last_offset(k).unwrap_or_default(), v)?;
            match &e.location {
                Location::Table { file, .. } if group.removed.contains(file) => {
                    kept.append(&mut pending_wal);
                    old.push((k.clone(), e));
                }
                // Already moved (a swap interrupted and run again).
                Location::Table { file, .. } if added.iter().any(|f| &f.file == file) => {
                    kept.append(&mut pending_wal);
                }
                // Batches kept in the WAL between the rewritten files stay where they are.
                Location::Wal { .. } => pending_wal.push((e.base_offset, e.last_offset)),
                Location::Table { .. } if e.base_offset > last.last_offset => break 'scan,
                Location::Table { .. } => {
                    return Err(MetaError::Corrupt {
                        what: "index entry",
                        reason: format!(
                            "entry {}..={} inside rewritten offsets {}..={} is not one of the rewritten files",
                            e.base_offset, e.last_offset, first.first_offset, last.last_offset
                        ),
                    })
                }
            }
        }
        match rows.last() {
            Some((k, _)) if rows.len() == PAGE => {
                from = k.to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    if old.is_empty() {
        return Ok(Vec::new());
    }
    let start = old
        .iter()
        .map(|(_, e)| e.base_offset)
        .min()
        .unwrap_or(first.first_offset);
    let total_bytes: u64 = old.iter().map(|(_, e)| e.size_bytes()).sum();
    let total_rows: u64 = added.iter().map(|f| u64::from(f.rows)).sum::<u64>().max(1);
    for (k, _) in &old {
        tx.clear(k);
    }
    let end = old
        .iter()
        .map(|(_, e)| e.last_offset)
        .max()
        .unwrap_or(last.last_offset);
    // The new files' entries tile what the old ones covered, around the kept runs.
    let added: Vec<RoundFile> = added
        .into_iter()
        .filter(|f| f.last_offset >= start)
        .collect();
    let n = added.len();
    let mut next = start;
    let mut created = Vec::with_capacity(n);
    for (i, mut f) in added.into_iter().enumerate() {
        f.first_offset = next;
        if i + 1 == n {
            f.last_offset = f.last_offset.max(end);
        }
        next = f.last_offset + 1;
        let bytes = total_bytes * u64::from(f.rows) / total_rows;
        for entry in file_entries(&f, &kept, bytes) {
            tx.set(
                &keys::index(topic_id, p, entry.last_offset),
                &entry.encode(),
            );
            created.push(entry);
        }
    }
    Ok(created)
}
