//! SyncGroup: the leader hands out assignments; followers wait for theirs.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::Context;
use crate::broker::Broker;

pub async fn handle(broker: &Broker, ctx: &Context, req: SyncGroupRequest) -> SyncGroupResponse {
    broker.groups.sync(req, ctx.version).await
}
