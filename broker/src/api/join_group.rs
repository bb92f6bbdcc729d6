//! JoinGroup: the classic protocol's join barrier (see `crate::groups::classic`), and the
//! response each version gets from its outcome.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::Context;
use crate::broker::Broker;
use crate::groups::classic::JoinOutcome;
use crate::groups::ClientInfo;

pub async fn handle(broker: &Broker, ctx: &Context, req: JoinGroupRequest) -> JoinGroupResponse {
    if let Some(e) = super::not_coordinator(broker, &req.group_id.0).await {
        return JoinGroupResponse::default()
            .with_error_code(e.code())
            .with_generation_id(-1)
            .with_member_id(req.member_id);
    }
    let client = ClientInfo {
        client_id: ctx
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
    };
    response(
        broker.groups.join(req, ctx.version, client).await,
        ctx.version,
    )
}

/// The response at `version`: protocol type from v7, members' instance ids from v5.
pub(crate) fn response(outcome: JoinOutcome, version: i16) -> JoinGroupResponse {
    let s = |v: &str| StrBytes::from_string(v.to_string());
    match outcome {
        JoinOutcome::Failed { error, member_id } => {
            let mut r = JoinGroupResponse::default()
                .with_error_code(error.code())
                .with_generation_id(-1)
                .with_member_id(s(&member_id));
            if version >= 7 {
                r = r.with_protocol_name(None);
            }
            r
        }
        JoinOutcome::Joined(j) => {
            let mut r = JoinGroupResponse::default()
                .with_generation_id(j.generation)
                .with_protocol_name(Some(s(&j.protocol)))
                .with_leader(s(&j.leader))
                .with_member_id(s(&j.member_id))
                .with_members(
                    j.members
                        .into_iter()
                        .map(|m| {
                            JoinGroupResponseMember::default()
                                .with_member_id(s(&m.member_id))
                                .with_group_instance_id(if version >= 5 {
                                    m.instance_id.as_deref().map(s)
                                } else {
                                    None
                                })
                                .with_metadata(m.metadata)
                        })
                        .collect(),
                );
            if version >= 7 {
                r = r.with_protocol_type(j.protocol_type.as_deref().map(s));
            }
            r
        }
    }
}
