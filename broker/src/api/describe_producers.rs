//! DescribeProducers: the producers with state on each partition (any broker serves any
//! partition): epoch, last sequence, last write and where their open transaction starts.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::errors;
use crate::security::acl::{op, resource};

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let resolved = broker.topics.get(&t.name.0).await;
        let readable = ctx.allowed(broker, op::READ, resource::TOPIC, &t.name.0);
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for p in t.partition_indexes {
            let base = PartitionResponse::default().with_partition_index(p);
            let r = match &resolved {
                _ if !readable => {
                    base.with_error_code(ResponseError::TopicAuthorizationFailed.code())
                }
                Err(e) => base.with_error_code(errors::meta_retriable(e).code()),
                Ok(Some(topic)) if p >= 0 && p < topic.partitions => {
                    let states = broker.meta.partition_state(topic.id, p).await;
                    let producers = broker.meta.producers_of(topic.id, p).await;
                    match (states, producers) {
                        (Ok(Some(state)), Ok(producers)) => base.with_active_producers(
                            producers
                                .into_iter()
                                .map(|(pid, s)| {
                                    let open = state
                                        .open_txns
                                        .iter()
                                        .find(|t| t.producer_id == pid)
                                        .map_or(-1, |t| t.first_offset);
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(pid))
                                        .with_producer_epoch(i32::from(s.epoch))
                                        .with_last_sequence(
                                            s.recent.last().map_or(-1, |b| b.last_sequence),
                                        )
                                        .with_last_timestamp(s.last_write_ms)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(open)
                                })
                                .collect(),
                        ),
                        (Ok(None), _) => {
                            base.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            base.with_error_code(errors::meta_retriable(&e).code())
                        }
                    }
                }
                Ok(_) => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            };
            partitions.push(r);
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}
