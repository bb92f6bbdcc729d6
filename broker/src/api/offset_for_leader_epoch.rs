//! OffsetForLeaderEpoch: icestream has one leader epoch forever (0), whose end offset is
//! the high watermark; clients use this to validate their position (KIP-320).

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::errors;
use crate::log::LEADER_EPOCH;
use crate::security::acl::{op, resource};

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let resolved = broker.topics.get(&topic.topic.0).await;
        let described = ctx.allowed(broker, op::DESCRIBE, resource::TOPIC, &topic.topic.0);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let base = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let r = match &resolved {
                _ if !described => {
                    base.with_error_code(ResponseError::TopicAuthorizationFailed.code())
                }
                Err(e) => base.with_error_code(errors::meta_retriable(e).code()),
                Ok(None) => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Ok(Some(t)) if p.current_leader_epoch > LEADER_EPOCH => {
                    let _ = t;
                    base.with_error_code(ResponseError::UnknownLeaderEpoch.code())
                }
                Ok(Some(t)) => match broker.log.partition(t.id, p.partition).await {
                    Ok(Some(plog)) if p.leader_epoch <= LEADER_EPOCH => base
                        .with_leader_epoch(LEADER_EPOCH)
                        .with_end_offset(plog.high_watermark()),
                    Ok(Some(_)) => base,
                    Ok(None) => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                    Err(e) => base.with_error_code(errors::meta_retriable(&e).code()),
                },
            };
            partitions.push(r);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
