//! CreatePartitions: grows topics (never shrinks them).

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::errors;
use crate::security::acl::{op, resource};

pub async fn handle(
    broker: &Broker,
    ctx: &super::Context,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let r = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let outcome = if !ctx.allowed(broker, op::ALTER, resource::TOPIC, &topic.name.0) {
            Err((
                ResponseError::TopicAuthorizationFailed,
                "Authorization failed.".into(),
            ))
        } else if req.validate_only {
            match broker.topics.get(&topic.name.0).await {
                Ok(Some(t)) if topic.count > t.partitions => Ok(()),
                Ok(Some(t)) => Err((
                    ResponseError::InvalidPartitions,
                    format!(
                        "topic has {} partitions; the new count must be larger",
                        t.partitions
                    ),
                )),
                Ok(None) => Err((
                    ResponseError::UnknownTopicOrPartition,
                    "unknown topic".into(),
                )),
                Err(e) => Err((errors::meta_retriable(&e), e.to_string())),
            }
        } else {
            broker
                .topics
                .create_partitions(&topic.name.0, topic.count)
                .await
                .map(|_| ())
                .map_err(|e| (errors::meta(&e), e.to_string()))
        };
        results.push(match outcome {
            Ok(()) => r,
            Err((code, msg)) => r
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(msg))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
