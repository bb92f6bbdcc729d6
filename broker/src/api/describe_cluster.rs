//! DescribeCluster: this broker, the cluster id, and this broker as controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;

pub fn handle(broker: &Broker, _req: DescribeClusterRequest) -> DescribeClusterResponse {
    let e = &broker.endpoint;
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(e.node_id))
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(e.node_id))
            .with_host(StrBytes::from_string(e.host.clone()))
            .with_port(e.port)
            .with_rack(e.rack.clone().map(StrBytes::from_string))])
}
