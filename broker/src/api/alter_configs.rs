//! AlterConfigs (replaces a resource's configs) and IncrementalAlterConfigs (SET, DELETE,
//! APPEND, SUBTRACT per config), on topics and on the broker resource (the cluster's
//! dynamic broker configs, see `broker_configs`).

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse as AlterResult;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::cluster::topics::{effective_config, validate_config};
use crate::errors;
use crate::security::acl::{self, op, resource};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

type Outcome = Result<(), (ResponseError, String)>;

/// Applies `changes` (`None` = back to the default) to a topic or to the dynamic broker
/// configs, after validating them all; `replace` drops the broker configs not listed
/// (legacy AlterConfigs; for topics the caller lists the removals).
async fn apply(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    changes: Vec<(String, Option<String>)>,
    validate_only: bool,
    replace: bool,
) -> Outcome {
    match resource_type {
        RESOURCE_TOPIC => apply_topic(broker, name, changes, validate_only).await,
        RESOURCE_BROKER => apply_broker(broker, name, changes, validate_only, replace).await,
        other => Err((
            ResponseError::InvalidRequest,
            format!("configs of resource type {other} cannot be altered"),
        )),
    }
}

/// The dynamic broker configs: cluster-wide, whichever broker (or none, the cluster
/// default) the resource names.
async fn apply_broker(
    broker: &Broker,
    name: &str,
    changes: Vec<(String, Option<String>)>,
    validate_only: bool,
    replace: bool,
) -> Outcome {
    if !name.is_empty() && name.parse::<i32>().is_err() {
        return Err((
            ResponseError::InvalidRequest,
            format!("broker resource name must be a broker id or empty, not {name:?}"),
        ));
    }
    for (config, value) in &changes {
        let checked = match value {
            Some(v) => crate::cluster::broker_configs::validate(
                config,
                v,
                broker.settings.max_inflight_bytes,
            ),
            None => crate::cluster::broker_configs::check_name(config),
        };
        checked.map_err(|m| (ResponseError::InvalidConfig, m))?;
    }
    if validate_only {
        return Ok(());
    }
    let now = broker
        .meta
        .alter_broker_configs(&changes, replace)
        .await
        .map_err(|e| (errors::meta(&e), e.to_string()))?;
    tracing::info!(configs = ?now, "broker_configs.altered");
    broker.dynamic.set(now);
    Ok(())
}

async fn apply_topic(
    broker: &Broker,
    topic: &str,
    changes: Vec<(String, Option<String>)>,
    validate_only: bool,
) -> Outcome {
    // As Kafka: the topic must exist before its configs are looked at.
    match broker.topics.get(topic).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err((
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic {topic:?}"),
            ))
        }
        Err(e) => return Err((errors::meta_retriable(&e), e.to_string())),
    }
    for (name, value) in &changes {
        if let Some(v) = value {
            validate_config(name, v).map_err(|m| (ResponseError::InvalidConfig, m))?;
        } else if crate::cluster::topics::config_def(name).is_none() {
            return Err((
                ResponseError::InvalidConfig,
                format!("unknown topic config {name:?}"),
            ));
        }
    }
    if validate_only {
        return Ok(());
    }
    broker
        .topics
        .alter_configs(topic, changes)
        .await
        .map(|_| ())
        .map_err(|e| (errors::meta(&e), e.to_string()))
}

/// `Some` refusal when the client may not alter the resource's configs.
fn denied(
    broker: &Broker,
    ctx: &Context,
    resource_type: i8,
    name: &str,
) -> Option<(ResponseError, String)> {
    let (rt, name, error) = if resource_type == RESOURCE_TOPIC {
        (
            resource::TOPIC,
            name,
            ResponseError::TopicAuthorizationFailed,
        )
    } else {
        (
            resource::CLUSTER,
            acl::CLUSTER_NAME,
            ResponseError::ClusterAuthorizationFailed,
        )
    };
    (!ctx.allowed(broker, op::ALTER_CONFIGS, rt, name))
        .then(|| (error, "Authorization failed.".to_string()))
}

pub async fn incremental(
    broker: &Broker,
    ctx: &Context,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let topic = r.resource_name.to_string();
        let is_broker = r.resource_type == RESOURCE_BROKER;
        let current = match broker.topics.get(&topic).await {
            Ok(Some(t)) if !is_broker => Some(t),
            _ => None,
        };
        let dynamic = broker.dynamic.values();
        let mut changes = Vec::new();
        let mut error = None;
        for c in &r.configs {
            let name = c.name.to_string();
            let value = c.value.as_ref().map(|v| v.to_string());
            let list =
                |t: &Option<std::sync::Arc<icestream_storage::meta::TopicMeta>>| -> Vec<String> {
                    t.as_ref()
                        .and_then(|t| effective_config(t, &name).map(str::to_string))
                        .map(|v| {
                            v.split(',')
                                .map(|s| s.trim().to_string())
                                .filter(|s| !s.is_empty())
                                .collect()
                        })
                        .unwrap_or_default()
                };
            match c.config_operation {
                SET => changes.push((name, value)),
                DELETE => changes.push((name, None)),
                APPEND | SUBTRACT
                    if is_broker && !crate::cluster::broker_configs::is_list(&name) =>
                {
                    error = Some((
                        ResponseError::InvalidConfig,
                        format!("{name} is not a list: APPEND and SUBTRACT do not apply"),
                    ));
                }
                APPEND | SUBTRACT => {
                    let mut items = if is_broker {
                        dynamic
                            .get(&name)
                            .map(|v| {
                                v.split(',')
                                    .map(|s| s.trim().to_string())
                                    .filter(|s| !s.is_empty())
                                    .collect()
                            })
                            .unwrap_or_default()
                    } else {
                        list(&current)
                    };
                    for v in value
                        .unwrap_or_default()
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                    {
                        if c.config_operation == APPEND {
                            if !items.iter().any(|i| i == v) {
                                items.push(v.to_string());
                            }
                        } else {
                            items.retain(|i| i != v);
                        }
                    }
                    let joined = items.join(",");
                    changes.push((name, (!joined.is_empty()).then_some(joined)));
                }
                other => {
                    error = Some((
                        ResponseError::InvalidRequest,
                        format!("unknown config operation {other}"),
                    ));
                }
            }
        }
        let outcome = match error.or_else(|| denied(broker, ctx, r.resource_type, &topic)) {
            Some(e) => Err(e),
            None => {
                apply(
                    broker,
                    r.resource_type,
                    &topic,
                    changes,
                    req.validate_only,
                    false,
                )
                .await
            }
        };
        let mut resp = IncrementalResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        if let Err((code, msg)) = outcome {
            resp = resp
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(msg)));
        }
        responses.push(resp);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

pub async fn alter(
    broker: &Broker,
    ctx: &Context,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let topic = r.resource_name.to_string();
        // Legacy AlterConfigs replaces the whole set: unlisted configs go back to defaults.
        let mut changes: BTreeMap<String, Option<String>> = match broker.topics.get(&topic).await {
            Ok(Some(t)) if r.resource_type == RESOURCE_TOPIC => {
                t.configs.keys().map(|k| (k.clone(), None)).collect()
            }
            _ => BTreeMap::new(),
        };
        for c in &r.configs {
            changes.insert(c.name.to_string(), c.value.as_ref().map(|v| v.to_string()));
        }
        let outcome = match denied(broker, ctx, r.resource_type, &topic) {
            Some(e) => Err(e),
            None => {
                apply(
                    broker,
                    r.resource_type,
                    &topic,
                    changes.into_iter().collect(),
                    req.validate_only,
                    true,
                )
                .await
            }
        };
        let mut resp = AlterResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        if let Err((code, msg)) = outcome {
            resp = resp
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(msg)));
        }
        responses.push(resp);
    }
    AlterConfigsResponse::default().with_responses(responses)
}
