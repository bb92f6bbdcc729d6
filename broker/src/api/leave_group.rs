//! LeaveGroup: one member (v0-v2) or a batch identified by member or instance id (v3+).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::Context;
use crate::broker::Broker;

pub async fn handle(broker: &Broker, ctx: &Context, req: LeaveGroupRequest) -> LeaveGroupResponse {
    if let Some(e) = super::not_coordinator(broker, &req.group_id.0).await {
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    match broker.groups.leave(&req.group_id.0, members).await {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(results) if ctx.version < 3 => match results.first().copied().flatten() {
            Some(e) => LeaveGroupResponse::default().with_error_code(e.code()),
            None => LeaveGroupResponse::default(),
        },
        Ok(results) => LeaveGroupResponse::default().with_members(
            req.members
                .into_iter()
                .zip(results)
                .map(|(m, e)| {
                    MemberResponse::default()
                        .with_member_id(m.member_id)
                        .with_group_instance_id(m.group_instance_id)
                        .with_error_code(e.map_or(0, |e| e.code()))
                })
                .collect(),
        ),
    }
}
