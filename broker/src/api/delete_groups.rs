//! DeleteGroups: removes empty groups and their committed offsets.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::broker::Broker;
use crate::security::acl::{op, resource};

pub async fn handle(
    broker: &Broker,
    ctx: &super::Context,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let code = if !ctx.allowed(broker, op::DELETE, resource::GROUP, &id.0) {
            kafka_protocol::ResponseError::GroupAuthorizationFailed.code()
        } else if let Some(e) = super::not_coordinator(broker, &id.0).await {
            e.code()
        } else {
            match broker.groups.delete(&id.0).await {
                Ok(()) => 0,
                Err(e) => e.code(),
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
