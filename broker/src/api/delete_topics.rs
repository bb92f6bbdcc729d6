//! DeleteTopics, by name (v0-v5) or by name or id (v6+).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::Context;
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<TopicName>, Uuid)> = if ctx.version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let by_id = (!id.is_nil()).then_some(id);
        let result = broker
            .topics
            .delete(name.as_ref().map(|n| n.0.as_str()), by_id)
            .await;
        let mut r = DeletableTopicResult::default().with_name(name.clone());
        match result {
            Ok(topic) => {
                broker.log.forget_topic(topic.id);
                if ctx.version >= 6 {
                    r = r
                        .with_topic_id(topic.id)
                        .with_name(Some(TopicName(StrBytes::from_string(topic.name))));
                }
            }
            Err(e) => {
                r = r.with_error_code(errors::meta(&e).code());
                if ctx.version >= 5 {
                    r = r.with_error_message(Some(StrBytes::from_string(e.to_string())));
                }
                if ctx.version >= 6 {
                    r = r.with_topic_id(id);
                }
            }
        }
        responses.push(r);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
