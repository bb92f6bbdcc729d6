//! ListGroups: every group with members, a record or committed offsets.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Context;
use crate::broker::Broker;
use crate::errors;
use crate::security::acl::{self, op, resource};

pub async fn handle(broker: &Broker, ctx: &Context, req: ListGroupsRequest) -> ListGroupsResponse {
    // Each broker lists the groups it coordinates (admin clients ask every broker).
    // Groups the client may not describe are left out (all of them with DESCRIBE on the
    // cluster).
    let cluster_wide = ctx.allowed(broker, op::DESCRIBE, resource::CLUSTER, acl::CLUSTER_NAME);
    let visible = |id: &str| cluster_wide || ctx.allowed(broker, op::DESCRIBE, resource::GROUP, id);
    let mine = |id: &str| broker.cluster.is_coordinator(id) && visible(id);
    let consumer_groups: Vec<String> = broker
        .consumer_groups
        .ids()
        .await
        .into_iter()
        .filter(|id| mine(id))
        .collect();
    let wanted = |t: &str| {
        req.types_filter.is_empty() || req.types_filter.iter().any(|f| f.eq_ignore_ascii_case(t))
    };
    let mut extra = Vec::new();
    if wanted("consumer") {
        for id in &consumer_groups {
            if let Some(g) = broker.consumer_groups.get(id).await {
                let state = if g.lock().await.members.is_empty() {
                    "Empty"
                } else {
                    "Stable"
                };
                if req.states_filter.is_empty()
                    || req
                        .states_filter
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(state))
                {
                    let mut lg = ListedGroup::default()
                        .with_group_id(GroupId(StrBytes::from_string(id.clone())))
                        .with_protocol_type(StrBytes::from_static_str("consumer"));
                    if ctx.version >= 4 {
                        lg = lg.with_group_state(StrBytes::from_static_str(state));
                    }
                    if ctx.version >= 5 {
                        lg = lg.with_group_type(StrBytes::from_static_str("consumer"));
                    }
                    extra.push(lg);
                }
            }
        }
    }
    match broker.groups.list().await {
        Err(e) => ListGroupsResponse::default().with_error_code(errors::meta_retriable(&e).code()),
        Ok(groups) => ListGroupsResponse::default().with_groups(
            groups
                .into_iter()
                .filter(|(id, ..)| visible(id))
                .filter(|(_, _, state)| {
                    req.states_filter.is_empty()
                        || req
                            .states_filter
                            .iter()
                            .any(|f| f.eq_ignore_ascii_case(state.name()))
                })
                .filter(|_| {
                    req.types_filter.is_empty()
                        || req
                            .types_filter
                            .iter()
                            .any(|t| t.eq_ignore_ascii_case("classic"))
                })
                .map(|(id, protocol_type, state)| {
                    let mut g = ListedGroup::default()
                        .with_group_id(GroupId(StrBytes::from_string(id)))
                        .with_protocol_type(StrBytes::from_string(protocol_type));
                    if ctx.version >= 4 {
                        g = g.with_group_state(StrBytes::from_static_str(state.name()));
                    }
                    if ctx.version >= 5 {
                        g = g.with_group_type(StrBytes::from_static_str("classic"));
                    }
                    g
                })
                .chain(extra)
                .collect(),
        ),
    }
}
