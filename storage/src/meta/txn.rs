//! Transaction coordinator state: one record per transactional id (`z` keys) with the
//! producer id and epoch, the state machine, the partitions and groups of the ongoing
//! transaction and its timeout, plus the offsets consumers commit inside a transaction
//! (`y` keys) until it ends.
//!
//! Records change only by compare-and-set ([`MetaStore::replace_txn`]): the coordinator
//! reads a record, decides, and writes the next one only if nobody changed it meanwhile,
//! so two brokers that briefly both believe they coordinate an id cannot both move it.

use bytes::Buf;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::groups::CommittedOffset;
use super::keys;
use super::values::{decode_i64, encode_i64, ProducerState};
use super::{MetaError, MetaStore, Result};
use crate::kv::{prefix_end, KvStoreExt, KvTxn};

/// Kafka's transaction states (`TransactionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// The name Kafka's admin APIs use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Decided, markers possibly not all written yet.
    pub fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// A partition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnPartition {
    pub topic_id: Uuid,
    pub topic: String,
    pub partition: i32,
}

/// A transactional id's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub v: u32,
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    /// The epoch the producer last held when the coordinator bumped it on its own
    /// (aborting a timed-out transaction): the producer may present it to recover
    /// (KIP-360). -1 when none.
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: Vec<TxnPartition>,
    /// Consumer groups whose offsets are committed with the transaction.
    pub groups: Vec<String>,
    /// When the ongoing transaction started (its timeout counts from here), -1 if none.
    pub started_ms: i64,
    pub updated_ms: i64,
    /// The decided transaction was ended by a transactions-v2 producer (KIP-890): the
    /// epoch was bumped with the decision, so the producer's retry presents the epoch
    /// below it.
    #[serde(default)]
    pub ended_v2: bool,
    /// Set in a decided v2 transaction whose bumped epoch is the last one: the producer
    /// id the transactional id moves to (with epoch 0) when it completes.
    #[serde(default = "no_producer")]
    pub next_producer_id: i64,
    /// The producer id before the last such move, for the retried EndTxn of the producer
    /// that has not seen it yet.
    #[serde(default = "no_producer")]
    pub previous_producer_id: i64,
}

fn no_producer() -> i64 {
    -1
}

impl TxnRecord {
    pub const VERSION: u32 = 1;

    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> Self {
        Self {
            v: Self::VERSION,
            transactional_id: transactional_id.to_string(),
            producer_id,
            epoch: 0,
            last_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: Vec::new(),
            groups: Vec::new(),
            started_ms: -1,
            updated_ms: now,
            ended_v2: false,
            next_producer_id: -1,
            previous_producer_id: -1,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a record; the binary producer-id-and-epoch value older versions stored
    /// reads as an `Empty` record.
    pub fn decode(transactional_id: &str, bytes: &[u8]) -> Result<Self> {
        if bytes.first() == Some(&1) && bytes.len() == 11 {
            let mut b = &bytes[1..];
            let producer_id = b.get_i64();
            let mut r = Self::new(transactional_id, producer_id, 60_000, 0);
            r.epoch = b.get_i16();
            return Ok(r);
        }
        let r: Self = serde_json::from_slice(bytes).map_err(|e| MetaError::Corrupt {
            what: "transaction",
            reason: e.to_string(),
        })?;
        if r.v != Self::VERSION {
            return Err(MetaError::Corrupt {
                what: "transaction",
                reason: format!("unknown version {}", r.v),
            });
        }
        Ok(r)
    }
}

/// What else a record change does, in the same metadata transaction.
#[derive(Debug, Clone, Default)]
pub struct TxnEffects {
    /// Partitions added to the transaction: their producer states let the producer's
    /// transactional batches in (for the new record's producer id and epoch).
    pub register: Vec<(Uuid, i32)>,
    /// The transaction ended: move (`true`) or drop (`false`) the offsets its producer
    /// committed for its groups (the expected record's producer id and groups).
    pub finish_offsets: Option<bool>,
}

const PRODUCER_ID_COUNTER: &str = "producer_id";

/// Takes the next producer id from the counter.
pub(super) async fn allocate_producer_id(tx: &mut dyn KvTxn) -> Result<i64> {
    let key = keys::counter(PRODUCER_ID_COUNTER);
    let next = match tx.get(&key).await? {
        Some(v) => decode_i64(&v, "producer id counter")?,
        None => 1000,
    };
    tx.set(&key, &encode_i64(next + 1));
    Ok(next)
}

impl MetaStore {
    /// A new producer id.
    pub async fn allocate_producer_id(&self) -> Result<i64> {
        self.kv
            .transact(|tx| Box::pin(async move { allocate_producer_id(tx).await }))
            .await
    }

    pub async fn load_txn(&self, transactional_id: &str) -> Result<Option<TxnRecord>> {
        let tid = transactional_id.to_owned();
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    tx.get(&keys::transactional_id(&tid))
                        .await?
                        .map(|v| TxnRecord::decode(&tid, &v))
                        .transpose()
                })
            })
            .await
    }

    /// Every transaction record.
    pub async fn list_txns(&self) -> Result<Vec<TxnRecord>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let prefix = keys::transactional_ids();
                    let rows = tx
                        .get_range(&prefix, &prefix_end(&prefix), 0, false)
                        .await?;
                    rows.iter()
                        .map(|(k, v)| {
                            let tid = String::from_utf8_lossy(&k[1..]).into_owned();
                            TxnRecord::decode(&tid, v)
                        })
                        .collect()
                })
            })
            .await
    }

    /// The records of transactional ids with a transaction ongoing or decided but not
    /// complete: what coordinators watch (timeouts, orphaned decisions), read without
    /// scanning every id ever used.
    pub async fn active_txns(&self) -> Result<Vec<TxnRecord>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let prefix = keys::active_txns();
                    let marks = tx
                        .get_range(&prefix, &prefix_end(&prefix), 0, false)
                        .await?;
                    let tids: Vec<String> = marks
                        .iter()
                        .map(|(k, _)| String::from_utf8_lossy(&k[1..]).into_owned())
                        .collect();
                    let keys: Vec<Vec<u8>> =
                        tids.iter().map(|t| keys::transactional_id(t)).collect();
                    let mut out = Vec::with_capacity(tids.len());
                    for (tid, v) in tids.iter().zip(tx.get_many(&keys).await?) {
                        if let Some(v) = v {
                            out.push(TxnRecord::decode(tid, &v)?);
                        }
                    }
                    Ok(out)
                })
            })
            .await
    }

    /// Replaces the record of `next.transactional_id` (or deletes it when `next` is
    /// `None`, named by `expected`) if it still equals `expected`, with `effects`, in one
    /// metadata transaction. Returns false (and changes nothing) if the record changed.
    pub async fn replace_txn(
        &self,
        expected: Option<&TxnRecord>,
        next: Option<&TxnRecord>,
        effects: TxnEffects,
    ) -> Result<bool> {
        let Some(tid) = next.or(expected).map(|r| r.transactional_id.clone()) else {
            return Ok(true);
        };
        let expected = expected.cloned();
        let next = next.cloned();
        self.kv
            .transact(|tx| {
                let (tid, expected, next, effects) =
                    (tid.clone(), expected.clone(), next.clone(), effects.clone());
                Box::pin(async move {
                    let key = keys::transactional_id(&tid);
                    let current = tx
                        .get(&key)
                        .await?
                        .map(|v| TxnRecord::decode(&tid, &v))
                        .transpose()?;
                    if current != expected {
                        return Ok(false);
                    }
                    match &next {
                        Some(r) => tx.set(&key, &r.encode()),
                        None => tx.clear(&key),
                    }
                    let active = keys::active_txn(&tid);
                    match &next {
                        Some(r) if r.state == TxnState::Ongoing || r.state.is_prepared() => {
                            tx.set(&active, &[]);
                        }
                        _ => tx.clear(&active),
                    }
                    if let Some(r) = &next {
                        register_partitions(tx, r, &effects.register).await?;
                    }
                    if let (Some(commit), Some(old)) = (effects.finish_offsets, &expected) {
                        finish_offsets(tx, old, commit).await?;
                    }
                    Ok(true)
                })
            })
            .await
    }

    /// Stores offsets a producer commits for a group inside its transaction; they become
    /// the group's committed offsets when the transaction commits.
    pub async fn store_txn_offsets(
        &self,
        producer_id: i64,
        group: &str,
        offsets: Vec<(Uuid, i32, CommittedOffset)>,
    ) -> Result<()> {
        let group = group.to_owned();
        self.kv
            .transact(|tx| {
                let (group, offsets) = (group.clone(), offsets.clone());
                Box::pin(async move {
                    for (topic, p, o) in &offsets {
                        tx.set(
                            &keys::txn_offset(producer_id, &group, *topic, *p),
                            &o.encode(),
                        );
                    }
                    Ok(())
                })
            })
            .await
    }

    /// The partitions of a group with offsets pending in a transaction that has not
    /// completed (OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT for them).
    pub async fn pending_txn_offsets(&self, group: &str) -> Result<Vec<(Uuid, i32)>> {
        let group = group.to_owned();
        let txns = self.active_txns().await?;
        let mut out = Vec::new();
        for t in &txns {
            if !t.groups.contains(&group) {
                continue;
            }
            let prefix = keys::txn_offsets(t.producer_id, &group);
            let rows = self
                .kv
                .read(|tx| {
                    Box::pin(async move {
                        Ok::<_, MetaError>(
                            tx.get_range(&prefix, &prefix_end(&prefix), 0, false)
                                .await?,
                        )
                    })
                })
                .await?;
            out.extend(
                rows.iter()
                    .filter_map(|(k, _)| keys::txn_offset_partition(k)),
            );
        }
        Ok(out)
    }
}

async fn register_partitions(
    tx: &mut dyn KvTxn,
    record: &TxnRecord,
    partitions: &[(Uuid, i32)],
) -> Result<()> {
    if partitions.is_empty() {
        return Ok(());
    }
    let producer_keys: Vec<Vec<u8>> = partitions
        .iter()
        .map(|(t, p)| keys::producer(*t, *p, record.producer_id))
        .collect();
    let states = tx.get_many(&producer_keys).await?;
    for (key, state) in producer_keys.iter().zip(states) {
        let mut state = match state {
            Some(v) => ProducerState::decode(&v)?,
            None => ProducerState {
                epoch: record.epoch,
                ..ProducerState::default()
            },
        };
        state.txn_epoch = Some(record.epoch);
        tx.set(key, &state.encode());
    }
    Ok(())
}

async fn finish_offsets(tx: &mut dyn KvTxn, record: &TxnRecord, commit: bool) -> Result<()> {
    for group in &record.groups {
        let prefix = keys::txn_offsets(record.producer_id, group);
        let end = prefix_end(&prefix);
        if commit {
            let rows = tx.get_range(&prefix, &end, 0, false).await?;
            let mut offsets = Vec::with_capacity(rows.len());
            for (k, v) in &rows {
                if let Some((topic, p)) = keys::txn_offset_partition(k) {
                    offsets.push((topic, p, CommittedOffset::decode(v)?));
                }
            }
            super::groups::write_offsets(tx, group, &offsets);
        }
        tx.clear_range(&prefix, &end);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_old_binary_value() {
        let mut old = vec![1u8];
        old.extend_from_slice(&4242i64.to_be_bytes());
        old.extend_from_slice(&7i16.to_be_bytes());
        let r = TxnRecord::decode("tx", &old).expect("decode");
        assert_eq!(
            (r.producer_id, r.epoch, r.state),
            (4242, 7, TxnState::Empty)
        );
        let mut r2 = r.clone();
        r2.state = TxnState::Ongoing;
        r2.partitions.push(TxnPartition {
            topic_id: Uuid::nil(),
            topic: "t".into(),
            partition: 3,
        });
        assert_eq!(TxnRecord::decode("tx", &r2.encode()).expect("json"), r2);
    }
}
