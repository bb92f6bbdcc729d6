//! The embedded metadata backend: one redb file in the data directory.
//!
//! redb gives MVCC snapshots for readers and one writer at a time. Read-write transactions
//! here take a process-wide writer lock when they begin and read the latest snapshot, so
//! they are serializable by construction and never conflict; read-only transactions take no
//! lock. Commits fsync (redb's immediate durability) on a blocking thread. redb locks the
//! file, so a second process opening the same store gets [`KvError::Locked`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadOnlyTable, ReadableDatabase, TableDefinition};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Buffered, KeyValue, KvError, KvStore, KvTxn, WriteBuffer};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

pub struct EmbeddedKv {
    db: Arc<Database>,
    writer: Arc<Mutex<()>>,
    path: PathBuf,
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

impl EmbeddedKv {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| redb_err(&format!("creating {}", dir.display()), e))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => KvError::Locked {
                path: path.display().to_string(),
                reason: "the database file is locked; is another icestream running on this \
                         data directory? Several brokers need a shared store (postgres:// \
                         or fdb://)"
                    .into(),
            },
            e => redb_err(&format!("opening {}", path.display()), e),
        })?;
        let txn = db.begin_write().map_err(|e| redb_err("begin write", e))?;
        txn.open_table(TABLE)
            .map_err(|e| redb_err("creating table", e))?;
        txn.commit().map_err(|e| redb_err("commit", e))?;
        Ok(Self {
            db: Arc::new(db),
            writer: Arc::new(Mutex::new(())),
            path: path.to_path_buf(),
        })
    }

    fn snapshot(&self) -> Result<ReadOnlyTable<&'static [u8], &'static [u8]>, KvError> {
        let read = self
            .db
            .begin_read()
            .map_err(|e| redb_err("begin read", e))?;
        read.open_table(TABLE)
            .map_err(|e| redb_err("open table", e))
    }
}

#[async_trait]
impl KvStore for EmbeddedKv {
    async fn begin(&self) -> Result<Box<dyn KvTxn>, KvError> {
        let guard = self.writer.clone().lock_owned().await;
        Ok(Box::new(EmbeddedTxn {
            db: self.db.clone(),
            table: self.snapshot()?,
            guard: Some(guard),
            buffer: WriteBuffer::default(),
        }))
    }

    async fn begin_read(&self) -> Result<Box<dyn KvTxn>, KvError> {
        Ok(Box::new(EmbeddedTxn {
            db: self.db.clone(),
            table: self.snapshot()?,
            guard: None,
            buffer: WriteBuffer::default(),
        }))
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
    /// Held by read-write transactions until they commit or drop.
    guard: Option<OwnedMutexGuard<()>>,
    buffer: WriteBuffer,
}

#[async_trait]
impl KvTxn for EmbeddedTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        if let Buffered::Written(v) = self.buffer.lookup(key) {
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
        let take = self
            .buffer
            .snapshot_limit(begin, end, limit)
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
            db, buffer, guard, ..
        } = *self;
        if buffer.is_empty() {
            return Ok(());
        }
        let Some(guard) = guard else {
            return Err(KvError::ReadOnly);
        };
        let result = tokio::task::spawn_blocking(move || -> Result<(), KvError> {
            let txn = db.begin_write().map_err(|e| redb_err("begin write", e))?;
            {
                let mut table = txn
                    .open_table(TABLE)
                    .map_err(|e| redb_err("open table", e))?;
                for (begin, end) in buffer.cleared_ranges() {
                    table
                        .retain_in::<&[u8], _>(begin.as_slice()..end.as_slice(), |_, _| false)
                        .map_err(|e| redb_err("clear range", e))?;
                }
                for (key, value) in buffer.writes() {
                    match value {
                        Some(v) => {
                            table
                                .insert(key.as_slice(), v.as_ref())
                                .map_err(|e| redb_err("insert", e))?;
                        }
                        None => {
                            table
                                .remove(key.as_slice())
                                .map_err(|e| redb_err("remove", e))?;
                        }
                    }
                }
            }
            // A failed fsync leaves the outcome unknown to us.
            txn.commit()
                .map_err(|e| KvError::UnknownOutcome(format!("embedded store commit: {e}")))
        })
        .await
        .map_err(|e| KvError::UnknownOutcome(format!("embedded store commit task: {e}")))?;
        drop(guard);
        result
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
