//! InitProducerId: producer ids and epochs for idempotent producers (and epoch bumps,
//! KIP-360), and stable ids with fencing for transactional ids.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;
use crate::errors;

pub async fn handle(broker: &Broker, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let current = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
    let tid = req.transactional_id.as_ref().map(|t| t.0.as_str());
    match broker.meta.init_producer_id(tid, current).await {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(e) => {
            tracing::warn!(error = %e, "init producer id failed");
            InitProducerIdResponse::default()
                .with_error_code(errors::meta_retriable(&e).code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
