//! Produce: validates every batch completely (`icestream_storage::validate`: header, CRC,
//! every record of the decompressed body, counts, offset deltas, timestamps), makes its
//! header true (recomputed max timestamp, LogAppendTime), queues the valid partitions in
//! the appender in arrival order, and answers once their segment is committed (acks=1 and
//! acks=all alike: durable in object storage and indexed). Partitions with bad input get
//! their error code (with the offending record where there is one); the connection lives
//! on.
//!
//! Transactions v2 (KIP-890): from v12 a Produce that carries transactional batches for
//! partitions not yet in the producer's transaction enrolls them first (in place of
//! AddPartitionsToTxn), in one compare-and-set on the transaction's record.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use icestream_storage::batch::{batches, BatchHeader};
use icestream_storage::legacy;
use icestream_storage::meta::{TxnPartition, UnitOutcome};
use icestream_storage::records::decode_batch;
use icestream_storage::validate::{
    finalize, validate as storage_validate, Policy, TimestampWindow,
};
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{respond, Context, ResponseFuture};
use crate::broker::Broker;
use crate::cluster::topics::effective_config;
use crate::errors;
use crate::log::appender::{AppendReply, PartitionInput};
use crate::security::acl::{op, resource};

/// Requests an idempotent producer may have in flight on one connection.
const IDEMPOTENT_MAX_IN_FLIGHT: usize = 5;

/// Where each partition of the response comes from.
enum Slot {
    /// Refused before queueing (with the indexes of the offending records, if known).
    Error(ResponseError, Option<String>, Vec<i32>),
    /// Queued: index into the appender's outcomes, and the LogAppendTime given, if any.
    Queued(usize, Option<i64>),
}

struct TopicSlots {
    name: TopicName,
    topic_id: Uuid,
    partitions: Vec<(i32, Slot)>,
}

pub async fn admit(
    broker: Arc<Broker>,
    ctx: Context,
    req: ProduceRequest,
) -> Option<ResponseFuture> {
    let started = std::time::Instant::now();
    crate::metrics::inc(&crate::metrics::PRODUCE_REQUESTS);
    let acks = req.acks;
    let mut inputs: Vec<PartitionInput> = Vec::new();
    let mut topics: Vec<TopicSlots> = Vec::with_capacity(req.topic_data.len());
    let transactional_id = req.transactional_id.as_ref().map(|t| t.0.to_string());
    // Partitions a transactions-v2 producer enrolls with this request:
    // (input index, partition, producer id, epoch).
    let mut enroll: Vec<(usize, TxnPartition, i64, i16)> = Vec::new();
    let refuse_all = if !matches!(acks, -1..=1) {
        Some((ResponseError::InvalidRequiredAcks, None))
    } else if transactional_id
        .as_ref()
        .is_some_and(|id| !ctx.allowed(&broker, op::WRITE, resource::TRANSACTIONAL_ID, id))
    {
        Some((ResponseError::TransactionalIdAuthorizationFailed, None))
    } else {
        None
    };
    for topic_data in req.topic_data {
        let topic = if ctx.version >= 13 {
            broker.topics.get_by_id(topic_data.topic_id).await
        } else {
            broker.topics.get(&topic_data.name.0).await
        };
        let name = match &topic {
            Ok(Some(t)) => t.name.clone(),
            _ => topic_data.name.0.to_string(),
        };
        let denied = !ctx.allowed(&broker, op::WRITE, resource::TOPIC, &name);
        let mut slots = TopicSlots {
            name: topic_data.name.clone(),
            topic_id: topic_data.topic_id,
            partitions: Vec::with_capacity(topic_data.partition_data.len()),
        };
        for partition in topic_data.partition_data {
            let index = partition.index;
            let slot = if let Some((code, msg)) = &refuse_all {
                Slot::Error(*code, msg.clone(), Vec::new())
            } else if denied {
                Slot::Error(ResponseError::TopicAuthorizationFailed, None, Vec::new())
            } else {
                match &topic {
                    Err(e) => {
                        Slot::Error(errors::meta_retriable(e), Some(e.to_string()), Vec::new())
                    }
                    Ok(None) if ctx.version >= 13 => {
                        Slot::Error(ResponseError::UnknownTopicId, None, Vec::new())
                    }
                    Ok(None) => {
                        Slot::Error(ResponseError::UnknownTopicOrPartition, None, Vec::new())
                    }
                    Ok(Some(t)) if index < 0 || index >= t.partitions => {
                        Slot::Error(ResponseError::UnknownTopicOrPartition, None, Vec::new())
                    }
                    Ok(Some(t)) => {
                        let max = t
                            .configs
                            .get("max.message.bytes")
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or_else(|| {
                                broker
                                    .dynamic
                                    .message_max_bytes()
                                    .unwrap_or(broker.settings.message_max_bytes)
                            });
                        let log_append_time = effective_config(t, "message.timestamp.type")
                            .is_some_and(|v| v == "LogAppendTime");
                        let policy = Policy {
                            require_keys: effective_config(t, "cleanup.policy")
                                .is_some_and(|p| p.split(',').any(|p| p.trim() == "compact")),
                            log_append_time,
                            timestamps: if log_append_time {
                                None
                            } else {
                                timestamp_window(t, now_ms())
                            },
                        };
                        let append_time = policy.log_append_time.then(now_ms);
                        let schemas = SchemaChecks {
                            key: effective_config(t, "confluent.key.schema.validation")
                                .is_some_and(|v| v == "true"),
                            value: effective_config(t, "confluent.value.schema.validation")
                                .is_some_and(|v| v == "true"),
                        };
                        let validated = match validate_off_runtime(
                            partition,
                            max,
                            policy,
                            append_time,
                            ctx.version,
                        )
                        .await
                        {
                            Ok(b) if schemas.key || schemas.value => {
                                check_schema_ids(&broker, &t.name, &b, schemas)
                                    .await
                                    .map(|()| b)
                            }
                            other => other,
                        };
                        match validated {
                            Ok(input_batches) => {
                                let txn_header = input_batches
                                    .iter()
                                    .map(|(h, _)| h)
                                    .find(|h| h.is_transactional());
                                if let (Some(h), true) = (txn_header, ctx.version >= 12) {
                                    enroll.push((
                                        inputs.len(),
                                        TxnPartition {
                                            topic_id: t.id,
                                            topic: t.name.clone(),
                                            partition: index,
                                        },
                                        h.producer_id,
                                        h.producer_epoch,
                                    ));
                                }
                                inputs.push(PartitionInput {
                                    topic_id: t.id,
                                    partition: index,
                                    batches: input_batches,
                                });
                                Slot::Queued(inputs.len() - 1, append_time)
                            }
                            Err((code, msg, records)) => {
                                tracing::debug!(topic = %t.name, partition = index, error = %msg, "produce refused");
                                Slot::Error(code, Some(msg), records)
                            }
                        }
                    }
                }
            };
            slots.partitions.push((index, slot));
        }
        topics.push(slots);
    }
    if !enroll.is_empty() {
        let refused = enroll_partitions(&broker, transactional_id.as_deref(), enroll).await;
        if !refused.is_empty() {
            drop_refused(&mut inputs, &mut topics, &refused);
        }
    }
    let bytes: u64 = inputs
        .iter()
        .flat_map(|i| i.batches.iter().map(|(_, b)| b.len() as u64))
        .sum();
    crate::metrics::add(&crate::metrics::PRODUCE_BYTES, bytes);
    // The batches are slices of the request frame, and the read cache keeps them after
    // the request is answered. When they are less than half of the frame (partitions
    // refused, large names), they are copied out, so the rest of the frame is not held.
    if (bytes as usize).saturating_mul(2) < ctx.frame_bytes {
        for input in &mut inputs {
            for (_, batch) in &mut input.batches {
                *batch = Bytes::copy_from_slice(batch);
            }
        }
    }
    // An idempotent producer keeps at most five requests in flight on a connection (Kafka
    // keeps the last five batches of each producer to detect duplicates, and clients
    // enforce the limit): with this one it has sent all it may, and nothing more of it
    // can join the segment before it is answered.
    let client_waits = acks != 0
        && ctx.unanswered + 1 >= IDEMPOTENT_MAX_IN_FLIGHT
        && inputs
            .iter()
            .any(|i| i.batches.iter().any(|(h, _)| h.has_producer_id()));
    let reply = if inputs.is_empty() {
        None
    } else {
        Some(broker.appender.append(inputs, client_waits).await)
    };
    if acks == 0 {
        // No response; still log failures.
        if let Some(Ok(rx)) = reply {
            tokio::spawn(async move {
                if let Ok(Err(e)) = rx.await {
                    tracing::warn!(error = %e, "acks=0 produce was not stored");
                }
            });
        }
        return None;
    }
    let version = ctx.version;
    Some(respond(ctx, async move {
        let outcome: AppendReply = match reply {
            None => Ok(Vec::new()),
            Some(Ok(rx)) => rx
                .await
                .unwrap_or(Err(crate::log::appender::AppendError::ShuttingDown)),
            Some(Err(e)) => Err(e),
        };
        let response = build_response(topics, &outcome, version);
        crate::metrics::observe(
            &crate::metrics::PRODUCE_SECONDS,
            started.elapsed().as_secs_f64(),
        );
        ResponseKind::Produce(response)
    }))
}

/// Enrolls the partitions of a transactions-v2 producer in its transaction; the inputs
/// that could not be enrolled, with the error their partitions get.
async fn enroll_partitions(
    broker: &Broker,
    transactional_id: Option<&str>,
    enroll: Vec<(usize, TxnPartition, i64, i16)>,
) -> HashMap<usize, (ResponseError, String)> {
    let mut refused = HashMap::new();
    let Some(tid) = transactional_id else {
        for (i, ..) in enroll {
            refused.insert(
                i,
                (
                    ResponseError::InvalidTxnState,
                    "transactional batches in a produce request without a transactional id"
                        .to_string(),
                ),
            );
        }
        return refused;
    };
    // One transaction per producer (id, epoch); a request normally carries one.
    let mut by_producer: HashMap<(i64, i16), Vec<(usize, TxnPartition)>> = HashMap::new();
    for (i, p, pid, epoch) in enroll {
        by_producer.entry((pid, epoch)).or_default().push((i, p));
    }
    for ((pid, epoch), parts) in by_producer {
        let partitions: Vec<TxnPartition> = parts.iter().map(|(_, p)| p.clone()).collect();
        if let Err(e) = broker
            .transactions
            .enroll_partitions(tid, pid, epoch, &partitions)
            .await
        {
            // Kafka's answer when the coordinator cannot take the partition yet: a
            // retriable error the producer's retries cover.
            let code = match e {
                ResponseError::ConcurrentTransactions
                | ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress => ResponseError::NotEnoughReplicas,
                e => e,
            };
            let message = format!("enrolling the partition in transaction {tid:?}: {e:?}");
            tracing::debug!(transactional_id = tid, producer_id = pid, epoch, error = ?e, "produce: enrollment refused");
            for (i, _) in parts {
                refused.insert(i, (code, message.clone()));
            }
        }
    }
    refused
}

/// Takes the refused inputs out of the request, turning their slots into errors.
fn drop_refused(
    inputs: &mut Vec<PartitionInput>,
    topics: &mut [TopicSlots],
    refused: &HashMap<usize, (ResponseError, String)>,
) {
    let mut remap = Vec::with_capacity(inputs.len());
    let mut kept = Vec::with_capacity(inputs.len());
    for (i, input) in std::mem::take(inputs).into_iter().enumerate() {
        if refused.contains_key(&i) {
            remap.push(None);
        } else {
            remap.push(Some(kept.len()));
            kept.push(input);
        }
    }
    *inputs = kept;
    for t in topics.iter_mut() {
        for (_, slot) in t.partitions.iter_mut() {
            if let Slot::Queued(i, time) = *slot {
                *slot = match (remap.get(i).copied().flatten(), refused.get(&i)) {
                    (Some(j), _) => Slot::Queued(j, time),
                    (None, Some((code, message))) => {
                        Slot::Error(*code, Some(message.clone()), Vec::new())
                    }
                    (None, None) => {
                        Slot::Error(ResponseError::UnknownServerError, None, Vec::new())
                    }
                };
            }
        }
    }
}

/// Which parts of the records must carry a registered schema id
/// (`confluent.key.schema.validation`, `confluent.value.schema.validation`).
#[derive(Clone, Copy)]
struct SchemaChecks {
    key: bool,
    value: bool,
}

/// Schema validation, as Confluent Server does it: every checked key or value is framed
/// in the Confluent wire format (magic byte 0, then the schema id) with an id registered
/// under the topic's subject (`<topic>-key`, `<topic>-value`).
async fn check_schema_ids(
    broker: &Broker,
    topic: &str,
    batches: &[(BatchHeader, Bytes)],
    checks: SchemaChecks,
) -> Result<(), Refusal> {
    for (header, batch) in batches {
        let rows = decode_batch(batch, header.base_offset)
            .map_err(|e| (ResponseError::CorruptMessage, e.to_string(), Vec::new()))?;
        for (index, row) in rows.iter().enumerate() {
            let parts = [
                (checks.key, "key", row.key.as_ref()),
                (checks.value, "value", row.value.as_ref()),
            ];
            for (on, part, data) in parts {
                if !on {
                    continue;
                }
                let subject = format!("{topic}-{part}");
                let refuse = |msg: String| {
                    crate::metrics::inc(&crate::metrics::SCHEMA_VALIDATION_FAILURES);
                    (
                        ResponseError::InvalidRecord,
                        format!("record {index}: {msg}"),
                        vec![index as i32],
                    )
                };
                let id = match data {
                    Some(d) if d.len() >= 5 && d[0] == 0 => {
                        i32::from_be_bytes([d[1], d[2], d[3], d[4]])
                    }
                    _ => {
                        return Err(refuse(format!(
                            "the {part} is not framed with a schema id (magic byte 0 and 4                              bytes of id), and {topic} requires one"
                        )))
                    }
                };
                match broker.registry.subject_has_id(&subject, id).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(refuse(format!(
                            "schema id {id} of the {part} is not registered under subject                              {subject}"
                        )));
                    }
                    Err(e) => {
                        return Err((
                            ResponseError::UnknownServerError,
                            format!("schema registry: {e}"),
                            Vec::new(),
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

/// A refusal: error code, message, indexes of the offending records in their batch.
type Refusal = (ResponseError, String, Vec<i32>);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Compressed record bytes of one partition above which validation (decompression, the
/// record walk) runs on the blocking pool instead of the connection's runtime thread.
const BLOCKING_VALIDATION_BYTES: usize = 256 * 1024;

/// The create times a CreateTime topic accepts, when it bounds them: Kafka's
/// `message.timestamp.before.max.ms` / `after.max.ms`, each falling back to the deprecated
/// `message.timestamp.difference.max.ms` while unset (as in Kafka 3.6+).
fn timestamp_window(
    topic: &icestream_storage::meta::TopicMeta,
    now_ms: i64,
) -> Option<TimestampWindow> {
    let bound = |name| {
        effective_config(topic, name)
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v != i64::MAX)
    };
    let difference = bound("message.timestamp.difference.max.ms");
    let before = bound("message.timestamp.before.max.ms").or(difference);
    let after = bound("message.timestamp.after.max.ms").or(difference);
    if before.is_none() && after.is_none() {
        return None;
    }
    Some(TimestampWindow {
        now_ms,
        before_max_ms: before.unwrap_or(i64::MAX),
        after_max_ms: after.unwrap_or(i64::MAX),
    })
}

/// [`validate`], on the blocking pool for large inputs so that decompressing them does not
/// stall the other connections served by this runtime thread.
async fn validate_off_runtime(
    partition: PartitionProduceData,
    max_batch_bytes: usize,
    policy: Policy,
    append_time: Option<i64>,
    version: i16,
) -> Result<Vec<(BatchHeader, Bytes)>, Refusal> {
    let records = partition.records.as_ref();
    let size = records.map_or(0, Bytes::len);
    // Uncompressed records are walked in place, quickly: only decompression is worth the
    // hand-off to another thread.
    // Message sets of magic 0/1 are converted: as costly as decompression.
    let compressed = records.is_some_and(|r| {
        r.len() > 22 && (r[22] & 0x07 != 0 || legacy::magic(r).is_some_and(|m| m < 2))
    });
    if size < BLOCKING_VALIDATION_BYTES || !compressed {
        return validate(partition, max_batch_bytes, policy, append_time, version);
    }
    tokio::task::spawn_blocking(move || {
        validate(partition, max_batch_bytes, policy, append_time, version)
    })
    .await
    .unwrap_or_else(|e| {
        Err((
            ResponseError::UnknownServerError,
            format!("validation task: {e}"),
            Vec::new(),
        ))
    })
}

/// Splits and checks the batches of one partition (of a Produce request of `version`),
/// and makes their headers true.
fn validate(
    partition: PartitionProduceData,
    max_batch_bytes: usize,
    policy: Policy,
    append_time: Option<i64>,
    version: i16,
) -> Result<Vec<(BatchHeader, Bytes)>, Refusal> {
    let refuse = |code: ResponseError, msg: String| (code, msg, Vec::new());
    let records = partition.records.unwrap_or_default();
    if records.is_empty() {
        return Err(refuse(
            ResponseError::InvalidRecord,
            "no record batches".into(),
        ));
    }
    // Clients before Kafka 0.11 (Produce v0-v2) send message sets of magic 0 or 1: one v2
    // batch holds their records, checked like any other. Their size counts against the
    // limit as sent; the conversion is uncompressed and bounded on its own.
    let (records, max_batch_bytes) = match legacy::magic(&records) {
        Some(0 | 1) if version >= 3 => {
            return Err(refuse(
                ResponseError::InvalidRecord,
                format!("Produce v{version} carries record batches of magic 2 only"),
            ));
        }
        Some(0 | 1) => {
            if records.len() > max_batch_bytes {
                return Err(refuse(
                    ResponseError::MessageTooLarge,
                    format!(
                        "message set of {} bytes exceeds max.message.bytes {max_batch_bytes}",
                        records.len()
                    ),
                ));
            }
            let converted = legacy::up_convert(&records).map_err(|e| {
                let code = if e.is_corrupt() {
                    ResponseError::CorruptMessage
                } else {
                    ResponseError::InvalidRecord
                };
                refuse(code, format!("message format v0/v1: {e}"))
            })?;
            (converted, usize::MAX)
        }
        _ => (records, max_batch_bytes),
    };
    let mut out = Vec::new();
    for item in batches(&records) {
        let (header, batch) = item.map_err(|e| refuse(errors::batch(&e), e.to_string()))?;
        if batch.len() > max_batch_bytes {
            return Err(refuse(
                ResponseError::MessageTooLarge,
                format!(
                    "record batch of {} bytes exceeds max.message.bytes {max_batch_bytes}",
                    batch.len()
                ),
            ));
        }
        let validated = storage_validate(&header, &batch, policy).map_err(|e| {
            (
                errors::validation(&e),
                e.to_string(),
                e.record().into_iter().collect(),
            )
        })?;
        out.push(finalize(header, batch, &validated, append_time));
    }
    Ok(out)
}

fn build_response(topics: Vec<TopicSlots>, outcome: &AppendReply, version: i16) -> ProduceResponse {
    let responses = topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|(index, slot)| {
                    let r = PartitionProduceResponse::default()
                        .with_index(index)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1);
                    let mut record_errors = Vec::new();
                    let mut append_time = -1;
                    let (code, message, base, log_start) = match slot {
                        Slot::Error(code, msg, records) => {
                            record_errors = records;
                            (Some(code), msg, -1, -1)
                        }
                        Slot::Queued(i, time) => match outcome {
                            Err(e) => (Some(errors::append(e)), Some(e.to_string()), -1, -1),
                            Ok(outcomes) => match outcomes.get(i) {
                                Some(
                                    UnitOutcome::Appended {
                                        base_offset,
                                        log_start_offset,
                                    }
                                    | UnitOutcome::Duplicate {
                                        base_offset,
                                        log_start_offset,
                                    },
                                ) => {
                                    append_time = time.unwrap_or(-1);
                                    (None, None, *base_offset, *log_start_offset)
                                }
                                Some(o) => (errors::outcome(o), None, -1, -1),
                                None => (Some(ResponseError::UnknownServerError), None, -1, -1),
                            },
                        },
                    };
                    if code.is_some() {
                        crate::metrics::inc(&crate::metrics::PRODUCE_ERRORS);
                    }
                    let mut r = r
                        .with_error_code(code.map_or(errors::NONE, |c| c.code()))
                        .with_base_offset(base);
                    if version >= 2 {
                        r = r.with_log_append_time_ms(append_time);
                    }
                    if version >= 5 {
                        r = r.with_log_start_offset(log_start);
                    }
                    if version >= 8 {
                        r = r
                            .with_record_errors(
                                record_errors
                                    .into_iter()
                                    .map(|i| {
                                        BatchIndexAndErrorMessage::default()
                                            .with_batch_index(i)
                                            .with_batch_index_error_message(
                                                message.clone().map(StrBytes::from_string),
                                            )
                                    })
                                    .collect(),
                            )
                            .with_error_message(message.map(StrBytes::from_string));
                    }
                    r
                })
                .collect();
            let mut tr = TopicProduceResponse::default().with_partition_responses(partitions);
            if version >= 13 {
                tr = tr.with_topic_id(t.topic_id);
            } else {
                tr = tr.with_name(t.name);
            }
            tr
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}
