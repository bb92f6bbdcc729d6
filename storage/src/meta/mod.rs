//! The metadata domain, written once over the [`crate::kv`] interface: topics and their
//! ids, partition states (high watermark, log start), the offset index, idempotent
//! producer state, producer id allocation and WAL segment lifecycle records.
//!
//! Every operation is one transaction run through [`KvStoreExt::transact`], so it is
//! atomic and retried on conflicts; operations that may be retried after an unknown
//! outcome are written to be idempotent (see [`MetaStore::commit_segment`]).

mod brokers;
mod cluster;
mod compaction;
mod groups;
mod keys;
mod offset_index;
mod producers;
mod schemas;
mod security;
mod segments;
mod topics;
mod txn;
mod values;

use std::sync::Arc;

use uuid::Uuid;

use crate::clock::Clock;
use crate::kv::{KvError, KvStore, TxnError};

pub use brokers::{BrokerRecord, ListenerAddress};
pub use compaction::{KeptRun, RewriteGroup, RewriteIntent, RoundFile, RoundIntent};
pub use groups::{CommittedOffset, GroupRecord, StoredMember};
pub use offset_index::{
    AppendBatch, AppendUnit, Marker, PartitionAppend, PartitionResult, ProducerBatch,
    SegmentAppend, UnitOutcome,
};
pub use producers::{check_batch, SequenceCheck};
pub use schemas::{
    Imported, Registered, RegistrySetting, SchemaReference, StoredSchema, SubjectVersion,
};
pub use security::{AclBinding, ScramCredential};
pub use segments::SegmentGcCandidate;
pub use txn::{TxnEffects, TxnPartition, TxnRecord, TxnState};

/// The first bytes of the key a segment commit writes its record under (fault injection
/// in tests targets segment commits with it).
pub const SEGMENT_COMMIT_KEY_PREFIX: &[u8] = &[keys::SEGMENT];
pub use values::{
    AbortedTxn, IndexEntry, Location, OpenTxn, PartitionState, ProducerState, RecentBatch,
    SegmentRecord, TopicMeta,
};

/// Errors of metadata operations.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("corrupt metadata value ({what}): {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// The segment was already committed (a retry after an unknown outcome found it).
    #[error("segment {0} was already committed")]
    SegmentAlreadyCommitted(Uuid),
    /// The segment is too old: the orphan collector may already consider it garbage.
    #[error("segment {0} is too old to be committed")]
    SegmentTooOld(Uuid),
    #[error("producer epoch {request} is older than the current epoch {current}")]
    ProducerFenced { request: i16, current: i16 },
    #[error("node id {0} is registered by a live broker")]
    NodeIdInUse(i32),
}

impl TxnError for MetaError {
    fn is_retryable(&self) -> bool {
        matches!(self, MetaError::Kv(e) if e.is_retryable())
    }
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// The metadata store: domain operations over a transactional key-value backend.
#[derive(Clone)]
pub struct MetaStore {
    kv: Arc<dyn KvStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore").field("kv", &self.kv).finish()
    }
}

impl MetaStore {
    pub fn new(kv: Arc<dyn KvStore>, clock: Arc<dyn Clock>) -> Self {
        Self { kv, clock }
    }

    pub fn kv(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

#[cfg(test)]
mod tests;
