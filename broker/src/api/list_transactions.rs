//! ListTransactions: transactional ids this broker coordinates, filtered by state,
//! producer id, age of the ongoing transaction (v1) and id pattern (v2, a regular
//! expression).

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::security::acl::{op, resource};

const STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
];

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let unknown: Vec<StrBytes> = req
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let pattern = match req.transactional_id_pattern.as_deref() {
        None | Some("") => None,
        Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
            Ok(r) => Some(r),
            Err(_) => {
                return ListTransactionsResponse::default()
                    .with_error_code(ResponseError::InvalidRegularExpression.code())
            }
        },
    };
    let records = match broker.transactions.records().await {
        Ok(r) => r,
        Err(e) => return ListTransactionsResponse::default().with_error_code(e.code()),
    };
    let now = broker.meta.now_ms();
    let states = records
        .into_iter()
        .filter(|r| broker.cluster.is_coordinator(&r.transactional_id))
        .filter(|r| {
            ctx.allowed(
                broker,
                op::DESCRIBE,
                resource::TRANSACTIONAL_ID,
                &r.transactional_id,
            )
        })
        .filter(|r| {
            req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == r.state.name())
        })
        .filter(|r| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&ProducerId(r.producer_id))
        })
        .filter(|r| {
            req.duration_filter < 0
                || (r.started_ms >= 0 && now - r.started_ms >= req.duration_filter)
        })
        .filter(|r| {
            pattern
                .as_ref()
                .is_none_or(|p| p.is_match(&r.transactional_id))
        })
        .map(|r| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(r.transactional_id)))
                .with_producer_id(ProducerId(r.producer_id))
                .with_transaction_state(StrBytes::from_static_str(r.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
