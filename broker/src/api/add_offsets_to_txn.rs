//! AddOffsetsToTxn: the group's offsets are committed with the producer's transaction.

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use crate::broker::Broker;

pub async fn handle(broker: &Broker, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let result = broker
        .transactions
        .add_offsets(
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            &req.group_id.0,
            false,
        )
        .await;
    AddOffsetsToTxnResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}
