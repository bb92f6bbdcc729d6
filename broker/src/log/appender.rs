//! The appender: gathers produced batches of all partitions, writes them as ONE WAL segment
//! object, then commits the segment in one metadata transaction that assigns offsets, and
//! only then answers the producers.
//!
//! Adaptive grouping: when no segment write is in flight and the broker has not been
//! writing faster than one segment per `flush_interval`, waiting data is written at once,
//! so a lightly loaded broker answers in one PUT and one commit. Otherwise data gathers
//! until `flush_interval` after the last write (or until `flush_bytes` wait), so under load
//! segments grow instead of their number: PUTs per second stay near one per
//! `flush_interval`, with bursts of at most `flush_burst` early writes. Early writes earn
//! credits at one per `flush_interval` and every write spends one. Optionally (off by
//! default), at most `flush_eager_bytes` waiting while no write is in flight are written at
//! once without a credit: every produce then waits for one PUT and one commit, and PUTs
//! follow each other as fast as they complete.
//!
//! Waiting for more data helps only while more can come. A request whose client can send
//! nothing more until it is answered (the fifth in flight of an idempotent producer, which
//! may have no more; transaction markers) is written, with whatever waits with it, as soon
//! as no write is in flight, without a credit (`flush_when_clients_wait`, on by default).
//! Such a client's next requests come only after this segment's commit, so while such
//! clients keep waiting, segments follow each other as fast as they complete.
//!
//! Pipelining: segment PUTs run concurrently (up to `max_inflight_flushes`), commits run
//! one at a time in segment order, so a producer's batches get offsets in the order they
//! arrived. Backpressure: produced bytes hold permits of a semaphore sized
//! `max_inflight_bytes` until their segment is committed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use icestream_storage::batch::{control_type, BatchHeader, MARKER_COMMIT};
use icestream_storage::direct_fs::WrittenBeforeRead;
use icestream_storage::meta::{
    AppendBatch, AppendUnit, Marker, PartitionAppend, PartitionResult, ProducerBatch,
    SegmentAppend, UnitOutcome,
};
use icestream_storage::segment::{encode_header, padded_footer, segment_key, ChunkInfo};
use icestream_storage::{Clock, MetaError, MetaStore, Objects};
use object_store::{PutMode, PutOptions, PutPayload};
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::log::Log;

/// Budget permits are counted in KiB.
const PERMIT_BYTES: usize = 1024;
/// Retries of a segment commit whose outcome was unknown.
const UNKNOWN_OUTCOME_RETRIES: usize = 5;
/// Segments committed in one metadata transaction at most.
const MAX_GROUP_COMMIT: usize = 8;

/// Why produced data was not made durable; producers get a retriable error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("writing the WAL segment failed: {0}")]
    Storage(String),
    #[error("committing the WAL segment failed: {0}")]
    Commit(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
}

/// The batches one produce request sends to one partition, already validated.
pub struct PartitionInput {
    pub topic_id: Uuid,
    pub partition: i32,
    pub batches: Vec<(BatchHeader, Bytes)>,
}

/// One outcome per [`PartitionInput`] of the request, in order.
pub type AppendReply = Result<Vec<UnitOutcome>, AppendError>;

struct Pending {
    inputs: Vec<PartitionInput>,
    bytes: usize,
    /// The client can send nothing more until this request is answered.
    client_waits: bool,
    reply: oneshot::Sender<AppendReply>,
    _permit: OwnedSemaphorePermit,
}

#[derive(Clone)]
pub struct AppenderConfig {
    /// Segment writes start at least this far apart, except early ones.
    pub flush_interval: Duration,
    /// Early writes (data written at once while no write is in flight) allowed in a burst;
    /// they accrue at one per `flush_interval`.
    pub flush_burst: usize,
    /// Waiting data of at most this many bytes is written at once while no write is in
    /// flight, without spending a credit.
    pub flush_eager_bytes: usize,
    /// Waiting data that a client waits for, unable to send more, is written at once while
    /// no write is in flight, without spending a credit.
    pub flush_when_clients_wait: bool,
    pub flush_bytes: usize,
    pub max_inflight_bytes: usize,
    pub max_inflight_flushes: usize,
    /// Segments older than this are not committed (the orphan collector may take them).
    pub max_segment_age_ms: i64,
}

/// Handle to the appender task.
#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<Pending>,
    budget: Arc<Semaphore>,
    total_permits: u32,
}

impl Appender {
    /// Starts the flush and commit tasks. They stop after `shutdown` is cancelled and every
    /// accepted request has been flushed and answered.
    pub fn start(
        config: AppenderConfig,
        objects: Objects,
        meta: MetaStore,
        log: Arc<Log>,
        shutdown: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let total_permits = (config.max_inflight_bytes / PERMIT_BYTES).max(1) as u32;
        let budget = Arc::new(Semaphore::new(total_permits as usize));
        let (tx, rx) = mpsc::channel(1024);
        let (commit_tx, commit_rx) = mpsc::channel(config.max_inflight_flushes);
        let committer = tokio::spawn(commit_loop(commit_rx, meta, log, config.clone()));
        let flusher = tokio::spawn(async move {
            flush_loop(rx, commit_tx, objects, config, shutdown).await;
            if let Err(e) = committer.await {
                tracing::error!(error = %e, "commit task failed");
            }
        });
        (
            Self {
                tx,
                budget,
                total_permits,
            },
            flusher,
        )
    }

    /// Queues validated batches; waits while too many bytes are in flight. The receiver
    /// yields the outcomes once the segment holding them is committed. `client_waits`: the
    /// sender can send nothing more until this is answered, so waiting for more data to
    /// share the segment only delays it; it is written as soon as no write is in flight.
    pub async fn append(
        &self,
        inputs: Vec<PartitionInput>,
        client_waits: bool,
    ) -> Result<oneshot::Receiver<AppendReply>, AppendError> {
        let bytes: usize = inputs
            .iter()
            .flat_map(|i| i.batches.iter().map(|(_, b)| b.len()))
            .sum();
        let permits = (bytes.div_ceil(PERMIT_BYTES) as u32).clamp(1, self.total_permits);
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                inputs,
                bytes,
                client_waits,
                reply,
                _permit: permit,
            })
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        Ok(rx)
    }
}

/// A segment on its way: PUT running, waiting for its turn to commit.
struct Flushed {
    append: Arc<SegmentAppend>,
    put: JoinHandle<Result<(), object_store::Error>>,
    /// Per partition group: the batches with their positions, for the read cache.
    data: Vec<Vec<(u64, Bytes)>>,
    waiters: Vec<Waiter>,
    key: String,
}

struct Waiter {
    reply: oneshot::Sender<AppendReply>,
    /// For each input of the request: (partition group, unit index in the group).
    routes: Vec<(usize, usize)>,
    _permit: OwnedSemaphorePermit,
}

/// Segment writes (PUTs) started and not finished; wakes the flush loop when one finishes.
#[derive(Default)]
struct InFlight {
    puts: AtomicUsize,
    finished: Notify,
}

impl InFlight {
    fn idle(&self) -> bool {
        self.puts.load(Ordering::SeqCst) == 0
    }
}

/// Credits for segment writes started ahead of `flush_interval`: one accrues every
/// `flush_interval`, up to `burst`; every write spends one (down to -1, so writes forced
/// by the interval leave none for early ones while the load lasts).
struct Credits {
    credits: f64,
    burst: f64,
    interval: Duration,
    refilled: Instant,
}

impl Credits {
    fn new(burst: usize, interval: Duration) -> Self {
        Self {
            credits: burst as f64,
            burst: burst as f64,
            interval,
            refilled: Instant::now(),
        }
    }

    fn available(&mut self, now: Instant) -> bool {
        let earned =
            now.duration_since(self.refilled).as_secs_f64() / self.interval.as_secs_f64().max(1e-6);
        self.credits = (self.credits + earned).min(self.burst);
        self.refilled = now;
        self.credits >= 1.0
    }

    fn spend(&mut self) {
        self.credits = (self.credits - 1.0).max(-1.0);
    }
}

async fn flush_loop(
    mut rx: mpsc::Receiver<Pending>,
    commit_tx: mpsc::Sender<Flushed>,
    objects: Objects,
    config: AppenderConfig,
    shutdown: CancellationToken,
) {
    let in_flight = Arc::new(InFlight::default());
    let mut credits = Credits::new(config.flush_burst, config.flush_interval);
    let mut pending: Vec<Pending> = Vec::new();
    let mut bytes = 0usize;
    // Some waiting request's client can send nothing more until it is answered.
    let mut client_waits = false;
    let mut last_flush = Instant::now() - config.flush_interval;
    loop {
        if !pending.is_empty() {
            let now = Instant::now();
            let idle = in_flight.idle();
            let eager = idle
                && ((client_waits && config.flush_when_clients_wait)
                    || bytes <= config.flush_eager_bytes);
            let early = idle && !eager && credits.available(now);
            if eager
                || early
                || bytes >= config.flush_bytes
                || now >= last_flush + config.flush_interval
            {
                // Requests already queued behind these go into the same segment.
                while bytes < config.flush_bytes {
                    match rx.try_recv() {
                        Ok(p) => {
                            bytes += p.bytes;
                            pending.push(p);
                        }
                        Err(_) => break,
                    }
                }
                let batch = std::mem::take(&mut pending);
                bytes = 0;
                client_waits = false;
                last_flush = now;
                if !eager {
                    credits.spend();
                }
                let flushed = start_flush(batch, &objects, &in_flight);
                if commit_tx.send(flushed).await.is_err() {
                    return;
                }
                continue;
            }
        }
        // Wake for new data, a finished write (an early one may start), or the interval.
        let deadline = (!pending.is_empty()).then(|| last_flush + config.flush_interval);
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(p) => {
                    bytes += p.bytes;
                    client_waits |= p.client_waits;
                    pending.push(p);
                }
                None => break,
            },
            _ = in_flight.finished.notified(), if !pending.is_empty() => {}
            _ = sleep_until(deadline) => {}
            _ = shutdown.cancelled() => {
                // Take what is already queued, then stop accepting.
                rx.close();
                while let Ok(p) = rx.try_recv() {
                    pending.push(p);
                }
                break;
            }
        }
    }
    if !pending.is_empty() {
        let _ = commit_tx
            .send(start_flush(pending, &objects, &in_flight))
            .await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Lays out a segment from the pending requests (one chunk per partition, requests in
/// arrival order within it) and starts its PUT.
fn start_flush(pending: Vec<Pending>, objects: &Objects, in_flight: &Arc<InFlight>) -> Flushed {
    let segment = Uuid::now_v7();
    // Batches whose records carry no timestamp (message format v0) are indexed at their
    // append time, as Kafka's segments fall back to their modification time: retention
    // and time lookups then see them as written now, not as written in 1970.
    let appended_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let created_ms = segment
        .get_timestamp()
        .map(|t| {
            let (s, n) = t.to_unix();
            (s * 1000 + u64::from(n) / 1_000_000) as i64
        })
        .unwrap_or_default();
    // Group inputs by partition, keeping arrival order.
    // (topic, partition, the (request, input) pairs it holds)
    type Group = (Uuid, i32, Vec<(usize, usize)>);
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of: std::collections::HashMap<(Uuid, i32), usize> =
        std::collections::HashMap::new();
    for (r, p) in pending.iter().enumerate() {
        for (i, input) in p.inputs.iter().enumerate() {
            let g = *group_of
                .entry((input.topic_id, input.partition))
                .or_insert_with(|| {
                    groups.push((input.topic_id, input.partition, Vec::new()));
                    groups.len() - 1
                });
            groups[g].2.push((r, i));
        }
    }
    let mut parts: Vec<Bytes> = vec![encode_header()];
    let mut position = parts[0].len() as u64;
    let mut partitions = Vec::with_capacity(groups.len());
    let mut chunks = Vec::with_capacity(groups.len());
    let mut data = Vec::with_capacity(groups.len());
    let mut routes: Vec<Vec<(usize, usize)>> = pending
        .iter()
        .map(|p| vec![(0, 0); p.inputs.len()])
        .collect();
    for (g, (topic_id, partition, members)) in groups.iter().enumerate() {
        let start = position;
        let mut units = Vec::with_capacity(members.len());
        let mut group_data = Vec::new();
        let mut chunk = ChunkInfo {
            topic_id: *topic_id,
            partition: *partition,
            position: start,
            length: 0,
            batch_count: 0,
            offset_span: 0,
            first_timestamp: i64::MAX,
            max_timestamp: -1,
            producer_id: -1,
        };
        for (u, &(r, i)) in members.iter().enumerate() {
            routes[r][i] = (g, u);
            let mut unit = AppendUnit::default();
            for (header, bytes) in &pending[r].inputs[i].batches {
                unit.batches.push(AppendBatch {
                    position,
                    length: bytes.len() as u32,
                    offset_span: header.offset_span() as u32,
                    max_timestamp: if header.max_timestamp < 0 && !header.is_control() {
                        appended_at
                    } else {
                        header.max_timestamp
                    },
                    producer: header.has_producer_id().then_some(ProducerBatch {
                        producer_id: header.producer_id,
                        epoch: header.producer_epoch,
                        first_sequence: header.base_sequence,
                        last_sequence: header.last_sequence(),
                    }),
                    transactional: header.is_transactional(),
                    marker: header.is_control().then(|| {
                        if control_type(bytes) == Some(MARKER_COMMIT) {
                            Marker::Commit
                        } else {
                            Marker::Abort
                        }
                    }),
                });
                if chunk.batch_count == 0 {
                    chunk.producer_id = header.producer_id;
                }
                chunk.batch_count += 1;
                chunk.offset_span += header.offset_span() as u32;
                chunk.first_timestamp = chunk.first_timestamp.min(header.base_timestamp);
                chunk.max_timestamp = chunk.max_timestamp.max(header.max_timestamp);
                group_data.push((position, bytes.clone()));
                parts.push(bytes.clone());
                position += bytes.len() as u64;
            }
            units.push(unit);
        }
        chunk.length = (position - start) as u32;
        chunks.push(chunk);
        data.push(group_data);
        partitions.push(PartitionAppend {
            topic_id: *topic_id,
            partition: *partition,
            units,
        });
    }
    // Padded to the store's block size: the local store then writes whole blocks only.
    parts.push(padded_footer(&chunks, position, objects.size_alignment()));
    let size = parts.iter().map(|p| p.len() as u64).sum();
    let key = segment_key(segment);
    let path = objects.path(&key);
    let store = objects.store.clone();
    let payload = PutPayload::from_iter(parts);
    crate::metrics::observe(&crate::metrics::FLUSH_BYTES, size as f64);
    in_flight.puts.fetch_add(1, Ordering::SeqCst);
    let in_flight = in_flight.clone();
    let put = tokio::spawn(async move {
        let mut options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        // Nothing reads a segment before its commit, which follows this put; the orphan
        // collector deletes one a failed put or a crash leaves behind.
        options.extensions.insert(WrittenBeforeRead);
        let started = Instant::now();
        let result = store.put_opts(&path, payload, options).await.map(|_| ());
        crate::metrics::inc(&crate::metrics::SEGMENT_PUTS);
        crate::metrics::observe(
            &crate::metrics::SEGMENT_PUT_SECONDS,
            started.elapsed().as_secs_f64(),
        );
        in_flight.puts.fetch_sub(1, Ordering::SeqCst);
        in_flight.finished.notify_one();
        result
    });
    let waiters = pending
        .into_iter()
        .zip(routes)
        .map(|(p, routes)| Waiter {
            reply: p.reply,
            routes,
            _permit: p._permit,
        })
        .collect();
    Flushed {
        append: Arc::new(SegmentAppend {
            segment,
            size,
            created_ms,
            partitions,
        }),
        put,
        data,
        waiters,
        key,
    }
}

async fn commit_loop(
    mut rx: mpsc::Receiver<Flushed>,
    meta: MetaStore,
    log: Arc<Log>,
    config: AppenderConfig,
) {
    // A segment taken from the channel whose PUT was still running: it heads the next group.
    let mut next: Option<Flushed> = None;
    loop {
        let first = match next.take() {
            Some(f) => f,
            None => match rx.recv().await {
                Some(f) => f,
                None => break,
            },
        };
        let waited = Instant::now();
        let Some(first) = finish_put(first).await else {
            continue;
        };
        // Segments queued behind it whose PUTs have also finished are committed with it,
        // in one metadata transaction, in order.
        let mut group = vec![first];
        while group.len() < MAX_GROUP_COMMIT {
            match rx.try_recv() {
                Ok(f) if f.put.is_finished() => {
                    if let Some(f) = finish_put(f).await {
                        group.push(f);
                    }
                }
                Ok(f) => {
                    next = Some(f);
                    break;
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let appends: Vec<_> = group.iter().map(|f| f.append.clone()).collect();
        let outcomes = match commit(&meta, &appends, config.max_segment_age_ms).await {
            Ok(outcomes) => outcomes,
            Err(e) if group.len() == 1 => vec![Err(e)],
            Err(_) => {
                // Nothing was committed; one segment's failure must not fail the others,
                // so each is committed on its own.
                let mut outcomes = Vec::with_capacity(group.len());
                for append in &appends {
                    let one = commit(
                        &meta,
                        std::slice::from_ref(append),
                        config.max_segment_age_ms,
                    );
                    outcomes.push(match one.await {
                        Ok(mut results) => results.pop().unwrap_or_else(|| {
                            Err(MetaError::SegmentAlreadyCommitted(append.segment))
                        }),
                        Err(e) => Err(e),
                    });
                }
                outcomes
            }
        };
        let segments = group.len();
        for (flushed, outcome) in group.into_iter().zip(outcomes) {
            let Flushed {
                append,
                data,
                waiters,
                key,
                ..
            } = flushed;
            match outcome {
                Ok(results) => {
                    tracing::debug!(
                        segment = %key,
                        bytes = append.size,
                        partitions = results.len(),
                        segments,
                        commit_ms = started.elapsed().as_millis() as u64,
                        put_wait_ms = (started - waited).as_millis() as u64,
                        age_ms = (icestream_storage::SystemClock.now_ms() - append.created_ms),
                        "meta.commit_segment"
                    );
                    for (p, (result, batch_data)) in
                        append.partitions.iter().zip(results.iter().zip(&data))
                    {
                        log.on_commit(p.topic_id, p.partition, result, batch_data);
                    }
                    for w in waiters {
                        let outcomes = w
                            .routes
                            .iter()
                            .map(|&(g, u)| results[g].outcomes[u])
                            .collect();
                        let _ = w.reply.send(Ok(outcomes));
                    }
                }
                Err(e) => {
                    tracing::warn!(segment = %key, error = %e, "meta.commit_segment failed");
                    fail(waiters, AppendError::Commit(e.to_string()));
                }
            }
        }
    }
}

/// Waits for a segment's PUT; a failed one fails its producers and yields nothing.
async fn finish_put(mut flushed: Flushed) -> Option<Flushed> {
    let put_result = match (&mut flushed.put).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("upload task: {e}")),
    };
    match put_result {
        Ok(()) => Some(flushed),
        Err(e) => {
            tracing::warn!(segment = %flushed.key, error = %e, "produce.flush failed");
            fail(flushed.waiters, AppendError::Storage(e));
            None
        }
    }
}

/// Commits segments in one transaction (see [`MetaStore::commit_segments`]), retrying
/// when the outcome of an attempt is unknown (the commit is idempotent). A retry that finds
/// them already committed (the group is atomic, so all of them were) reads the offsets
/// their batches got back from the index, so producers are answered with the truth; only
/// when that cannot be done for a segment (a batch was refused or deduplicated) do its
/// producers get a retriable error, and idempotent producers then get their original
/// offsets on retry. `Err` when nothing was committed; otherwise one outcome per segment,
/// in order.
async fn commit(
    meta: &MetaStore,
    appends: &[Arc<SegmentAppend>],
    max_age_ms: i64,
) -> Result<Vec<Result<Vec<PartitionResult>, MetaError>>, MetaError> {
    let mut attempt = 0;
    let mut unknown = false;
    loop {
        match meta.commit_segments(appends.to_vec(), max_age_ms).await {
            Ok(results) => return Ok(results.into_iter().map(Ok).collect()),
            Err(MetaError::Kv(e)) if e.maybe_committed() && attempt < UNKNOWN_OUTCOME_RETRIES => {
                attempt += 1;
                unknown = true;
                tracing::warn!(segments = appends.len(), first = %appends[0].segment, error = %e, "segment commit outcome unknown, retrying");
                tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
            }
            Err(MetaError::SegmentAlreadyCommitted(id)) if unknown => {
                tracing::info!(segment = %id, "segment commit had succeeded; offsets read back from the index");
                let mut outcomes = Vec::with_capacity(appends.len());
                for append in appends {
                    outcomes.push(match meta.committed_segment_results(append).await {
                        Ok(Some(results)) => Ok(results),
                        Ok(None) => Err(MetaError::SegmentAlreadyCommitted(append.segment)),
                        Err(e) => Err(e),
                    });
                }
                return Ok(outcomes);
            }
            Err(e) => return Err(e),
        }
    }
}

fn fail(waiters: Vec<Waiter>, error: AppendError) {
    for w in waiters {
        let _ = w.reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_writes_come_in_bursts_and_accrue_one_per_interval() {
        let interval = Duration::from_millis(5);
        let mut credits = Credits::new(3, interval);
        let start = credits.refilled;
        for _ in 0..3 {
            assert!(credits.available(start));
            credits.spend();
        }
        assert!(!credits.available(start), "the burst is spent");
        assert!(!credits.available(start + Duration::from_millis(4)));
        assert!(credits.available(start + interval));
        credits.spend();
        // Writes forced by the interval spend too (down to -1): under steady load there is
        // nothing left for early ones.
        credits.spend();
        credits.spend();
        assert!(!credits.available(start + interval * 2));
        assert!(credits.available(start + interval * 3));
        // Never more than the burst, however long the quiet.
        let later = start + Duration::from_secs(60);
        assert!(credits.available(later));
        for _ in 0..3 {
            credits.spend();
        }
        assert!(!credits.available(later));
    }

    #[test]
    fn no_burst_means_no_early_writes() {
        let mut credits = Credits::new(0, Duration::from_millis(5));
        let start = credits.refilled;
        assert!(!credits.available(start + Duration::from_secs(1)));
    }
}
