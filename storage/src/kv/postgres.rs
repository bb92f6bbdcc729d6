//! The PostgreSQL metadata backend: one key/value table under SERIALIZABLE isolation.
//!
//! Reads go to the server as they happen (PostgreSQL's serializable snapshot isolation
//! tracks them); writes are buffered and sent at commit in three batched statements
//! (range deletes, one multi-row upsert, one multi-key delete), so a segment commit costs
//! a few round trips. Serialization failures (SQLSTATE 40001, 40P01) become
//! [`KvError::Conflict`]; a connection lost during COMMIT becomes
//! [`KvError::UnknownOutcome`].

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use std::str::FromStr;
use std::time::Duration;

use super::{Buffered, KeyValue, KvError, KvStore, KvTxn, WriteBuffer};

const TABLE: &str = "icestream_kv";

/// The advisory lock key under which brokers create the metadata table, one at a time
/// (the bytes of "icestrkv"; any constant no other application uses).
pub const SCHEMA_LOCK: i64 = 0x6963_6573_7472_6b76;

pub struct PostgresKv {
    pool: PgPool,
    url_for_logs: String,
}

impl std::fmt::Debug for PostgresKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresKv")
            .field("url", &self.url_for_logs)
            .finish()
    }
}

/// Maps a sqlx error: serialization failures are conflicts, everything else certainly
/// aborted the transaction (callers map errors during COMMIT themselves).
fn pg_err(context: &str, e: sqlx::Error) -> KvError {
    if let sqlx::Error::Database(db) = &e {
        if matches!(db.code().as_deref(), Some("40001") | Some("40P01")) {
            return KvError::Conflict(format!("postgres {context}: {}", db.message()));
        }
    }
    KvError::backend_with(format!("postgres {context}"), e)
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "postgres://(unparsable)".into(),
    }
}

impl PostgresKv {
    /// Connects and creates the table if it does not exist.
    pub async fn connect(url: &str) -> Result<Self, KvError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| pg_err("parsing the url", e))?
            .application_name("icestream");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| pg_err(&format!("connecting to {}", redact(url)), e))?;
        // Brokers of a new cluster may start together: two concurrent `CREATE TABLE IF NOT
        // EXISTS` can both pass the existence check and one then fails on PostgreSQL's
        // catalog (a unique violation on `pg_type`). A transaction-scoped advisory lock
        // makes the creators take turns; the second one sees the table and does nothing.
        let create = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(SCHEMA_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (k BYTEA PRIMARY KEY, v BYTEA NOT NULL)"
            ))
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        };
        create.await.map_err(|e| pg_err("creating the table", e))?;
        Ok(Self {
            pool,
            url_for_logs: redact(url),
        })
    }

    async fn start(&self, isolation: &str) -> Result<Transaction<'static, Postgres>, KvError> {
        let mut tx = self.pool.begin().await.map_err(|e| pg_err("begin", e))?;
        sqlx::query(isolation)
            .execute(&mut *tx)
            .await
            .map_err(|e| pg_err("set isolation", e))?;
        Ok(tx)
    }
}

#[async_trait]
impl KvStore for PostgresKv {
    async fn begin(&self) -> Result<Box<dyn KvTxn>, KvError> {
        let tx = self
            .start("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            .await?;
        Ok(Box::new(PgTxn {
            tx,
            read_only: false,
            buffer: WriteBuffer::default(),
        }))
    }

    async fn begin_read(&self) -> Result<Box<dyn KvTxn>, KvError> {
        let tx = self
            .start("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        Ok(Box::new(PgTxn {
            tx,
            read_only: true,
            buffer: WriteBuffer::default(),
        }))
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }
}

struct PgTxn {
    tx: Transaction<'static, Postgres>,
    read_only: bool,
    buffer: WriteBuffer,
}

#[async_trait]
impl KvTxn for PgTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        if let Buffered::Written(v) = self.buffer.lookup(key) {
            return Ok(v);
        }
        let row = sqlx::query(&format!("SELECT v FROM {TABLE} WHERE k = $1"))
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(|e| pg_err("get", e))?;
        Ok(row.map(|r| Bytes::from(r.get::<Vec<u8>, _>(0))))
    }

    async fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Bytes>>, KvError> {
        let mut out: Vec<Option<Bytes>> = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for key in keys {
            match self.buffer.lookup(key) {
                Buffered::Written(v) => out.push(v),
                Buffered::Untouched => {
                    out.push(None);
                    missing.push(key.clone());
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let rows = sqlx::query(&format!("SELECT k, v FROM {TABLE} WHERE k = ANY($1)"))
            .bind(&missing)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| pg_err("get_many", e))?;
        let found: std::collections::HashMap<Vec<u8>, Vec<u8>> = rows
            .into_iter()
            .map(|r| (r.get::<Vec<u8>, _>(0), r.get::<Vec<u8>, _>(1)))
            .collect();
        for (slot, key) in out.iter_mut().zip(keys) {
            if slot.is_none() && matches!(self.buffer.lookup(key), Buffered::Untouched) {
                *slot = found.get(key).map(|v| Bytes::copy_from_slice(v));
            }
        }
        Ok(out)
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
        let snapshot_limit = self
            .buffer
            .snapshot_limit(begin, end, limit)
            .map(|l| l as i64)
            .unwrap_or(i64::MAX);
        let order = if reverse { "DESC" } else { "ASC" };
        let rows = sqlx::query(&format!(
            "SELECT k, v FROM {TABLE} WHERE k >= $1 AND k < $2 ORDER BY k {order} LIMIT $3"
        ))
        .bind(begin)
        .bind(end)
        .bind(snapshot_limit)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| pg_err("range", e))?;
        let rows: Vec<KeyValue> = rows
            .into_iter()
            .map(|r| {
                (
                    Bytes::from(r.get::<Vec<u8>, _>(0)),
                    Bytes::from(r.get::<Vec<u8>, _>(1)),
                )
            })
            .collect();
        if self.buffer.is_empty() {
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
        let PgTxn {
            mut tx,
            read_only,
            buffer,
        } = *self;
        if buffer.is_empty() {
            return tx.commit().await.map_err(|e| pg_err("commit", e));
        }
        if read_only {
            return Err(KvError::ReadOnly);
        }
        for (begin, end) in buffer.cleared_ranges() {
            sqlx::query(&format!("DELETE FROM {TABLE} WHERE k >= $1 AND k < $2"))
                .bind(begin)
                .bind(end)
                .execute(&mut *tx)
                .await
                .map_err(|e| pg_err("clear range", e))?;
        }
        let mut upsert_keys: Vec<&[u8]> = Vec::new();
        let mut upsert_values: Vec<&[u8]> = Vec::new();
        let mut deletes: Vec<&[u8]> = Vec::new();
        for (k, v) in buffer.writes() {
            match v {
                Some(v) => {
                    upsert_keys.push(k);
                    upsert_values.push(v);
                }
                None => deletes.push(k),
            }
        }
        if !deletes.is_empty() {
            sqlx::query(&format!("DELETE FROM {TABLE} WHERE k = ANY($1)"))
                .bind(&deletes)
                .execute(&mut *tx)
                .await
                .map_err(|e| pg_err("delete", e))?;
        }
        if !upsert_keys.is_empty() {
            sqlx::query(&format!(
                "INSERT INTO {TABLE} (k, v) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ))
            .bind(&upsert_keys)
            .bind(&upsert_values)
            .execute(&mut *tx)
            .await
            .map_err(|e| pg_err("upsert", e))?;
        }
        tx.commit().await.map_err(|e| match pg_err("commit", e) {
            conflict @ KvError::Conflict(_) => conflict,
            // The server may have applied the commit before the connection failed.
            other => KvError::UnknownOutcome(other.to_string()),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Runs when `ICESTREAM_TEST_POSTGRES_URL` names a database (the test script starts a
    //! private PostgreSQL and sets it); each test works in its own fresh schema.
    use super::*;

    pub(crate) async fn fresh() -> Option<((), PostgresKv)> {
        let base = std::env::var("ICESTREAM_TEST_POSTGRES_URL").ok()?;
        let schema = format!("t{}", uuid::Uuid::new_v4().simple());
        let admin = PgPool::connect(&base).await.expect("connect");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Some(((), PostgresKv::connect(&url).await.expect("connect kv")))
    }

    /// Brokers of a new cluster starting together each create the table; none may fail
    /// on PostgreSQL's race between concurrent `CREATE TABLE IF NOT EXISTS`.
    #[tokio::test]
    async fn brokers_starting_together_all_connect() {
        let Ok(base) = std::env::var("ICESTREAM_TEST_POSTGRES_URL") else {
            eprintln!("ICESTREAM_TEST_POSTGRES_URL not set: skipping");
            return;
        };
        for _ in 0..5 {
            let schema = format!("t{}", uuid::Uuid::new_v4().simple());
            let admin = PgPool::connect(&base).await.expect("connect");
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin)
                .await
                .expect("create schema");
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            let starts = (0..8).map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PostgresKv::connect(&url).await })
            });
            for start in futures::future::join_all(starts).await {
                let kv = start.expect("task").expect("every broker connects");
                let mut txn = kv.begin_read().await.expect("begin");
                assert!(txn
                    .get(b"absent")
                    .await
                    .expect("the table is there")
                    .is_none());
            }
        }
    }

    macro_rules! pg_or_skip {
        () => {
            match fresh().await {
                Some(s) => s,
                None => {
                    eprintln!("ICESTREAM_TEST_POSTGRES_URL not set: skipping");
                    return;
                }
            }
        };
    }

    crate::kv_conformance_tests!(pg_or_skip!());
}
