//! OffsetDelete: removes a group's committed offsets of topics it no longer subscribes to.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::errors;

pub async fn handle(broker: &Broker, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = req.group_id.0.to_string();
    if let Some(e) = super::not_coordinator(broker, &group).await {
        return OffsetDeleteResponse::default().with_error_code(e.code());
    }
    match broker.groups.view(&group).await {
        Ok(None) => {
            let has_offsets = broker
                .meta
                .fetch_offsets(&group, None)
                .await
                .map(|o| !o.is_empty())
                .unwrap_or(false);
            if !has_offsets {
                return OffsetDeleteResponse::default()
                    .with_error_code(ResponseError::GroupIdNotFound.code());
            }
        }
        Ok(Some(_)) => {}
        Err(e) => {
            return OffsetDeleteResponse::default()
                .with_error_code(errors::meta_retriable(&e).code())
        }
    }
    let subscribed = broker.groups.subscribed_topics(&group).await;
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut to_delete = Vec::new();
    for t in req.topics {
        let found = broker.topics.get(&t.name.0).await;
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                let error = if subscribed.contains(t.name.0.as_str()) {
                    Some(ResponseError::GroupSubscribedToTopic)
                } else {
                    match &found {
                        Ok(Some(topic)) => {
                            to_delete.push((topic.id, p.partition_index));
                            None
                        }
                        Ok(None) => Some(ResponseError::UnknownTopicOrPartition),
                        Err(e) => Some(errors::meta_retriable(e)),
                    }
                };
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error.map_or(0, |e| e.code()))
            })
            .collect();
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    if let Err(e) = broker.meta.delete_offsets(&group, to_delete).await {
        return OffsetDeleteResponse::default().with_error_code(errors::meta_retriable(&e).code());
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
