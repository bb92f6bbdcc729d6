//! Fault injection for tests, in the style of SlateDB's failing object store: an object
//! store whose PUTs fail or stall, and a metadata store whose commits fail, or are applied
//! and then reported with an unknown outcome. Both wrap real components and are injected
//! through the broker's builder (`icestream::Components`), so the code under test is the
//! production code. Each fault is a counter that is used up one operation at a time.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, PutOptions, PutPayload, PutResult, Result};

use crate::kv::{KeyValue, KvError, KvStore, KvTxn};

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Faults of a [`FaultyObjectStore`]; they apply to PUTs of keys containing `key_filter`.
#[derive(Debug, Default)]
pub struct ObjectFaults {
    /// PUTs that fail (as a 503 would) without storing anything.
    pub fail_puts: AtomicUsize,
    /// PUTs that store the object and then fail (the response was lost).
    pub fail_after_put: AtomicUsize,
    /// Latency added to every PUT, in milliseconds.
    pub put_delay_ms: AtomicU64,
    pub key_filter: String,
}

/// An object store that injects [`ObjectFaults`] into another.
pub struct FaultyObjectStore {
    pub inner: Arc<dyn ObjectStore>,
    pub faults: Arc<ObjectFaults>,
}

impl fmt::Debug for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyObjectStore({})", self.inner)
    }
}

impl fmt::Display for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyObjectStore({})", self.inner)
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyObjectStore",
        source: format!("injected fault: {what}").into(),
    }
}

object_store_wrapper!(FaultyObjectStore, inner, {
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if location.as_ref().contains(&self.faults.key_filter) {
            let delay = self.faults.put_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if take(&self.faults.fail_puts) {
                return Err(injected("PUT failed"));
            }
            if take(&self.faults.fail_after_put) {
                self.inner.put_opts(location, payload, opts).await?;
                return Err(injected("PUT response lost"));
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }
});

/// Faults of a [`FaultyKv`]; they apply to read-write transactions that write a key
/// starting with `key_prefix` (empty: every one).
#[derive(Debug, Default)]
pub struct KvFaults {
    /// Commits that fail and certainly did not apply.
    pub fail_commits: AtomicUsize,
    /// Commits that apply, then report [`KvError::UnknownOutcome`] (a lost response).
    pub unknown_after_commit: AtomicUsize,
    /// Commits that do not apply and report [`KvError::UnknownOutcome`].
    pub unknown_before_commit: AtomicUsize,
    /// Milliseconds every commit waits before it is sent (a slow metadata store).
    pub commit_delay_ms: AtomicU64,
    /// Commits sent to the inner store, counted.
    pub commits: AtomicUsize,
    pub key_prefix: Vec<u8>,
}

/// A metadata backend that injects [`KvFaults`] into another.
#[derive(Debug)]
pub struct FaultyKv {
    pub inner: Arc<dyn KvStore>,
    pub faults: Arc<KvFaults>,
}

#[async_trait]
impl KvStore for FaultyKv {
    async fn begin(&self) -> std::result::Result<Box<dyn KvTxn>, KvError> {
        Ok(Box::new(FaultyTxn {
            inner: self.inner.begin().await?,
            faults: self.faults.clone(),
            targeted: false,
        }))
    }

    async fn begin_read(&self) -> std::result::Result<Box<dyn KvTxn>, KvError> {
        self.inner.begin_read().await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }
}

struct FaultyTxn {
    inner: Box<dyn KvTxn>,
    faults: Arc<KvFaults>,
    /// Whether the transaction wrote a key the faults apply to.
    targeted: bool,
}

impl FaultyTxn {
    fn mark(&mut self, key: &[u8]) {
        self.targeted |= key.starts_with(&self.faults.key_prefix);
    }
}

#[async_trait]
impl KvTxn for FaultyTxn {
    async fn get(&mut self, key: &[u8]) -> std::result::Result<Option<Bytes>, KvError> {
        self.inner.get(key).await
    }

    async fn get_many(
        &mut self,
        keys: &[Vec<u8>],
    ) -> std::result::Result<Vec<Option<Bytes>>, KvError> {
        self.inner.get_many(keys).await
    }

    async fn get_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> std::result::Result<Vec<KeyValue>, KvError> {
        self.inner.get_range(begin, end, limit, reverse).await
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.mark(key);
        self.inner.set(key, value);
    }

    fn clear(&mut self, key: &[u8]) {
        self.mark(key);
        self.inner.clear(key);
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        self.mark(begin);
        self.inner.clear_range(begin, end);
    }

    async fn commit(self: Box<Self>) -> std::result::Result<(), KvError> {
        let faults = self.faults.clone();
        if !self.targeted {
            return self.inner.commit().await;
        }
        let delay = faults.commit_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if take(&faults.fail_commits) {
            return Err(KvError::backend("injected fault: commit failed"));
        }
        faults.commits.fetch_add(1, Ordering::SeqCst);
        if take(&faults.unknown_before_commit) {
            return Err(KvError::UnknownOutcome(
                "injected fault: connection lost before the commit".into(),
            ));
        }
        if take(&faults.unknown_after_commit) {
            self.inner.commit().await?;
            return Err(KvError::UnknownOutcome(
                "injected fault: response lost after the commit".into(),
            ));
        }
        self.inner.commit().await
    }
}
