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
    let e = &broker.endpoint;
    let host = StrBytes::from_string(e.host.clone());
    if ctx.version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(e.node_id))
                    .with_host(host.clone())
                    .with_port(e.port)
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        FindCoordinatorResponse::default()
            .with_node_id(BrokerId(e.node_id))
            .with_host(host)
            .with_port(e.port)
    }
}
