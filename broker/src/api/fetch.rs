//! Fetch: serves stored batches (base offsets patched, never re-encoded) within
//! `max_bytes` and `partition_max_bytes`, and long-polls up to `max_wait_ms` until
//! `min_bytes` are available. Fetch sessions (KIP-227) are not kept: every response has
//! session id 0, which tells clients to send full fetch requests.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::Context;
use crate::broker::Broker;
use crate::errors;
use crate::security::acl::{op, resource};

/// Longest long-poll we honour, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub async fn handle(broker: &Broker, ctx: &Context, req: FetchRequest) -> FetchResponse {
    let started = std::time::Instant::now();
    crate::metrics::inc(&crate::metrics::FETCH_REQUESTS);
    let response = serve(broker, ctx, &req).await;
    crate::metrics::observe(
        &crate::metrics::FETCH_SECONDS,
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn serve(broker: &Broker, ctx: &Context, req: &FetchRequest) -> FetchResponse {
    if ctx.version >= 7 && req.session_id != 0 {
        // We never hand out session ids, so a non-zero one is unknown to us.
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code());
    }
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut commits = broker.log.subscribe();
    loop {
        commits.borrow_and_update();
        let (response, bytes, errors) = read_all(broker, ctx, req).await;
        if bytes >= min_bytes || errors || Instant::now() >= deadline {
            crate::metrics::add(&crate::metrics::FETCH_BYTES, bytes as u64);
            return response;
        }
        if tokio::time::timeout_at(deadline, commits.changed())
            .await
            .is_err()
        {
            // Timed out: answer with what is there now.
            let (response, bytes, _) = read_all(broker, ctx, req).await;
            crate::metrics::add(&crate::metrics::FETCH_BYTES, bytes as u64);
            return response;
        }
    }
}

/// Reads every requested partition once. Returns the response, the bytes of records in
/// it, and whether any partition had an error (errors are answered at once).
async fn read_all(
    broker: &Broker,
    ctx: &Context,
    req: &FetchRequest,
) -> (FetchResponse, usize, bool) {
    let mut budget = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut any_error = false;
    // isolation_level 1 = READ_COMMITTED (v4+): records up to the last stable offset, with
    // the aborted transactions among them.
    let committed = ctx.version >= 4 && req.isolation_level == 1;
    let mut responses = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let resolved = if ctx.version >= 13 {
            broker.topics.get_by_id(topic.topic_id).await
        } else {
            broker.topics.get(&topic.topic.0).await
        };
        let name = match &resolved {
            Ok(Some(t)) => t.name.clone(),
            _ => topic.topic.0.to_string(),
        };
        let denied = !ctx.allowed(broker, op::READ, resource::TOPIC, &name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let base = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(None);
            let replica = match &resolved {
                Ok(Some(t)) => preferred(broker, ctx, req, t.id, p.partition),
                _ => None,
            };
            let data = match &resolved {
                _ if denied => {
                    any_error = true;
                    base.with_error_code(ResponseError::TopicAuthorizationFailed.code())
                }
                Err(e) => {
                    any_error = true;
                    base.with_error_code(errors::meta_retriable(e).code())
                }
                Ok(None) => {
                    any_error = true;
                    let code = if ctx.version >= 13 {
                        ResponseError::UnknownTopicId
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    };
                    base.with_error_code(code.code())
                }
                Ok(Some(t)) if replica.is_some() => {
                    // Fetch from a broker in the client's rack (KIP-392): no records here.
                    let replica = BrokerId(replica.unwrap_or(-1));
                    let mut d = base.with_preferred_read_replica(replica);
                    if let Ok(Some(s)) = broker.log.partition(t.id, p.partition).await {
                        d = d
                            .with_high_watermark(s.high_watermark())
                            .with_last_stable_offset(s.last_stable())
                            .with_log_start_offset(s.log_start());
                    }
                    d
                }
                Ok(Some(t)) => {
                    // Only the first non-empty partition may go past the limits (KIP-74).
                    let max = (p.partition_max_bytes.max(0) as usize).min(budget);
                    let min_one = total == 0;
                    match broker
                        .log
                        .read(t.id, p.partition, p.fetch_offset, max, min_one, committed)
                        .await
                    {
                        Ok(r) => {
                            let aborted = if committed {
                                aborted_in(broker, t.id, p.partition, p.fetch_offset, &r).await
                            } else {
                                Ok(None)
                            };
                            match aborted {
                                Ok(aborted) => {
                                    let records = concat(r.batches, r.bytes);
                                    total += r.bytes;
                                    budget = budget.saturating_sub(r.bytes);
                                    base.with_high_watermark(r.high_watermark)
                                        .with_last_stable_offset(r.last_stable)
                                        .with_log_start_offset(r.log_start)
                                        .with_aborted_transactions(aborted)
                                        .with_records(Some(records))
                                }
                                Err(e) => {
                                    any_error = true;
                                    base.with_error_code(errors::meta_retriable(&e).code())
                                }
                            }
                        }
                        Err(e) => {
                            any_error = true;
                            let state =
                                broker.log.partition(t.id, p.partition).await.ok().flatten();
                            tracing::debug!(topic = %t.name, partition = p.partition, offset = p.fetch_offset, error = %e, "fetch error");
                            let mut d = base.with_error_code(errors::read(&e).code());
                            if let Some(s) = state {
                                d = d
                                    .with_high_watermark(s.high_watermark())
                                    .with_last_stable_offset(s.last_stable())
                                    .with_log_start_offset(s.log_start());
                            }
                            d
                        }
                    }
                }
            };
            let data = if ctx.version < 5 {
                data.with_log_start_offset(-1)
            } else {
                data
            };
            partitions.push(data);
        }
        let mut r = FetchableTopicResponse::default().with_partitions(partitions);
        if ctx.version >= 13 {
            r = r.with_topic_id(topic.topic_id);
        } else {
            r = r.with_topic(topic.topic.clone());
        }
        responses.push(r);
    }
    (
        FetchResponse::default().with_responses(responses),
        total,
        any_error,
    )
}

/// Aborted transactions overlapping the fetched batches, for a read_committed consumer
/// to drop their records. Only asked of the metadata store when a batch is transactional.
async fn aborted_in(
    broker: &Broker,
    topic_id: uuid::Uuid,
    partition: i32,
    from: i64,
    read: &crate::log::ReadResult,
) -> Result<Option<Vec<AbortedTransaction>>, icestream_storage::MetaError> {
    if !read.transactional {
        return Ok(Some(Vec::new()));
    }
    let aborted = broker
        .meta
        .aborted_txns(topic_id, partition, from, read.next - 1, ABORTED_SCAN)
        .await?;
    Ok(Some(
        aborted
            .into_iter()
            .map(|a| {
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(a.producer_id))
                    .with_first_offset(a.first_offset)
            })
            .collect(),
    ))
}

/// Abort markers examined per read_committed partition fetch.
const ABORTED_SCAN: usize = 1000;

/// Fetch v11+ carries the consumer's rack (`client.rack`).
fn preferred(
    broker: &Broker,
    ctx: &Context,
    req: &FetchRequest,
    topic_id: uuid::Uuid,
    partition: i32,
) -> Option<i32> {
    if ctx.version < 11 {
        return None;
    }
    broker
        .cluster
        .preferred_read_replica(topic_id, partition, req.rack_id.as_str())
}

fn concat(batches: Vec<Bytes>, bytes: usize) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.into_iter().next().unwrap_or_default(),
        _ => {
            let mut buf = BytesMut::with_capacity(bytes);
            for b in batches {
                buf.extend_from_slice(&b);
            }
            buf.freeze()
        }
    }
}
