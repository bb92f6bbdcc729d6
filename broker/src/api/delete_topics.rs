//! DeleteTopics, by name (v0-v5) or by name or id (v6+).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::Context;
use crate::broker::Broker;
use crate::errors;
use crate::security::acl::{op, resource};

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
        // By id: the name it has decides what the ACLs say.
        let acl_name = match (&name, by_id) {
            (Some(n), _) => Some(n.0.to_string()),
            (None, Some(id)) => broker
                .topics
                .get_by_id(id)
                .await
                .ok()
                .flatten()
                .map(|t| t.name.clone()),
            (None, None) => None,
        };
        if acl_name.is_some_and(|n| !ctx.allowed(broker, op::DELETE, resource::TOPIC, &n)) {
            let mut r = DeletableTopicResult::default()
                .with_name(name.clone())
                .with_error_code(kafka_protocol::ResponseError::TopicAuthorizationFailed.code());
            if ctx.version >= 6 {
                r = r.with_topic_id(id);
            }
            responses.push(r);
            continue;
        }
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
