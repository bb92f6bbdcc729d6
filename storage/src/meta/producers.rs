//! Idempotent producers: producer id allocation and the sequence check that runs, for each
//! batch, in the same transaction that assigns its offsets.

use super::keys;
use super::values::{ProducerState, RecentBatch};
use super::{MetaStore, Result};
use crate::batch::increment_sequence;
use crate::kv::{prefix_end, KvStoreExt};

/// What the sequence check says about one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data: append it.
    Accept,
    /// A retry of a batch already stored at this base offset: acknowledge, do not store.
    Duplicate { base_offset: i64 },
    /// The producer's epoch is older than the one on record.
    Fenced { current: i16 },
    /// The sequence does not follow the last one stored.
    OutOfOrder { expected: i32 },
}

/// Checks a batch `(epoch, first..=last sequence)` against a producer's state on one
/// partition, following Kafka's rules: an unknown producer may start anywhere, a new epoch
/// must start at sequence 0, a batch equal to one of the last five is a duplicate, and
/// otherwise the first sequence must follow the last stored one.
pub fn check_batch(
    state: Option<&ProducerState>,
    epoch: i16,
    first_sequence: i32,
    last_sequence: i32,
) -> SequenceCheck {
    let Some(state) = state else {
        return SequenceCheck::Accept;
    };
    if epoch < state.epoch {
        return SequenceCheck::Fenced {
            current: state.epoch,
        };
    }
    if epoch > state.epoch {
        return if first_sequence == 0 {
            SequenceCheck::Accept
        } else {
            SequenceCheck::OutOfOrder { expected: 0 }
        };
    }
    if let Some(dup) = state
        .recent
        .iter()
        .find(|b| b.first_sequence == first_sequence && b.last_sequence == last_sequence)
    {
        return SequenceCheck::Duplicate {
            base_offset: dup.base_offset,
        };
    }
    match state.recent.last() {
        None => SequenceCheck::Accept,
        Some(last) => {
            let expected = increment_sequence(last.last_sequence, 1);
            if first_sequence == expected {
                SequenceCheck::Accept
            } else {
                SequenceCheck::OutOfOrder { expected }
            }
        }
    }
}

/// Records an accepted batch in the producer's state.
pub fn record_batch(
    state: &mut Option<ProducerState>,
    epoch: i16,
    batch: RecentBatch,
    now_ms: i64,
) {
    let s = state.get_or_insert_with(ProducerState::default);
    if s.epoch != epoch {
        s.epoch = epoch;
        s.recent.clear();
    }
    s.recent.push(batch);
    if s.recent.len() > ProducerState::RECENT {
        s.recent.remove(0);
    }
    s.last_write_ms = now_ms;
}

impl MetaStore {
    /// The producers with state on a partition (DescribeProducers), by producer id.
    pub async fn producers_of(
        &self,
        topic_id: uuid::Uuid,
        partition: i32,
    ) -> Result<Vec<(i64, ProducerState)>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let prefix = keys::producers_of_partition(topic_id, partition);
                    let rows = tx
                        .get_range(&prefix, &prefix_end(&prefix), 0, false)
                        .await?;
                    rows.iter()
                        .map(|(k, v)| {
                            let pid = keys::index_last_offset(k).unwrap_or_default();
                            Ok((pid, ProducerState::decode(v)?))
                        })
                        .collect()
                })
            })
            .await
    }

    /// Allocates a producer id and epoch for InitProducerId without a transactional id:
    /// given an existing `(producer_id, epoch)` (KIP-360 epoch bump), the same producer id
    /// with the next epoch; otherwise a fresh producer id with epoch 0. (Transactional
    /// ids are the transaction coordinator's.)
    pub async fn init_producer_id(&self, current: Option<(i64, i16)>) -> Result<(i64, i16)> {
        match current {
            Some((pid, epoch)) if pid >= 0 && (0..i16::MAX - 1).contains(&epoch) => {
                Ok((pid, epoch + 1))
            }
            _ => Ok((self.allocate_producer_id().await?, 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: i16, batches: &[(i32, i32, i64)]) -> ProducerState {
        ProducerState {
            epoch,
            recent: batches
                .iter()
                .map(|&(f, l, o)| RecentBatch {
                    first_sequence: f,
                    last_sequence: l,
                    base_offset: o,
                })
                .collect(),
            last_write_ms: 0,
            txn_epoch: None,
        }
    }

    #[test]
    fn sequence_rules() {
        assert_eq!(check_batch(None, 0, 42, 50), SequenceCheck::Accept);
        let s = state(1, &[(0, 9, 100), (10, 19, 110)]);
        assert_eq!(check_batch(Some(&s), 1, 20, 29), SequenceCheck::Accept);
        assert_eq!(
            check_batch(Some(&s), 1, 10, 19),
            SequenceCheck::Duplicate { base_offset: 110 }
        );
        assert_eq!(
            check_batch(Some(&s), 1, 0, 9),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            check_batch(Some(&s), 1, 25, 29),
            SequenceCheck::OutOfOrder { expected: 20 }
        );
        assert_eq!(
            check_batch(Some(&s), 0, 20, 29),
            SequenceCheck::Fenced { current: 1 }
        );
        assert_eq!(check_batch(Some(&s), 2, 0, 5), SequenceCheck::Accept);
        assert_eq!(
            check_batch(Some(&s), 2, 20, 25),
            SequenceCheck::OutOfOrder { expected: 0 }
        );
        let wrap = state(0, &[(i32::MAX - 9, i32::MAX, 5)]);
        assert_eq!(check_batch(Some(&wrap), 0, 0, 3), SequenceCheck::Accept);
    }

    #[test]
    fn keeps_five_recent_batches() {
        let mut s = None;
        for i in 0..7 {
            record_batch(
                &mut s,
                0,
                RecentBatch {
                    first_sequence: i * 10,
                    last_sequence: i * 10 + 9,
                    base_offset: i64::from(i) * 10,
                },
                1,
            );
        }
        let s = s.expect("state");
        assert_eq!(s.recent.len(), ProducerState::RECENT);
        assert_eq!(s.recent[0].first_sequence, 20);
    }
}
