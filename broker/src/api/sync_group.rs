//! SyncGroup: the leader hands out assignments; followers wait for theirs.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::Context;
use crate::broker::Broker;

pub async fn handle(broker: &Broker, ctx: &Context, req: SyncGroupRequest) -> SyncGroupResponse {
    if let Some(e) = super::not_coordinator(broker, &req.group_id.0).await {
        return SyncGroupResponse::default().with_error_code(e.code());
    }
    broker.groups.sync(req, ctx.version).await
}
