//! ConsumerGroupHeartbeat: the KIP-848 protocol (see `crate::groups::consumer`).

use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;

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
    broker
        .consumer_groups
        .heartbeat(req, ctx.version, &broker.topics, client_id, host)
        .await
}
