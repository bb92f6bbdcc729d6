//! DescribeCluster: the live brokers and the cluster id (the lowest node id reports as
//! controller; there is no controller role).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;

pub fn handle(broker: &Broker, _req: DescribeClusterRequest) -> DescribeClusterResponse {
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.cluster.controller()))
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(
            broker
                .cluster
                .brokers()
                .into_iter()
                .map(|b| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.node_id))
                        .with_host(StrBytes::from_string(b.host))
                        .with_port(b.port)
                        .with_rack(b.rack.map(StrBytes::from_string))
                })
                .collect(),
        )
}
