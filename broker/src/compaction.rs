//! Runs the compactor on its own thread and runtime, so Parquet encoding never competes
//! with client connections for the broker's async workers. Its threads run at a lower CPU
//! priority (nice +10): when cores are short, producers' and consumers' requests come
//! first and compaction takes the rest.

use std::sync::Arc;
use std::time::Duration;

use icestream_catalog::connect;
use icestream_compactor::{Compactor, CompactorConfig, SwapListener};
use icestream_storage::meta::IndexEntry;
use icestream_storage::{MetaStore, Objects};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::log::Log;
use crate::settings::Settings;

impl SwapListener for Log {
    fn on_swap(&self, topic_id: Uuid, partition: i32, entries: &[IndexEntry]) {
        Log::on_swap(self, topic_id, partition, entries);
    }

    fn on_trim(&self, topic_id: Uuid, partition: i32, log_start: i64) {
        Log::on_trim(self, topic_id, partition, log_start);
    }
}

pub fn config(settings: &Settings, holder: String) -> CompactorConfig {
    CompactorConfig {
        interval: Duration::from_millis(settings.compaction_interval_ms),
        namespace: settings.table_namespace.clone(),
        max_round_bytes: settings.compaction_max_bytes,
        target_file_bytes: settings.table_file_bytes,
        holder,
        snapshot_retention: Duration::from_millis(settings.snapshot_retention_ms),
        keep_snapshots: settings.keep_snapshots,
        max_snapshots: settings.max_snapshots,
        rewrite_interval: Duration::from_millis(settings.table_rewrite_interval_ms),
        max_small_files: settings.table_max_small_files,
        manifest_merge: icestream_catalog::commit::ManifestMerge {
            min_count: settings.table_manifest_merge_count,
            ..Default::default()
        },
        lease_ttl: Duration::from_millis(settings.broker_lease_ms.max(1000)),
        metadata_grace: Duration::from_millis(settings.table_metadata_grace_ms),
        ..CompactorConfig::default()
    }
}

/// Opens the catalog (retrying until it answers or `shutdown`) and runs rounds until
/// `shutdown`.
pub async fn run(
    settings: Settings,
    meta: MetaStore,
    objects: Objects,
    listener: Option<Arc<dyn SwapListener>>,
    holder: String,
    shutdown: CancellationToken,
) {
    let url = settings.catalog_url();
    let warehouse = settings
        .warehouse
        .clone()
        .unwrap_or_else(|| objects.url("warehouse"));
    let catalog = loop {
        match connect::open(&url, &warehouse, &objects).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(catalog = %url, error = %e, "cannot open the catalog; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    let catalog = inject_test_faults(catalog);
    tracing::info!(catalog = %url, %warehouse, namespace = %settings.table_namespace, "compactor.start");
    let compactor = Arc::new(Compactor {
        meta,
        objects,
        catalog,
        config: config(&settings, holder),
        listener,
    });
    compactor.run(shutdown, settings.log_retention_ms).await;
}

/// Tests of real brokers inject catalog commit faults with `ICESTREAM_TEST_CATALOG_FAULTS`
/// (`fail=N,lose=N,commit_then_fail=N`: the next N commits fail, are reported done without
/// happening, or happen and are reported failed), whatever the catalog is.
fn inject_test_faults(catalog: Arc<dyn iceberg::Catalog>) -> Arc<dyn iceberg::Catalog> {
    use std::sync::atomic::Ordering;
    let Ok(spec) = std::env::var("ICESTREAM_TEST_CATALOG_FAULTS") else {
        return catalog;
    };
    let (faulty, faults) = icestream_catalog::faults::FaultyCatalog::wrap(catalog);
    for part in spec.split(',') {
        let Some((kind, n)) = part.split_once('=') else {
            continue;
        };
        let n: usize = n.trim().parse().unwrap_or(0);
        let counter = match kind.trim() {
            "fail" => &faults.fail,
            "lose" => &faults.lose,
            "commit_then_fail" => &faults.commit_then_fail,
            _ => continue,
        };
        counter.store(n, Ordering::SeqCst);
    }
    tracing::warn!(%spec, "injecting catalog commit faults (ICESTREAM_TEST_CATALOG_FAULTS)");
    faulty
}

/// Nice +10 for the calling thread (on Linux a thread has its own nice value).
fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, 10) {
        tracing::debug!(error = %e, "cannot lower the compactor's priority");
    }
}

/// Starts [`run`] on a dedicated thread with its own runtime.
pub fn spawn(
    settings: Settings,
    meta: MetaStore,
    objects: Objects,
    listener: Option<Arc<dyn SwapListener>>,
    holder: String,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("icestream-compactor".into())
        .spawn(move || {
            lower_priority();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(lower_priority)
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the compactor runtime");
                    return;
                }
            };
            runtime.block_on(run(settings, meta, objects, listener, holder, shutdown));
        })
}
