//! Metadata: brokers, topics and partitions; auto-creates requested topics when allowed.

use std::sync::Arc;

use icestream_storage::meta::TopicMeta;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::Context;
use crate::broker::Broker;
use crate::cluster::topics::validate_name;
use crate::cluster::Cluster;
use crate::errors;
use crate::log::LEADER_EPOCH;
use crate::security::acl::{self, op, resource};

/// "Authorized operations" value meaning the broker did not compute them.
const OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(broker: &Broker, ctx: &Context, req: MetadataRequest) -> MetadataResponse {
    let cluster = &broker.cluster;
    let brokers = cluster
        .brokers()
        .into_iter()
        .map(|b| {
            // Each listener's clients get the addresses of that listener.
            let (host, port) = b.address(ctx.listener);
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
    // v0: an empty list means every topic; v1+: null does.
    let requested = match req.topics {
        Some(t) if !(ctx.version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let topics = match requested {
        None => match broker.topics.list().await {
            // Topics the client may not describe are left out.
            Ok(all) => all
                .iter()
                .filter(|t| ctx.allowed(broker, op::DESCRIBE, resource::TOPIC, &t.name))
                .map(|t| describe(t, cluster, ctx.version))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "metadata: listing topics failed");
                Vec::new()
            }
        },
        Some(list) => {
            let auto_create = broker.settings.auto_create_topics
                && (ctx.version < 4 || req.allow_auto_topic_creation);
            let mut out = Vec::with_capacity(list.len());
            for t in list {
                out.push(match t.name {
                    Some(name) => {
                        if !ctx.allowed(broker, op::DESCRIBE, resource::TOPIC, &name.0) {
                            denied(Some(name), None, ctx.version)
                        } else {
                            let create = auto_create
                                && (ctx.allowed(
                                    broker,
                                    op::CREATE,
                                    resource::CLUSTER,
                                    acl::CLUSTER_NAME,
                                ) || ctx.allowed(broker, op::CREATE, resource::TOPIC, &name.0));
                            by_name(broker, &name.0, create, ctx.version).await
                        }
                    }
                    None => {
                        let t = by_id(broker, t.topic_id, ctx.version).await;
                        match &t.name {
                            Some(name)
                                if !ctx.allowed(broker, op::DESCRIBE, resource::TOPIC, &name.0) =>
                            {
                                denied(None, Some(t.topic_id), ctx.version)
                            }
                            _ => t,
                        }
                    }
                });
            }
            out
        }
    };
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if ctx.version >= 1 {
        response = response.with_controller_id(BrokerId(cluster.controller()));
    }
    if ctx.version >= 2 {
        response = response.with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())));
    }
    if (8..=10).contains(&ctx.version) {
        response = response.with_cluster_authorized_operations(
            if req.include_cluster_authorized_operations {
                ctx.authorized_operations(broker, resource::CLUSTER, acl::CLUSTER_NAME)
            } else {
                OPERATIONS_OMITTED
            },
        );
    }
    if ctx.version >= 8 && req.include_topic_authorized_operations {
        for t in response.topics.iter_mut().filter(|t| t.error_code == 0) {
            if let Some(name) = &t.name {
                t.topic_authorized_operations =
                    ctx.authorized_operations(broker, resource::TOPIC, &name.0);
            }
        }
    }
    response
}

fn denied(name: Option<TopicName>, id: Option<Uuid>, version: i16) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default()
        .with_error_code(ResponseError::TopicAuthorizationFailed.code())
        .with_name(name);
    if let Some(id) = id {
        t = t.with_topic_id(id);
    }
    if version >= 8 {
        t = t.with_topic_authorized_operations(OPERATIONS_OMITTED);
    }
    t
}

async fn by_name(
    broker: &Broker,
    name: &StrBytes,
    auto_create: bool,
    version: i16,
) -> MetadataResponseTopic {
    let error = |code: ResponseError| {
        let mut t = MetadataResponseTopic::default()
            .with_error_code(code.code())
            .with_name(Some(TopicName(name.clone())));
        if version >= 8 {
            t = t.with_topic_authorized_operations(OPERATIONS_OMITTED);
        }
        t
    };
    let found = if auto_create {
        if validate_name(name).is_err() {
            return error(ResponseError::InvalidTopicException);
        }
        broker
            .topics
            .get_or_create(name, broker.settings.num_partitions)
            .await
            .map(Some)
    } else {
        broker.topics.get(name).await
    };
    match found {
        Ok(Some(topic)) => describe(&topic, &broker.cluster, version),
        Ok(None) => error(ResponseError::UnknownTopicOrPartition),
        Err(e) => {
            tracing::warn!(topic = %name.as_str(), error = %e, "metadata lookup failed");
            error(errors::meta_retriable(&e))
        }
    }
}

async fn by_id(broker: &Broker, id: Uuid, version: i16) -> MetadataResponseTopic {
    match broker.topics.get_by_id(id).await {
        Ok(Some(topic)) => describe(&topic, &broker.cluster, version),
        Ok(None) => MetadataResponseTopic::default()
            .with_error_code(ResponseError::UnknownTopicId.code())
            .with_topic_id(id),
        Err(e) => MetadataResponseTopic::default()
            .with_error_code(errors::meta_retriable(&e).code())
            .with_topic_id(id),
    }
}

fn describe(topic: &Arc<TopicMeta>, cluster: &Cluster, version: i16) -> MetadataResponseTopic {
    let partitions = (0..topic.partitions)
        .map(|p| {
            let node = cluster.leader(topic.id, p);
            let mut part = MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(node))
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(vec![BrokerId(node)]);
            if version >= 7 {
                part = part.with_leader_epoch(LEADER_EPOCH);
            }
            part
        })
        .collect();
    let mut t = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_partitions(partitions);
    if version >= 10 {
        t = t.with_topic_id(topic.id);
    }
    if version >= 8 {
        t = t.with_topic_authorized_operations(OPERATIONS_OMITTED);
    }
    t
}
