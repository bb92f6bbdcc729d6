//! The embedded metadata backend: one redb file in the data directory, and its commit
//! journal beside it.
//!
//! redb gives MVCC snapshots for readers and one writer at a time. Read-write transactions
//! here take a process-wide writer lock when they begin and read the latest snapshot, so
//! they are serializable by construction and never conflict; read-only transactions take no
//! lock. redb locks the file, so a second process opening the same store gets
//! [`KvError::Locked`].
//!
//! Durability: a commit writes the transaction's writes to the journal (`journal`: one
//! in-place write and `fdatasync`), so they become visible only once they are on disk.
//! Journaled transactions are not applied to redb one by one: they gather in one buffer
//! that every transaction reads over redb's snapshot, and every `APPLY_EVERY` commits
//! (or `APPLY_BYTES`, or a commit that clears a range) the buffer goes to redb in one
//! transaction, without redb's own sync.
//! Consecutive commits touch the same B-tree pages (the ends of the offset index, the
//! partition states), so applying eight costs little more than applying one, and each of
//! redb's commits copies, checksums and writes every page it touches. About once a second,
//! or when the journal is full, a commit is made durable by redb itself (a checkpoint, with
//! the buffer) and the journal starts over. Opening the store applies the journal's
//! records that redb's durable state does not have. A journal write with its sync costs a
//! fraction of redb's durable commit, which syncs the file twice and writes its allocator
//! state.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::journal::{self, Journal};
use super::{Buffered, KeyValue, KvError, KvStore, KvTxn, WriteBuffer};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// The sequence number of the last transaction applied, written with every transaction.
const APPLIED: TableDefinition<&str, u64> = TableDefinition::new("journal");
const APPLIED_KEY: &str = "applied";
/// Size of the journal file.
const JOURNAL_BYTES: u64 = 8 << 20;
/// A commit at least this long after the last checkpoint is made durable by redb.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// redb's page cache, half of which may hold pages written by commits and not yet written
/// to the file. A checkpoint writes those and syncs the file while holding the writer lock,
/// so every produce waits for it: with redb's default (1 GiB) a second of commits stayed
/// in memory and a checkpoint took 15-40 ms at 200 commits/s; with this much, commits write
/// their pages to the file (not synced) as they go and a checkpoint takes 3-9 ms. Reads
/// beyond it come from the operating system's cache.
const CACHE_BYTES: usize = 256 << 10;
/// Journaled commits applied to redb together, at most.
const APPLY_EVERY: usize = 8;
/// Journaled writes (bytes of keys and values) applied to redb together, at most.
const APPLY_BYTES: usize = 1 << 20;

pub struct EmbeddedKv {
    db: Arc<Database>,
    writer: Arc<Mutex<Writer>>,
    unapplied: Arc<Unapplied>,
    /// Set when a transaction reached the journal but not redb: this process's view is
    /// behind the durable state until the store is opened again.
    broken: Arc<AtomicBool>,
    path: PathBuf,
}

/// The writer's state, behind the writer lock.
struct Writer {
    journal: Journal,
    /// Sequence number of the last transaction committed (journaled, or applied by a
    /// checkpoint).
    seq: u64,
    /// Commits journaled and not yet applied to redb (their writes are in [`Unapplied`]).
    unapplied_commits: usize,
    checkpointed: Instant,
}

/// The writes of the commits that are journaled and not yet in redb, composed in commit
/// order. A transaction reads them over a redb snapshot, and takes the two under this lock:
/// the writer empties the buffer only after redb's commit of its writes, so a transaction
/// sees either the buffer over a snapshot without them, or over one with them (applying the
/// buffer again changes nothing), never an emptied buffer over a snapshot without them.
#[derive(Default)]
struct Unapplied(std::sync::Mutex<Arc<WriteBuffer>>);

impl Unapplied {
    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<WriteBuffer>> {
        // The guarded value is replaced whole, so a panic elsewhere cannot leave it torn.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, buffer: WriteBuffer) {
        *self.lock() = Arc::new(buffer);
    }
}

impl std::fmt::Debug for EmbeddedKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKv")
            .field("path", &self.path)
            .finish()
    }
}

fn redb_err(context: &str, e: impl std::error::Error + Send + Sync + 'static) -> KvError {
    KvError::backend_with(format!("embedded store: {context}"), e)
}

/// Applies one transaction's writes (cleared ranges first, then point writes) and its
/// sequence number to a redb write transaction.
fn apply<'a>(
    txn: &WriteTransaction,
    cleared: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    writes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    seq: u64,
) -> Result<(), KvError> {
    let mut table = txn
        .open_table(TABLE)
        .map_err(|e| redb_err("open table", e))?;
    for (begin, end) in cleared {
        table
            .retain_in::<&[u8], _>(begin..end, |_, _| false)
            .map_err(|e| redb_err("clear range", e))?;
    }
    for (key, value) in writes {
        match value {
            Some(v) => {
                table.insert(key, v).map_err(|e| redb_err("insert", e))?;
            }
            None => {
                table.remove(key).map_err(|e| redb_err("remove", e))?;
            }
        }
    }
    let mut applied = txn
        .open_table(APPLIED)
        .map_err(|e| redb_err("open journal table", e))?;
    applied
        .insert(APPLIED_KEY, seq)
        .map_err(|e| redb_err("journal sequence", e))?;
    Ok(())
}

impl EmbeddedKv {
    /// Opens (creating if needed) the store at `path`, and applies what its journal holds
    /// beyond redb's durable state.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        Self::open_with_journal(path, JOURNAL_BYTES)
    }

    fn open_with_journal(path: &Path, journal_bytes: u64) -> Result<Self, KvError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| redb_err(&format!("creating {}", dir.display()), e))?;
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => KvError::Locked {
                    path: path.display().to_string(),
                    reason: "the database file is locked; is another icestream running on this \
                         data directory? Several brokers need a shared store (postgres:// \
                         or fdb://)"
                        .into(),
                },
                e => redb_err(&format!("opening {}", path.display()), e),
            })?;
        let journal_path = journal_path(path);
        let (journal, records) = Journal::open(&journal_path, journal_bytes)
            .map_err(|e| redb_err(&format!("opening {}", journal_path.display()), e))?;
        let txn = db.begin_write().map_err(|e| redb_err("begin write", e))?;
        txn.open_table(TABLE)
            .map_err(|e| redb_err("creating table", e))?;
        let durable = txn
            .open_table(APPLIED)
            .map_err(|e| redb_err("creating journal table", e))?
            .get(APPLIED_KEY)
            .map_err(|e| redb_err("journal sequence", e))?
            .map_or(0, |v| v.value());
        // The records after redb's durable state, in order and without a gap.
        let mut seq = durable;
        for record in records.iter().filter(|r| r.seq > durable) {
            if record.seq != seq + 1 {
                break;
            }
            apply(
                &txn,
                record
                    .cleared
                    .iter()
                    .map(|(b, e)| (b.as_slice(), e.as_slice())),
                record
                    .writes
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_deref())),
                record.seq,
            )?;
            seq = record.seq;
        }
        if seq > durable {
            tracing::info!(
                path = %path.display(),
                transactions = seq - durable,
                "embedded store: journal replayed"
            );
        }
        txn.commit().map_err(|e| redb_err("commit", e))?;
        Ok(Self {
            db: Arc::new(db),
            writer: Arc::new(Mutex::new(Writer {
                journal,
                seq,
                unapplied_commits: 0,
                checkpointed: Instant::now(),
            })),
            unapplied: Arc::default(),
            broken: Arc::new(AtomicBool::new(false)),
            path: path.to_path_buf(),
        })
    }

    /// A transaction's view: redb's latest snapshot and the journaled writes not in it.
    fn snapshot(&self, guard: Option<OwnedMutexGuard<Writer>>) -> Result<EmbeddedTxn, KvError> {
        let unapplied = self.unapplied.lock();
        let read = self
            .db
            .begin_read()
            .map_err(|e| redb_err("begin read", e))?;
        let table = read
            .open_table(TABLE)
            .map_err(|e| redb_err("open table", e))?;
        Ok(EmbeddedTxn {
            db: self.db.clone(),
            table,
            unapplied: unapplied.clone(),
            pending: self.unapplied.clone(),
            guard,
            broken: self.broken.clone(),
            buffer: WriteBuffer::default(),
        })
    }
}

/// The journal of the store at `path`.
fn journal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

#[async_trait]
impl KvStore for EmbeddedKv {
    async fn begin(&self) -> Result<Box<dyn KvTxn>, KvError> {
        let guard = self.writer.clone().lock_owned().await;
        Ok(Box::new(self.snapshot(Some(guard))?))
    }

    async fn begin_read(&self) -> Result<Box<dyn KvTxn>, KvError> {
        Ok(Box::new(self.snapshot(None)?))
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn shared(&self) -> bool {
        false
    }
}

struct EmbeddedTxn {
    db: Arc<Database>,
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// Journaled writes that `table` may not have, read over it.
    unapplied: Arc<WriteBuffer>,
    /// Where a commit adds its writes.
    pending: Arc<Unapplied>,
    /// Held by read-write transactions until they commit or drop.
    guard: Option<OwnedMutexGuard<Writer>>,
    broken: Arc<AtomicBool>,
    buffer: WriteBuffer,
}

#[async_trait]
impl KvTxn for EmbeddedTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        if let Buffered::Written(v) = self.buffer.lookup(key) {
            return Ok(v);
        }
        if let Buffered::Written(v) = self.unapplied.lookup(key) {
            return Ok(v);
        }
        let value = self.table.get(key).map_err(|e| redb_err("get", e))?;
        Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
    }

    async fn get_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, KvError> {
        if begin >= end {
            return Ok(Vec::new());
        }
        // Rows each layer needs from the one below to return `limit` (None: all of them).
        let own = self.buffer.snapshot_limit(begin, end, limit);
        let take = own
            .and_then(|l| self.unapplied.snapshot_limit(begin, end, l))
            .unwrap_or(usize::MAX);
        let range = self
            .table
            .range::<&[u8]>(begin..end)
            .map_err(|e| redb_err("range", e))?;
        let mut rows = Vec::new();
        let mut push = |item: Result<_, redb::StorageError>| -> Result<(), KvError> {
            let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
                item.map_err(|e| redb_err("range read", e))?;
            rows.push((
                Bytes::copy_from_slice(k.value()),
                Bytes::copy_from_slice(v.value()),
            ));
            Ok(())
        };
        if reverse {
            for item in range.rev().take(take) {
                push(item)?;
            }
        } else {
            for item in range.take(take) {
                push(item)?;
            }
        }
        if !self.unapplied.is_empty() {
            rows = self
                .unapplied
                .merge_range(rows, begin, end, own.unwrap_or(0), reverse);
        }
        if self.buffer.is_empty() {
            if limit > 0 {
                rows.truncate(limit);
            }
            return Ok(rows);
        }
        Ok(self.buffer.merge_range(rows, begin, end, limit, reverse))
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.buffer.set(key, value);
    }

    fn clear(&mut self, key: &[u8]) {
        self.buffer.clear(key);
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        self.buffer.clear_range(begin, end);
    }

    async fn commit(self: Box<Self>) -> Result<(), KvError> {
        let EmbeddedTxn {
            db,
            buffer,
            guard,
            broken,
            pending,
            ..
        } = *self;
        if buffer.is_empty() {
            return Ok(());
        }
        let Some(mut writer) = guard else {
            return Err(KvError::ReadOnly);
        };
        if broken.load(Ordering::SeqCst) {
            return Err(KvError::backend(
                "embedded store: a transaction is in the journal but could not be applied; \
                 restart to apply it",
            ));
        }
        tokio::task::spawn_blocking(move || {
            commit_blocking(&db, &mut writer, &buffer, &broken, &pending)
        })
        .await
        .map_err(|e| KvError::UnknownOutcome(format!("embedded store commit task: {e}")))?
    }
}

/// Journals the writes and adds them to the unapplied ones, applying those to redb when
/// enough gathered; or (for a checkpoint) applies them all durably.
fn commit_blocking(
    db: &Database,
    writer: &mut Writer,
    buffer: &WriteBuffer,
    broken: &AtomicBool,
    unapplied: &Unapplied,
) -> Result<(), KvError> {
    let seq = writer.seq + 1;
    let record = journal::encode(seq, buffer);
    let checkpoint =
        writer.checkpointed.elapsed() >= CHECKPOINT_EVERY || !writer.journal.fits(record.len());
    if !checkpoint {
        if let Err(e) = writer.journal.append(&record) {
            // The record may be on disk, whole: it would be applied at the next open.
            broken.store(true, Ordering::SeqCst);
            return Err(KvError::UnknownOutcome(format!(
                "embedded store journal write: {e}"
            )));
        }
    }
    let mut gathered = WriteBuffer::clone(&unapplied.lock());
    gathered.absorb(buffer);
    let commits = writer.unapplied_commits + 1;
    // A transaction that clears a range goes to redb at once (with the gathered ones): the
    // gathered writes then never hold a cleared range, so a range read over them takes
    // only `limit` rows plus the deleted ones from redb, never the whole range.
    let clears = !buffer.cleared_ranges().is_empty();
    if !checkpoint && !clears && commits < APPLY_EVERY && gathered.size() < APPLY_BYTES {
        // Journaled: transactions see it from now on, and redb gets it with later ones.
        unapplied.set(gathered);
        writer.seq = seq;
        writer.unapplied_commits = commits;
        return Ok(());
    }
    let applied = (|| {
        let mut txn = db.begin_write().map_err(|e| redb_err("begin write", e))?;
        if !checkpoint {
            txn.set_durability(Durability::None)
                .map_err(|e| redb_err("durability", e))?;
        }
        apply(
            &txn,
            gathered
                .cleared_ranges()
                .iter()
                .map(|(b, e)| (b.as_slice(), e.as_slice())),
            gathered.writes().map(|(k, v)| (k.as_slice(), v.as_deref())),
            seq,
        )?;
        txn.commit()
            .map_err(|e| KvError::UnknownOutcome(format!("embedded store commit: {e}")))
    })();
    match applied {
        Ok(()) => {
            // In redb's latest snapshot now (see `Unapplied` for why only now).
            unapplied.set(WriteBuffer::default());
            writer.seq = seq;
            writer.unapplied_commits = 0;
            if checkpoint {
                writer.journal.restart();
                writer.checkpointed = Instant::now();
            }
            Ok(())
        }
        Err(e) if !checkpoint => {
            // In the journal, not visible: readers here would not see what a restart will.
            broken.store(true, Ordering::SeqCst);
            Err(KvError::UnknownOutcome(e.to_string()))
        }
        // A durable commit that failed: redb rolled it back, or its sync failed (outcome
        // unknown, as the error says).
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, EmbeddedKv) {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = EmbeddedKv::open(&dir.path().join("meta.redb")).expect("open");
        (dir, kv)
    }

    crate::kv_conformance_tests!(store());

    #[test]
    fn second_open_is_refused() {
        let (dir, _kv) = store();
        let err = EmbeddedKv::open(&dir.path().join("meta.redb")).expect_err("locked");
        assert!(matches!(err, KvError::Locked { .. }), "{err}");
    }

    /// Copies the store's files as a crash would leave them: redb's file as written so far
    /// (its durable state, and whatever later pages reached it) and the journal.
    fn crash_copy(from: &Path, to: &Path, with_journal: bool) {
        std::fs::create_dir_all(to).expect("mkdir");
        std::fs::copy(from.join("meta.redb"), to.join("meta.redb")).expect("copy redb");
        if with_journal {
            std::fs::copy(from.join("meta.redb.journal"), to.join("meta.redb.journal"))
                .expect("copy journal");
        }
    }

    async fn commit_keys(kv: &EmbeddedKv, keys: std::ops::Range<u32>) {
        for i in keys {
            let mut t = kv.begin().await.expect("begin");
            t.set(format!("k{i:05}").as_bytes(), &i.to_le_bytes());
            if i % 7 == 0 {
                t.clear_range(b"k", format!("k{:05}", i.saturating_sub(3)).as_bytes());
            }
            t.commit().await.expect("commit");
        }
    }

    async fn keys(kv: &EmbeddedKv) -> Vec<KeyValue> {
        let mut t = kv.begin_read().await.expect("begin");
        t.get_range(b"k", b"l", 0, false).await.expect("range")
    }

    #[tokio::test]
    async fn journaled_commits_survive_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("live");
        let kv = EmbeddedKv::open(&live.join("meta.redb")).expect("open");
        commit_keys(&kv, 0..50).await;
        let expected = keys(&kv).await;
        assert_eq!(
            expected.len(),
            4,
            "k00046 to k00049: the clear at 49 took the rest"
        );
        crash_copy(&live, &dir.path().join("crashed"), true);
        crash_copy(&live, &dir.path().join("no-journal"), false);
        drop(kv);

        let kv = EmbeddedKv::open(&dir.path().join("crashed/meta.redb")).expect("reopen");
        assert_eq!(keys(&kv).await, expected);
        // The commits made after the store opened were in the journal only: redb's file
        // alone does not have them.
        let bare = EmbeddedKv::open(&dir.path().join("no-journal/meta.redb")).expect("open");
        assert_ne!(keys(&bare).await, expected);
        // Replayed once: opening again (and committing on) changes nothing already there.
        commit_keys(&kv, 50..52).await;
        drop(kv);
        let kv = EmbeddedKv::open(&dir.path().join("crashed/meta.redb")).expect("reopen");
        assert_eq!(keys(&kv).await.len(), 6);
    }

    /// Commits bigger than the cache: their pages reach redb's file before any checkpoint
    /// makes them durable, and a crash copy still opens to exactly the journaled state;
    /// without the journal, to a consistent earlier one.
    #[tokio::test]
    async fn commits_larger_than_the_cache_survive_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("live");
        let kv = EmbeddedKv::open(&live.join("meta.redb")).expect("open");
        let value = |i: u32| vec![(i % 251) as u8; 8 << 10];
        for i in 0..128u32 {
            let mut t = kv.begin().await.expect("begin");
            t.set(format!("k{i:05}").as_bytes(), &value(i));
            t.commit().await.expect("commit");
        }
        let written = std::fs::metadata(live.join("meta.redb"))
            .expect("stat")
            .len();
        assert!(
            written > 4 * CACHE_BYTES as u64,
            "{written} bytes: the pages did not reach the file"
        );
        crash_copy(&live, &dir.path().join("crashed"), true);
        crash_copy(&live, &dir.path().join("no-journal"), false);
        drop(kv);

        let kv = EmbeddedKv::open(&dir.path().join("crashed/meta.redb")).expect("reopen");
        let got = keys(&kv).await;
        assert_eq!(got.len(), 128);
        for (i, (k, v)) in got.iter().enumerate() {
            assert_eq!(k.as_ref(), format!("k{i:05}").as_bytes());
            assert_eq!(v.as_ref(), value(i as u32).as_slice());
        }
        // redb's durable state alone: a prefix of the commits, each whole.
        let bare = EmbeddedKv::open(&dir.path().join("no-journal/meta.redb")).expect("open");
        for (i, (k, v)) in keys(&bare).await.iter().enumerate() {
            assert_eq!(k.as_ref(), format!("k{i:05}").as_bytes());
            assert_eq!(v.as_ref(), value(i as u32).as_slice());
        }
    }

    #[tokio::test]
    async fn a_full_journal_checkpoints_and_starts_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("live");
        // Room for a few records only: most commits find the journal full and checkpoint.
        let kv = EmbeddedKv::open_with_journal(&live.join("meta.redb"), 256).expect("open");
        commit_keys(&kv, 0..40).await;
        let expected = keys(&kv).await;
        crash_copy(&live, &dir.path().join("crashed"), true);
        drop(kv);
        let kv = EmbeddedKv::open_with_journal(&dir.path().join("crashed/meta.redb"), 256)
            .expect("reopen");
        assert_eq!(keys(&kv).await, expected);
        let mut t = kv.begin_read().await.expect("begin");
        assert_eq!(
            t.get(b"k00039").await.expect("get"),
            Some(Bytes::copy_from_slice(&39u32.to_le_bytes()))
        );
    }

    /// Reads see exactly the committed state while commits gather unapplied and are applied
    /// in groups: point reads and range reads (both ways, with limits) over redb, the
    /// gathered writes and the transaction's own, checked against a model.
    #[tokio::test]
    async fn reads_over_unapplied_commits_match_a_model() {
        use std::collections::BTreeMap;
        let (_dir, kv) = store();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let key = |i: u64| format!("m{i:03}").into_bytes();
        let ranges = |a: u64, b: u64| (key(a.min(b)), key(a.max(b) + 1));
        for round in 0..300u64 {
            let mut t = kv.begin().await.expect("begin");
            let mut own = model.clone();
            for _ in 0..1 + next(4) {
                match next(10) {
                    0 => {
                        let (b, e) = ranges(next(60), next(60));
                        t.clear_range(&b, &e);
                        own.retain(|k, _| *k < b || *k >= e);
                    }
                    1..=2 => {
                        let k = key(next(60));
                        t.clear(&k);
                        own.remove(&k);
                    }
                    _ => {
                        let k = key(next(60));
                        let v = round.to_le_bytes().to_vec();
                        t.set(&k, &v);
                        own.insert(k, v);
                    }
                }
            }
            // Inside the transaction: its own writes over everything committed.
            let (b, e) = ranges(next(60), next(60));
            let limit = next(5) as usize;
            let reverse = next(2) == 1;
            let got = t.get_range(&b, &e, limit, reverse).await.expect("range");
            let want: Vec<_> = own.range(b.clone()..e.clone()).collect();
            let want: Vec<_> = if reverse {
                want.into_iter().rev().collect()
            } else {
                want
            };
            let take = if limit == 0 { usize::MAX } else { limit };
            let want: Vec<KeyValue> = want
                .into_iter()
                .take(take)
                .map(|(k, v)| (Bytes::from(k.clone()), Bytes::from(v.clone())))
                .collect();
            assert_eq!(
                got, want,
                "round {round}: own range {b:?}..{e:?} {limit} {reverse}"
            );
            if next(8) == 0 {
                drop(t);
                continue;
            }
            t.commit().await.expect("commit");
            model = own;
            let mut r = kv.begin_read().await.expect("read");
            let k = key(next(60));
            assert_eq!(
                r.get(&k).await.expect("get").map(|v| v.to_vec()),
                model.get(&k).cloned(),
                "round {round}: get {k:?}"
            );
            let all = r.get_range(b"m", b"n", 0, false).await.expect("all");
            let want: Vec<KeyValue> = model
                .iter()
                .map(|(k, v)| (Bytes::from(k.clone()), Bytes::from(v.clone())))
                .collect();
            assert_eq!(all, want, "round {round}: everything");
        }
        // And after a reopen, from the journal and redb.
        let expected = keys_in(&kv, b"m", b"n").await;
        let path = kv.path.clone();
        drop(kv);
        let kv = EmbeddedKv::open(&path).expect("reopen");
        assert_eq!(keys_in(&kv, b"m", b"n").await, expected);
    }

    async fn keys_in(kv: &EmbeddedKv, begin: &[u8], end: &[u8]) -> Vec<KeyValue> {
        let mut t = kv.begin_read().await.expect("begin");
        t.get_range(begin, end, 0, false).await.expect("range")
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.redb");
        {
            let kv = EmbeddedKv::open(&path).expect("open");
            let mut t = kv.begin().await.expect("begin");
            t.set(b"k", b"v");
            t.commit().await.expect("commit");
        }
        let kv = EmbeddedKv::open(&path).expect("reopen");
        let mut t = kv.begin_read().await.expect("begin");
        assert_eq!(
            t.get(b"k").await.expect("get"),
            Some(Bytes::from_static(b"v"))
        );
    }
}
