//! ConsumerGroupHeartbeat: the KIP-848 protocol (see `crate::groups::consumer`).

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::groups::consumer::{HeartbeatOutcome, Partitions};

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    if let Some(e) = super::not_coordinator(broker, &req.group_id.0).await {
        return ConsumerGroupHeartbeatResponse::default().with_error_code(e.code());
    }
    // A group id is either classic or consumer.
    if let Ok(Some(view)) = broker.groups.view(&req.group_id.0).await {
        if !view.members.is_empty() {
            return ConsumerGroupHeartbeatResponse::default()
                .with_error_code(ResponseError::GroupIdNotFound.code());
        }
    }
    let client_id = ctx
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let host = format!("/{}", ctx.peer.ip());
    response(
        broker
            .consumer_groups
            .heartbeat(req, ctx.version, &broker.topics, client_id, host)
            .await,
    )
}

fn response(outcome: HeartbeatOutcome) -> ConsumerGroupHeartbeatResponse {
    let s = |v: &str| StrBytes::from_string(v.to_string());
    match outcome {
        Err((error, message)) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(s(message))),
        Ok(h) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(s(&h.member_id)))
            .with_member_epoch(h.member_epoch)
            .with_heartbeat_interval_ms(h.heartbeat_interval_ms)
            .with_assignment(h.assignment.as_ref().map(assignment)),
    }
}

fn assignment(p: &Partitions) -> Assignment {
    Assignment::default().with_topic_partitions(
        p.iter()
            .map(|(t, ps)| {
                TopicPartitions::default()
                    .with_topic_id(*t)
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}
