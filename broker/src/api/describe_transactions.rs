//! DescribeTransactions: the state of transactional ids this broker coordinates.

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::security::acl::{op, resource};

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for tid in req.transactional_ids {
        let base = TransactionState::default()
            .with_transactional_id(tid.clone())
            .with_transaction_state(StrBytes::from_static_str(""))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        let record = match broker.transactions.check_coordinator(&tid) {
            _ if !ctx.allowed(broker, op::DESCRIBE, resource::TRANSACTIONAL_ID, &tid) => {
                Err(ResponseError::TransactionalIdAuthorizationFailed)
            }
            Err(e) => Err(e),
            Ok(()) => broker.transactions.record(&tid).await,
        };
        let state = match record {
            Err(e) => base.with_error_code(e.code()),
            Ok(None) => base.with_error_code(ResponseError::TransactionalIdNotFound.code()),
            Ok(Some(r)) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for p in &r.partitions {
                    match topics.iter_mut().find(|t| t.topic.0.as_str() == p.topic) {
                        Some(t) => t.partitions.push(p.partition),
                        None => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(StrBytes::from_string(p.topic.clone())))
                                .with_partitions(vec![p.partition]),
                        ),
                    }
                }
                base.with_transaction_state(StrBytes::from_static_str(r.state.name()))
                    .with_transaction_timeout_ms(r.timeout_ms)
                    .with_transaction_start_time_ms(r.started_ms)
                    .with_producer_id(ProducerId(r.producer_id))
                    .with_producer_epoch(r.epoch)
                    .with_topics(topics)
            }
        };
        states.push(state);
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
