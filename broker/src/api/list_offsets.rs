//! ListOffsets: earliest (-2, and -4 "earliest local"), latest (-1), max timestamp (-3),
//! latest tiered (-5: the table is the tier, so the last offset folded into the table, or
//! -1 before any is), and by timestamp (the first offset whose record timestamp is >= T,
//! exactly). Under read_committed (v2+), latest is the last stable offset.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::errors;
use crate::log::LEADER_EPOCH;
use crate::security::acl::{op, resource};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let committed = ctx.version >= 2 && req.isolation_level == 1;
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let resolved = broker.topics.get(&topic.name.0).await;
        let described = ctx.allowed(broker, op::DESCRIBE, resource::TOPIC, &topic.name.0);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let base = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let r = match &resolved {
                _ if !described => {
                    base.with_error_code(ResponseError::TopicAuthorizationFailed.code())
                }
                Err(e) => base.with_error_code(errors::meta_retriable(e).code()),
                Ok(None) => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Ok(Some(t)) => {
                    match lookup(broker, t.id, p.partition_index, p.timestamp, committed).await {
                        Ok(Some((offset, timestamp))) => {
                            let mut r = base.with_offset(offset).with_timestamp(timestamp);
                            if ctx.version >= 4 {
                                r = r.with_leader_epoch(LEADER_EPOCH);
                            }
                            r
                        }
                        Ok(None) => base,
                        Err(code) => base.with_error_code(code.code()),
                    }
                }
            };
            partitions.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

async fn lookup(
    broker: &Broker,
    topic_id: uuid::Uuid,
    partition: i32,
    timestamp: i64,
    committed: bool,
) -> Result<Option<(i64, i64)>, ResponseError> {
    let plog = broker
        .log
        .partition(topic_id, partition)
        .await
        .map_err(|e| errors::meta_retriable(&e))?
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    let result = match timestamp {
        LATEST => Ok(Some((plog.read_limit(committed), -1))),
        EARLIEST | EARLIEST_LOCAL => Ok(Some((plog.log_start(), -1))),
        MAX_TIMESTAMP => broker.log.max_timestamp_offset(topic_id, partition).await,
        LATEST_TIERED => broker
            .meta
            .last_table_offset(topic_id, partition)
            .await
            .map(|last| Some((last.unwrap_or(-1), -1)))
            .map_err(Into::into),
        t if t >= 0 => {
            broker
                .log
                .offset_for_timestamp(topic_id, partition, t)
                .await
        }
        _ => return Err(ResponseError::InvalidRequest),
    };
    result.map_err(|e| {
        tracing::warn!(%topic_id, partition, timestamp, error = %e, "list offsets failed");
        errors::read(&e)
    })
}
