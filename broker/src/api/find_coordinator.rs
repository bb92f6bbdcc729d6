//! FindCoordinator: the live broker that rendezvous hashing picks for the key, at the
//! address of the listener the client came on. Needs DESCRIBE on the group or
//! transactional id.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::security::acl::{op, resource};

/// `Some(error)` when the client may not describe the key.
fn denied(broker: &Broker, ctx: &Context, key_type: i8, key: &str) -> Option<ResponseError> {
    let (rt, error) = if key_type == 1 {
        (
            resource::TRANSACTIONAL_ID,
            ResponseError::TransactionalIdAuthorizationFailed,
        )
    } else {
        (resource::GROUP, ResponseError::GroupAuthorizationFailed)
    };
    (!ctx.allowed(broker, op::DESCRIBE, rt, key)).then_some(error)
}

pub fn handle(
    broker: &Broker,
    ctx: &Context,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if ctx.version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                if let Some(e) = denied(broker, ctx, req.key_type, &key) {
                    return Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(-1))
                        .with_host(StrBytes::from_static_str(""))
                        .with_port(-1)
                        .with_error_code(e.code());
                }
                let c = broker.cluster.coordinator(&key);
                let (host, port) = c.address(ctx.listener);
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(c.node_id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port)
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        if let Some(e) = denied(broker, ctx, req.key_type, &req.key) {
            return FindCoordinatorResponse::default()
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1))
                .with_host(StrBytes::from_static_str(""))
                .with_port(-1);
        }
        let c = broker.cluster.coordinator(&req.key);
        let (host, port) = c.address(ctx.listener);
        FindCoordinatorResponse::default()
            .with_node_id(BrokerId(c.node_id))
            .with_host(StrBytes::from_string(host))
            .with_port(port)
    }
}
