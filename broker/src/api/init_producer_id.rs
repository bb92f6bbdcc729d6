//! InitProducerId: producer ids and epochs for idempotent producers (and epoch bumps,
//! KIP-360); for transactional ids, the transaction coordinator's producer with fencing.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;
use crate::errors;

pub async fn handle(broker: &Broker, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let current = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
    let result = match req.transactional_id.as_ref() {
        Some(tid) => {
            broker
                .transactions
                .init_producer_id(tid, req.transaction_timeout_ms, current)
                .await
        }
        None => broker.meta.init_producer_id(current).await.map_err(|e| {
            tracing::warn!(error = %e, "init producer id failed");
            errors::meta_retriable(&e)
        }),
    };
    match result {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(code) => InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
