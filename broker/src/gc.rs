//! The garbage collector: purges deleted topics' index entries, deletes WAL segments that
//! no index entry has pointed at for `segment_grace_ms`, and deletes orphans (segments
//! written but never committed, e.g. after a crash between PUT and commit) once they are
//! older than the grace period. Nothing a committed entry points at is ever deleted.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use icestream_storage::segment::{parse_segment_key, segment_key};
use icestream_storage::MetaError;
use object_store::ObjectStoreExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::Broker;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub purged_topics: usize,
    pub released_segments: usize,
    pub orphan_segments: usize,
    pub expired_offsets: usize,
}

pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let interval = Duration::from_millis(broker.settings.gc_interval_ms.max(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        match collect(&broker).await {
            Ok(report) if report != GcReport::default() => {
                tracing::info!(?report, "gc.pass");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "gc.pass failed"),
        }
    }
}

/// Milliseconds since the epoch encoded in a uuid v7.
fn uuid_time_ms(id: Uuid) -> Option<i64> {
    let (s, n) = id.get_timestamp()?.to_unix();
    Some((s * 1000 + u64::from(n) / 1_000_000) as i64)
}

/// One collection pass.
pub async fn collect(broker: &Broker) -> Result<GcReport, GcError> {
    let mut report = GcReport::default();
    let meta = &broker.meta;
    for topic in meta.deleted_topics().await? {
        while !meta.purge_deleted_topic(topic.id, 1000).await? {}
        report.purged_topics += 1;
    }
    let grace = broker.settings.segment_grace_ms as i64;
    let now = meta.now_ms();
    // Committed offsets of groups without members expire (offsets.retention.minutes).
    let active = broker.groups.active().await;
    let idle: Vec<String> = meta
        .group_ids()
        .await?
        .into_iter()
        .filter(|g| !active.contains(g))
        .collect();
    let cutoff = now - (broker.settings.offsets_retention_minutes * 60_000) as i64;
    report.expired_offsets = meta.expire_offsets(&idle, cutoff).await?;
    let store = &broker.objects.store;
    for candidate in meta.unreferenced_segments(now - grace).await? {
        let path = broker.objects.path(&segment_key(candidate.segment));
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        meta.forget_segment(candidate.segment).await?;
        report.released_segments += 1;
    }
    // Orphans: old segment objects the metadata store has no record of.
    let prefix = broker.objects.path("wal");
    let old: Vec<(Uuid, object_store::path::Path)> = store
        .list(Some(&prefix))
        .try_filter_map(|m| async move {
            Ok(parse_segment_key(m.location.as_ref())
                .filter(|id| uuid_time_ms(*id).is_some_and(|t| t < now - grace))
                .map(|id| (id, m.location)))
        })
        .try_collect()
        .await?;
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
