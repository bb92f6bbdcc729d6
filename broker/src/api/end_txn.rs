//! EndTxn: commits or aborts the producer's transaction (markers written before the
//! answer, so read_committed consumers see the outcome as soon as the producer does).

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use crate::broker::Broker;

pub async fn handle(broker: &Broker, req: EndTxnRequest) -> EndTxnResponse {
    let result = broker
        .transactions
        .end_txn(
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
        .await;
    EndTxnResponse::default()
        .with_error_code(result.err().map_or(0, |e| e.code()))
        .with_producer_id(req.producer_id)
        .with_producer_epoch(req.producer_epoch)
}
