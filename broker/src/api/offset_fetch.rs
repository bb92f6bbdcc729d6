//! OffsetFetch: committed offsets of one group (v0-v7) or several (v8+); partitions never
//! committed get -1. With `require_stable` (v7+, KIP-447), partitions with offsets pending
//! in an ongoing transaction get UNSTABLE_OFFSET_COMMIT, so consumers retry until it ends.

use std::collections::HashMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::Context;
use crate::broker::Broker;
use crate::errors;
use crate::security::acl::{op, resource};

/// (partition, offset, leader epoch, metadata, error).
type PartitionOffset = (i32, i64, i32, Option<String>, Option<ResponseError>);
type TopicOffsets = Vec<(TopicName, Vec<PartitionOffset>)>;

async fn fetch_group(
    broker: &Broker,
    ctx: &Context,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
    require_stable: bool,
) -> Result<TopicOffsets, ResponseError> {
    if !ctx.allowed(broker, op::DESCRIBE, resource::GROUP, group) {
        return Err(ResponseError::GroupAuthorizationFailed);
    }
    let described = |topic: &str| ctx.allowed(broker, op::DESCRIBE, resource::TOPIC, topic);
    if let Some(e) = super::not_coordinator(broker, group).await {
        return Err(e);
    }
    let committed = broker
        .meta
        .fetch_offsets(group, None)
        .await
        .map_err(|e| errors::meta_retriable(&e))?;
    let pending = if require_stable {
        broker
            .meta
            .pending_txn_offsets(group)
            .await
            .map_err(|e| errors::meta_retriable(&e))?
    } else {
        Vec::new()
    };
    let mut by_topic: HashMap<Uuid, Vec<PartitionOffset>> = HashMap::new();
    for (t, p, o) in committed {
        by_topic
            .entry(t)
            .or_default()
            .push((p, o.offset, o.leader_epoch, o.metadata, None));
    }
    for (t, p) in pending {
        let parts = by_topic.entry(t).or_default();
        parts.retain(|(sp, ..)| *sp != p);
        parts.push((p, -1, -1, None, Some(ResponseError::UnstableOffsetCommit)));
    }
    let mut out = Vec::new();
    match topics {
        Some(list) => {
            for (name, partitions) in list {
                if !described(&name.0) {
                    let denied = Some(ResponseError::TopicAuthorizationFailed);
                    let parts = partitions
                        .into_iter()
                        .map(|p| (p, -1, -1, None, denied))
                        .collect();
                    out.push((name, parts));
                    continue;
                }
                let found = broker
                    .topics
                    .get(&name.0)
                    .await
                    .map_err(|e| errors::meta_retriable(&e))?;
                let stored = found
                    .and_then(|t| by_topic.get(&t.id).cloned())
                    .unwrap_or_default();
                let parts = partitions
                    .into_iter()
                    .map(|p| {
                        stored.iter().find(|(sp, ..)| *sp == p).cloned().unwrap_or((
                            p,
                            -1,
                            -1,
                            Some(String::new()),
                            None,
                        ))
                    })
                    .collect();
                out.push((name, parts));
            }
        }
        None => {
            for (id, mut parts) in by_topic {
                if let Ok(Some(t)) = broker.topics.get_by_id(id).await {
                    if !described(&t.name) {
                        continue;
                    }
                    parts.sort_by_key(|(p, ..)| *p);
                    out.push((TopicName(StrBytes::from_string(t.name.clone())), parts));
                }
            }
        }
    }
    Ok(out)
}

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if ctx.version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect::<Vec<_>>()
            });
            let r = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(
                match fetch_group(broker, ctx, &g.group_id.0, topics, req.require_stable).await {
                    Ok(offsets) => r.with_topics(
                        offsets
                            .into_iter()
                            .map(|(name, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(name)
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, o, e, m, err)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(o)
                                                    .with_committed_leader_epoch(e)
                                                    .with_metadata(m.map(StrBytes::from_string))
                                                    .with_error_code(err.map_or(0, |e| e.code()))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                    Err(e) => r.with_error_code(e.code()),
                },
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect::<Vec<_>>()
    });
    let require_stable = ctx.version >= 7 && req.require_stable;
    match fetch_group(broker, ctx, &req.group_id.0, topics, require_stable).await {
        Ok(offsets) => OffsetFetchResponse::default().with_topics(
            offsets
                .into_iter()
                .map(|(name, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, o, e, m, err)| {
                                    let mut r = OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_metadata(m.map(StrBytes::from_string))
                                        .with_error_code(err.map_or(0, |e| e.code()));
                                    if ctx.version >= 5 {
                                        r = r.with_committed_leader_epoch(e);
                                    }
                                    r
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
        Err(e) if ctx.version >= 2 => OffsetFetchResponse::default().with_error_code(e.code()),
        Err(_) => OffsetFetchResponse::default(),
    }
}
