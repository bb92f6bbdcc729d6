//! DescribeConfigs for topics (their own values and Kafka's defaults) and for brokers.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::create_topics::{SOURCE_DEFAULT, SOURCE_TOPIC};
use super::Context;
use crate::broker::Broker;
use crate::cluster::topics::TOPIC_CONFIGS;
use crate::errors;
use crate::security::acl::{self, op, resource};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 5;
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

struct Entry {
    name: String,
    value: String,
    source: i8,
    config_type: i8,
}

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let denied = match res.resource_type {
            RESOURCE_TOPIC => (!ctx.allowed(
                broker,
                op::DESCRIBE_CONFIGS,
                resource::TOPIC,
                &res.resource_name,
            ))
            .then_some(ResponseError::TopicAuthorizationFailed),
            RESOURCE_BROKER => (!ctx.allowed(
                broker,
                op::DESCRIBE_CONFIGS,
                resource::CLUSTER,
                acl::CLUSTER_NAME,
            ))
            .then_some(ResponseError::ClusterAuthorizationFailed),
            _ => None,
        };
        let entries = match res.resource_type {
            _ if denied.is_some() => Err((
                denied.unwrap_or(ResponseError::UnknownServerError),
                "Authorization failed.".to_string(),
            )),
            RESOURCE_TOPIC => match broker.topics.get(&res.resource_name).await {
                Ok(Some(topic)) => Ok(TOPIC_CONFIGS
                    .iter()
                    .map(|def| {
                        let (value, source) = match topic.configs.get(def.name) {
                            Some(v) => (v.clone(), SOURCE_TOPIC),
                            None => (def.default.to_string(), SOURCE_DEFAULT),
                        };
                        let config_type = if def.numeric {
                            TYPE_LONG
                        } else if matches!(def.default, "true" | "false") {
                            TYPE_BOOLEAN
                        } else {
                            TYPE_STRING
                        };
                        Entry {
                            name: def.name.to_string(),
                            value,
                            source,
                            config_type,
                        }
                    })
                    .collect()),
                Ok(None) => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {:?}", res.resource_name.as_str()),
                )),
                Err(e) => Err((errors::meta_retriable(&e), e.to_string())),
            },
            RESOURCE_BROKER => Ok(broker_configs(broker)),
            other => Err((
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported"),
            )),
        };
        match entries {
            Ok(entries) => {
                let configs = entries
                    .into_iter()
                    // Null or empty asks for every config, as Kafka's ConfigHelper reads it.
                    .filter(|e| {
                        res.configuration_keys.as_ref().is_none_or(|keys| {
                            keys.is_empty() || keys.iter().any(|k| k.as_str() == e.name)
                        })
                    })
                    .map(|e| {
                        let mut c = DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_string(e.name.clone()))
                            .with_value(Some(StrBytes::from_string(e.value.clone())))
                            .with_config_source(e.source);
                        if req.include_synonyms {
                            c = c.with_synonyms(vec![DescribeConfigsSynonym::default()
                                .with_name(StrBytes::from_string(e.name))
                                .with_value(Some(StrBytes::from_string(e.value)))
                                .with_source(e.source)]);
                        }
                        if ctx.version >= 3 {
                            c = c.with_config_type(e.config_type);
                        }
                        c
                    })
                    .collect();
                result = result.with_configs(configs);
            }
            Err((code, msg)) => {
                result = result
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(msg)));
            }
        }
        results.push(result);
    }
    DescribeConfigsResponse::default().with_results(results)
}

fn broker_configs(broker: &Broker) -> Vec<Entry> {
    let s = &broker.settings;
    let e = |name: &str, value: String, config_type: i8| Entry {
        name: name.to_string(),
        value,
        source: SOURCE_STATIC_BROKER,
        config_type,
    };
    let mut entries = vec![
        e("broker.id", broker.endpoint.node_id.to_string(), TYPE_INT),
        e(
            "auto.create.topics.enable",
            s.auto_create_topics.to_string(),
            TYPE_BOOLEAN,
        ),
        e("num.partitions", s.num_partitions.to_string(), TYPE_INT),
        e(
            "message.max.bytes",
            s.message_max_bytes.to_string(),
            TYPE_INT,
        ),
        e(
            "socket.request.max.bytes",
            s.socket_request_max_bytes.to_string(),
            TYPE_INT,
        ),
        e("default.replication.factor", "1".into(), TYPE_INT),
        e("min.insync.replicas", "1".into(), TYPE_INT),
        e("offsets.topic.replication.factor", "1".into(), TYPE_INT),
        e(
            "transaction.state.log.replication.factor",
            "1".into(),
            TYPE_INT,
        ),
        e(
            "log.retention.ms",
            s.log_retention_ms.to_string(),
            TYPE_LONG,
        ),
        e("log.retention.bytes", "-1".into(), TYPE_LONG),
        e("log.cleanup.policy", "delete".into(), TYPE_STRING),
    ];
    // The cluster's dynamic broker configs, as Kafka shows cluster-wide ones.
    for (name, value) in broker.dynamic.values().iter() {
        match entries.iter_mut().find(|x| &x.name == name) {
            Some(x) => {
                x.value = value.clone();
                x.source = SOURCE_DYNAMIC_DEFAULT_BROKER;
            }
            None => entries.push(Entry {
                name: name.clone(),
                value: value.clone(),
                source: SOURCE_DYNAMIC_DEFAULT_BROKER,
                config_type: if name.ends_with("relogin") {
                    TYPE_LONG
                } else {
                    TYPE_STRING
                },
            }),
        }
    }
    entries
}
