//! Refusals of whole requests by the ACLs: the APIs about one group or one transactional
//! id, answered with Kafka's error before any work. APIs about many resources (topics in
//! Produce, Fetch, Metadata, ...) check each one in their handler.

use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, ConsumerGroupHeartbeatResponse, EndTxnResponse, HeartbeatResponse,
    InitProducerIdResponse, JoinGroupResponse, LeaveGroupResponse, OffsetDeleteResponse,
    ProducerId, RequestKind, ResponseKind, SyncGroupResponse,
};
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::security::acl::{self, op, resource};

/// The error response for `request` when its principal may not make it.
pub(super) fn refusal(b: &Broker, ctx: &Context, request: &RequestKind) -> Option<ResponseKind> {
    let group = |operation: i8, id: &str| {
        (!ctx.allowed(b, operation, resource::GROUP, id))
            .then_some(ResponseError::GroupAuthorizationFailed.code())
    };
    let txn = |id: &str| {
        (!ctx.allowed(b, op::WRITE, resource::TRANSACTIONAL_ID, id))
            .then_some(ResponseError::TransactionalIdAuthorizationFailed.code())
    };
    Some(match request {
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(group(op::READ, &r.group_id)?)
                .with_generation_id(-1),
        ),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(
            SyncGroupResponse::default().with_error_code(group(op::READ, &r.group_id)?),
        ),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(
            HeartbeatResponse::default().with_error_code(group(op::READ, &r.group_id)?),
        ),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(
            LeaveGroupResponse::default().with_error_code(group(op::READ, &r.group_id)?),
        ),
        RequestKind::ConsumerGroupHeartbeat(r) => ResponseKind::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(group(op::READ, &r.group_id)?),
        ),
        RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(
            OffsetDeleteResponse::default().with_error_code(group(op::DELETE, &r.group_id)?),
        ),
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(
                txn(&r.transactional_id).or_else(|| group(op::READ, &r.group_id))?,
            ))
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(
            EndTxnResponse::default()
                .with_error_code(txn(&r.transactional_id)?)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        // Transactional producers need WRITE on their id; idempotent ones IDEMPOTENT_WRITE
        // on the cluster or WRITE on some topic (as Kafka 3+).
        RequestKind::InitProducerId(r) => {
            let error = match &r.transactional_id {
                Some(id) => txn(id)?,
                None => {
                    let idempotent = ctx.allowed(
                        b,
                        op::IDEMPOTENT_WRITE,
                        resource::CLUSTER,
                        acl::CLUSTER_NAME,
                    ) || b.security.authorizer.authorize_any(
                        &ctx.principal,
                        &ctx.host,
                        op::WRITE,
                        resource::TOPIC,
                    );
                    if idempotent {
                        return None;
                    }
                    ResponseError::ClusterAuthorizationFailed.code()
                }
            };
            ResponseKind::InitProducerId(
                InitProducerIdResponse::default()
                    .with_error_code(error)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )
        }
        _ => return None,
    })
}
