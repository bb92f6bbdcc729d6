//! WAL garbage collection: purges deleted topics' index entries, deletes WAL segments that
//! no index entry has pointed at for the grace period (the compactor's swaps release them),
//! and deletes orphans (segments written but never committed, e.g. after a crash between
//! PUT and commit, and the staging files of local-store puts a crash interrupted) once
//! they are older than the grace period. Nothing a committed entry points at is ever
//! deleted.
//!
//! It runs wherever a compactor runs (standalone `icestream compactor` included), and in
//! every broker; passes are idempotent, so any number may run at once.

use std::time::Duration;

use futures::TryStreamExt;
use icestream_storage::segment::{parse_segment_key, parse_staging_key, segment_key};
use icestream_storage::{MetaError, MetaStore, Objects};
use object_store::ObjectStoreExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum WalGcError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalGcReport {
    pub purged_topics: usize,
    pub released_segments: usize,
    pub orphan_segments: usize,
}

/// Milliseconds since the epoch encoded in a uuid v7.
fn uuid_time_ms(id: Uuid) -> Option<i64> {
    let (s, n) = id.get_timestamp()?.to_unix();
    Some((s * 1000 + u64::from(n) / 1_000_000) as i64)
}

/// One pass; segments unreferenced (or orphaned) for less than `grace` stay.
pub async fn collect(
    meta: &MetaStore,
    objects: &Objects,
    grace: Duration,
) -> Result<WalGcReport, WalGcError> {
    let mut report = WalGcReport::default();
    for topic in meta.deleted_topics().await? {
        while !meta.purge_deleted_topic(topic.id, 1000).await? {}
        report.purged_topics += 1;
    }
    let grace = grace.as_millis() as i64;
    let now = meta.now_ms();
    let store = &objects.store;
    for candidate in meta.unreferenced_segments(now - grace).await? {
        let path = objects.path(&segment_key(candidate.segment));
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        meta.forget_segment(candidate.segment).await?;
        report.released_segments += 1;
    }
    // Orphans: old segment objects the metadata store has no record of, and staging files
    // (never the object itself: a put links its staging file into place, or fails).
    let prefix = objects.path("wal");
    let is_old = move |id: &Uuid| uuid_time_ms(*id).is_some_and(|t| t < now - grace);
    let listed: Vec<object_store::path::Path> = store
        .list(Some(&prefix))
        .try_filter_map(|m| async move {
            let key = m.location.as_ref();
            let old = parse_segment_key(key)
                .or_else(|| parse_staging_key(key))
                .is_some_and(|id| is_old(&id));
            Ok(old.then_some(m.location))
        })
        .try_collect()
        .await?;
    let mut old: Vec<(Uuid, object_store::path::Path)> = Vec::new();
    for path in listed {
        if let Some(id) = parse_segment_key(path.as_ref()) {
            old.push((id, path));
            continue;
        }
        tracing::info!(object = %path, "deleting a staging file left by an interrupted put");
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        report.orphan_segments += 1;
    }
    for chunk in old.chunks(256) {
        let ids: Vec<Uuid> = chunk.iter().map(|(id, _)| *id).collect();
        let known = meta.segments_known(&ids).await?;
        for ((id, path), known) in chunk.iter().zip(known) {
            if !known {
                tracing::info!(segment = %id, "deleting orphan segment");
                match store.delete(path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                report.orphan_segments += 1;
            }
        }
    }
    Ok(report)
}

/// Runs a pass every `interval` until `shutdown`.
pub async fn run(
    meta: MetaStore,
    objects: Objects,
    grace: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let interval = interval.max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        match collect(&meta, &objects, grace).await {
            Ok(report) if report != WalGcReport::default() => {
                tracing::info!(?report, "wal_gc.pass");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "wal_gc.pass failed"),
        }
    }
}
