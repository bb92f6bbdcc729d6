//! OffsetCommit: validated against the group's generation, durable in the metadata store
//! before the response.

use icestream_storage::meta::CommittedOffset;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, TopicName};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::security::acl::{op, resource};

type PartitionErrors = Vec<(i32, Option<ResponseError>)>;
use crate::errors;

/// Kafka's `offset.metadata.max.bytes`.
pub(super) const MAX_METADATA: usize = 4096;

/// Whether this broker coordinates the group and the member may commit for it (classic
/// groups: its generation; KIP-848 groups: its member epoch).
pub(super) async fn check_member(
    broker: &Broker,
    group: &str,
    member_id: &str,
    instance_id: Option<&str>,
    generation: i32,
) -> Result<(), ResponseError> {
    if let Some(e) = super::not_coordinator(broker, group).await {
        return Err(e);
    }
    match broker
        .consumer_groups
        .check_commit(group, member_id, generation)
        .await
    {
        Some(result) => result,
        None => {
            broker
                .groups
                .check_commit(group, generation, member_id, instance_id)
                .await
        }
    }
}

pub async fn handle(
    broker: &Broker,
    ctx: &super::Context,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let check = if ctx.allowed(broker, op::READ, resource::GROUP, &group) {
        check_member(
            broker,
            &group,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id_or_member_epoch,
        )
        .await
    } else {
        Err(ResponseError::GroupAuthorizationFailed)
    };
    let now = broker.meta.now_ms();
    let mut to_store = Vec::new();
    // (topic name, [(partition, error)])
    let mut results: Vec<(TopicName, PartitionErrors)> = Vec::new();
    for t in &req.topics {
        let topic = broker.topics.get(&t.name.0).await;
        let readable = ctx.allowed(broker, op::READ, resource::TOPIC, &t.name.0);
        let mut parts = Vec::new();
        for p in &t.partitions {
            let error = match (&check, &topic) {
                (Err(e), _) => Some(*e),
                _ if !readable => Some(ResponseError::TopicAuthorizationFailed),
                (_, Err(e)) => Some(errors::meta_retriable(e)),
                (_, Ok(None)) => Some(ResponseError::UnknownTopicOrPartition),
                (_, Ok(Some(topic)))
                    if p.partition_index < 0 || p.partition_index >= topic.partitions =>
                {
                    Some(ResponseError::UnknownTopicOrPartition)
                }
                _ if p
                    .committed_metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > MAX_METADATA) =>
                {
                    Some(ResponseError::OffsetMetadataTooLarge)
                }
                (_, Ok(Some(topic))) => {
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
            };
            parts.push((p.partition_index, error));
        }
        results.push((t.name.clone(), parts));
    }
    let stored = if to_store.is_empty() {
        Ok(())
    } else {
        broker.meta.commit_offsets(&group, to_store).await
    };
    let store_error = stored.err().map(|e| {
        tracing::warn!(group = %group, error = %e, "offset commit failed");
        errors::meta_retriable(&e)
    });
    OffsetCommitResponse::default().with_topics(
        results
            .into_iter()
            .map(|(name, parts)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, e)| {
                                let e = e.or(store_error);
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(e.map_or(0, |e| e.code()))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
