//! Fetch: serves stored batches (base offsets patched, never re-encoded) within
//! `max_bytes` and `partition_max_bytes`, and long-polls up to `max_wait_ms` until
//! `min_bytes` are available. Fetch v7+ keeps incremental fetch sessions (KIP-227): the
//! session cache (`crate::fetch_sessions`) says which partitions a request covers, and an
//! incremental response carries only the partitions with something new.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use icestream_storage::legacy;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::Context;
use crate::broker::Broker;
use crate::errors;
use crate::fetch_sessions::{Begin, Outcome, Seen, TopicKey, Want};
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
    let uses_ids = ctx.version >= 13;
    let wants = wants_of(req, uses_ids);
    let begin = if ctx.version >= 7 {
        broker.fetch_sessions.begin(
            req.session_id,
            req.session_epoch,
            uses_ids,
            wants,
            &forgotten_of(req, uses_ids),
            Instant::now(),
        )
    } else {
        Begin::Sessionless(wants)
    };
    let (wants, known) = match &begin {
        Begin::Sessionless(wants) | Begin::Full(wants) => (wants, None),
        Begin::Incremental { wants, seen, .. } => (wants, Some(seen.as_slice())),
        Begin::Refused(error) => return FetchResponse::default().with_error_code(error.code()),
    };
    let read = long_poll(broker, ctx, req, wants, known).await;
    let (responses, session_id) = match begin {
        Begin::Full(wants) => {
            let answered = wants
                .into_iter()
                .zip(&read.outcomes)
                .filter_map(|(want, o)| o.map(|o| (want, o.seen)))
                .collect();
            let id = broker
                .fetch_sessions
                .open(uses_ids, answered, Instant::now());
            (read.responses, id)
        }
        Begin::Incremental {
            id,
            epoch,
            seen,
            slots,
            ..
        } => {
            // A partition not read is as the client last saw it.
            let outcomes: Vec<Outcome> = read
                .outcomes
                .iter()
                .zip(&seen)
                .map(|(o, seen)| {
                    o.unwrap_or(Outcome {
                        seen: *seen,
                        records: false,
                        error: false,
                        redirect: false,
                    })
                })
                .collect();
            match broker.fetch_sessions.finish(id, epoch, &slots, &outcomes) {
                Ok(carried) => {
                    // The answers are the partitions read, in order: keep those carried.
                    let mut keep = read
                        .outcomes
                        .iter()
                        .zip(carried)
                        .filter(|(o, _)| o.is_some())
                        .map(|(_, carried)| carried);
                    let mut responses = read.responses;
                    for r in &mut responses {
                        r.partitions.retain(|_| keep.next().unwrap_or(false));
                    }
                    responses.retain(|r| !r.partitions.is_empty());
                    (responses, id)
                }
                Err(error) => {
                    return FetchResponse::default().with_error_code(error.code());
                }
            }
        }
        Begin::Sessionless(_) | Begin::Refused(_) => (read.responses, 0),
    };
    let response = FetchResponse::default().with_responses(responses);
    if ctx.version >= 7 {
        response.with_session_id(session_id)
    } else {
        response
    }
}

/// The partitions a request names, in its order. Topic names are copied out of the
/// request frame, so that a session does not keep the frame alive.
fn wants_of(req: &FetchRequest, uses_ids: bool) -> Vec<Want> {
    let mut wants = Vec::with_capacity(req.topics.iter().map(|t| t.partitions.len()).sum());
    for topic in &req.topics {
        let key = if uses_ids {
            TopicKey::Id(topic.topic_id)
        } else {
            TopicKey::Name(Arc::from(topic.topic.0.as_str()))
        };
        for p in &topic.partitions {
            wants.push(Want {
                topic: key.clone(),
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
            });
        }
    }
    wants
}

fn forgotten_of(req: &FetchRequest, uses_ids: bool) -> Vec<(TopicKey, i32)> {
    let mut forgotten = Vec::new();
    for topic in &req.forgotten_topics_data {
        let key = if uses_ids {
            TopicKey::Id(topic.topic_id)
        } else {
            TopicKey::Name(Arc::from(topic.topic.0.as_str()))
        };
        forgotten.extend(topic.partitions.iter().map(|&p| (key.clone(), p)));
    }
    forgotten
}

/// What a partition's answer tells the session cache.
fn outcome(data: &PartitionData) -> Outcome {
    let error = data.error_code != 0;
    Outcome {
        seen: if error {
            Seen {
                high_watermark: -1,
                last_stable: -1,
                log_start: -1,
            }
        } else {
            Seen {
                high_watermark: data.high_watermark,
                last_stable: data.last_stable_offset,
                log_start: data.log_start_offset,
            }
        },
        records: data.records.as_ref().is_some_and(|r| !r.is_empty()),
        error,
        redirect: data.preferred_read_replica.0 >= 0,
    }
}

/// What reading the wanted partitions found.
struct Read {
    /// The answers, in want order, consecutive partitions of a topic in one entry.
    responses: Vec<FetchableTopicResponse>,
    /// Per want, what its answer tells the session cache; `None` for a partition not
    /// read (see `read_all`), which has no answer.
    outcomes: Vec<Option<Outcome>>,
    /// Bytes of records in the answers.
    bytes: usize,
    /// Whether any partition is answered with an error (errors are answered at once).
    errors: bool,
}

/// Reads the partitions until `min_bytes` of records are there, an error is, or
/// `max_wait_ms` passed (capped at `MAX_WAIT`). One answer per want, in order; `known`
/// as `read_all` takes it.
async fn long_poll(
    broker: &Broker,
    ctx: &Context,
    req: &FetchRequest,
    wants: &[Want],
    known: Option<&[Seen]>,
) -> Read {
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut commits = broker.log.subscribe();
    loop {
        commits.borrow_and_update();
        let read = read_all(broker, ctx, req, wants, known).await;
        if read.bytes >= min_bytes || read.errors || Instant::now() >= deadline {
            crate::metrics::add(&crate::metrics::FETCH_BYTES, read.bytes as u64);
            return read;
        }
        if tokio::time::timeout_at(deadline, commits.changed())
            .await
            .is_err()
        {
            // Timed out: answer with what is there now.
            let read = read_all(broker, ctx, req, wants, known).await;
            crate::metrics::add(&crate::metrics::FETCH_BYTES, read.bytes as u64);
            return read;
        }
    }
}

/// A topic looked up by name or id.
type Resolved =
    Result<Option<Arc<icestream_storage::meta::TopicMeta>>, icestream_storage::MetaError>;

/// Reads every wanted partition once. With `known` (what an incremental session last
/// told the client of each partition), a partition with nothing to read whose offsets are
/// still those is not read at all, and has no answer.
async fn read_all(
    broker: &Broker,
    ctx: &Context,
    req: &FetchRequest,
    wants: &[Want],
    known: Option<&[Seen]>,
) -> Read {
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
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut outcomes = Vec::with_capacity(wants.len());
    // Consecutive wants of one topic resolve it once, and share an entry.
    let mut current: Option<(&TopicKey, Resolved, bool)> = None;
    for (i, want) in wants.iter().enumerate() {
        if current.as_ref().map(|(k, _, _)| *k) != Some(&want.topic) {
            let resolved = match &want.topic {
                TopicKey::Id(id) => broker.topics.get_by_id(*id).await,
                TopicKey::Name(name) => broker.topics.get(name).await,
            };
            let name = match (&resolved, &want.topic) {
                (Ok(Some(t)), _) => t.name.to_string(),
                (_, TopicKey::Name(name)) => name.to_string(),
                (_, TopicKey::Id(id)) => id.to_string(),
            };
            let denied = !ctx.allowed(broker, op::READ, resource::TOPIC, &name);
            current = Some((&want.topic, resolved, denied));
            let run = wants[i..]
                .iter()
                .take_while(|w| w.topic == want.topic)
                .count();
            let mut r = FetchableTopicResponse::default();
            match &want.topic {
                TopicKey::Id(id) if ctx.version >= 13 => r.topic_id = *id,
                TopicKey::Id(_) => {}
                TopicKey::Name(name) => {
                    r.topic = TopicName(StrBytes::from_string(name.to_string()));
                }
            }
            r.partitions.reserve_exact(run);
            responses.push(r);
        }
        let Some((_, resolved, denied)) = &current else {
            continue;
        };
        let denied = *denied;
        let replica = match resolved {
            Ok(Some(t)) => preferred(broker, ctx, req, t.id, want.partition),
            _ => None,
        };
        if let (Some(known), Ok(Some(t)), false, None) = (known, resolved, denied, replica) {
            if unchanged(broker, t.id, want, known.get(i), committed).await {
                outcomes.push(None);
                continue;
            }
        }
        let base = PartitionData::default()
            .with_partition_index(want.partition)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_aborted_transactions(None);
        let data = match resolved {
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
                if let Ok(Some(s)) = broker.log.partition(t.id, want.partition).await {
                    d = d
                        .with_high_watermark(s.high_watermark())
                        .with_last_stable_offset(s.last_stable())
                        .with_log_start_offset(s.log_start());
                }
                d
            }
            Ok(Some(t)) => {
                // Only the first non-empty partition may go past the limits (KIP-74).
                let max = (want.max_bytes.max(0) as usize).min(budget);
                let min_one = total == 0;
                match broker
                    .log
                    .read(
                        t.id,
                        want.partition,
                        want.fetch_offset,
                        max,
                        min_one,
                        committed,
                    )
                    .await
                {
                    Ok(r) => {
                        let aborted = if committed {
                            aborted_in(broker, t.id, want.partition, want.fetch_offset, &r).await
                        } else {
                            Ok(None)
                        };
                        match aborted {
                            Ok(aborted) => {
                                let mut records = concat(r.batches, r.bytes);
                                if ctx.version < 4 {
                                    // Clients before Kafka 0.11 read message sets: magic
                                    // 0 up to Fetch v1, magic 1 from v2.
                                    let magic = if ctx.version < 2 { 0 } else { 1 };
                                    records = legacy::down_convert(
                                        &records,
                                        magic,
                                        want.fetch_offset,
                                        max.max(1),
                                    );
                                }
                                total += records.len();
                                budget = budget.saturating_sub(records.len());
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
                        let state = broker
                            .log
                            .partition(t.id, want.partition)
                            .await
                            .ok()
                            .flatten();
                        tracing::debug!(topic = %t.name, partition = want.partition, offset = want.fetch_offset, error = %e, "fetch error");
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
        outcomes.push(Some(outcome(&data)));
        if let Some(r) = responses.last_mut() {
            r.partitions.push(data);
        }
    }
    Read {
        responses,
        outcomes,
        bytes: total,
        errors: any_error,
    }
}

/// Whether a session's partition has nothing to read and the same offsets as the client
/// was last told (`seen`).
async fn unchanged(
    broker: &Broker,
    topic_id: uuid::Uuid,
    want: &Want,
    seen: Option<&Seen>,
    committed: bool,
) -> bool {
    let Some(seen) = seen else { return false };
    let Ok(Some(s)) = broker.log.partition(topic_id, want.partition).await else {
        return false;
    };
    let now = Seen {
        high_watermark: s.high_watermark(),
        last_stable: s.last_stable(),
        log_start: s.log_start(),
    };
    let limit = if committed {
        now.last_stable
    } else {
        now.high_watermark
    };
    now == *seen
        && want.fetch_offset >= now.log_start
        && want.fetch_offset >= limit
        && want.fetch_offset <= now.high_watermark
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
