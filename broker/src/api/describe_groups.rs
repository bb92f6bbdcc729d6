//! DescribeGroups: state, protocol and members with their subscriptions and assignments.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Context;
use crate::broker::Broker;
use crate::errors;
use crate::groups::State;
use crate::security::acl::{op, resource};

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for id in req.groups {
        let mut g = DescribedGroup::default().with_group_id(id.clone());
        if ctx.version >= 3 {
            g = g.with_authorized_operations(if req.include_authorized_operations {
                ctx.authorized_operations(broker, resource::GROUP, &id.0)
            } else {
                i32::MIN
            });
        }
        if !ctx.allowed(broker, op::DESCRIBE, resource::GROUP, &id.0) {
            groups.push(
                g.with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code()),
            );
            continue;
        }
        if let Some(e) = super::not_coordinator(broker, &id.0).await {
            groups.push(g.with_error_code(e.code()));
            continue;
        }
        match broker.groups.view(&id.0).await {
            Err(e) => g = g.with_error_code(errors::meta_retriable(&e).code()),
            Ok(None) => {
                g = g
                    .with_group_state(StrBytes::from_static_str(State::Dead.name()))
                    .with_protocol_type(StrBytes::new())
            }
            Ok(Some(view)) => {
                g = g
                    .with_group_state(StrBytes::from_static_str(view.state.name()))
                    .with_protocol_type(StrBytes::from_string(view.protocol_type))
                    .with_protocol_data(StrBytes::from_string(view.protocol))
                    .with_members(
                        view.members
                            .into_iter()
                            .map(|m| {
                                let mut dm = DescribedGroupMember::default()
                                    .with_member_id(StrBytes::from_string(m.member_id))
                                    .with_client_id(StrBytes::from_string(m.client_id))
                                    .with_client_host(StrBytes::from_string(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment);
                                if ctx.version >= 4 {
                                    dm = dm.with_group_instance_id(
                                        m.instance_id.map(StrBytes::from_string),
                                    );
                                }
                                dm
                            })
                            .collect(),
                    );
            }
        }
        groups.push(g);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
