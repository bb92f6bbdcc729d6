//! Table-side benchmarks:
//!
//! - `compact`: folds WAL data into Parquet in-process (real metadata store, local object
//!   store, SQLite catalog) and reports MB/s of WAL folded and CPU-seconds per GB;
//! - `freshness`: against a running broker, produces at a steady rate and reports how long
//!   after each acknowledgement its row is visible in the table (the broker's catalog);
//! - `fetch`: consumes a topic from offset 0 and reports MB/s (run it before and after the
//!   WAL was compacted and collected to compare hot and cold reads).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use icestream_catalog::connect;
use icestream_catalog::table::{committed_offsets, table_ident};
use icestream_compactor::{CompactorConfig, RoundContext};
use icestream_storage::meta::{AppendBatch, AppendUnit, PartitionAppend, SegmentAppend};
use icestream_storage::segment::{encode_footer, encode_header, segment_key, ChunkInfo};
use icestream_storage::{kv::embedded::EmbeddedKv, Clock, MetaStore, Objects, SystemClock};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use object_store::ObjectStoreExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fold MB of generated WAL data into the table, in-process.
    Compact {
        #[arg(long, default_value_t = 512)]
        mb: usize,
        #[arg(long, default_value_t = 16)]
        partitions: i32,
        #[arg(long, default_value_t = 1024)]
        record_size: usize,
        /// WAL folded per round at most (MB): smaller makes more, smaller data files.
        #[arg(long, default_value_t = 256)]
        round_mb: usize,
        /// Records per batch: each segment holds one batch per partition, so this sets
        /// the segment size (100: ~1.6 MiB at 16 partitions; 3, ~50 KiB, is what a broker
        /// taking 10 MB/s writes every 5 ms).
        #[arg(long, default_value_t = 100)]
        batch_records: usize,
        /// Then rewrite the small files into large ones, and report that too.
        #[arg(long)]
        rewrite: bool,
        /// Values are Avro records (Confluent wire format) of a schema registered for the
        /// topic, so the table gets typed columns the rounds decode into.
        #[arg(long)]
        avro: bool,
    },
    /// Produce at a steady rate to a running broker and time table visibility.
    Freshness {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// The broker's catalog URL (sqlite://DATA_DIR/catalog.db).
        #[arg(long)]
        catalog: String,
        /// The broker's object store URL (file://DATA_DIR/objects).
        #[arg(long)]
        object_store: String,
        #[arg(long, default_value = "kafka")]
        namespace: String,
        #[arg(long, default_value_t = 10.0)]
        rate_mb: f64,
        #[arg(long, default_value_t = 30)]
        duration: u64,
        #[arg(long, default_value_t = 16)]
        partitions: i32,
    },
    /// Segment commits from several writers into the same partitions of a shared
    /// metadata store: latency and conflict rate.
    Meta {
        /// Metadata store URL (e.g. postgres://…).
        #[arg(long)]
        metadata: String,
        /// Concurrent writers (brokers).
        #[arg(long, default_value_t = 2)]
        writers: usize,
        #[arg(long, default_value_t = 16)]
        partitions: i32,
        #[arg(long, default_value_t = 20)]
        duration: u64,
    },
    /// Consume a topic from offset 0 and report throughput.
    Fetch {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partitions: i32,
    },
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The value schema of `compact --avro`: a few typed fields and a payload that brings
/// the encoded record to the requested size.
const BENCH_SCHEMA: &str = r#"{"type": "record", "name": "Event", "namespace": "bench",
  "fields": [{"name": "id", "type": "long"}, {"name": "user", "type": "string"},
             {"name": "amount", "type": "double"}, {"name": "ok", "type": "boolean"},
             {"name": "tags", "type": {"type": "array", "items": "string"}},
             {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
             {"name": "payload", "type": "bytes"}]}"#;

/// A Confluent-framed Avro value of [`BENCH_SCHEMA`] around `payload`.
fn avro_value(
    schema: &apache_avro::Schema,
    id: i32,
    i: usize,
    now: i64,
    payload: &[u8],
) -> anyhow::Result<Bytes> {
    use apache_avro::types::Value;
    let record = Value::Record(vec![
        ("id".into(), Value::Long(i as i64)),
        ("user".into(), Value::String(format!("user-{}", i % 1000))),
        ("amount".into(), Value::Double(i as f64 * 0.25)),
        ("ok".into(), Value::Boolean(i.is_multiple_of(2))),
        (
            "tags".into(),
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
        ),
        ("at".into(), Value::TimestampMillis(now)),
        ("payload".into(), Value::Bytes(payload.to_vec())),
    ]);
    let mut out = vec![0u8];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(apache_avro::to_avro_datum(schema, record)?);
    Ok(Bytes::from(out))
}

fn batch_of(
    n: usize,
    size: usize,
    now: i64,
    seed: u64,
    avro: Option<&(apache_avro::Schema, i32)>,
) -> anyhow::Result<Bytes> {
    // About 60 bytes of the Avro record are its other fields.
    let size = if avro.is_some() {
        size.saturating_sub(60)
    } else {
        size
    };
    let mut value = vec![0u8; size];
    // xorshift: values that do not compress away, like real payloads mostly.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let records: Vec<Record> = (0..n)
        .map(|i| {
            for chunk in value.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let bytes = state.to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
            let value = match avro {
                Some((schema, id)) => avro_value(schema, *id, i, now, &value)?,
                None => Bytes::copy_from_slice(&value),
            };
            Ok(Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: now + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(value),
                headers: Default::default(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::Lz4,
        },
    )
    .map_err(|e| anyhow::anyhow!("encode: {e}"))?;
    Ok(out.freeze())
}

async fn compact(
    mb: usize,
    partitions: i32,
    record_size: usize,
    round_mb: usize,
    per_batch: usize,
    rewrite: bool,
    avro: bool,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kv = EmbeddedKv::open(&dir.path().join("meta.redb"))?;
    let meta = MetaStore::new(Arc::new(kv), Arc::new(SystemClock));
    let objects = Objects::open(&format!("file://{}", dir.path().join("objects").display()))?;
    let catalog = connect::open(
        &format!("sqlite://{}", dir.path().join("catalog.db").display()),
        &objects.url("warehouse"),
        &objects,
    )
    .await?;
    let topic = meta
        .create_topic("bench", partitions, BTreeMap::new())
        .await?;
    let avro = if avro {
        let schema = apache_avro::Schema::parse_str(BENCH_SCHEMA)?;
        let stored = icestream_storage::meta::StoredSchema {
            schema_type: "AVRO".into(),
            schema: BENCH_SCHEMA.into(),
            references: Vec::new(),
        };
        let id = match meta
            .register_schema("bench-value", &stored, b"bench", None)
            .await?
        {
            icestream_storage::meta::Registered::New { id, .. }
            | icestream_storage::meta::Registered::Existing { id, .. } => id,
            icestream_storage::meta::Registered::Changed => anyhow::bail!("registry changed"),
        };
        Some((schema, id))
    } else {
        None
    };
    // Every partition gets a batch of `per_batch` records per segment.
    let per_batch = per_batch.max(1);
    let mut written = 0usize;
    let mut raw = 0usize;
    let mut seed = 0u64;
    while written < mb * 1024 * 1024 {
        let now = SystemClock.now_ms();
        let mut body = encode_header().to_vec();
        let mut chunks = Vec::new();
        let mut parts = Vec::new();
        for p in 0..partitions {
            seed += 1;
            let batch = batch_of(per_batch, record_size, now, seed, avro.as_ref())?;
            let position = body.len() as u64;
            chunks.push(ChunkInfo {
                topic_id: topic.id,
                partition: p,
                position,
                length: batch.len() as u32,
                batch_count: 1,
                offset_span: per_batch as u32,
                first_timestamp: now,
                max_timestamp: now,
                producer_id: -1,
            });
            parts.push(PartitionAppend {
                topic_id: topic.id,
                partition: p,
                units: vec![AppendUnit {
                    batches: vec![AppendBatch {
                        position,
                        length: batch.len() as u32,
                        offset_span: per_batch as u32,
                        max_timestamp: now,
                        producer: None,
                        transactional: false,
                        marker: None,
                    }],
                }],
            });
            body.extend_from_slice(&batch);
            raw += per_batch * record_size;
        }
        body.extend_from_slice(&encode_footer(&chunks));
        let segment = uuid::Uuid::now_v7();
        written += body.len();
        objects
            .store
            .put(
                &objects.path(&segment_key(segment)),
                Bytes::from(body.clone()).into(),
            )
            .await?;
        meta.commit_segment(
            Arc::new(SegmentAppend {
                segment,
                size: body.len() as u64,
                created_ms: now,
                partitions: parts,
            }),
            600_000,
        )
        .await?;
    }
    let config = CompactorConfig {
        max_round_bytes: round_mb * 1024 * 1024,
        ..CompactorConfig::default()
    };
    let ctx = RoundContext {
        meta: &meta,
        objects: &objects,
        catalog: &catalog,
        config: &config,
        listener: None,
    };
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let (mut rows, mut bytes, mut rounds) = (0u64, 0u64, 0);
    loop {
        let r = ctx.run(&topic).await?;
        if r.rows == 0 {
            break;
        }
        rows += r.rows;
        bytes += r.bytes;
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let kind = if avro.is_some() {
        "avro, typed columns"
    } else {
        "raw"
    };
    println!("values                {kind}");
    println!("compaction            {rows} records, {:.1} MB of WAL ({:.1} MB of record data), {rounds} rounds, {partitions} partitions", bytes as f64 / 1e6, raw as f64 / 1e6);
    println!(
        "throughput            {:.1} MB/s of WAL folded ({:.1} MB/s per CPU-second), {:.0} records/s",
        bytes as f64 / 1e6 / secs,
        bytes as f64 / 1e6 / cpu.max(1e-9),
        rows as f64 / secs
    );
    println!("cpu                   {cpu:.2} CPU-s in {secs:.2} s");
    if !rewrite {
        return Ok(());
    }
    let config = CompactorConfig {
        max_small_files: 1,
        ..CompactorConfig::default()
    };
    let ctx = RoundContext {
        config: &config,
        ..ctx
    };
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let (mut bytes_in, mut bytes_out, mut files_in, mut files_out, mut rows, mut passes) =
        (0u64, 0u64, 0usize, 0usize, 0u64, 0);
    let last = loop {
        let r = ctx.rewrite(&topic).await?;
        if r.groups == 0 {
            break r;
        }
        bytes_in += r.bytes_in;
        bytes_out += r.bytes_out;
        files_in += r.files_in;
        files_out += r.files_out;
        rows += r.rows;
        passes += 1;
    };
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "rewrite               {files_in} files ({:.1} MB of Parquet) into {files_out} ({:.1} MB), {rows} rows, {passes} passes; {} data files and {} manifests left",
        bytes_in as f64 / 1e6,
        bytes_out as f64 / 1e6,
        last.data_files,
        last.manifests
    );
    println!(
        "rewrite throughput    {:.1} MB/s of Parquet read and rewritten ({:.1} MB/s per CPU-second), {:.0} rows/s",
        bytes_in as f64 / 1e6 / secs,
        bytes_in as f64 / 1e6 / cpu.max(1e-9),
        rows as f64 / secs
    );
    println!("rewrite cpu           {cpu:.2} CPU-s in {secs:.2} s");
    Ok(())
}

type Acks = Arc<Mutex<Vec<(i32, i64, Instant)>>>;

struct AckTimes {
    acks: Acks,
}

impl ClientContext for AckTimes {}

impl ProducerContext for AckTimes {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result {
            if let Ok(mut a) = self.acks.lock() {
                a.push((m.partition(), m.offset(), Instant::now()));
            }
        }
    }
}

async fn freshness(
    bootstrap: String,
    catalog_url: String,
    object_store: String,
    namespace: String,
    rate_mb: f64,
    duration: u64,
    partitions: i32,
) -> anyhow::Result<()> {
    let topic = format!("fresh-{}", SystemClock.now_ms());
    let objects = Objects::open(&object_store)?;
    let catalog = connect::open(&catalog_url, &objects.url("warehouse"), &objects).await?;
    let acks: Acks = Arc::default();
    let producer: ThreadedProducer<AckTimes> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create_with_context(AckTimes { acks: acks.clone() })?;
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
        admin
            .create_topics(
                &[NewTopic::new(
                    &topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new(),
            )
            .await?;
    }
    let ident = table_ident(&namespace, &topic)?;
    // When each committed-offsets map was first seen.
    type Seen = Vec<(Instant, BTreeMap<i32, i64>)>;
    let visible: Arc<Mutex<Seen>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (visible, stop, catalog, ident) = (
            visible.clone(),
            stop.clone(),
            catalog.clone(),
            ident.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(t) = catalog.load_table(&ident).await {
                    if let Ok(o) = committed_offsets(&t).await {
                        if let Ok(mut v) = visible.lock() {
                            v.push((Instant::now(), o));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let payload = vec![7u8; 1024];
    let start = Instant::now();
    let mut sent = 0f64;
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(duration) {
        if sent > start.elapsed().as_secs_f64() * rate_mb * 1e6 {
            tokio::time::sleep(Duration::from_micros(500)).await;
            continue;
        }
        let p = (n % partitions as u64) as i32;
        let mut record = BaseRecord::<(), [u8], ()>::to(&topic)
            .payload(&payload[..])
            .partition(p);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        n += 1;
        sent += payload.len() as f64;
    }
    producer.flush(Duration::from_secs(30))?;
    // Wait until the table caught up with everything.
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = poller.await;
    let acks = acks.lock().map(|a| a.clone()).unwrap_or_default();
    let visible = visible.lock().map(|v| v.clone()).unwrap_or_default();
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    let mut missing = 0;
    for (p, offset, acked) in &acks {
        match visible
            .iter()
            .find(|(t, o)| *t >= *acked && o.get(p).is_some_and(|next| *next > *offset))
        {
            Some((t, _)) => {
                h.record((t.duration_since(*acked).as_millis() as u64).max(1))?;
            }
            None => missing += 1,
        }
    }
    println!(
        "freshness             {} records at {rate_mb} MB/s over {duration} s, {partitions} partitions ({missing} not visible)",
        acks.len()
    );
    println!(
        "ack → visible         p50 {} ms  p99 {} ms  max {} ms (table polled every 50 ms)",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
    Ok(())
}

/// Reads until nothing new arrives for two seconds.
fn fetch(bootstrap: String, topic: String, partitions: i32) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "tablebench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "4194304")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let mut last = Instant::now();
    let (mut n, mut bytes) = (0u64, 0u64);
    while last.elapsed() < Duration::from_secs(2) && start.elapsed() < Duration::from_secs(600) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.context("consume")?;
            n += 1;
            bytes += m.payload_len() as u64;
            last = Instant::now();
        }
    }
    let secs = (last - start).as_secs_f64().max(1e-3);
    println!(
        "fetch                 {n} records, {:.1} MB in {secs:.2} s: {:.1} MB/s, {:.0} records/s",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
        n as f64 / secs
    );
    Ok(())
}

async fn meta_bench(
    metadata: String,
    writers: usize,
    partitions: i32,
    duration: u64,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let first = icestream_storage::kv::open(&metadata, dir.path()).await?;
    let meta = MetaStore::new(first, Arc::new(SystemClock));
    let topic = meta
        .create_topic(
            &format!("metabench-{}", SystemClock.now_ms()),
            partitions,
            BTreeMap::new(),
        )
        .await?;
    let conflicts_before = icestream_storage::metrics::META_CONFLICTS
        .as_ref()
        .map(|c| c.get())
        .unwrap_or(0);
    let stop = Instant::now() + Duration::from_secs(duration);
    let mut tasks = Vec::new();
    for _ in 0..writers {
        // Each writer has its own connections, as separate brokers would.
        let kv = icestream_storage::kv::open(&metadata, dir.path()).await?;
        let meta = MetaStore::new(kv, Arc::new(SystemClock));
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut commits = 0u64;
            while Instant::now() < stop {
                // Every segment holds a batch for every partition: all writers contend.
                let parts = (0..topic.partitions)
                    .map(|p| PartitionAppend {
                        topic_id: topic.id,
                        partition: p,
                        units: vec![AppendUnit {
                            batches: vec![AppendBatch {
                                position: 16 + p as u64 * 100,
                                length: 100,
                                offset_span: 10,
                                max_timestamp: 0,
                                producer: None,
                                transactional: false,
                                marker: None,
                            }],
                        }],
                    })
                    .collect();
                let started = Instant::now();
                meta.commit_segment(
                    Arc::new(SegmentAppend {
                        segment: uuid::Uuid::now_v7(),
                        size: 100 * topic.partitions as u64,
                        created_ms: SystemClock.now_ms(),
                        partitions: parts,
                    }),
                    600_000,
                )
                .await?;
                h.record((started.elapsed().as_micros() as u64).max(1))?;
                commits += 1;
            }
            Ok::<_, anyhow::Error>((h, commits))
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut commits = 0;
    for t in tasks {
        let (h, n) = t.await??;
        all.add(&h)?;
        commits += n;
    }
    let conflicts = icestream_storage::metrics::META_CONFLICTS
        .as_ref()
        .map(|c| c.get())
        .unwrap_or(0)
        - conflicts_before;
    println!(
        "segment commits       {writers} writer(s), {partitions} shared partitions, {duration} s: {commits} commits ({:.0}/s)",
        commits as f64 / duration as f64
    );
    println!(
        "commit latency        p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        all.max() as f64 / 1000.0
    );
    println!(
        "conflicts             {conflicts} retries ({:.1}% of commits)",
        conflicts as f64 * 100.0 / commits.max(1) as f64
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // As the icestream binary does: the compactor runs in this process.
    icestream_storage::memory::tune_allocator();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Compact {
            mb,
            partitions,
            record_size,
            round_mb,
            batch_records,
            rewrite,
            avro,
        } => rt.block_on(compact(
            mb,
            partitions,
            record_size,
            round_mb,
            batch_records,
            rewrite,
            avro,
        )),
        Command::Freshness {
            bootstrap,
            catalog,
            object_store,
            namespace,
            rate_mb,
            duration,
            partitions,
        } => rt.block_on(freshness(
            bootstrap,
            catalog,
            object_store,
            namespace,
            rate_mb,
            duration,
            partitions,
        )),
        Command::Fetch {
            bootstrap,
            topic,
            partitions,
        } => fetch(bootstrap, topic, partitions),
        Command::Meta {
            metadata,
            writers,
            partitions,
            duration,
        } => rt.block_on(meta_bench(metadata, writers, partitions, duration)),
    }
}
