//! CreateTopics: validates names, partition counts and configs; any replication factor is
//! accepted (object storage is the replication) and reported as 1.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::cluster::topics::{validate_config, validate_name, TOPIC_CONFIGS};
use crate::errors;
use crate::security::acl::{self, op, resource};

/// `config_source` values of Kafka's DescribeConfigs and CreateTopics.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DEFAULT: i8 = 5;

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    let mut results = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let fail = |code: ResponseError, msg: String| {
            let mut r = result.clone().with_error_code(code.code());
            if ctx.version >= 1 {
                r = r.with_error_message(Some(StrBytes::from_string(msg)));
            }
            if ctx.version >= 5 {
                r = r.with_num_partitions(-1).with_replication_factor(-1);
            }
            r
        };
        if duplicates.contains(&name) {
            results.push(fail(
                ResponseError::InvalidRequest,
                format!("topic {name:?} appears twice in the request"),
            ));
            continue;
        }
        if !ctx.allowed(broker, op::CREATE, resource::CLUSTER, acl::CLUSTER_NAME)
            && !ctx.allowed(broker, op::CREATE, resource::TOPIC, &name)
        {
            results.push(fail(
                ResponseError::TopicAuthorizationFailed,
                "Authorization failed.".into(),
            ));
            continue;
        }
        if let Err(msg) = validate_name(&name) {
            results.push(fail(ResponseError::InvalidTopicException, msg));
            continue;
        }
        let partitions = if !topic.assignments.is_empty() {
            topic.assignments.len() as i32
        } else if topic.num_partitions == -1 {
            broker.settings.num_partitions
        } else {
            topic.num_partitions
        };
        if partitions < 1 {
            results.push(fail(
                ResponseError::InvalidPartitions,
                format!("number of partitions must be larger than 0, not {partitions}"),
            ));
            continue;
        }
        if topic.replication_factor == 0 || topic.replication_factor < -1 {
            results.push(fail(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor must be larger than 0 (or -1), not {}",
                    topic.replication_factor
                ),
            ));
            continue;
        }
        let mut configs = BTreeMap::new();
        let mut config_error = None;
        for c in &topic.configs {
            let Some(value) = &c.value else { continue };
            if let Err(msg) = validate_config(&c.name, value) {
                config_error = Some(msg);
                break;
            }
            configs.insert(c.name.to_string(), value.to_string());
        }
        if let Some(msg) = config_error {
            results.push(fail(ResponseError::InvalidConfig, msg));
            continue;
        }
        let created = if req.validate_only {
            match broker.topics.get(&name).await {
                Ok(Some(_)) => Err((
                    ResponseError::TopicAlreadyExists,
                    format!("topic {name:?} already exists"),
                )),
                Ok(None) => Ok(None),
                Err(e) => Err((errors::meta_retriable(&e), e.to_string())),
            }
        } else {
            broker
                .topics
                .create(&name, partitions, configs.clone())
                .await
                .map(Some)
                .map_err(|e| (errors::meta(&e), e.to_string()))
        };
        match created {
            Ok(topic_meta) => {
                let mut r = result.with_error_code(errors::NONE);
                if ctx.version >= 7 {
                    if let Some(t) = &topic_meta {
                        r = r.with_topic_id(t.id);
                    }
                }
                if ctx.version >= 5 {
                    r = r
                        .with_num_partitions(partitions)
                        .with_replication_factor(1)
                        .with_configs(Some(describe_configs(&configs)));
                }
                results.push(r);
            }
            Err((code, msg)) => results.push(fail(code, msg)),
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn describe_configs(configs: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let (value, source) = match configs.get(def.name) {
                Some(v) => (v.clone(), SOURCE_TOPIC),
                None => (def.default.to_string(), SOURCE_DEFAULT),
            };
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(def.name))
                .with_value(Some(StrBytes::from_string(value)))
                .with_config_source(source)
        })
        .collect()
}
