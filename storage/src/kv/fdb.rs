//! The FoundationDB metadata backend (cargo feature `foundationdb`; links libfdb_c).
//!
//! FoundationDB's transactions are exactly this interface's model: serializable,
//! read-your-writes, optimistic with conflict detection at commit. Keys live under a
//! prefix (`fdb://CLUSTER_FILE?prefix=icestream/`, default `icestream/`) so a cluster can
//! be shared. Commit errors are mapped with FDB's own predicates: retryable and not
//! committed → [`KvError::Conflict`], maybe committed → [`KvError::UnknownOutcome`].

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use foundationdb::api::NetworkAutoStop;
use foundationdb::{Database, FdbError, RangeOption, Transaction};
use futures::TryStreamExt;

use super::{KeyValue, KvError, KvStore, KvTxn};

/// The FDB client's network thread, started once per process and kept until exit.
static NETWORK: OnceLock<Result<NetworkAutoStop, String>> = OnceLock::new();

#[allow(unsafe_code)]
fn boot_network() -> Result<(), KvError> {
    let network = NETWORK.get_or_init(|| {
        // SAFETY: `boot` must run at most once per process and the returned guard must
        // outlive every FDB call: the OnceLock gives both (the guard lives in a static).
        std::panic::catch_unwind(|| unsafe { foundationdb::boot() })
            .map_err(|_| "starting the FoundationDB client failed".to_string())
    });
    network
        .as_ref()
        .map(|_| ())
        .map_err(|e| KvError::backend(e.clone()))
}

fn fdb_err(context: &str, e: FdbError) -> KvError {
    if e.is_retryable_not_committed() || e.is_retryable() {
        KvError::Conflict(format!("foundationdb {context}: {e}"))
    } else {
        KvError::backend_with(format!("foundationdb {context}"), e)
    }
}

pub struct FdbKv {
    db: Arc<Database>,
    prefix: Vec<u8>,
    cluster_file: String,
}

impl std::fmt::Debug for FdbKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdbKv")
            .field("cluster_file", &self.cluster_file)
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .finish()
    }
}

impl FdbKv {
    /// Opens the database of `spec`: `CLUSTER_FILE[?prefix=P]` (empty: the default
    /// cluster file).
    pub fn open(spec: &str) -> Result<Self, KvError> {
        boot_network()?;
        let (path, query) = spec.split_once('?').unwrap_or((spec, ""));
        let prefix = query
            .split('&')
            .find_map(|p| p.strip_prefix("prefix="))
            .unwrap_or("icestream/")
            .as_bytes()
            .to_vec();
        let db = if path.is_empty() {
            Database::default()
        } else {
            Database::from_path(path)
        }
        .map_err(|e| fdb_err("opening the database", e))?;
        Ok(Self {
            db: Arc::new(db),
            prefix,
            cluster_file: path.to_string(),
        })
    }

    fn txn(&self, read_only: bool) -> Result<Box<dyn KvTxn>, KvError> {
        let trx = self
            .db
            .create_trx()
            .map_err(|e| fdb_err("creating a transaction", e))?;
        Ok(Box::new(FdbTxn {
            trx,
            prefix: self.prefix.clone(),
            read_only,
            wrote: false,
        }))
    }
}

#[async_trait]
impl KvStore for FdbKv {
    async fn begin(&self) -> Result<Box<dyn KvTxn>, KvError> {
        self.txn(false)
    }

    async fn begin_read(&self) -> Result<Box<dyn KvTxn>, KvError> {
        self.txn(true)
    }

    fn kind(&self) -> &'static str {
        "foundationdb"
    }

    fn shared(&self) -> bool {
        true
    }
}

struct FdbTxn {
    trx: Transaction,
    prefix: Vec<u8>,
    read_only: bool,
    wrote: bool,
}

impl FdbTxn {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }
}

#[async_trait]
impl KvTxn for FdbTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        let k = self.key(key);
        let v = self
            .trx
            .get(&k, false)
            .await
            .map_err(|e| fdb_err("get", e))?;
        Ok(v.map(|v| Bytes::copy_from_slice(&v)))
    }

    async fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Bytes>>, KvError> {
        // Issue every read before awaiting any: one round trip's latency for all.
        let futures: Vec<_> = keys
            .iter()
            .map(|k| self.trx.get(&self.key(k), false))
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for f in futures {
            let v = f.await.map_err(|e| fdb_err("get", e))?;
            out.push(v.map(|v| Bytes::copy_from_slice(&v)));
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
        let (b, e) = (self.key(begin), self.key(end));
        let mut opt = RangeOption::from((b.as_slice(), e.as_slice()));
        opt.reverse = reverse;
        opt.limit = (limit > 0).then_some(limit);
        let prefix_len = self.prefix.len();
        let rows: Vec<KeyValue> = self
            .trx
            .get_ranges_keyvalues(opt, false)
            .map_ok(|kv| {
                (
                    Bytes::copy_from_slice(&kv.key()[prefix_len..]),
                    Bytes::copy_from_slice(kv.value()),
                )
            })
            .try_collect()
            .await
            .map_err(|e| fdb_err("range read", e))?;
        Ok(rows)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.wrote = true;
        let k = self.key(key);
        self.trx.set(&k, value);
    }

    fn clear(&mut self, key: &[u8]) {
        self.wrote = true;
        let k = self.key(key);
        self.trx.clear(&k);
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        self.wrote = true;
        let (b, e) = (self.key(begin), self.key(end));
        self.trx.clear_range(&b, &e);
    }

    async fn commit(self: Box<Self>) -> Result<(), KvError> {
        if self.read_only {
            if self.wrote {
                return Err(KvError::ReadOnly);
            }
            return Ok(());
        }
        match self.trx.commit().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let code: FdbError = *e;
                if code.is_maybe_committed() {
                    Err(KvError::UnknownOutcome(format!(
                        "foundationdb commit: {code}"
                    )))
                } else {
                    Err(fdb_err("commit", code))
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Runs when `ICESTREAM_TEST_FDB_CLUSTER_FILE` names a cluster; each test uses a fresh
    //! key prefix.
    use super::*;

    pub(crate) fn fresh() -> Option<((), FdbKv)> {
        let file = std::env::var("ICESTREAM_TEST_FDB_CLUSTER_FILE").ok()?;
        let prefix = format!("icestream-test/{}/", uuid::Uuid::new_v4().simple());
        Some((
            (),
            FdbKv::open(&format!("{file}?prefix={prefix}")).expect("open"),
        ))
    }

    macro_rules! fdb_or_skip {
        () => {
            match fresh() {
                Some(s) => s,
                None => {
                    eprintln!("ICESTREAM_TEST_FDB_CLUSTER_FILE not set: skipping");
                    return;
                }
            }
        };
    }

    crate::kv_conformance_tests!(fdb_or_skip!());
}
