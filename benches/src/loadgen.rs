//! A Kafka load generator on librdkafka (the `rdkafka` crate): produces fixed-size records
//! at a target rate (or as fast as possible), optionally consumes them back, and prints
//! throughput, produce latency, end-to-end latency and — given the broker's pid — the
//! broker's CPU-seconds per GiB and peak RSS.
//!
//! ```text
//! loadgen --bootstrap 127.0.0.1:9092 --partitions 16 --record-size 1024 --acks all \
//!         --duration 30 --broker-pid $(pgrep -f 'icestream serve') --wal-dir ./data/objects/wal
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Parser, Debug, Clone)]
#[command(about = "Kafka load generator (librdkafka)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic to use (created if missing); default: a fresh one per run.
    #[arg(long)]
    topic: Option<String>,
    #[arg(long, default_value_t = 16)]
    partitions: i32,
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Producer instances (each with its own connections and thread).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, default_value = "all")]
    acks: String,
    #[arg(long, default_value = "none")]
    compression: String,
    /// Idempotent producers (librdkafka then allows at most 5 requests in flight).
    #[arg(long)]
    idempotence: bool,
    /// Transactional producers committing every this many milliseconds (0 = none).
    #[arg(long, default_value_t = 0)]
    transaction_ms: u64,
    /// Consumers read with isolation.level=read_committed (librdkafka's default) or
    /// read_uncommitted.
    #[arg(long, default_value = "read_committed")]
    isolation: String,
    /// Seconds to produce for.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Target MB/s over all producers (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate_mb: f64,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Seconds at the start whose latencies are not recorded (connection set-up, producer
    /// id, metadata).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Also consume and report end-to-end latency.
    #[arg(long)]
    consume: bool,
    /// Broker process id, to report its CPU time and peak RSS.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Extra librdkafka settings for every client, KEY=VALUE (repeatable), e.g.
    /// `security.protocol=SASL_SSL`.
    #[arg(long = "client", value_name = "KEY=VALUE")]
    client: Vec<String>,
    /// The broker's WAL directory (local store), to count segment objects written.
    #[arg(long)]
    wal_dir: Option<PathBuf>,
}

struct LatencyContext {
    histogram: Mutex<Histogram<u64>>,
    record_after: Instant,
    errors: AtomicU64,
    acked_bytes: AtomicU64,
    acked_records: AtomicU64,
}

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        match result {
            Ok(msg) => {
                if *sent >= self.record_after {
                    let us = sent.elapsed().as_micros() as u64;
                    if let Ok(mut h) = self.histogram.lock() {
                        let _ = h.record(us.max(1));
                    }
                }
                self.acked_records.fetch_add(1, Ordering::Relaxed);
                self.acked_bytes
                    .fetch_add(msg.payload_len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// (user + system CPU seconds, peak RSS in bytes) of a process, from /proc.
fn process_usage(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; `after` starts at field 3.
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok((ticks / 100.0, hwm_kb * 1024))
}

fn count_files(dir: &PathBuf) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A client configuration with the bootstrap servers and the `--client` settings.
fn client_config(args: &Args) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.bootstrap);
    for kv in &args.client {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--client {kv:?} is not KEY=VALUE"))?;
        config.set(k, v);
    }
    Ok(config)
}

fn create_topic(args: &Args, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(args)?.create()?;
    let rt = std::thread::spawn({
        let topic = topic.to_string();
        let partitions = args.partitions;
        move || {
            futures_lite_block_on(admin.create_topics(
                &[NewTopic::new(
                    &topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new(),
            ))
        }
    });
    match rt.join() {
        Ok(Ok(results)) => {
            for r in results {
                if let Err((name, code)) = r {
                    if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                        bail!("creating topic {name}: {code}");
                    }
                }
            }
            Ok(())
        }
        Ok(Err(e)) => bail!("creating topic: {e}"),
        Err(_) => bail!("admin thread panicked"),
    }
}

/// Minimal executor for the admin future (rdkafka's futures are runtime-agnostic).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench-{}", now_nanos() / 1_000_000));
    create_topic(&args, &topic).context("creating the benchmark topic")?;

    let stop = Arc::new(AtomicBool::new(false));
    let e2e = Arc::new(Mutex::new(histogram()));
    let consumer_thread = if args.consume {
        let consumer: BaseConsumer = client_config(&args)?
            .set("group.id", "loadgen")
            .set("isolation.level", &args.isolation)
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..args.partitions {
            tpl.add_partition_offset(&topic, p, Offset::End)?;
        }
        consumer.assign(&tpl)?;
        let stop = stop.clone();
        let e2e = e2e.clone();
        let record_after = now_nanos() + (args.warmup * 1_000_000_000) + 500_000_000;
        Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) {
                    if let Some(p) = msg.payload() {
                        if p.len() >= 8 {
                            let mut ts = [0u8; 8];
                            ts.copy_from_slice(&p[..8]);
                            let sent = u64::from_le_bytes(ts);
                            if sent < record_after {
                                continue;
                            }
                            let us = now_nanos().saturating_sub(sent) / 1000;
                            if let Ok(mut h) = e2e.lock() {
                                let _ = h.record(us.max(1));
                            }
                        }
                    }
                }
            }
        }))
    } else {
        None
    };
    std::thread::sleep(Duration::from_millis(500));

    let usage_before = args.broker_pid.map(process_usage).transpose()?;
    let segments_before = args.wal_dir.as_ref().map(count_files);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration + args.warmup);
    let per_producer_rate = args.rate_mb * 1_000_000.0 / args.producers as f64;
    let mut workers = Vec::new();
    let mut contexts = Vec::new();
    // How long commit_transaction takes, as the producer sees it.
    let commit_times = Arc::new(Mutex::new(histogram()));
    for w in 0..args.producers {
        let ctx = Arc::new(LatencyContext {
            histogram: Mutex::new(histogram()),
            record_after: started + Duration::from_secs(args.warmup),
            errors: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            acked_records: AtomicU64::new(0),
        });
        contexts.push(ctx.clone());
        let mut config = client_config(&args)?;
        if args.transaction_ms > 0 {
            config.set("transactional.id", format!("loadgen-{w}-{}", now_nanos()));
        }
        let producer: ThreadedProducer<ArcContext> = config
            .set("acks", &args.acks)
            .set("compression.type", &args.compression)
            .set("linger.ms", args.linger_ms.to_string())
            .set(
                "enable.idempotence",
                if args.idempotence || args.transaction_ms > 0 {
                    "true"
                } else {
                    "false"
                },
            )
            .set("queue.buffering.max.kbytes", "1048576")
            .set("batch.size", "1000000")
            .create_with_context(ArcContext(ctx))?;
        let topic = topic.clone();
        let args = args.clone();
        let commits = commit_times.clone();
        workers.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut payload = vec![0u8; args.record_size.max(8)];
            for (i, b) in payload.iter_mut().enumerate().skip(8) {
                *b = (i * 31 + w) as u8;
            }
            let mut sent_bytes = 0f64;
            let mut n: u64 = 0;
            let begin = Instant::now();
            let txn_every = Duration::from_millis(args.transaction_ms);
            let mut txn_started = Instant::now();
            if args.transaction_ms > 0 {
                producer.init_transactions(Duration::from_secs(30))?;
                producer.begin_transaction()?;
            }
            while Instant::now() < deadline {
                if args.transaction_ms > 0 && txn_started.elapsed() >= txn_every {
                    let commit = Instant::now();
                    producer.commit_transaction(Duration::from_secs(30))?;
                    if let Ok(mut h) = commits.lock() {
                        let _ = h.record((commit.elapsed().as_micros() as u64).max(1));
                    }
                    producer.begin_transaction()?;
                    txn_started = Instant::now();
                }
                if per_producer_rate > 0.0 {
                    let allowed = begin.elapsed().as_secs_f64() * per_producer_rate;
                    if sent_bytes > allowed {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                }
                payload[..8].copy_from_slice(&now_nanos().to_le_bytes());
                let partition = (n % args.partitions as u64) as i32;
                let mut record = BaseRecord::<(), [u8], Box<Instant>>::with_opaque_to(
                    &topic,
                    Box::new(Instant::now()),
                )
                .payload(&payload[..])
                .partition(partition);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((_, r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_micros(100));
                        }
                    }
                }
                n += 1;
                sent_bytes += payload.len() as f64;
            }
            if args.transaction_ms > 0 {
                producer.commit_transaction(Duration::from_secs(60))?;
            } else {
                producer.flush(Duration::from_secs(60))?;
            }
            Ok(())
        }));
    }
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let usage_after = args.broker_pid.map(process_usage).transpose()?;
    let segments_after = args.wal_dir.as_ref().map(count_files);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = consumer_thread {
        let _ = t.join();
    }

    let mut latency = histogram();
    let (mut bytes, mut records, mut errors) = (0u64, 0u64, 0u64);
    for c in &contexts {
        if let Ok(h) = c.histogram.lock() {
            latency.add(&*h)?;
        }
        bytes += c.acked_bytes.load(Ordering::Relaxed);
        records += c.acked_records.load(Ordering::Relaxed);
        errors += c.errors.load(Ordering::Relaxed);
    }
    println!(
        "topic                 {topic} ({} partitions)",
        args.partitions
    );
    println!(
        "config                record {} B, {} producer(s), acks={}{}{}, compression={}, linger {} ms, target {}",
        args.record_size,
        args.producers,
        args.acks,
        if args.idempotence { " idempotent" } else { "" },
        if args.transaction_ms > 0 {
            format!(" transactional ({} ms transactions)", args.transaction_ms)
        } else {
            String::new()
        },
        args.compression,
        args.linger_ms,
        if args.rate_mb > 0.0 { format!("{} MB/s", args.rate_mb) } else { "max".into() }
    );
    println!("duration              {elapsed:.1} s");
    println!(
        "throughput            {:.1} MB/s, {:.0} records/s ({records} records, {errors} errors)",
        bytes as f64 / elapsed / 1e6,
        records as f64 / elapsed
    );
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "produce latency       p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.value_at_quantile(0.999)),
        ms(latency.max())
    );
    if args.transaction_ms > 0 {
        if let Ok(h) = commit_times.lock() {
            println!(
                "transaction commit    p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} commits)",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
                h.len()
            );
        }
    }
    if args.consume {
        if let Ok(h) = e2e.lock() {
            println!(
                "end-to-end latency    p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({} records)",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                h.len()
            );
        }
    }
    if let (Some((cpu0, _)), Some((cpu1, rss))) = (usage_before, usage_after) {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        println!(
            "broker cpu            {:.2} CPU-s total, {:.2} CPU-s per GiB, peak RSS {:.0} MiB",
            cpu1 - cpu0,
            if gib > 0.0 { (cpu1 - cpu0) / gib } else { 0.0 },
            rss as f64 / (1u64 << 20) as f64
        );
    }
    if let (Some(a), Some(b)) = (segments_before, segments_after) {
        println!(
            "wal segments          {} written, {:.1} PUTs/s",
            b.saturating_sub(a),
            b.saturating_sub(a) as f64 / elapsed
        );
    }
    if errors > 0 {
        bail!("{errors} records failed");
    }
    Ok(())
}

/// Shares one context between the producer and the reporting code.
struct ArcContext(Arc<LatencyContext>);

impl ClientContext for ArcContext {}

impl ProducerContext for ArcContext {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        self.0.delivery(result, sent)
    }
}
