//! DeleteGroups: removes empty groups and their committed offsets.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::broker::Broker;

pub async fn handle(broker: &Broker, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let code = if let Some(e) = super::not_coordinator(broker, &id.0).await {
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
