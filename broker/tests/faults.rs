//! The produce path under injected faults (object store PUTs that fail or lose their
//! response, metadata commits that fail or whose outcome is unknown), through the broker's
//! component seams: the production code runs, over real stores wrapped in fault injectors.
//! Whatever fails, no acknowledged record is lost, no offset is given twice, and every
//! acknowledgement names the offsets the records really have.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;

use icestream::{Components, Server, Settings};
use icestream_storage::faults::{FaultyKv, FaultyObjectStore, KvFaults, ObjectFaults};
use icestream_storage::kv::embedded::EmbeddedKv;
use icestream_storage::meta::SEGMENT_COMMIT_KEY_PREFIX;
use icestream_storage::Objects;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;

mod common;
use common::{create_topic, produce, Client};

struct Faulty {
    server: Server,
    kv: Arc<KvFaults>,
    objects: Arc<ObjectFaults>,
    /// The object store under the fault injector.
    store: Arc<dyn object_store::ObjectStore>,
    _dir: tempfile::TempDir,
}

async fn start() -> Faulty {
    start_with(|_| {}).await
}

async fn start_with(configure: impl FnOnce(&mut Settings)) -> Faulty {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv_faults = Arc::new(KvFaults {
        key_prefix: SEGMENT_COMMIT_KEY_PREFIX.to_vec(),
        ..KvFaults::default()
    });
    let object_faults = Arc::new(ObjectFaults {
        key_filter: "wal/".into(),
        ..ObjectFaults::default()
    });
    let kv = Arc::new(FaultyKv {
        inner: Arc::new(EmbeddedKv::open(&dir.path().join("meta.redb")).expect("kv")),
        faults: kv_faults.clone(),
    });
    let objects = Objects::open("memory://").expect("objects");
    let inner_store = objects.store.clone();
    let store = Arc::new(FaultyObjectStore {
        inner: objects.store.clone(),
        faults: object_faults.clone(),
    });
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        admin_listen: String::new(),
        data_dir: dir.path().to_path_buf(),
        flush_interval_ms: Some(1),
        compaction: false,
        ..Settings::default()
    };
    configure(&mut settings);
    let server = Server::start_with(
        settings,
        Components {
            kv: Some(kv),
            objects: Some(objects.with_store(store)),
            clock: None,
        },
    )
    .await
    .expect("server starts");
    Faulty {
        server,
        kv: kv_faults,
        objects: object_faults,
        store: inner_store,
        _dir: dir,
    }
}

/// Produces one batch of `values`; the partition's error code and base offset.
async fn send(client: &mut Client, values: &[&str]) -> (i16, i64) {
    let resp: ProduceResponse = client
        .call(ApiKey::Produce, 9, &produce("faults", values))
        .await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Every record of the partition, in offset order: (offset, value).
async fn log(client: &mut Client) -> Vec<(i64, String)> {
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("faults")))
            .with_partitions(vec![FetchPartition::default()
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch).await;
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    let mut data = part.records.clone().unwrap_or_default();
    RecordBatchDecoder::decode_all(&mut data)
        .expect("valid batches")
        .into_iter()
        .flat_map(|s| s.records)
        .map(|r| {
            let v = r.value.expect("value");
            (r.offset, String::from_utf8_lossy(&v).into_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_puts_are_refused_and_nothing_half_done_remains() {
    let f = start().await;
    let mut client = Client::connect(&f.server).await;
    create_topic(&mut client, "faults").await;
    assert_eq!(send(&mut client, &["a", "b"]).await, (0, 0));
    f.objects.fail_puts.store(1, Ordering::SeqCst);
    let (err, base) = send(&mut client, &["lost-put"]).await;
    assert_ne!(
        err, 0,
        "a batch whose segment was not stored is not acknowledged"
    );
    assert_eq!(base, -1);
    // The PUT stored the segment but its answer was lost: the producer is refused, and
    // the segment is an orphan nothing points at (the collector deletes it).
    f.objects.fail_after_put.store(1, Ordering::SeqCst);
    let (err, _) = send(&mut client, &["lost-answer"]).await;
    assert_ne!(err, 0);
    assert_eq!(send(&mut client, &["c"]).await, (0, 2));
    assert_eq!(
        log(&mut client).await,
        vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]
    );
    f.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_with_unknown_outcomes_are_resolved_before_anyone_is_answered() {
    let f = start().await;
    let mut client = Client::connect(&f.server).await;
    create_topic(&mut client, "faults").await;
    assert_eq!(send(&mut client, &["a"]).await, (0, 0));

    // Committed, then reported unknown: the retry finds the segment committed and the
    // producer gets the offsets its records really have.
    f.kv.unknown_after_commit.store(1, Ordering::SeqCst);
    assert_eq!(send(&mut client, &["b", "c"]).await, (0, 1));

    // Not committed, reported unknown: the retry commits it.
    f.kv.unknown_before_commit.store(1, Ordering::SeqCst);
    assert_eq!(send(&mut client, &["d"]).await, (0, 3));

    // Certainly failed: refused, nothing stored.
    f.kv.fail_commits.store(1, Ordering::SeqCst);
    let (err, _) = send(&mut client, &["refused"]).await;
    assert_ne!(err, 0);

    // Unknown twice without committing, then committed and reported unknown a third time.
    f.kv.unknown_after_commit.store(1, Ordering::SeqCst);
    f.kv.unknown_before_commit.store(2, Ordering::SeqCst);
    assert_eq!(send(&mut client, &["e"]).await, (0, 4));

    assert_eq!(send(&mut client, &["f"]).await, (0, 5));
    let expected: Vec<(i64, String)> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.to_string()))
        .collect();
    assert_eq!(log(&mut client).await, expected, "dense, each record once");
    f.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_waiting_for_a_slow_commit_are_committed_together() {
    const CLIENTS: usize = 8;
    const SENDS: usize = 12;
    let f = start().await;
    let mut client = Client::connect(&f.server).await;
    create_topic(&mut client, "faults").await;
    // A slow metadata store: segments written while one commits wait for it, and are then
    // committed in one transaction. Two of those transactions apply but lose their answer.
    f.kv.commit_delay_ms.store(15, Ordering::SeqCst);
    f.kv.unknown_after_commit.store(2, Ordering::SeqCst);
    let commits_before = f.kv.commits.load(Ordering::SeqCst);
    let mut producers = Vec::new();
    for c in 0..CLIENTS {
        let mut client = Client::connect(&f.server).await;
        producers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..SENDS {
                let values = [format!("c{c}-{i}-a"), format!("c{c}-{i}-b")];
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let (err, base) = send(&mut client, &refs).await;
                assert_eq!(err, 0, "every produce is acknowledged");
                acked.push((base, values[0].clone()));
                acked.push((base + 1, values[1].clone()));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for p in producers {
        acked.extend(p.await.expect("producer"));
    }
    f.kv.commit_delay_ms.store(0, Ordering::SeqCst);
    let commits = f.kv.commits.load(Ordering::SeqCst) - commits_before;
    let segments = f
        .store
        .list(Some(&object_store::path::Path::from("wal")))
        .count()
        .await;
    assert!(
        commits < segments,
        "{segments} segments took {commits} commits: some were grouped"
    );
    acked.sort();
    let stored = log(&mut client).await;
    assert_eq!(stored.len(), CLIENTS * SENDS * 2, "each record once");
    assert_eq!(
        stored, acked,
        "every acknowledgement names the record's offset"
    );
    f.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_produces_are_written_at_once_and_larger_ones_wait_for_the_interval() {
    // A long interval and no early-write credits: only eager writes answer quickly.
    let f = start_with(|s| {
        s.flush_interval_ms = Some(1_000);
        s.flush_burst = 0;
        s.flush_eager_bytes = 8 * 1024;
    })
    .await;
    let mut client = Client::connect(&f.server).await;
    create_topic(&mut client, "faults").await;
    let segments = || async {
        f.store
            .list(Some(&object_store::path::Path::from("wal")))
            .count()
            .await
    };
    let segments_before = segments().await;
    let started = std::time::Instant::now();
    for i in 0..20 {
        let value = format!("small-{i}");
        assert_eq!(send(&mut client, &[&value]).await, (0, i));
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "20 small produces, one after another, took {:?}: each waited for the interval",
        started.elapsed()
    );
    assert_eq!(segments().await - segments_before, 20, "one segment each");
    // More than the eager bytes waits for the interval after the last write. The batch is
    // compressed, so the value is pseudo-random letters (about 5 bits each, 25 KiB).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let large: String = (0..40 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    let started = std::time::Instant::now();
    assert_eq!(send(&mut client, &[&large]).await, (0, 20));
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "a produce above the eager bytes was written after {:?}, not at the interval",
        started.elapsed()
    );
    let stored = log(&mut client).await;
    assert_eq!(stored.len(), 21);
    assert_eq!(stored[20], (20, large));
    f.server.shutdown().await;
}
