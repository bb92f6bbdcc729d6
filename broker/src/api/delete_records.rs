//! DeleteRecords: moves partitions' log start forward (Kafka's purge, used by Kafka
//! Streams for repartition topics and by `kafka-delete-records`). Kafka readers no longer
//! see the records below it; the table keeps their rows, as it does under retention.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::errors;
use crate::security::acl::{op, resource};

/// The offset that means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let allowed = ctx.allowed(broker, op::DELETE, resource::TOPIC, &topic.name.0);
        let resolved = broker.topics.get(&topic.name.0).await;
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let base = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let outcome = match &resolved {
                _ if !allowed => Err(ResponseError::TopicAuthorizationFailed),
                Err(e) => Err(errors::meta_retriable(e)),
                Ok(None) => Err(ResponseError::UnknownTopicOrPartition),
                Ok(Some(t)) => delete(broker, t.id, p.partition_index, p.offset).await,
            };
            partitions.push(match outcome {
                Ok(low_watermark) => base.with_low_watermark(low_watermark),
                Err(code) => base.with_error_code(code.code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Moves one partition's log start to `offset`; returns the new low watermark.
async fn delete(
    broker: &Broker,
    topic_id: uuid::Uuid,
    partition: i32,
    offset: i64,
) -> Result<i64, ResponseError> {
    let target = match offset {
        HIGH_WATERMARK => match broker.meta.partition_state(topic_id, partition).await {
            Ok(Some(state)) => state.high_watermark,
            Ok(None) => return Err(ResponseError::UnknownTopicOrPartition),
            Err(e) => return Err(errors::meta_retriable(&e)),
        },
        o if o < 0 => return Err(ResponseError::OffsetOutOfRange),
        o => o,
    };
    match broker
        .meta
        .advance_log_start(topic_id, partition, target)
        .await
    {
        Ok(Some(Ok(state))) => {
            tracing::info!(%topic_id, partition, log_start = state.log_start_offset, "delete_records");
            broker
                .log
                .on_trim(topic_id, partition, state.log_start_offset);
            Ok(state.log_start_offset)
        }
        // Past the high watermark, as Kafka refuses it.
        Ok(Some(Err(_))) => Err(ResponseError::OffsetOutOfRange),
        Ok(None) => Err(ResponseError::UnknownTopicOrPartition),
        Err(e) => Err(errors::meta_retriable(&e)),
    }
}
