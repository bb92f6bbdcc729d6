//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::broker::Broker;

pub async fn handle(broker: &Broker, req: HeartbeatRequest) -> HeartbeatResponse {
    if let Some(e) = super::not_coordinator(broker, &req.group_id.0).await {
        return HeartbeatResponse::default().with_error_code(e.code());
    }
    match broker
        .groups
        .heartbeat(
            &req.group_id.0,
            req.generation_id,
            &req.member_id,
            req.group_instance_id.as_deref(),
        )
        .await
    {
        Ok(()) => HeartbeatResponse::default(),
        Err(e) => HeartbeatResponse::default().with_error_code(e.code()),
    }
}
