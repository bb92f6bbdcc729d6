//! The transaction coordinator. Each transactional id is coordinated by one live broker at
//! a time (rendezvous hashing, like consumer groups); its record lives in the metadata
//! store (`icestream_storage::meta::TxnRecord`), so another broker takes over when the
//! coordinator dies, finishing whatever was decided.
//!
//! A transaction: InitProducerId fences older instances (epoch bump) and aborts what they
//! left open; AddPartitionsToTxn / AddOffsetsToTxn register partitions and groups (and let
//! the producer's transactional batches into those partitions); EndTxn records the
//! decision (`PrepareCommit` / `PrepareAbort`) — from then on the outcome is fixed — then
//! writes a marker (control batch) into every partition through the appender, one WAL
//! segment for all of them, and completes: the group offsets committed in the transaction
//! move to the groups (or are dropped) in the same metadata transaction that records
//! `CompleteCommit` / `CompleteAbort`. Every record change is a compare-and-set on the
//! record read, so a step whose outcome is unknown is read back, never assumed.
//!
//! A timer aborts transactions older than their timeout (bumping the epoch, so the
//! producer that abandoned it is fenced) and finishes decided transactions whose
//! coordinator died before completing them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use icestream_storage::batch::{encode_marker, BatchHeader, MARKER_ABORT, MARKER_COMMIT};
use icestream_storage::meta::{TxnEffects, TxnPartition, TxnRecord, TxnState, UnitOutcome};
use icestream_storage::MetaStore;
use kafka_protocol::ResponseError;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cluster::Cluster;
use crate::errors;
use crate::log::appender::{Appender, PartitionInput};

/// Coordinator settings (Kafka's names in the comments).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`: the longest timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: ids idle this long are forgotten.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub check_interval: Duration,
}

/// A decided transaction left in `Prepare*` this long is taken to be orphaned (its
/// coordinator died) and finished by the timer.
const ORPHAN_AFTER_MS: i64 = 3_000;
/// Compare-and-set attempts before a request gives up with a retriable error.
const ATTEMPTS: usize = 8;
/// Marker writes attempted before the decision is left for the timer to finish.
const MARKER_ATTEMPTS: usize = 3;
/// How often the timer also looks through every transactional id for expired ones.
const EXPIRY_SWEEP: Duration = Duration::from_secs(60);
/// Enrollment attempts (with a short pause) while the producer's previous transaction is
/// still being completed, as Kafka's `add.partitions.to.txn.retry.backoff.*`.
const ENROLL_ATTEMPTS: u32 = 5;
const ENROLL_BACKOFF: Duration = Duration::from_millis(20);
/// The last epoch a producer id is used with: a v2 transaction ending at it moves the
/// transactional id to a new producer id.
const LAST_EPOCH: i16 = i16::MAX - 2;

/// Partitions (topic id, index) enrolled per producer (id, epoch).
type Enrolled = HashMap<(i64, i16), HashSet<(Uuid, i32)>>;

pub struct Transactions {
    meta: MetaStore,
    appender: Appender,
    cluster: Arc<Cluster>,
    config: TxnConfig,
    /// One lock per transactional id: this broker runs one operation per id at a time.
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Partitions this broker enrolled for a transactions-v2 producer, by producer id and
    /// epoch (one epoch is one transaction in v2): a Produce for them needs no metadata
    /// read. Only a hint — the partition's producer state decides (see `append_unit`).
    enrolled: std::sync::Mutex<Enrolled>,
}

fn meta_error(e: &icestream_storage::MetaError) -> ResponseError {
    tracing::warn!(error = %e, "transaction coordinator: metadata store");
    errors::meta_retriable(e)
}

/// The producer `(pid, epoch)` against the record: `Ok` if it is the current one.
fn check_producer(record: &TxnRecord, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
    if record.producer_id != producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if epoch == record.epoch {
        return Ok(());
    }
    if epoch == record.last_epoch {
        // The coordinator aborted this producer's transaction on timeout: an abortable
        // error, after which the producer aborts and re-initializes (KIP-360).
        return Err(ResponseError::InvalidProducerEpoch);
    }
    Err(ResponseError::ProducerFenced)
}

impl Transactions {
    pub fn new(
        meta: MetaStore,
        appender: Appender,
        cluster: Arc<Cluster>,
        config: TxnConfig,
    ) -> Self {
        Self {
            meta,
            appender,
            cluster,
            config,
            locks: std::sync::Mutex::new(HashMap::new()),
            enrolled: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn lock_of(&self, tid: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(tid.to_string()).or_default().clone()
    }

    async fn lock(&self, tid: &str) -> OwnedMutexGuard<()> {
        self.lock_of(tid).lock_owned().await
    }

    /// `NOT_COORDINATOR` unless this broker coordinates `tid`.
    pub fn check_coordinator(&self, tid: &str) -> Result<(), ResponseError> {
        if self.cluster.is_coordinator(tid) {
            Ok(())
        } else {
            Err(ResponseError::NotCoordinator)
        }
    }

    async fn load(&self, tid: &str) -> Result<Option<TxnRecord>, ResponseError> {
        self.meta.load_txn(tid).await.map_err(|e| meta_error(&e))
    }

    async fn replace(
        &self,
        expected: Option<&TxnRecord>,
        next: Option<&TxnRecord>,
        effects: TxnEffects,
    ) -> Result<bool, ResponseError> {
        self.meta
            .replace_txn(expected, next, effects)
            .await
            .map_err(|e| meta_error(&e))
    }

    /// InitProducerId for a transactional id: the id's producer with the next epoch (a new
    /// producer id when the epochs are used up), after finishing or aborting whatever the
    /// previous instance left. `current` is the producer's own `(id, epoch)` when it asks
    /// to bump its epoch (KIP-360): it must be the id's current or last producer.
    pub async fn init_producer_id(
        &self,
        tid: &str,
        timeout_ms: i32,
        current: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ResponseError> {
        self.check_coordinator(tid)?;
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let _guard = self.lock(tid).await;
        for _ in 0..ATTEMPTS {
            let now = self.meta.now_ms();
            let Some(record) = self.load(tid).await? else {
                let pid = self
                    .meta
                    .allocate_producer_id()
                    .await
                    .map_err(|e| meta_error(&e))?;
                let next = TxnRecord::new(tid, pid, timeout_ms, now);
                if self
                    .replace(None, Some(&next), TxnEffects::default())
                    .await?
                {
                    tracing::info!(transactional_id = tid, producer_id = pid, "txn.init");
                    return Ok((pid, 0));
                }
                continue;
            };
            if let Some((pid, epoch)) = current {
                let moved = pid == record.previous_producer_id && pid >= 0;
                if !moved
                    && (pid != record.producer_id
                        || (epoch != record.epoch && epoch != record.last_epoch))
                {
                    return Err(ResponseError::ProducerFenced);
                }
            }
            match record.state {
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    self.complete(&record).await?;
                }
                TxnState::Ongoing => {
                    // The previous instance's transaction: abort it, fencing that instance.
                    let mut next = record.clone();
                    next.state = TxnState::PrepareAbort;
                    next.epoch = record.epoch.saturating_add(1).min(i16::MAX - 1);
                    next.last_epoch = -1;
                    next.ended_v2 = false;
                    next.updated_ms = now;
                    if self
                        .replace(Some(&record), Some(&next), TxnEffects::default())
                        .await?
                    {
                        tracing::info!(transactional_id = tid, "txn.abort_previous");
                        self.complete(&next).await?;
                    }
                }
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                    let mut next = record.clone();
                    if record.epoch >= LAST_EPOCH {
                        next.previous_producer_id = record.producer_id;
                        next.producer_id = self
                            .meta
                            .allocate_producer_id()
                            .await
                            .map_err(|e| meta_error(&e))?;
                        next.epoch = 0;
                    } else {
                        next.epoch = record.epoch + 1;
                    }
                    next.last_epoch = -1;
                    next.ended_v2 = false;
                    next.next_producer_id = -1;
                    next.timeout_ms = timeout_ms;
                    next.state = TxnState::Empty;
                    next.partitions.clear();
                    next.groups.clear();
                    next.started_ms = -1;
                    next.updated_ms = now;
                    if self
                        .replace(Some(&record), Some(&next), TxnEffects::default())
                        .await?
                    {
                        tracing::info!(
                            transactional_id = tid,
                            producer_id = next.producer_id,
                            epoch = next.epoch,
                            "txn.init"
                        );
                        return Ok((next.producer_id, next.epoch));
                    }
                }
            }
        }
        Err(ResponseError::ConcurrentTransactions)
    }

    /// Starts the transaction if needed and applies `change` to the ongoing record.
    /// `implicit`: a transactions-v2 enrollment, made by whichever broker took the
    /// Produce or TxnOffsetCommit (the compare-and-set keeps it exact across brokers).
    async fn update_ongoing(
        &self,
        tid: &str,
        producer_id: i64,
        epoch: i16,
        implicit: bool,
        change: impl Fn(&mut TxnRecord) -> TxnEffects,
    ) -> Result<(), ResponseError> {
        if !implicit {
            self.check_coordinator(tid)?;
        }
        let _guard = self.lock(tid).await;
        for _ in 0..ATTEMPTS {
            let record = self
                .load(tid)
                .await?
                .ok_or(ResponseError::InvalidProducerIdMapping)?;
            check_producer(&record, producer_id, epoch)?;
            if record.state.is_prepared() {
                return Err(ResponseError::ConcurrentTransactions);
            }
            let now = self.meta.now_ms();
            let mut next = record.clone();
            if record.state != TxnState::Ongoing {
                next.state = TxnState::Ongoing;
                next.partitions.clear();
                next.groups.clear();
                next.started_ms = now;
                next.ended_v2 = false;
                next.next_producer_id = -1;
            }
            next.last_epoch = -1;
            let effects = change(&mut next);
            if next == record {
                return Ok(());
            }
            next.updated_ms = now;
            if self.replace(Some(&record), Some(&next), effects).await? {
                return Ok(());
            }
        }
        Err(ResponseError::ConcurrentTransactions)
    }

    /// AddPartitionsToTxn: adds partitions to the producer's ongoing transaction.
    /// `implicit`: transactions v2, where a Produce enrolls them (see `enroll_partitions`).
    pub async fn add_partitions(
        &self,
        tid: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TxnPartition],
        implicit: bool,
    ) -> Result<(), ResponseError> {
        self.update_ongoing(tid, producer_id, epoch, implicit, |next| {
            let mut register = Vec::new();
            for p in partitions {
                if !next.partitions.contains(p) {
                    next.partitions.push(p.clone());
                    register.push((p.topic_id, p.partition));
                }
            }
            TxnEffects {
                register,
                finish_offsets: None,
            }
        })
        .await
    }

    /// Transactions v2 (KIP-890): a Produce (v12+) carrying transactional batches enrolls
    /// their partitions in the producer's transaction, starting it if needed. Waits
    /// briefly while the producer's previous transaction is being completed.
    pub async fn enroll_partitions(
        &self,
        tid: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TxnPartition],
    ) -> Result<(), ResponseError> {
        let key = (producer_id, epoch);
        let known = |enrolled: &Enrolled| {
            enrolled.get(&key).is_some_and(|set| {
                partitions
                    .iter()
                    .all(|p| set.contains(&(p.topic_id, p.partition)))
            })
        };
        if known(&self.enrolled.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            match self
                .add_partitions(tid, producer_id, epoch, partitions, true)
                .await
            {
                Ok(()) => break,
                Err(ResponseError::ConcurrentTransactions) if attempt + 1 < ENROLL_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(ENROLL_BACKOFF * attempt).await;
                }
                Err(e) => return Err(e),
            }
        }
        let mut enrolled = self.enrolled.lock().unwrap_or_else(|e| e.into_inner());
        if enrolled.len() > 10_000 {
            enrolled.clear();
        }
        enrolled
            .entry(key)
            .or_default()
            .extend(partitions.iter().map(|p| (p.topic_id, p.partition)));
        Ok(())
    }

    /// AddPartitionsToTxn with `verify_only` (v4+): whether each partition is in the
    /// producer's ongoing transaction.
    pub async fn verify_partitions(
        &self,
        tid: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TxnPartition],
    ) -> Result<Vec<bool>, ResponseError> {
        self.check_coordinator(tid)?;
        let record = self
            .load(tid)
            .await?
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_producer(&record, producer_id, epoch)?;
        Ok(partitions
            .iter()
            .map(|p| record.state == TxnState::Ongoing && record.partitions.contains(p))
            .collect())
    }

    /// AddOffsetsToTxn: the group's offsets will be committed with the transaction.
    /// `implicit`: transactions v2, where TxnOffsetCommit (v5+) enrolls the group itself.
    pub async fn add_offsets(
        &self,
        tid: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        implicit: bool,
    ) -> Result<(), ResponseError> {
        self.update_ongoing(tid, producer_id, epoch, implicit, |next| {
            if !next.groups.iter().any(|g| g == group) {
                next.groups.push(group.to_string());
            }
            TxnEffects::default()
        })
        .await
    }

    /// For TxnOffsetCommit (served by the group's coordinator): the producer is current
    /// and its ongoing transaction includes the group.
    pub async fn check_offsets(
        &self,
        tid: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), ResponseError> {
        let record = self
            .load(tid)
            .await?
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_producer(&record, producer_id, epoch)?;
        if record.state != TxnState::Ongoing || !record.groups.iter().any(|g| g == group) {
            return Err(ResponseError::InvalidTxnState);
        }
        Ok(())
    }

    /// EndTxn: commits or aborts the ongoing transaction, returning the producer id and
    /// epoch the producer goes on with. Retries of a finished EndTxn succeed; a decided
    /// transaction is finished first.
    ///
    /// `v2` (EndTxn v5+, KIP-890): the decision bumps the epoch (the markers carry the new
    /// one, fencing anything the producer still has in flight), and a retry presents the
    /// epoch below it; an abort with nothing ongoing bumps the epoch too. At the last
    /// epoch the transactional id moves to a new producer id with epoch 0.
    pub async fn end_txn(
        &self,
        tid: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        v2: bool,
    ) -> Result<(i64, i16), ResponseError> {
        self.check_coordinator(tid)?;
        let _guard = self.lock(tid).await;
        if !v2 {
            // A producer ending a transaction on the v1 protocol keeps its epoch: what
            // this broker enrolled under it is over.
            self.enrolled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(producer_id, epoch));
        }
        let prepared = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        let complete = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        let current = |r: &TxnRecord| (r.producer_id, r.epoch);
        for _ in 0..ATTEMPTS {
            let record = self
                .load(tid)
                .await?
                .ok_or(ResponseError::InvalidProducerIdMapping)?;
            if record.producer_id == producer_id
                && epoch == record.last_epoch
                && matches!(
                    record.state,
                    TxnState::PrepareAbort | TxnState::CompleteAbort
                )
                && !commit
            {
                // The coordinator aborted it on timeout; the producer's abort agrees.
                return match record.state {
                    TxnState::PrepareAbort => self.complete(&record).await.map(|r| current(&r)),
                    _ => Ok(current(&record)),
                };
            }
            if v2 && record.ended_v2 {
                // A retry from a producer that has not seen the bump of its end.
                let bumped = record.producer_id == producer_id
                    && record.epoch > 0
                    && epoch == record.epoch - 1;
                let moved = record.previous_producer_id == producer_id
                    && record.epoch == 0
                    && !record.state.is_prepared();
                if bumped || moved {
                    return match record.state {
                        s if s == prepared => self.complete(&record).await.map(|r| current(&r)),
                        s if s == complete => Ok(current(&record)),
                        _ => Err(ResponseError::InvalidTxnState),
                    };
                }
            }
            check_producer(&record, producer_id, epoch)?;
            let mut next = record.clone();
            next.updated_ms = self.meta.now_ms();
            next.ended_v2 = v2;
            if v2 {
                if record.epoch >= LAST_EPOCH {
                    next.next_producer_id = self
                        .meta
                        .allocate_producer_id()
                        .await
                        .map_err(|e| meta_error(&e))?;
                }
                next.epoch = record.epoch + 1;
                next.last_epoch = -1;
            }
            match record.state {
                TxnState::Ongoing => {
                    next.state = prepared;
                    if self
                        .replace(Some(&record), Some(&next), TxnEffects::default())
                        .await?
                    {
                        tracing::debug!(
                            transactional_id = tid,
                            commit,
                            v2,
                            partitions = next.partitions.len(),
                            "txn.end"
                        );
                        return self.complete(&next).await.map(|r| current(&r));
                    }
                }
                s if s == prepared && !v2 => {
                    return self.complete(&record).await.map(|r| current(&r))
                }
                s if s == complete && !v2 => return Ok(current(&record)),
                s if s.is_prepared() && v2 => {
                    // Decided by someone else (a timeout, a previous instance): finish it,
                    // then look again.
                    self.complete(&record).await?;
                }
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    if v2 && !commit =>
                {
                    // Nothing ongoing (the producer enrolled nothing, or its abortable
                    // error came first): the abort fences what it may have in flight.
                    next.state = TxnState::CompleteAbort;
                    if next.next_producer_id >= 0 {
                        next.previous_producer_id = record.producer_id;
                        next.producer_id = next.next_producer_id;
                        next.next_producer_id = -1;
                        next.epoch = 0;
                    }
                    if self
                        .replace(Some(&record), Some(&next), TxnEffects::default())
                        .await?
                    {
                        return Ok(current(&next));
                    }
                }
                _ => return Err(ResponseError::InvalidTxnState),
            }
        }
        Err(ResponseError::ConcurrentTransactions)
    }

    /// Finishes a decided transaction: markers into every partition, then the complete
    /// state (and the group offsets) in one metadata transaction.
    async fn complete(&self, record: &TxnRecord) -> Result<TxnRecord, ResponseError> {
        icestream_compactor::failpoint("txn.after_prepare");
        let commit = record.state == TxnState::PrepareCommit;
        let mut written = false;
        for attempt in 0..MARKER_ATTEMPTS {
            match self.write_markers(record, commit).await {
                Ok(()) => {
                    written = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(transactional_id = %record.transactional_id, attempt, error = %e, "txn.markers failed");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        if !written {
            // Decided and durable: the timer finishes it. The producer retries.
            return Err(ResponseError::ConcurrentTransactions);
        }
        icestream_compactor::failpoint("txn.after_markers");
        let mut next = record.clone();
        next.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        next.partitions.clear();
        next.groups.clear();
        next.started_ms = -1;
        next.updated_ms = self.meta.now_ms();
        if record.next_producer_id >= 0 {
            next.previous_producer_id = record.producer_id;
            next.producer_id = record.next_producer_id;
            next.next_producer_id = -1;
            next.epoch = 0;
        }
        let effects = TxnEffects {
            register: Vec::new(),
            finish_offsets: Some(commit),
        };
        if self.replace(Some(record), Some(&next), effects).await? {
            crate::metrics::inc(if commit {
                &crate::metrics::TXN_COMMITS
            } else {
                &crate::metrics::TXN_ABORTS
            });
            Ok(next)
        } else {
            // Someone else (a coordinator that took over) moved it: read it back.
            match self.load(&record.transactional_id).await? {
                Some(r)
                    if (r.producer_id == record.producer_id
                        || r.previous_producer_id == record.producer_id)
                        && !r.state.is_prepared() =>
                {
                    Ok(r)
                }
                _ => Err(ResponseError::ConcurrentTransactions),
            }
        }
    }

    async fn write_markers(&self, record: &TxnRecord, commit: bool) -> Result<(), String> {
        if record.partitions.is_empty() {
            return Ok(());
        }
        let kind = if commit { MARKER_COMMIT } else { MARKER_ABORT };
        let marker = encode_marker(
            record.producer_id,
            record.epoch,
            kind,
            0,
            self.meta.now_ms(),
        );
        let header = BatchHeader::parse(&marker).map_err(|e| e.to_string())?;
        let inputs = record
            .partitions
            .iter()
            .map(|p| PartitionInput {
                topic_id: p.topic_id,
                partition: p.partition,
                batches: vec![(header, marker.clone())],
            })
            .collect();
        let rx = self
            .appender
            // The transaction's producer waits for its end before it can go on.
            .append(inputs, true)
            .await
            .map_err(|e| e.to_string())?;
        let outcomes = rx
            .await
            .map_err(|_| "the appender stopped".to_string())?
            .map_err(|e| e.to_string())?;
        for (p, o) in record.partitions.iter().zip(outcomes) {
            match o {
                UnitOutcome::Appended { .. } | UnitOutcome::Duplicate { .. } => {}
                // A deleted topic has nothing to mark.
                UnitOutcome::UnknownTopicOrPartition => {}
                other => {
                    tracing::warn!(topic = %p.topic, partition = p.partition, outcome = ?other, "txn.marker refused");
                }
            }
        }
        Ok(())
    }

    /// Aborts timed-out transactions, finishes orphaned decided ones and forgets expired
    /// ids, for the ids this broker coordinates, every `check_interval`.
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.check_interval) => {}
                _ = shutdown.cancelled() => return,
            }
            // Ongoing and decided transactions every interval; every id (for expiry) now
            // and then: ids accumulate (Flink names one per checkpoint) until they expire.
            let sweep = last_sweep.elapsed() >= EXPIRY_SWEEP;
            if sweep {
                last_sweep = tokio::time::Instant::now();
            }
            if let Err(e) = self.check_all(sweep).await {
                tracing::debug!(error = %e, "transaction timers");
            }
        }
    }

    async fn check_all(&self, sweep: bool) -> Result<(), icestream_storage::MetaError> {
        let records = if sweep {
            self.meta.list_txns().await?
        } else {
            self.meta.active_txns().await?
        };
        for record in records {
            let tid = record.transactional_id.clone();
            if !self.cluster.is_coordinator(&tid) {
                continue;
            }
            let now = self.meta.now_ms();
            let due = match record.state {
                TxnState::Ongoing => now > record.started_ms + i64::from(record.timeout_ms),
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    now > record.updated_ms + ORPHAN_AFTER_MS
                }
                _ => now > record.updated_ms + self.config.id_expiration_ms,
            };
            if !due {
                continue;
            }
            let Ok(_guard) = self.lock_of(&tid).try_lock_owned() else {
                continue;
            };
            if let Err(e) = self.check_one(&tid).await {
                tracing::debug!(transactional_id = %tid, error = ?e, "transaction timer");
            }
        }
        Ok(())
    }

    async fn check_one(&self, tid: &str) -> Result<(), ResponseError> {
        let Some(record) = self.load(tid).await? else {
            return Ok(());
        };
        let now = self.meta.now_ms();
        match record.state {
            TxnState::Ongoing if now > record.started_ms + i64::from(record.timeout_ms) => {
                let mut next = record.clone();
                next.state = TxnState::PrepareAbort;
                if record.epoch < i16::MAX - 2 {
                    next.last_epoch = record.epoch;
                    next.epoch = record.epoch + 1;
                }
                next.updated_ms = now;
                if self
                    .replace(Some(&record), Some(&next), TxnEffects::default())
                    .await?
                {
                    tracing::info!(
                        transactional_id = tid,
                        timeout_ms = record.timeout_ms,
                        "txn.timed_out: aborting"
                    );
                    crate::metrics::inc(&crate::metrics::TXN_TIMEOUTS);
                    self.complete(&next).await?;
                }
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort
                if now > record.updated_ms + ORPHAN_AFTER_MS =>
            {
                tracing::info!(
                    transactional_id = tid,
                    state = record.state.name(),
                    "txn.finish_orphaned"
                );
                self.complete(&record).await?;
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                if now > record.updated_ms + self.config.id_expiration_ms =>
            {
                self.replace(Some(&record), None, TxnEffects::default())
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Every transaction record, for DescribeTransactions and ListTransactions.
    pub async fn records(&self) -> Result<Vec<TxnRecord>, ResponseError> {
        self.meta.list_txns().await.map_err(|e| meta_error(&e))
    }

    pub async fn record(&self, tid: &str) -> Result<Option<TxnRecord>, ResponseError> {
        self.load(tid).await
    }
}
