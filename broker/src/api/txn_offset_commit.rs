//! TxnOffsetCommit (served by the group's coordinator): offsets a transactional producer
//! commits for a consumer group. They are held apart and become the group's committed
//! offsets only when the transaction commits (dropped if it aborts). From v5
//! (transactions v2, KIP-890) the request itself enrolls the group in the transaction, in
//! place of AddOffsetsToTxn.

use icestream_storage::meta::CommittedOffset;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::offset_commit::{check_member, MAX_METADATA};
use super::Context;
use crate::broker::Broker;
use crate::errors;
use crate::security::acl::{op, resource};

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let mut check = match super::not_coordinator(broker, &group).await {
        _ if !ctx.allowed(
            broker,
            op::WRITE,
            resource::TRANSACTIONAL_ID,
            &req.transactional_id.0,
        ) =>
        {
            Err(ResponseError::TransactionalIdAuthorizationFailed)
        }
        _ if !ctx.allowed(broker, op::READ, resource::GROUP, &group) => {
            Err(ResponseError::GroupAuthorizationFailed)
        }
        Some(e) => Err(e),
        None if ctx.version >= 5 => {
            broker
                .transactions
                .add_offsets(
                    &req.transactional_id.0,
                    req.producer_id.0,
                    req.producer_epoch,
                    &group,
                    true,
                )
                .await
        }
        None => {
            broker
                .transactions
                .check_offsets(
                    &req.transactional_id.0,
                    req.producer_id.0,
                    req.producer_epoch,
                    &group,
                )
                .await
        }
    };
    // v3+ carries the consumer's group metadata (KIP-447): fence zombie consumers.
    if check.is_ok() && ctx.version >= 3 && req.generation_id >= 0 {
        check = check_member(
            broker,
            &group,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        )
        .await;
    }
    let now = broker.meta.now_ms();
    let mut to_store = Vec::new();
    let mut results = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = broker.topics.get(&t.name.0).await;
        let readable = ctx.allowed(broker, op::READ, resource::TOPIC, &t.name.0);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let error = match (&check, &topic) {
                (Err(e), _) => Some(*e),
                _ if !readable => Some(ResponseError::TopicAuthorizationFailed),
                (_, Err(e)) => Some(errors::meta_retriable(e)),
                (_, Ok(Some(topic)))
                    if p.partition_index >= 0 && p.partition_index < topic.partitions =>
                {
                    if p.committed_metadata
                        .as_ref()
                        .is_some_and(|m| m.len() > MAX_METADATA)
                    {
                        Some(ResponseError::OffsetMetadataTooLarge)
                    } else {
                        to_store.push((
                            topic.id,
                            p.partition_index,
                            CommittedOffset {
                                offset: p.committed_offset,
                                leader_epoch: p.committed_leader_epoch,
                                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                                commit_ms: now,
                            },
                        ));
                        None
                    }
                }
                _ => Some(ResponseError::UnknownTopicOrPartition),
            };
            parts.push((p.partition_index, error));
        }
        results.push((t.name.clone(), parts));
    }
    let store_error = if to_store.is_empty() {
        None
    } else {
        broker
            .meta
            .store_txn_offsets(req.producer_id.0, &group, to_store)
            .await
            .err()
            .map(|e| {
                tracing::warn!(group = %group, error = %e, "transactional offset commit failed");
                errors::meta_retriable(&e)
            })
    };
    TxnOffsetCommitResponse::default().with_topics(
        results
            .into_iter()
            .map(|(name, parts)| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, e)| {
                                let e = e.or(store_error);
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(e.map_or(0, |e| e.code()))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
