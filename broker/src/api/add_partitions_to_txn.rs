//! AddPartitionsToTxn: adds partitions to a producer's ongoing transaction. v0-v3 carry one
//! transaction (clients); v4+ carry several and may only verify (`verify_only`), the form
//! brokers send coordinators (KIP-890).

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::security::acl::{op, resource};

pub async fn handle(
    broker: &Broker,
    ctx: &Context,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if ctx.version <= 3 {
        let txn = AddPartitionsToTxnTransaction::default()
            .with_transactional_id(req.v3_and_below_transactional_id)
            .with_producer_id(req.v3_and_below_producer_id)
            .with_producer_epoch(req.v3_and_below_producer_epoch)
            .with_topics(req.v3_and_below_topics);
        let result = one(broker, ctx, txn).await;
        return AddPartitionsToTxnResponse::default()
            .with_results_by_topic_v3_and_below(result.topic_results);
    }
    let mut results = Vec::with_capacity(req.transactions.len());
    for txn in req.transactions {
        results.push(one(broker, ctx, txn).await);
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

async fn one(
    broker: &Broker,
    ctx: &Context,
    txn: AddPartitionsToTxnTransaction,
) -> AddPartitionsToTxnResult {
    let tid = txn.transactional_id.0.to_string();
    let txn_denied = !ctx.allowed(broker, op::WRITE, resource::TRANSACTIONAL_ID, &tid);
    // Resolve every partition first: unknown ones fail the request, and the known ones
    // then get OPERATION_NOT_ATTEMPTED, as Kafka does.
    let mut known = Vec::new();
    let mut unknown = false;
    let mut errors: Vec<Vec<Option<ResponseError>>> = Vec::new();
    for topic in &txn.topics {
        let resolved = broker.topics.get(&topic.name.0).await;
        let topic_denied = !ctx.allowed(broker, op::WRITE, resource::TOPIC, &topic.name.0);
        let mut row = Vec::with_capacity(topic.partitions.len());
        for &p in &topic.partitions {
            match &resolved {
                _ if txn_denied => {
                    unknown = true;
                    row.push(Some(ResponseError::TransactionalIdAuthorizationFailed));
                }
                _ if topic_denied => {
                    unknown = true;
                    row.push(Some(ResponseError::TopicAuthorizationFailed));
                }
                Ok(Some(t)) if p >= 0 && p < t.partitions => {
                    known.push(icestream_storage::meta::TxnPartition {
                        topic_id: t.id,
                        topic: t.name.clone(),
                        partition: p,
                    });
                    row.push(None);
                }
                Err(e) => {
                    unknown = true;
                    row.push(Some(crate::errors::meta_retriable(e)));
                }
                _ => {
                    unknown = true;
                    row.push(Some(ResponseError::UnknownTopicOrPartition));
                }
            }
        }
        errors.push(row);
    }
    let outcome: Result<Vec<Option<ResponseError>>, ResponseError> = if unknown {
        Ok(vec![
            Some(ResponseError::OperationNotAttempted);
            known.len()
        ])
    } else if txn.verify_only {
        broker
            .transactions
            .verify_partitions(&tid, txn.producer_id.0, txn.producer_epoch, &known)
            .await
            .map(|ok| {
                ok.into_iter()
                    .map(|ok| (!ok).then_some(ResponseError::InvalidTxnState))
                    .collect()
            })
    } else {
        broker
            .transactions
            .add_partitions(&tid, txn.producer_id.0, txn.producer_epoch, &known, false)
            .await
            .map(|()| vec![None; known.len()])
    };
    let mut known_errors = match outcome {
        Ok(e) => e.into_iter(),
        Err(e) => vec![Some(e); known.len()].into_iter(),
    };
    let topic_results = txn
        .topics
        .into_iter()
        .zip(errors)
        .map(
            |(
                AddPartitionsToTxnTopic {
                    name, partitions, ..
                },
                row,
            )| {
                let results = partitions
                    .into_iter()
                    .zip(row)
                    .map(|(p, e)| {
                        let e = e.or_else(|| known_errors.next().flatten());
                        AddPartitionsToTxnPartitionResult::default()
                            .with_partition_index(p)
                            .with_partition_error_code(e.map_or(0, |e| e.code()))
                    })
                    .collect();
                AddPartitionsToTxnTopicResult::default()
                    .with_name(name)
                    .with_results_by_partition(results)
            },
        )
        .collect();
    AddPartitionsToTxnResult::default()
        .with_transactional_id(txn.transactional_id)
        .with_topic_results(topic_results)
}
