//! What incremental fetch sessions (KIP-227) save a consumer of many partitions: one
//! consumer fetches a topic of `--partitions` partitions (1,000 by default) while a
//! librdkafka producer writes `--rate` records per second into `--active` of them, once
//! with full fetch requests (session epoch -1, as librdkafka sends them) and once through a
//! session (epoch 0, then incremental requests naming only the partitions whose position
//! moved, as the Java client and kafka-python send them). A first phase runs the producer
//! alone, so the broker CPU of fetching is the difference.
//!
//! The consumer is a raw Fetch v12 client (kafka-protocol's codec), so that both modes are
//! exactly the requests the protocol defines, and its own cost does not limit the fetch
//! rate. It prints, per mode: fetches per second, request and response bytes per fetch,
//! and broker CPU per fetch and per second.
//!
//! ```text
//! fetchbench --bootstrap 127.0.0.1:9092 --broker-pid $(pgrep -f 'icestream serve')
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::Parser;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "Fetch cost with and without incremental fetch sessions")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Partitions of the consumed topic.
    #[arg(long, default_value_t = 1000)]
    partitions: i32,
    /// Partitions the producer writes to (the others stay idle).
    #[arg(long, default_value_t = 10)]
    active: i32,
    /// Records per second produced (0: none; the consumer then measures the cost of
    /// fetches that find nothing, best with `--max-wait-ms 0`).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// The consumer's long-poll wait.
    #[arg(long, default_value_t = 500)]
    max_wait_ms: i32,
    #[arg(long, default_value_t = 200)]
    record_size: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Which consumers to run: `full`, `session` or both.
    #[arg(long, value_delimiter = ',', default_value = "full,session")]
    modes: Vec<String>,
    /// The broker's pid, to measure its CPU.
    #[arg(long)]
    broker_pid: Option<u32>,
}

const FETCH_VERSION: i16 = 12;
const CREATE_TOPICS_VERSION: i16 = 5;

/// A connection speaking the Kafka protocol, one request at a time.
struct Conn {
    stream: TcpStream,
    correlation: i32,
    sent: u64,
    received: u64,
}

impl Conn {
    async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.context("connecting")?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            correlation: 0,
            sent: 0,
            received: 0,
        })
    }

    async fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Q,
    ) -> anyhow::Result<R> {
        self.correlation += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("fetchbench")))
            .encode(&mut buf, api.request_header_version(version))?;
        req.encode(&mut buf, version)?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf).await?;
        self.sent += buf.len() as u64;
        let size = self.stream.read_i32().await?;
        let mut frame = vec![0u8; size.max(0) as usize];
        self.stream.read_exact(&mut frame).await?;
        self.received += 4 + frame.len() as u64;
        let mut bytes = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut bytes, api.response_header_version(version))?;
        if header.correlation_id != self.correlation {
            bail!(
                "response to {} for {}",
                header.correlation_id,
                self.correlation
            );
        }
        R::decode(&mut bytes, version)
    }
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

async fn create_topic(args: &Args, topic: &str) -> anyhow::Result<()> {
    let mut conn = Conn::connect(&args.bootstrap).await?;
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(args.partitions)
            .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = conn
        .call(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, &req)
        .await?;
    for t in resp.topics {
        if t.error_code != 0 {
            bail!("creating {topic}: error {}", t.error_code);
        }
    }
    Ok(())
}

/// Produces `rate` records per second into partitions `0..active` until `stop`.
fn start_producer(args: &Args, topic: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let args = args.clone();
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = match ClientConfig::new()
            .set("bootstrap.servers", &args.bootstrap)
            .set("linger.ms", "5")
            .set("acks", "all")
            .create()
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("producer: {e}");
                return;
            }
        };
        let value = vec![b'x'; args.record_size];
        let started = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if args.rate == 0 {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let due = (started.elapsed().as_secs_f64() * args.rate as f64) as u64;
            while sent < due {
                let partition = (sent % args.active.max(1) as u64) as i32;
                let record = BaseRecord::<(), [u8]>::to(&topic)
                    .payload(&value)
                    .partition(partition);
                if producer.send(record).is_err() {
                    break;
                }
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = producer.flush(Duration::from_secs(10));
    })
}

/// The offset after the last record of a fetched partition's record batches.
fn next_offset(mut records: Bytes) -> Option<i64> {
    let mut next = None;
    while records.remaining() >= 61 {
        let base = i64::from_be_bytes(records[0..8].try_into().ok()?);
        let length = i32::from_be_bytes(records[8..12].try_into().ok()?);
        let last_delta = i32::from_be_bytes(records[23..27].try_into().ok()?);
        let total = 12 + length.max(0) as usize;
        if records.remaining() < total {
            break;
        }
        next = Some(base + last_delta as i64 + 1);
        records.advance(total);
    }
    next
}

struct Outcome {
    fetches: u64,
    records_bytes: u64,
    request_bytes: u64,
    response_bytes: u64,
    cpu: f64,
    elapsed: f64,
}

/// Fetches `topic` for `duration`, with a session or with full requests.
async fn consume(args: &Args, topic: &str, sessions: bool) -> anyhow::Result<Outcome> {
    let mut conn = Conn::connect(&args.bootstrap).await?;
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let mut positions = vec![0i64; args.partitions as usize];
    // Partitions to name in the next incremental request.
    let mut moved: Vec<i32> = Vec::new();
    let (mut session_id, mut epoch) = (0i32, if sessions { 0 } else { -1 });
    let mut fetches = 0u64;
    let mut records_bytes = 0u64;
    let cpu_before = cpu_seconds(args.broker_pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    while Instant::now() < deadline {
        let full = session_id == 0;
        let named: Vec<i32> = if full {
            (0..args.partitions).collect()
        } else {
            std::mem::take(&mut moved)
        };
        let partitions = named
            .iter()
            .map(|&p| {
                FetchPartition::default()
                    .with_partition(p)
                    .with_fetch_offset(positions[p as usize])
                    .with_partition_max_bytes(1 << 20)
            })
            .collect::<Vec<_>>();
        let topics = if partitions.is_empty() {
            Vec::new()
        } else {
            vec![FetchTopic::default()
                .with_topic(name.clone())
                .with_partitions(partitions)]
        };
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(args.max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(50 << 20)
            .with_session_id(session_id)
            .with_session_epoch(epoch)
            .with_topics(topics);
        let resp: FetchResponse = conn.call(ApiKey::Fetch, FETCH_VERSION, &req).await?;
        fetches += 1;
        if resp.error_code != 0 {
            bail!(
                "fetch error {} (session {session_id}, epoch {epoch})",
                resp.error_code
            );
        }
        if sessions {
            if resp.session_id == 0 {
                bail!("the broker opened no session");
            }
            session_id = resp.session_id;
            epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
        }
        for t in resp.responses {
            for p in t.partitions {
                if p.error_code != 0 {
                    bail!("partition {}: error {}", p.partition_index, p.error_code);
                }
                let Some(records) = p.records else { continue };
                records_bytes += records.len() as u64;
                if let Some(next) = next_offset(records) {
                    if let Some(pos) = positions.get_mut(p.partition_index as usize) {
                        if next > *pos {
                            *pos = next;
                            moved.push(p.partition_index);
                        }
                    }
                }
            }
        }
        if !sessions {
            moved.clear();
        }
    }
    Ok(Outcome {
        fetches,
        records_bytes,
        request_bytes: conn.sent,
        response_bytes: conn.received,
        cpu: cpu_seconds(args.broker_pid) - cpu_before,
        elapsed: started.elapsed().as_secs_f64(),
    })
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "{} partitions, {} active, {} records/s of {} bytes, {} s per phase",
        args.partitions, args.active, args.rate, args.record_size, args.duration
    );

    // The producer alone: the broker CPU that is not fetching.
    let baseline_topic = format!("fetchbench-{}-produce", now_millis());
    create_topic(&args, &baseline_topic).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = cpu_seconds(args.broker_pid);
    let started = Instant::now();
    let producer = start_producer(&args, &baseline_topic, stop.clone());
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    let produce_cpu = (cpu_seconds(args.broker_pid) - cpu_before) / started.elapsed().as_secs_f64();
    println!("producer alone: broker CPU {:.1}%", produce_cpu * 100.0);
    println!();
    println!(
        "| fetch requests | fetches/s | request B/fetch | response B/fetch | records MB/s | broker CPU % | fetch CPU ms/fetch |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for sessions in [false, true] {
        if !args
            .modes
            .iter()
            .any(|m| m == if sessions { "session" } else { "full" })
        {
            continue;
        }
        let topic = format!("fetchbench-{}-{}", now_millis(), sessions);
        create_topic(&args, &topic).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let producer = start_producer(&args, &topic, stop.clone());
        let outcome = consume(&args, &topic, sessions).await;
        stop.store(true, Ordering::Relaxed);
        let _ = producer.join();
        let o = match outcome {
            Ok(o) => o,
            Err(e) => {
                println!(
                    "| {} | failed: {e:#} |",
                    if sessions { "incremental" } else { "full" }
                );
                continue;
            }
        };
        let fetch_cpu = (o.cpu - produce_cpu * o.elapsed).max(0.0);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {:.3} |",
            if sessions {
                "incremental (session)"
            } else {
                "full (no session)"
            },
            o.fetches as f64 / o.elapsed,
            o.request_bytes as f64 / o.fetches.max(1) as f64,
            o.response_bytes as f64 / o.fetches.max(1) as f64,
            o.records_bytes as f64 / o.elapsed / 1e6,
            o.cpu / o.elapsed * 100.0,
            fetch_cpu * 1000.0 / o.fetches.max(1) as f64,
        );
    }
    Ok(())
}
