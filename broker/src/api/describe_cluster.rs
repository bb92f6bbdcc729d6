//! DescribeCluster: the live brokers and the cluster id (the lowest node id reports as
//! controller; there is no controller role).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::Context;
use crate::broker::Broker;
use crate::security::acl::{self, resource};

pub fn handle(
    broker: &Broker,
    ctx: &Context,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let operations = if req.include_cluster_authorized_operations {
        ctx.authorized_operations(broker, resource::CLUSTER, acl::CLUSTER_NAME)
    } else {
        i32::MIN
    };
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.cluster.controller()))
        .with_cluster_authorized_operations(operations)
        .with_brokers(
            broker
                .cluster
                .brokers()
                .into_iter()
                .map(|b| {
                    let (host, port) = b.address(ctx.listener);
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.node_id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                        .with_rack(b.rack.map(StrBytes::from_string))
                })
                .collect(),
        )
}
