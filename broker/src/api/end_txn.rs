//! EndTxn: commits or aborts the producer's transaction (markers written before the
//! answer, so read_committed consumers see the outcome as soon as the producer does).
//! From v5 (transactions v2, KIP-890) every end bumps the producer's epoch and the
//! response carries the producer id and epoch to go on with.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::Context;
use crate::broker::Broker;

pub async fn handle(broker: &Broker, ctx: &Context, req: EndTxnRequest) -> EndTxnResponse {
    let result = broker
        .transactions
        .end_txn(
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
            ctx.version >= 5,
        )
        .await;
    match result {
        Ok((producer_id, epoch)) => EndTxnResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(e) => EndTxnResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
