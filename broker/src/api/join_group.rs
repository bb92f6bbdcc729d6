//! JoinGroup: the classic protocol's join barrier (see `crate::groups::classic`).

use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::Context;
use crate::broker::Broker;
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
    broker.groups.join(req, ctx.version, client).await
}
