//! The transactional ordered key-value interface that every metadata backend implements.
//!
//! The model is FoundationDB's: a transaction reads a consistent snapshot, buffers its
//! writes, and commits them atomically under serializable isolation. Everything icestream
//! must agree on (topics, the offset index, producer state, groups, leases) is written once
//! over this interface in [`crate::meta`]; backends implement only these few methods.
//!
//! Backends are chosen by URL through [`open`]: `embedded[:PATH]`, `postgres://…`,
//! `fdb://CLUSTER_FILE`.

mod buffer;
pub mod embedded;
#[cfg(feature = "foundationdb")]
pub mod fdb;
mod journal;
pub mod postgres;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use buffer::{Buffered, WriteBuffer};

/// A key and its value, as returned by range reads.
pub type KeyValue = (Bytes, Bytes);

/// Errors of a metadata backend. The variant says whether the transaction certainly
/// aborted ([`KvError::Conflict`], [`KvError::Backend`]) or may have committed
/// ([`KvError::UnknownOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The transaction conflicted with another one and certainly did not commit. Retry it.
    #[error("transaction conflict (certainly aborted): {0}")]
    Conflict(String),
    /// The commit may or may not have been applied (connection lost during commit, ...).
    /// Retrying is safe only for idempotent transactions.
    #[error("transaction outcome unknown (it may have committed): {0}")]
    UnknownOutcome(String),
    /// The transaction is too large or ran for too long for the backend.
    #[error("transaction too large or too old: {0}")]
    TooLarge(String),
    /// A write was attempted in a read-only transaction.
    #[error("write in a read-only transaction")]
    ReadOnly,
    /// The store is held by another process (embedded backend).
    #[error("metadata store {path} is in use by another process: {reason}")]
    Locked { path: String, reason: String },
    /// The URL does not name a backend this build supports.
    #[error("unsupported metadata store url {url:?}: {reason}")]
    UnsupportedUrl { url: String, reason: String },
    /// Any other backend failure; the transaction certainly did not commit.
    #[error("metadata backend error: {message}")]
    Backend {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl KvError {
    pub fn backend(message: impl Into<String>) -> Self {
        Self::Backend {
            message: message.into(),
            source: None,
        }
    }

    pub fn backend_with(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// True when retrying the whole transaction is the right reaction and safe for any
    /// transaction (it certainly did not commit).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }

    /// True when the transaction may have been applied.
    pub fn maybe_committed(&self) -> bool {
        matches!(self, Self::UnknownOutcome(_))
    }
}

/// A transaction. Reads see a consistent snapshot plus the transaction's own writes.
///
/// Contract for every backend:
/// - writes (`set`, `clear`, `clear_range`) are buffered and become visible to other
///   transactions only when [`KvTxn::commit`] returns `Ok`, all at once;
/// - commit fails with [`KvError::Conflict`] if anything this transaction read was changed
///   by a transaction that committed after this one started (serializable isolation);
/// - dropping a transaction without committing aborts it;
/// - a read-only transaction ([`KvStore::begin_read`]) never conflicts; writes in it make
///   `commit` fail with [`KvError::ReadOnly`].
#[async_trait]
pub trait KvTxn: Send {
    /// Reads one key.
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, KvError>;

    /// Reads several keys in one round trip where the backend allows it. The result is in
    /// the order of `keys`.
    async fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Bytes>>, KvError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }

    /// Reads keys in `[begin, end)` in ascending order (descending when `reverse`), at most
    /// `limit` of them (0 means no limit).
    async fn get_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, KvError>;

    fn set(&mut self, key: &[u8], value: &[u8]);

    fn clear(&mut self, key: &[u8]);

    /// Clears every key in `[begin, end)`.
    fn clear_range(&mut self, begin: &[u8], end: &[u8]);

    /// Commits the buffered writes atomically. See the trait contract for errors.
    async fn commit(self: Box<Self>) -> Result<(), KvError>;
}

/// A metadata backend.
#[async_trait]
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// Starts a read-write transaction.
    async fn begin(&self) -> Result<Box<dyn KvTxn>, KvError>;

    /// Starts a read-only transaction (a consistent snapshot that never conflicts).
    async fn begin_read(&self) -> Result<Box<dyn KvTxn>, KvError>;

    /// A short name for logs and metrics ("embedded", "postgres", "foundationdb").
    fn kind(&self) -> &'static str;

    /// Whether other processes may use the store at the same time (PostgreSQL,
    /// FoundationDB: brokers share it and take node ids from it). The embedded store is
    /// locked by the one process that opened it: every broker registration in it is a
    /// previous run's.
    fn shared(&self) -> bool;
}

/// Errors of transaction bodies: [`KvStoreExt::transact`] retries the retryable ones.
pub trait TxnError: From<KvError> + Send {
    /// True when the transaction certainly aborted and running it again may succeed.
    fn is_retryable(&self) -> bool;
}

impl TxnError for KvError {
    fn is_retryable(&self) -> bool {
        KvError::is_retryable(self)
    }
}

/// A transaction body for [`KvStoreExt::transact`].
pub type TxnFuture<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

/// Helpers over any [`KvStore`].
#[async_trait]
pub trait KvStoreExt: KvStore {
    /// Runs `body` in a read-write transaction and commits it, retrying on conflicts with
    /// backoff. `body` must be a function of its reads only, since it may run several times.
    /// An [`KvError::UnknownOutcome`] is returned to the caller, who knows whether the
    /// transaction is idempotent.
    async fn transact<T, E, F>(&self, mut body: F) -> Result<T, E>
    where
        T: Send,
        E: TxnError,
        F: for<'t> FnMut(&'t mut dyn KvTxn) -> TxnFuture<'t, T, E> + Send,
    {
        let mut backoff = Duration::from_millis(1);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let mut txn = self.begin().await?;
            let outcome = match body(txn.as_mut()).await {
                Ok(value) => txn.commit().await.map(|()| value).map_err(E::from),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(e) if e.is_retryable() && attempts < 100 => {
                    crate::metrics::inc(&crate::metrics::META_CONFLICTS);
                    tracing::debug!(attempts, "meta.retry");
                    let jitter = rand::random::<u64>() % (backoff.as_millis() as u64 + 1);
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `body` in a read-only transaction.
    async fn read<T, E, F>(&self, body: F) -> Result<T, E>
    where
        T: Send,
        E: From<KvError> + Send,
        F: for<'t> FnOnce(&'t mut dyn KvTxn) -> TxnFuture<'t, T, E> + Send,
    {
        let mut txn = self.begin_read().await?;
        body(txn.as_mut()).await
    }
}

impl<S: KvStore + ?Sized> KvStoreExt for S {}

/// The smallest key greater than every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// Opens the metadata backend named by `url`:
/// - `embedded` (a redb file `meta.redb` under `data_dir`) or `embedded:PATH`;
/// - `postgres://user:password@host:port/db` (also `postgresql://`);
/// - `fdb://PATH_TO_CLUSTER_FILE` (`fdb://` alone uses the default cluster file), only in
///   builds with the `foundationdb` feature.
pub async fn open(url: &str, data_dir: &Path) -> Result<Arc<dyn KvStore>, KvError> {
    if url == "embedded" {
        return Ok(Arc::new(embedded::EmbeddedKv::open(
            &data_dir.join("meta.redb"),
        )?));
    }
    if let Some(path) = url.strip_prefix("embedded:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        return Ok(Arc::new(embedded::EmbeddedKv::open(Path::new(path))?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PostgresKv::connect(url).await?));
    }
    if let Some(rest) = url.strip_prefix("fdb://") {
        return open_fdb(url, rest);
    }
    Err(KvError::UnsupportedUrl {
        url: url.to_string(),
        reason: "expected embedded, embedded:PATH, postgres://… or fdb://CLUSTER_FILE".into(),
    })
}

#[cfg(feature = "foundationdb")]
fn open_fdb(_url: &str, spec: &str) -> Result<Arc<dyn KvStore>, KvError> {
    Ok(Arc::new(fdb::FdbKv::open(spec)?))
}

#[cfg(not(feature = "foundationdb"))]
fn open_fdb(url: &str, _cluster_file: &str) -> Result<Arc<dyn KvStore>, KvError> {
    Err(KvError::UnsupportedUrl {
        url: url.to_string(),
        reason: "this icestream was built without the `foundationdb` feature \
                 (rebuild with `cargo build --release --features foundationdb`)"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0xff, 0xff, 0xff]);
    }
}
