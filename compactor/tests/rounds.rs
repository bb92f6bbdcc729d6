//! Compaction rounds against real components: embedded metadata store, a local object
//! store, a SQLite catalog.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use iceberg::{Catalog, TableIdent};
use icestream_catalog::commit::{commit_files, FileChange, ManifestMerge};
use icestream_catalog::connect;
use icestream_catalog::table::{committed_offsets, table_ident, SUMMARY_OFFSETS};
use icestream_compactor::{Compactor, CompactorConfig, RoundContext};
use icestream_storage::batch::{
    control_type, encode_marker, BatchHeader, MARKER_ABORT, MARKER_COMMIT,
};
use icestream_storage::meta::{
    AppendBatch, AppendUnit, Location, Marker, PartitionAppend, ProducerBatch, RoundFile,
    RoundIntent, SegmentAppend, TopicMeta, TxnEffects, TxnPartition, TxnRecord, TxnState,
};
use icestream_storage::segment::{encode_footer, encode_header, segment_key, ChunkInfo};
use icestream_storage::{kv::embedded::EmbeddedKv, Clock, MetaStore, Objects, SystemClock};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use object_store::ObjectStoreExt;

/// One v2 batch of `values` (offsets from 0, timestamps from now).
fn encode(values: &[&str], compression: Compression) -> Bytes {
    encode_as(values, compression, None)
}

/// One v2 batch of `values`, transactional for `(producer id, epoch, first sequence)`.
fn encode_as(values: &[&str], compression: Compression, txn: Option<(i64, i16, i32)>) -> Bytes {
    let now = SystemClock.now_ms();
    let (producer_id, producer_epoch, first) = txn.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: txn.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch for all records: the encoder splits when offset - sequence changes.
            sequence: first + i as i32,
            timestamp: now + i as i64,
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    batch.freeze()
}

struct Env {
    _dir: tempfile::TempDir,
    meta: MetaStore,
    objects: Objects,
    catalog: Arc<dyn Catalog>,
    config: CompactorConfig,
}

async fn env() -> Env {
    env_with(None).await
}

/// A fresh database in the test script's PostgreSQL, as a catalog URL (`None` when
/// `ICESTREAM_TEST_POSTGRES_URL` is not set).
async fn postgres_catalog() -> Option<String> {
    let base = std::env::var("ICESTREAM_TEST_POSTGRES_URL").ok()?;
    let name = format!("c{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&base).await.expect("postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create database");
    Some(format!("{}/{name}", base.rsplit_once('/').expect("url").0))
}

/// An environment whose catalog is `catalog` (default: SQLite in the temporary directory).
async fn env_with(catalog: Option<String>) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = EmbeddedKv::open(&dir.path().join("meta.redb")).expect("kv");
    let meta = MetaStore::new(Arc::new(kv), Arc::new(SystemClock));
    let objects =
        Objects::open(&format!("file://{}", dir.path().join("objects").display())).expect("store");
    let catalog_url =
        catalog.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("catalog.db").display()));
    let catalog = connect::open(&catalog_url, &objects.url("warehouse"), &objects)
        .await
        .expect("catalog");
    Env {
        _dir: dir,
        meta,
        objects,
        catalog,
        config: CompactorConfig::default(),
    }
}

impl Env {
    /// Creates a topic of one partition.
    async fn topic(&self, name: &str) -> TopicMeta {
        self.meta
            .create_topic(name, 1, BTreeMap::new())
            .await
            .expect("topic")
    }

    fn round(&self) -> RoundContext<'_> {
        RoundContext {
            meta: &self.meta,
            objects: &self.objects,
            catalog: &self.catalog,
            config: &self.config,
            listener: None,
        }
    }

    /// Writes a WAL segment holding one batch of `values` for partition 0 and commits it.
    async fn produce(&self, topic: &TopicMeta, values: &[&str]) {
        let batch = encode(values, Compression::Lz4);
        self.produce_batch(topic, batch, values.len() as u32).await;
    }

    /// Writes a WAL segment holding `batch` (taking `offset_span` offsets) for partition 0
    /// and commits it, as the broker's appender does after validation.
    async fn produce_batch(&self, topic: &TopicMeta, batch: Bytes, offset_span: u32) {
        let now = SystemClock.now_ms();
        let parsed = BatchHeader::parse(&batch).expect("batch header");
        let header = encode_header();
        let position = header.len() as u64;
        let chunk = ChunkInfo {
            topic_id: topic.id,
            partition: 0,
            position,
            length: batch.len() as u32,
            batch_count: 1,
            offset_span,
            first_timestamp: now,
            max_timestamp: now,
            producer_id: -1,
        };
        let mut body = header.to_vec();
        body.extend_from_slice(&batch);
        body.extend_from_slice(&encode_footer(&[chunk]));
        let segment = uuid::Uuid::now_v7();
        self.objects
            .store
            .put(
                &self.objects.path(&segment_key(segment)),
                Bytes::from(body.clone()).into(),
            )
            .await
            .expect("put");
        self.meta
            .commit_segment(
                Arc::new(SegmentAppend {
                    segment,
                    size: body.len() as u64,
                    created_ms: now,
                    partitions: vec![PartitionAppend {
                        topic_id: topic.id,
                        partition: 0,
                        units: vec![AppendUnit {
                            batches: vec![AppendBatch {
                                position,
                                length: batch.len() as u32,
                                offset_span,
                                max_timestamp: now,
                                producer: parsed.has_producer_id().then_some(ProducerBatch {
                                    producer_id: parsed.producer_id,
                                    epoch: parsed.producer_epoch,
                                    first_sequence: parsed.base_sequence,
                                    last_sequence: parsed.last_sequence(),
                                }),
                                transactional: parsed.is_transactional(),
                                marker: parsed.is_control().then(|| {
                                    if control_type(&batch) == Some(MARKER_COMMIT) {
                                        Marker::Commit
                                    } else {
                                        Marker::Abort
                                    }
                                }),
                            }],
                        }],
                    }],
                }),
                60_000,
            )
            .await
            .expect("commit");
    }

    async fn table_rows(&self, ident: &TableIdent) -> usize {
        use futures::TryStreamExt;
        let table = self.catalog.load_table(ident).await.expect("table");
        let batches: Vec<_> = table
            .scan()
            .build()
            .expect("scan")
            .to_arrow()
            .await
            .expect("arrow")
            .try_collect()
            .await
            .expect("batches");
        batches.iter().map(|b| b.num_rows()).sum()
    }
}

// Regression: iceberg-rust's commit re-applies an append on top of newer metadata, so a
// round computed from a stale snapshot would duplicate rows; pinned commits refuse it.
#[tokio::test]
async fn stale_commits_are_refused_not_reapplied() {
    let env = env().await;
    let topic = env.topic("pinned").await;
    let ident = table_ident("kafka", "pinned").expect("ident");
    env.produce(&topic, &["a", "b", "c"]).await;
    let report = env.round().run(&topic).await.expect("round 1");
    assert_eq!(report.rows, 3);
    let stale = env.catalog.load_table(&ident).await.expect("table");
    env.produce(&topic, &["d", "e"]).await;
    assert_eq!(env.round().run(&topic).await.expect("round 2").rows, 2);
    assert_eq!(env.table_rows(&ident).await, 5);

    // A commit computed from the first snapshot must fail, not land on top.
    let current = env.catalog.load_table(&ident).await.expect("table");
    {
        use futures::TryStreamExt;
        let tasks: Vec<_> = current
            .scan()
            .build()
            .expect("scan")
            .plan_files()
            .await
            .expect("plan")
            .try_collect()
            .await
            .expect("tasks");
        assert_eq!(tasks.len(), 2, "one data file per round");
    }
    let props: HashMap<String, String> =
        [(SUMMARY_OFFSETS.to_string(), "{\"0\":3}".to_string())].into();
    let change = FileChange {
        properties: props,
        ..Default::default()
    };
    let result = commit_files(
        env.catalog.as_ref(),
        &stale,
        change,
        &ManifestMerge::default(),
    )
    .await;
    assert!(result.is_err(), "a commit on a stale base must fail");
    let after = env.catalog.load_table(&ident).await.expect("table");
    assert_eq!(committed_offsets(&after).await.expect("offsets")[&0], 5);
    assert_eq!(env.table_rows(&ident).await, 5);
    // Nothing more to do: a further round adds nothing.
    assert_eq!(env.round().run(&topic).await.expect("round 3").rows, 0);
    let entries = env
        .meta
        .index_entries(topic.id, 0, 0, 0)
        .await
        .expect("index");
    assert!(entries
        .iter()
        .all(|e| matches!(e.location, Location::Table { .. })));
}

#[tokio::test]
async fn an_uncommitted_round_is_discarded() {
    let env = env().await;
    let topic = env.topic("orphans").await;
    env.produce(&topic, &["x"]).await;
    // A round that wrote a file and recorded its intent, then died before committing.
    let orphan_key = "warehouse/kafka/orphans/data/partition=0/orphan.parquet";
    env.objects
        .store
        .put(
            &env.objects.path(orphan_key),
            Bytes::from_static(b"PAR1").into(),
        )
        .await
        .expect("put");
    env.meta
        .set_round_intent(
            topic.id,
            &RoundIntent {
                v: 1,
                commit_id: "never-committed".into(),
                files: vec![RoundFile {
                    partition: 0,
                    file: env.objects.url(orphan_key),
                    first_offset: 0,
                    last_offset: 0,
                    rows: 1,
                    max_timestamp: 0,
                }],
                kept: Vec::new(),
            },
        )
        .await
        .expect("intent");
    let report = env.round().run(&topic).await.expect("round");
    assert!(report.resolved_intent);
    assert_eq!(report.rows, 1);
    assert!(env
        .meta
        .round_intent(topic.id)
        .await
        .expect("intent")
        .is_none());
    assert!(matches!(
        env.objects.store.head(&env.objects.path(orphan_key)).await,
        Err(object_store::Error::NotFound { .. })
    ));
    let ident = table_ident("kafka", "orphans").expect("ident");
    assert_eq!(env.table_rows(&ident).await, 1);
}

impl Env {
    fn compactor(&self, holder: &str, lease_ttl: std::time::Duration) -> Compactor {
        Compactor {
            meta: self.meta.clone(),
            objects: self.objects.clone(),
            catalog: self.catalog.clone(),
            config: CompactorConfig {
                holder: holder.into(),
                lease_ttl,
                ..CompactorConfig::default()
            },
            listener: None,
        }
    }
}

// One compactor per topic at a time; a stopped compactor hands its topics over at once,
// a dead one when its lease lapses.
#[tokio::test]
async fn topic_leases_move_between_compactors() {
    use std::time::Duration;
    let env = env().await;
    let topic = env.topic("leased").await;
    let a = env.compactor("a", Duration::from_secs(60));
    let b = env.compactor("b", Duration::from_millis(300));
    env.produce(&topic, &["1", "2"]).await;
    let folded = a.compact_all().await.expect("a");
    assert_eq!(folded.len(), 1);
    assert_eq!(folded[0].1.rows, 2);
    env.produce(&topic, &["3"]).await;
    assert!(
        b.compact_all().await.expect("b").is_empty(),
        "a holds the topic"
    );

    a.release_leases().await;
    let folded = b.compact_all().await.expect("b");
    assert_eq!(folded.len(), 1, "a released the topic");
    assert_eq!(folded[0].1.rows, 1);

    // b dies (stops renewing): a takes the topic once b's lease lapses.
    env.produce(&topic, &["4"]).await;
    assert!(
        a.compact_all().await.expect("a").is_empty(),
        "b holds the topic"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let folded = a.compact_all().await.expect("a");
    assert_eq!(folded.len(), 1, "b's lease lapsed");
    assert_eq!(folded[0].1.rows, 1);
    let ident = table_ident("kafka", "leased").expect("ident");
    assert_eq!(env.table_rows(&ident).await, 4);
}

impl Env {
    /// The same rounds, committing through `catalog`.
    fn round_with<'a>(&'a self, catalog: &'a Arc<dyn Catalog>) -> RoundContext<'a> {
        RoundContext {
            catalog,
            ..self.round()
        }
    }

    async fn all_in_wal(&self, topic: &TopicMeta) -> bool {
        let entries = self
            .meta
            .index_entries(topic.id, 0, 0, 0)
            .await
            .expect("index");
        entries
            .iter()
            .all(|e| matches!(e.location, Location::Wal { .. }))
    }
}

// Regression: the SQL catalog reported success for a commit whose SQLite transaction was
// rolled back (COMMIT refused while a reader held the database); the round swapped the
// offset index to files no snapshot held, and the next commit moved past their offsets.
#[tokio::test]
async fn a_commit_reported_done_but_not_in_the_table_moves_nothing() {
    lost_and_failed_commits_move_nothing(&env().await).await;
}

/// Brokers of a new cluster open (and so create) the PostgreSQL catalog together; every
/// one of them must open it, not lose PostgreSQL's `CREATE TABLE IF NOT EXISTS` race.
#[tokio::test]
async fn brokers_opening_a_new_postgres_catalog_together_all_open_it() {
    for _ in 0..3 {
        let Some(url) = postgres_catalog().await else {
            eprintln!("ICESTREAM_TEST_POSTGRES_URL not set: skipping");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = Objects::open(&format!("file://{}", dir.path().display())).expect("store");
        let opens = (0..8).map(|_| {
            let (url, objects) = (url.clone(), objects.clone());
            tokio::spawn(async move {
                let catalog = connect::open(&url, &objects.url("warehouse"), &objects)
                    .await
                    .map_err(|e| e.to_string())?;
                catalog
                    .list_namespaces(None)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        for open in futures::future::join_all(opens).await {
            let namespaces = open.expect("task").expect("every broker opens the catalog");
            assert!(namespaces.is_empty());
        }
    }
}

// The same over the PostgreSQL SQL catalog.
#[tokio::test]
async fn a_commit_reported_done_but_not_in_the_table_moves_nothing_postgres() {
    let Some(url) = postgres_catalog().await else {
        eprintln!("ICESTREAM_TEST_POSTGRES_URL not set: skipping");
        return;
    };
    lost_and_failed_commits_move_nothing(&env_with(Some(url)).await).await;
}

async fn lost_and_failed_commits_move_nothing(env: &Env) {
    use icestream_catalog::faults::FaultyCatalog;
    use std::sync::atomic::Ordering;
    let topic = env.topic("lost").await;
    let ident = table_ident("kafka", "lost").expect("ident");
    let (faulty, faults) = FaultyCatalog::wrap(env.catalog.clone());
    env.produce(&topic, &["a", "b", "c"]).await;

    for (name, counter) in [
        ("lost commit", &faults.lose),
        ("failed commit", &faults.fail),
    ] {
        counter.store(1, Ordering::SeqCst);
        let err = env.round_with(&faulty).run(&topic).await.expect_err(name);
        assert!(!err.to_string().is_empty());
        assert!(
            env.all_in_wal(&topic).await,
            "{name}: the index did not move"
        );
        assert!(
            env.meta.round_intent(topic.id).await.expect("i").is_none(),
            "{name}: the round was discarded"
        );
        let table = env.catalog.load_table(&ident).await.expect("table");
        assert!(committed_offsets(&table).await.expect("offsets").is_empty());
    }

    // A commit whose response was lost did happen: the round goes on to the swap.
    faults.commit_then_fail.store(1, Ordering::SeqCst);
    let report = env.round_with(&faulty).run(&topic).await.expect("round");
    assert_eq!(report.rows, 3);
    assert!(!env.all_in_wal(&topic).await);
    env.produce(&topic, &["d"]).await;
    assert_eq!(env.round().run(&topic).await.expect("round").rows, 1);
    assert_eq!(env.table_rows(&ident).await, 4, "every record exactly once");
}

// Regression: a Spark session or a `sqlite3` shell holding a read transaction on the
// catalog database made every commit fail (rollback journal); in WAL mode it does not.
#[tokio::test]
async fn a_reader_holding_the_sqlite_catalog_does_not_block_commits() {
    use sqlx::Connection;
    let env = env().await;
    let topic = env.topic("busy").await;
    env.produce(&topic, &["a"]).await;
    assert_eq!(env.round().run(&topic).await.expect("first round").rows, 1);
    let path = env._dir.path().join("catalog.db");
    let mut reader = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("reader");
    sqlx::query("BEGIN")
        .execute(&mut reader)
        .await
        .expect("begin");
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM iceberg_tables")
        .fetch_one(&mut reader)
        .await
        .expect("read");
    assert_eq!(tables, 1);
    env.produce(&topic, &["b", "c"]).await;
    let report = env
        .round()
        .run(&topic)
        .await
        .expect("commit beside a reader");
    assert_eq!(report.rows, 2);
    sqlx::query("COMMIT")
        .execute(&mut reader)
        .await
        .expect("end");
    let ident = table_ident("kafka", "busy").expect("ident");
    assert_eq!(env.table_rows(&ident).await, 3);
}

/// A batch whose CRC-valid header claims `count` records over the one it holds.
fn lying_batch(count: i32) -> Bytes {
    let mut batch = BytesMut::from(&encode(&["liar"], Compression::None)[..]);
    batch[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    batch[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

// Regression: a stored batch whose header lied about its record count aborted the process
// (2^31-1) or failed every round of its topic forever (5); it is quarantined instead.
#[tokio::test]
async fn undecodable_stored_batches_are_quarantined_not_fatal() {
    let env = env().await;
    let topic = env.topic("liars").await;
    env.produce(&topic, &["before"]).await;
    env.produce_batch(&topic, lying_batch(5), 5).await;
    env.produce(&topic, &["after"]).await;
    env.produce_batch(&topic, lying_batch(i32::MAX), i32::MAX as u32)
        .await;
    env.produce(&topic, &["last"]).await;
    let quarantined = || {
        icestream_compactor::metrics::QUARANTINED
            .as_ref()
            .map_or(0, |c| c.get())
    };
    let before = quarantined();
    let report = env.round().run(&topic).await.expect("round survives");
    assert_eq!(report.rows, 3);
    assert!(quarantined() >= before + 2);
    let ident = table_ident("kafka", "liars").expect("ident");
    let table = env.catalog.load_table(&ident).await.expect("table");
    assert_eq!(
        committed_offsets(&table).await.expect("offsets")[&0],
        1 + 5 + 1 + i64::from(i32::MAX) + 1
    );
    assert_eq!(env.table_rows(&ident).await, 3);
    // Nothing left behind: the next round has nothing to do.
    assert_eq!(env.round().run(&topic).await.expect("again").rows, 0);
}

// A batch whose bytes changed at rest (after its CRC was checked at Produce) is not folded
// into the table as it reads now: decoders do not verify the codecs' own checksums, the
// batch CRC stands for them.
#[tokio::test]
async fn batches_changed_at_rest_are_quarantined_not_folded() {
    let env = env().await;
    let topic = env.topic("rot").await;
    env.produce(&topic, &["before"]).await;
    for codec in [Compression::None, Compression::Lz4] {
        let mut batch = BytesMut::from(&encode(&["rotten value"], codec)[..]);
        // The last byte: part of the value, or of an LZ4 frame's end.
        let last = batch.len() - 1;
        batch[last] ^= 0x01;
        env.produce_batch(&topic, batch.freeze(), 1).await;
    }
    env.produce(&topic, &["after"]).await;
    let quarantined = || {
        icestream_compactor::metrics::QUARANTINED
            .as_ref()
            .map_or(0, |c| c.get())
    };
    let before = quarantined();
    let report = env.round().run(&topic).await.expect("round survives");
    assert_eq!(report.rows, 2);
    assert!(quarantined() >= before + 2);
    let ident = table_ident("kafka", "rot").expect("ident");
    assert_eq!(table_offsets(&env, &ident, None).await, vec![0, 3]);
}

// The compactor collects the WAL its rounds release (standalone too): segments no entry
// points at any more once the grace period is over, and old orphans; never a segment an
// entry still points at.
#[tokio::test]
async fn released_segments_and_orphans_are_collected_after_the_grace_period() {
    use icestream_compactor::wal_gc;
    use std::time::Duration;
    let env = env().await;
    let topic = env.topic("collected").await;
    env.produce(&topic, &["a", "b"]).await;
    env.produce(&topic, &["c"]).await;
    let folded = env
        .meta
        .index_entries(topic.id, 0, 0, 0)
        .await
        .expect("index");
    assert_eq!(env.round().run(&topic).await.expect("round").rows, 3);
    env.produce(&topic, &["still in the WAL"]).await;
    let orphan = uuid::Uuid::now_v7();
    env.objects
        .store
        .put(
            &env.objects.path(&segment_key(orphan)),
            Bytes::from_static(b"never committed").into(),
        )
        .await
        .expect("put");

    // A put that a crash interrupted on the local store leaves its staging file.
    // (A raw `#`: `Path::from` would escape it, as a put's key never has one.)
    let staging = object_store::path::Path::parse(format!(
        "{}#{}",
        env.objects.path(&segment_key(orphan)),
        uuid::Uuid::new_v4().simple()
    ))
    .expect("path");
    env.objects
        .store
        .put(&staging, Bytes::from_static(b"half a segment").into())
        .await
        .expect("put");
    assert!(env.objects.store.head(&staging).await.is_ok());

    // Within the grace period nothing goes.
    let report = wal_gc::collect(&env.meta, &env.objects, Duration::from_secs(600))
        .await
        .expect("gc");
    assert_eq!(report, wal_gc::WalGcReport::default());

    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = wal_gc::collect(&env.meta, &env.objects, Duration::ZERO)
        .await
        .expect("gc");
    assert_eq!(report.released_segments, 2, "{report:?}");
    assert_eq!(report.orphan_segments, 2, "{report:?}");
    let exists = |key: String| {
        let path = env.objects.path(&key);
        let store = env.objects.store.clone();
        async move { store.head(&path).await.is_ok() }
    };
    for e in folded {
        let icestream_storage::meta::Location::Wal { segment, .. } = e.location else {
            panic!("a WAL entry before the round");
        };
        assert!(
            !exists(segment_key(segment)).await,
            "released segment deleted"
        );
    }
    assert!(!exists(segment_key(orphan)).await, "orphan deleted");
    assert!(
        env.objects.store.head(&staging).await.is_err(),
        "staging file deleted"
    );
    let left = env
        .meta
        .index_entries(topic.id, 0, 0, 0)
        .await
        .expect("index");
    let icestream_storage::meta::Location::Wal { segment, .. } = left[left.len() - 1].location
    else {
        panic!("the last entry is still in the WAL");
    };
    assert!(
        exists(segment_key(segment)).await,
        "a referenced segment stays"
    );
    let ident = table_ident("kafka", "collected").expect("ident");
    assert_eq!(env.table_rows(&ident).await, 3);
}

// What ListOffsets answers for LATEST_TIERED (-5): the last offset in the table, past the
// runs kept in the WAL and the WAL not folded yet.
#[tokio::test]
async fn the_last_table_offset_skips_kept_runs_and_the_unfolded_wal() {
    let env = env().await;
    let topic = env.topic("tiered").await;
    let last = || async { env.meta.last_table_offset(topic.id, 0).await.expect("meta") };
    assert_eq!(last().await, None);
    env.produce(&topic, &["a", "b"]).await;
    assert_eq!(last().await, None, "nothing folded yet");
    assert_eq!(env.round().run(&topic).await.expect("round").rows, 2);
    assert_eq!(last().await, Some(1));
    // A quarantined batch stays in the WAL after the round that folds the rest.
    env.produce(&topic, &["c"]).await;
    env.produce_batch(&topic, lying_batch(3), 3).await;
    assert_eq!(env.round().run(&topic).await.expect("round").rows, 1);
    assert_eq!(last().await, Some(2));
    env.produce(&topic, &["d"]).await;
    assert_eq!(last().await, Some(2), "the WAL not folded yet");
}

/// Offsets of the table's current snapshot (or of `snapshot`), in scan order.
async fn table_offsets(env: &Env, ident: &TableIdent, snapshot: Option<i64>) -> Vec<i64> {
    use arrow_array::cast::AsArray;
    use futures::TryStreamExt;
    let table = env.catalog.load_table(ident).await.expect("table");
    let mut scan = table.scan().select(["offset"]);
    if let Some(id) = snapshot {
        scan = scan.snapshot_id(id);
    }
    let batches: Vec<_> = scan
        .build()
        .expect("scan")
        .to_arrow()
        .await
        .expect("arrow")
        .try_collect()
        .await
        .expect("batches");
    let mut offsets: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<arrow_array::types::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    offsets.sort_unstable();
    offsets
}

#[tokio::test]
async fn small_files_are_rewritten_and_the_index_follows() {
    let mut env = env().await;
    env.config.max_small_files = 2;
    let topic = env.topic("merge").await;
    let ident = table_ident("kafka", "merge").expect("ident");
    // 24 rounds, one small file each.
    for round in 0..24 {
        let values: Vec<String> = (0..3).map(|i| format!("r{round}-{i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        env.produce(&topic, &refs).await;
        assert_eq!(env.round().run(&topic).await.expect("round").rows, 3);
    }
    let before = env.catalog.load_table(&ident).await.expect("table");
    let before_id = before.metadata().current_snapshot_id().expect("snapshot");
    let (files, _) = icestream_compactor::rewrite::live_files(&before)
        .await
        .expect("files");
    assert_eq!(files.len(), 24);

    let report = env.round().rewrite(&topic).await.expect("rewrite");
    assert_eq!(report.files_in, 24, "{report:?}");
    assert_eq!(report.files_out, 1, "{report:?}");
    assert_eq!(report.rows, 72);
    let after = env.catalog.load_table(&ident).await.expect("table");
    let snapshot = after.metadata().current_snapshot().expect("snapshot");
    assert_eq!(snapshot.summary().operation.as_str(), "replace");
    assert_eq!(
        committed_offsets(&after).await.expect("offsets")[&0],
        72,
        "a rewrite keeps the committed offsets"
    );
    let (live, _) = icestream_compactor::rewrite::live_files(&after)
        .await
        .expect("files");
    assert_eq!(live.len(), 1);
    // Every offset once, in the new snapshot and in the retained one before it.
    assert_eq!(
        table_offsets(&env, &ident, None).await,
        (0..72).collect::<Vec<_>>()
    );
    assert_eq!(
        table_offsets(&env, &ident, Some(before_id)).await,
        (0..72).collect::<Vec<_>>()
    );
    // The index names the rewritten file for every offset.
    let entries = env
        .meta
        .index_entries(topic.id, 0, 0, 0)
        .await
        .expect("index");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(matches!(&entries[0].location, Location::Table { file, .. } if *file == live[0].path));
    assert_eq!((entries[0].base_offset, entries[0].last_offset), (0, 71));
    assert!(env
        .meta
        .rewrite_intent(topic.id)
        .await
        .expect("intent")
        .is_none());

    // Rounds go on on top of the replace snapshot; nothing more to merge yet.
    env.produce(&topic, &["late"]).await;
    assert_eq!(env.round().run(&topic).await.expect("round").rows, 1);
    assert_eq!(
        env.round().rewrite(&topic).await.expect("rewrite").files_in,
        0
    );
    assert_eq!(
        table_offsets(&env, &ident, None).await,
        (0..73).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_uncommitted_rewrite_is_discarded_and_a_committed_one_finished() {
    use icestream_storage::meta::{RewriteGroup, RewriteIntent};
    let mut env = env().await;
    env.config.max_small_files = 1;
    let topic = env.topic("crashy").await;
    let ident = table_ident("kafka", "crashy").expect("ident");
    for round in 0..3 {
        let v = format!("v{round}");
        env.produce(&topic, &[v.as_str()]).await;
        env.round().run(&topic).await.expect("round");
    }
    // A rewrite that wrote a file and recorded its intent, then died before committing.
    let orphan = env
        .objects
        .url("warehouse/kafka/crashy/data/partition=0/orphan.parquet");
    let (store, path) = env.objects.resolve_url(&orphan).expect("url");
    store
        .put(&path, Bytes::from_static(b"x").into())
        .await
        .expect("put");
    let intent = RewriteIntent {
        v: 1,
        commit_id: "never-committed".into(),
        groups: vec![RewriteGroup {
            partition: 0,
            removed: vec![],
            added: vec![RoundFile {
                partition: 0,
                file: orphan.clone(),
                first_offset: 0,
                last_offset: 2,
                rows: 3,
                max_timestamp: 0,
            }],
            until: None,
        }],
    };
    env.meta
        .set_rewrite_intent(topic.id, &intent)
        .await
        .expect("intent");
    let report = env.round().rewrite(&topic).await.expect("rewrite");
    assert!(report.resolved_intent);
    assert!(
        store.head(&path).await.is_err(),
        "the orphan file was deleted"
    );
    assert_eq!(report.files_out, 1, "the rewrite then ran: {report:?}");
    assert_eq!(table_offsets(&env, &ident, None).await, vec![0, 1, 2]);
    assert_eq!(env.table_rows(&ident).await, 3);
}

#[tokio::test]
async fn replaced_files_are_deleted_once_no_retained_snapshot_lists_them() {
    let mut env = env().await;
    env.config.max_small_files = 1;
    let topic = env.topic("sweep").await;
    let ident = table_ident("kafka", "sweep").expect("ident");
    for round in 0..4 {
        let v = format!("v{round}");
        env.produce(&topic, &[v.as_str(), "x"]).await;
        env.round().run(&topic).await.expect("round");
    }
    let table = env.catalog.load_table(&ident).await.expect("table");
    let (old, _) = icestream_compactor::rewrite::live_files(&table)
        .await
        .expect("files");
    assert_eq!(old.len(), 4);
    assert_eq!(
        env.round()
            .rewrite(&topic)
            .await
            .expect("rewrite")
            .files_out,
        1
    );
    let exists = |url: String| {
        let (store, path) = env.objects.resolve_url(&url).expect("url");
        async move { store.head(&path).await.is_ok() }
    };
    let table = env.catalog.load_table(&ident).await.expect("table");
    // Older snapshots still list the replaced files: they stay.
    let swept =
        icestream_compactor::janitor::sweep_data(&env.objects, &table, std::time::Duration::ZERO)
            .await
            .expect("sweep");
    assert_eq!(swept, 0);
    for f in &old {
        assert!(exists(f.path.clone()).await);
    }
    // A data file's staging file that a crash left on the local store goes with them.
    let staging = object_store::path::Path::parse(format!(
        "{}#{}",
        env.objects.resolve_url(&old[0].path).expect("url").1,
        uuid::Uuid::new_v4().simple()
    ))
    .expect("path");
    env.objects
        .store
        .put(&staging, Bytes::from_static(b"half a file").into())
        .await
        .expect("put");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // Once only the newest snapshot is retained, they go; the table reads the same.
    let table = icestream_catalog::commit::expire_snapshots(&env.catalog, &table, i64::MAX, 1)
        .await
        .expect("expire");
    assert_eq!(table.metadata().snapshots().count(), 1);
    let swept =
        icestream_compactor::janitor::sweep_data(&env.objects, &table, std::time::Duration::ZERO)
            .await
            .expect("sweep");
    assert_eq!(swept, 5);
    for f in &old {
        assert!(!exists(f.path.clone()).await, "{} was deleted", f.path);
    }
    assert!(env.objects.store.head(&staging).await.is_err());
    // So does a metadata file's; what the table references stays.
    let metadata_staging = object_store::path::Path::parse(format!(
        "{}#{}",
        env.objects
            .resolve_url(table.metadata_location().expect("metadata"))
            .expect("url")
            .1,
        uuid::Uuid::new_v4().simple()
    ))
    .expect("path");
    env.objects
        .store
        .put(&metadata_staging, Bytes::from_static(b"{").into())
        .await
        .expect("put");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let sweep = icestream_compactor::janitor::sweep_metadata(
        &env.objects,
        &table,
        std::time::Duration::ZERO,
    )
    .await
    .expect("sweep");
    assert!(sweep.deleted >= 1, "{sweep:?}");
    assert!(env.objects.store.head(&metadata_staging).await.is_err());
    let (live, _) = icestream_compactor::rewrite::live_files(&table)
        .await
        .expect("files");
    assert!(exists(live[0].path.clone()).await);
    assert_eq!(
        table_offsets(&env, &ident, None).await,
        (0..8).collect::<Vec<_>>()
    );
}

/// Registers partition 0 of `topic` in an ongoing transaction of a new producer, as
/// AddPartitionsToTxn does; returns the producer id.
async fn begin_txn(env: &Env, topic: &TopicMeta, tid: &str) -> i64 {
    let pid = env.meta.allocate_producer_id().await.expect("pid");
    let mut record = TxnRecord::new(tid, pid, 60_000, SystemClock.now_ms());
    record.state = TxnState::Ongoing;
    record.partitions.push(TxnPartition {
        topic_id: topic.id,
        topic: topic.name.clone(),
        partition: 0,
    });
    let effects = TxnEffects {
        register: vec![(topic.id, 0)],
        finish_offsets: None,
    };
    assert!(env
        .meta
        .replace_txn(None, Some(&record), effects)
        .await
        .expect("txn"));
    pid
}

async fn table_values(env: &Env, ident: &TableIdent) -> Vec<(i64, String)> {
    use futures::TryStreamExt;
    let table = env.catalog.load_table(ident).await.expect("table");
    let batches: Vec<_> = table
        .scan()
        .build()
        .expect("scan")
        .to_arrow()
        .await
        .expect("arrow")
        .try_collect()
        .await
        .expect("batches");
    let mut out = Vec::new();
    for b in &batches {
        let offsets = b
            .column_by_name("offset")
            .expect("offset")
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .expect("i64");
        let values = b.column_by_name("value").expect("value").as_any();
        for i in 0..b.num_rows() {
            let value = match values.downcast_ref::<arrow_array::LargeBinaryArray>() {
                Some(v) => v.value(i),
                None => values
                    .downcast_ref::<arrow_array::BinaryArray>()
                    .expect("binary")
                    .value(i),
            };
            out.push((
                offsets.value(i),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
    }
    out.sort();
    out
}

/// The table holds exactly the committed records: folds stop at the last stable offset
/// (an open transaction holds back everything after its first record) and leave out
/// aborted transactions and markers; the committed offsets cover them all.
#[tokio::test]
async fn folds_stop_at_the_last_stable_offset_and_leave_out_aborted_records() {
    let env = env().await;
    let topic = env.topic("txns").await;
    let ident = table_ident("kafka", "txns").expect("ident");
    let now = SystemClock.now_ms();
    env.produce(&topic, &["plain-0"]).await; // 0
    let aborted = begin_txn(&env, &topic, "a").await;
    let batch = encode_as(
        &["gone-1", "gone-2"],
        Compression::None,
        Some((aborted, 0, 0)),
    );
    env.produce_batch(&topic, batch, 2).await; // 1, 2
    let committed = begin_txn(&env, &topic, "c").await;
    let batch = encode_as(&["kept-3"], Compression::Zstd, Some((committed, 0, 0)));
    env.produce_batch(&topic, batch, 1).await; // 3
    env.produce_batch(&topic, encode_marker(aborted, 0, MARKER_ABORT, 0, now), 1)
        .await; // 4
    env.produce_batch(
        &topic,
        encode_marker(committed, 0, MARKER_COMMIT, 0, now),
        1,
    )
    .await; // 5
    env.produce(&topic, &["plain-6"]).await; // 6
    let open = begin_txn(&env, &topic, "o").await;
    let batch = encode_as(&["open-7"], Compression::None, Some((open, 0, 0)));
    env.produce_batch(&topic, batch, 1).await; // 7
    env.produce(&topic, &["plain-8"]).await; // 8
    let state = env
        .meta
        .partition_state(topic.id, 0)
        .await
        .expect("state")
        .expect("partition");
    assert_eq!((state.high_watermark, state.last_stable_offset()), (9, 7));
    let segment_of: HashMap<i64, uuid::Uuid> = env
        .meta
        .index_entries(topic.id, 0, 0, 0)
        .await
        .expect("index")
        .into_iter()
        .filter_map(|e| match e.location {
            Location::Wal { segment, .. } => Some((e.base_offset, segment)),
            Location::Table { .. } => None,
        })
        .collect();

    env.round().run(&topic).await.expect("round");
    // Segments of folded records and commit markers are released; those holding aborted
    // records and their markers stay referenced.
    for (offset, live) in [(0, 0), (1, 1), (3, 0), (4, 1), (5, 0), (6, 0), (7, 1)] {
        let record = env
            .meta
            .segment_record(segment_of[&offset])
            .await
            .expect("segment")
            .expect("record");
        assert_eq!(record.live_entries, live, "segment of offset {offset}");
    }
    let table = env.catalog.load_table(&ident).await.expect("table");
    assert_eq!(committed_offsets(&table).await.expect("offsets")[&0], 7);
    assert_eq!(
        table_values(&env, &ident).await,
        vec![
            (0, "plain-0".to_string()),
            (3, "kept-3".to_string()),
            (6, "plain-6".to_string())
        ]
    );

    // Every offset up to the last stable one has an index entry: rows in the table
    // (commit markers too, read as nothing), aborted records and their markers where they
    // were in the WAL (for Kafka consumers).
    let coverage = |entries: Vec<icestream_storage::meta::IndexEntry>| {
        let mut next = 0;
        let mut wal = Vec::new();
        for e in entries {
            assert_eq!(e.base_offset, next, "entries tile the log: {e:?}");
            if matches!(e.location, Location::Wal { .. }) {
                wal.extend(e.base_offset..=e.last_offset);
            }
            next = e.last_offset + 1;
        }
        (next, wal)
    };
    let entries = env
        .meta
        .index_entries(topic.id, 0, 0, 0)
        .await
        .expect("index");
    assert_eq!(coverage(entries), (9, vec![1, 2, 4, 7, 8]));

    // The open transaction commits: the rest is folded.
    env.produce_batch(&topic, encode_marker(open, 0, MARKER_COMMIT, 0, now), 1)
        .await; // 9
    env.round().run(&topic).await.expect("round");
    let table = env.catalog.load_table(&ident).await.expect("table");
    assert_eq!(committed_offsets(&table).await.expect("offsets")[&0], 10);
    let values: Vec<i64> = table_values(&env, &ident)
        .await
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(values, vec![0, 3, 6, 7, 8]);
    let entries = env
        .meta
        .index_entries(topic.id, 0, 0, 0)
        .await
        .expect("index");
    assert_eq!(coverage(entries), (10, vec![1, 2, 4]));
}

/// A rewrite merges files around the batches kept in the WAL between them (markers,
/// aborted records): the index still covers every offset, rows from the merged file and
/// the kept batches from the WAL.
#[tokio::test]
async fn rewrites_keep_the_wal_batches_between_merged_files() {
    let mut env = env().await;
    env.config.max_small_files = 2;
    let topic = env.topic("txn-merge").await;
    let ident = table_ident("kafka", "txn-merge").expect("ident");
    let now = SystemClock.now_ms();
    let mut wal = Vec::new();
    let mut next = 0i64;
    for round in 0..8 {
        env.produce(&topic, &["a", "b"]).await;
        next += 2;
        let pid = begin_txn(&env, &topic, &format!("t{round}")).await;
        let data = encode_as(&["x"], Compression::None, Some((pid, 0, 0)));
        env.produce_batch(&topic, data, 1).await;
        let kind = if round % 2 == 0 {
            MARKER_ABORT
        } else {
            MARKER_COMMIT
        };
        env.produce_batch(&topic, encode_marker(pid, 0, kind, 0, now), 1)
            .await;
        if round % 2 == 0 {
            // The aborted record and its marker; commit markers are covered by the table.
            wal.push(next);
            wal.push(next + 1);
        }
        next += 2;
        env.round().run(&topic).await.expect("round");
    }
    let report = env.round().rewrite(&topic).await.expect("rewrite");
    assert!(report.files_in > 1, "{report:?}");
    let values: Vec<i64> = table_values(&env, &ident)
        .await
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    let markers: Vec<i64> = (0..8).map(|r| r * 4 + 3).collect();
    let expected: Vec<i64> = (0..next)
        .filter(|o| !wal.contains(o) && !markers.contains(o))
        .collect();
    assert_eq!(values, expected);
    let entries = env
        .meta
        .index_entries(topic.id, 0, 0, 0)
        .await
        .expect("index");
    let mut covered = 0;
    let mut kept = Vec::new();
    for e in &entries {
        assert_eq!(e.base_offset, covered, "entries tile the log: {entries:?}");
        if matches!(e.location, Location::Wal { .. }) {
            kept.extend(e.base_offset..=e.last_offset);
        }
        covered = e.last_offset + 1;
    }
    assert_eq!(covered, next);
    assert_eq!(kept, wal);
}

/// DeleteRecords moves the log start past records not yet in the table: the retention
/// pass removes the index entries below it that the table holds (releasing their
/// segments) and keeps the others, and a round still folds those (the table keeps every
/// row, as under retention).
#[tokio::test]
async fn deleted_records_reach_the_table_and_then_leave_the_index() {
    let env = env().await;
    let topic = env.topic("purged").await;
    let ident = table_ident("kafka", "purged").expect("ident");
    env.produce(&topic, &["a", "b", "c"]).await;
    env.produce(&topic, &["d", "e"]).await;
    assert_eq!(env.round().run(&topic).await.expect("round").rows, 5);
    env.produce(&topic, &["f"]).await;
    env.produce(&topic, &["g"]).await;
    let moved = env
        .meta
        .advance_log_start(topic.id, 0, 6)
        .await
        .expect("advance")
        .expect("partition");
    assert_eq!(moved.map(|s| s.log_start_offset).ok(), Some(6));
    let spans = |entries: Vec<icestream_storage::meta::IndexEntry>| -> Vec<(i64, i64, bool)> {
        entries
            .iter()
            .map(|e| {
                (
                    e.base_offset,
                    e.last_offset,
                    matches!(e.location, Location::Table { .. }),
                )
            })
            .collect()
    };
    let compactor = env.compactor("c", std::time::Duration::from_secs(30));
    compactor.apply_retention(-1).await.expect("retention");
    let entries = env.meta.index_entries(topic.id, 0, 0, 0).await;
    assert_eq!(
        spans(entries.expect("index")),
        vec![(5, 5, false), (6, 6, false)],
        "the table's entry below the log start is gone; the unfolded one stays"
    );

    assert_eq!(env.round().run(&topic).await.expect("round").rows, 2);
    assert_eq!(
        env.table_rows(&ident).await,
        7,
        "the table keeps deleted records"
    );
    compactor.apply_retention(-1).await.expect("retention");
    let entries = env.meta.index_entries(topic.id, 0, 0, 0).await;
    assert_eq!(spans(entries.expect("index")), vec![(5, 6, true)]);
    let state = env
        .meta
        .partition_state(topic.id, 0)
        .await
        .expect("state")
        .expect("partition");
    assert_eq!(state.log_start_offset, 6);
}

/// Writes ONE WAL segment holding `chunks` (topic, partition, values; one batch each) in
/// that order, as the appender lays out a segment shared by partitions and topics, and
/// commits it.
async fn produce_shared_segment(env: &Env, chunks: &[(&TopicMeta, i32, Vec<String>)]) {
    let now = SystemClock.now_ms();
    let mut body = encode_header().to_vec();
    let mut infos = Vec::new();
    let mut partitions = Vec::new();
    for (topic, partition, values) in chunks {
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let batch = encode(&values, Compression::None);
        let position = body.len() as u64;
        body.extend_from_slice(&batch);
        infos.push(ChunkInfo {
            topic_id: topic.id,
            partition: *partition,
            position,
            length: batch.len() as u32,
            batch_count: 1,
            offset_span: values.len() as u32,
            first_timestamp: now,
            max_timestamp: now,
            producer_id: -1,
        });
        partitions.push(PartitionAppend {
            topic_id: topic.id,
            partition: *partition,
            units: vec![AppendUnit {
                batches: vec![AppendBatch {
                    position,
                    length: batch.len() as u32,
                    offset_span: values.len() as u32,
                    max_timestamp: now,
                    producer: None,
                    transactional: false,
                    marker: None,
                }],
            }],
        });
    }
    body.extend_from_slice(&encode_footer(&infos));
    let segment = uuid::Uuid::now_v7();
    env.objects
        .store
        .put(
            &env.objects.path(&segment_key(segment)),
            Bytes::from(body.clone()).into(),
        )
        .await
        .expect("put");
    env.meta
        .commit_segment(
            Arc::new(SegmentAppend {
                segment,
                size: body.len() as u64,
                created_ms: now,
                partitions,
            }),
            60_000,
        )
        .await
        .expect("commit");
}

/// A round reads each segment once for all its partitions, merging the chunks it needs
/// across small gaps and splitting across large ones (another topic's 1.5 MiB chunk):
/// every partition still gets exactly its own records, at their offsets.
#[tokio::test]
async fn segments_shared_by_partitions_and_topics_fold_into_each_partition() {
    let env = env().await;
    let wide = env
        .meta
        .create_topic("wide", 3, BTreeMap::new())
        .await
        .expect("topic");
    let other = env.topic("other").await;
    let big: Vec<String> = (0..3)
        .map(|i| format!("{i}{}", "x".repeat(512 << 10)))
        .collect();
    for s in 0..4 {
        let v = |p: i32, n: usize| -> Vec<String> {
            (0..n).map(|i| format!("s{s}-p{p}-r{i}")).collect()
        };
        // Partition 2 comes before partition 0 in some segments: ranges are read sorted.
        let mut chunks = vec![
            (&wide, 0, v(0, 2)),
            (&other, 0, if s % 2 == 0 { big.clone() } else { v(9, 1) }),
            (&wide, 1, v(1, 1)),
        ];
        if s % 2 == 1 {
            chunks.insert(0, (&wide, 2, v(2, 3)));
        } else {
            chunks.push((&wide, 2, v(2, 3)));
        }
        produce_shared_segment(&env, &chunks).await;
    }
    env.round().run(&wide).await.expect("round");

    let ident = table_ident("kafka", "wide").expect("ident");
    let table = env.catalog.load_table(&ident).await.expect("table");
    use futures::TryStreamExt;
    let batches: Vec<_> = table
        .scan()
        .build()
        .expect("scan")
        .to_arrow()
        .await
        .expect("arrow")
        .try_collect()
        .await
        .expect("batches");
    let mut got: Vec<(i32, i64, String)> = Vec::new();
    for b in &batches {
        let column = |name: &str| b.column_by_name(name).expect(name).clone();
        let partitions = column("partition");
        let partitions = partitions
            .as_any()
            .downcast_ref::<arrow_array::Int32Array>()
            .expect("i32");
        let offsets = column("offset");
        let offsets = offsets
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .expect("i64");
        let values = column("value");
        for i in 0..b.num_rows() {
            let value = match values
                .as_any()
                .downcast_ref::<arrow_array::LargeBinaryArray>()
            {
                Some(v) => v.value(i).to_vec(),
                None => values
                    .as_any()
                    .downcast_ref::<arrow_array::BinaryArray>()
                    .expect("binary")
                    .value(i)
                    .to_vec(),
            };
            got.push((
                partitions.value(i),
                offsets.value(i),
                String::from_utf8(value).expect("utf8"),
            ));
        }
    }
    got.sort();
    let mut want = Vec::new();
    for (p, per_segment) in [(0, 2), (1, 1), (2, 3)] {
        let mut offset = 0;
        for s in 0..4 {
            for r in 0..per_segment {
                want.push((p, offset, format!("s{s}-p{p}-r{r}")));
                offset += 1;
            }
        }
    }
    assert_eq!(got, want);
}
