//! SyncGroup: the leader hands out assignments; followers wait for theirs.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::Context;
use crate::broker::Broker;
use crate::groups::classic::SyncOutcome;

pub async fn handle(broker: &Broker, ctx: &Context, req: SyncGroupRequest) -> SyncGroupResponse {
    if let Some(e) = super::not_coordinator(broker, &req.group_id.0).await {
        return SyncGroupResponse::default().with_error_code(e.code());
    }
    response(broker.groups.sync(req, ctx.version).await, ctx.version)
}

/// The response at `version`: protocol type and name from v5.
pub(crate) fn response(outcome: SyncOutcome, version: i16) -> SyncGroupResponse {
    match outcome {
        Err(e) => SyncGroupResponse::default().with_error_code(e.code()),
        Ok(synced) => {
            let mut r = SyncGroupResponse::default().with_assignment(synced.assignment);
            if version >= 5 {
                let s = |v: &str| StrBytes::from_string(v.to_string());
                r = r
                    .with_protocol_type(synced.protocol_type.as_deref().map(s))
                    .with_protocol_name(synced.protocol.as_deref().map(s));
            }
            r
        }
    }
}
