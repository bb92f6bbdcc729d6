//! ConsumerGroupDescribe: KIP-848 groups with their members, assignments and targets.

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::groups::consumer::Partitions;
use crate::security::acl::{op, resource};

async fn wire(broker: &Broker, p: &Partitions) -> Assignment {
    let mut tps = Vec::new();
    for (t, ps) in p {
        let name = match broker.topics.get_by_id(*t).await {
            Ok(Some(topic)) => topic.name.clone(),
            _ => String::new(),
        };
        tps.push(
            TopicPartitions::default()
                .with_topic_id(*t)
                .with_topic_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(ps.iter().copied().collect()),
        );
    }
    Assignment::default().with_topic_partitions(tps)
}

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for id in req.group_ids {
        let d = DescribedGroup::default()
            .with_group_id(id.clone())
            .with_authorized_operations(if req.include_authorized_operations {
                ctx.authorized_operations(broker, resource::GROUP, &id.0)
            } else {
                i32::MIN
            });
        if !ctx.allowed(broker, op::DESCRIBE, resource::GROUP, &id.0) {
            groups.push(d.with_error_code(ResponseError::GroupAuthorizationFailed.code()));
            continue;
        }
        if let Some(e) = super::not_coordinator(broker, &id.0).await {
            groups.push(d.with_error_code(e.code()));
            continue;
        }
        let Some(group) = broker.consumer_groups.get(&id.0).await else {
            groups.push(d.with_error_code(ResponseError::GroupIdNotFound.code()));
            continue;
        };
        let g = group.lock().await;
        let mut members = Vec::with_capacity(g.members.len());
        for m in g.members.values() {
            let target = g.target.get(&m.id).cloned().unwrap_or_default();
            members.push(
                Member::default()
                    .with_member_id(StrBytes::from_string(m.id.clone()))
                    .with_instance_id(m.instance_id.clone().map(StrBytes::from_string))
                    .with_rack_id(m.rack_id.clone().map(StrBytes::from_string))
                    .with_member_epoch(m.epoch)
                    .with_client_id(StrBytes::from_string(m.client_id.clone()))
                    .with_client_host(StrBytes::from_string(m.client_host.clone()))
                    .with_subscribed_topic_names(
                        m.subscribed
                            .iter()
                            .map(|n| TopicName(StrBytes::from_string(n.clone())))
                            .collect(),
                    )
                    .with_subscribed_topic_regex(m.regex.clone().map(StrBytes::from_string))
                    .with_assignment(wire(broker, &m.assigned).await)
                    .with_target_assignment(wire(broker, &target).await),
            );
        }
        let state = if g.members.is_empty() {
            "Empty"
        } else if g.members.values().all(|m| m.epoch == g.assignment_epoch) {
            "Stable"
        } else {
            "Reconciling"
        };
        groups.push(
            d.with_group_state(StrBytes::from_static_str(state))
                .with_group_epoch(g.epoch)
                .with_assignment_epoch(g.assignment_epoch)
                .with_assignor_name(StrBytes::from_string(g.assignor.clone()))
                .with_members(members),
        );
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
