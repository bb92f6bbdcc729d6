//! The garbage collector deletes orphaned WAL segments (written, never committed) once
//! they are older than the grace period, and never a segment the index points at.

use bytes::Bytes;
use icestream::{gc, Server, Settings};
use icestream_storage::segment::segment_key;
use object_store::ObjectStoreExt;
use uuid::{NoContext, Timestamp, Uuid};

fn old_segment_id(age_ms: u64) -> Uuid {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let then = now - age_ms;
    Uuid::new_v7(Timestamp::from_unix(
        NoContext,
        then / 1000,
        ((then % 1000) * 1_000_000) as u32,
    ))
}

#[tokio::test]
async fn orphans_past_the_grace_period_are_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        segment_grace_ms: 60_000,
        gc_interval_ms: 3_600_000,
        compaction: false,
        ..Settings::default()
    };
    let server = Server::start(settings).await.expect("start");
    let broker = server.broker.clone();
    let objects = &broker.objects;
    let old_orphan = old_segment_id(120_000);
    let young_orphan = old_segment_id(1_000);
    for id in [old_orphan, young_orphan] {
        objects
            .store
            .put(
                &objects.path(&segment_key(id)),
                Bytes::from_static(b"not committed").into(),
            )
            .await
            .expect("put");
    }
    let report = gc::collect(&broker).await.expect("gc");
    assert_eq!(report.orphan_segments, 1);
    let exists = |id: Uuid| {
        let path = objects.path(&segment_key(id));
        let store = objects.store.clone();
        async move { store.head(&path).await.is_ok() }
    };
    assert!(!exists(old_orphan).await, "the old orphan is deleted");
    assert!(
        exists(young_orphan).await,
        "a young segment may still be committed: kept"
    );
    server.shutdown().await;
}
