//! The broker's garbage collector: expires the committed offsets of groups without members
//! (`offsets_retention_minutes`, which needs the broker's view of active groups), then
//! collects the WAL as the compactor does ([`icestream_compactor::wal_gc`]), so that brokers
//! without a compactor of their own still purge deleted topics and orphans.

use std::sync::Arc;
use std::time::Duration;

use icestream_compactor::wal_gc::{self, WalGcError};
use icestream_storage::MetaError;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Wal(#[from] WalGcError),
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

/// One collection pass.
pub async fn collect(broker: &Broker) -> Result<GcReport, GcError> {
    let meta = &broker.meta;
    // Committed offsets of groups without members expire (offsets.retention.minutes).
    let active = broker.groups.active().await;
    let idle: Vec<String> = meta
        .group_ids()
        .await?
        .into_iter()
        .filter(|g| !active.contains(g))
        .collect();
    let cutoff = meta.now_ms() - (broker.settings.offsets_retention_minutes * 60_000) as i64;
    let expired_offsets = meta.expire_offsets(&idle, cutoff).await?;
    let grace = Duration::from_millis(broker.settings.segment_grace_ms);
    let wal = wal_gc::collect(meta, &broker.objects, grace).await?;
    Ok(GcReport {
        purged_topics: wal.purged_topics,
        released_segments: wal.released_segments,
        orphan_segments: wal.orphan_segments,
        expired_offsets,
    })
}
