//! A graceful stop: every background task is joined, so the broker's registration and its
//! compaction leases are gone when `shutdown` returns, and another broker takes over at once
//! instead of after the lease time.

use std::sync::Arc;
use std::time::Duration;

use icestream::{Components, Server, Settings};
use icestream_storage::kv::embedded::EmbeddedKv;
use icestream_storage::kv::KvStore;
use icestream_storage::{MetaStore, SystemClock};

mod common;
use common::{create_topic, produce, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_deregisters_and_releases_leases_before_returning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv: Arc<dyn KvStore> =
        Arc::new(EmbeddedKv::open(&dir.path().join("meta.redb")).expect("kv"));
    let meta = MetaStore::new(kv.clone(), Arc::new(SystemClock));
    let settings = Settings {
        listen: "127.0.0.1:0".into(),
        admin_listen: String::new(),
        data_dir: dir.path().to_path_buf(),
        object_store: Some(format!("file://{}", dir.path().join("objects").display())),
        flush_interval_ms: Some(1),
        compaction_interval_ms: 100,
        broker_lease_ms: 60_000,
        ..Settings::default()
    };
    let server = Server::start_with(
        settings,
        Components {
            kv: Some(kv.clone()),
            objects: None,
            clock: None,
        },
    )
    .await
    .expect("server starts");
    let mut client = Client::connect(&server).await;
    create_topic(&mut client, "faults").await;
    let resp: kafka_protocol::messages::ProduceResponse = client
        .call(
            kafka_protocol::messages::ApiKey::Produce,
            9,
            &produce("faults", &["a", "b"]),
        )
        .await;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    let topic = meta
        .topics()
        .await
        .expect("topics")
        .into_iter()
        .find(|t| t.name == "faults")
        .expect("topic");
    let lease = format!("compact/{}", topic.id);
    // The compactor takes the topic's lease (held for broker_lease_ms, a minute).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while meta
        .acquire_lease(&lease, "someone-else", 60_000)
        .await
        .expect("lease")
    {
        // Got it before the broker did: give it back and wait.
        meta.release_lease(&lease, "someone-else")
            .await
            .expect("release");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the compactor never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(meta.live_brokers().await.expect("brokers").len(), 1);
    drop(client);

    server.shutdown().await;
    assert!(
        meta.live_brokers().await.expect("brokers").is_empty(),
        "deregistered before shutdown returned"
    );
    assert!(
        meta.acquire_lease(&lease, "someone-else", 60_000)
            .await
            .expect("lease"),
        "the compaction lease was released, not left to lapse"
    );
}
