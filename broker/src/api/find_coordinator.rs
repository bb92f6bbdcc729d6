//! FindCoordinator: the live broker that rendezvous hashing picks for the key.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::Context;
use crate::broker::Broker;

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
                let c = broker.cluster.coordinator(&key);
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(c.node_id))
                    .with_host(StrBytes::from_string(c.host))
                    .with_port(c.port)
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let c = broker.cluster.coordinator(&req.key);
        FindCoordinatorResponse::default()
            .with_node_id(BrokerId(c.node_id))
            .with_host(StrBytes::from_string(c.host))
            .with_port(c.port)
    }
}
