//! The compactor: folds WAL segments into Parquet files committed as Iceberg snapshots
//! (see [`round`]), swaps the offset index over to them, expires old snapshots, and
//! applies topic retention. It runs inside `icestream serve` or standalone; a per-topic
//! lease in the metadata store keeps two compactors off the same topic.

mod arrow;
mod commit;
pub mod janitor;
pub mod metrics;
pub mod proto;
pub mod rewrite;
pub mod round;
pub mod typed;
pub mod wal_gc;

use std::sync::Arc;
use std::time::Duration;

use iceberg::Catalog;
use icestream_catalog::commit::ManifestMerge;
use icestream_catalog::table::{committed_offsets, table_ident};
use icestream_catalog::CatalogError;
use icestream_storage::meta::{IndexEntry, TopicMeta};
use icestream_storage::{MetaError, MetaStore, Objects};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use rewrite::RewriteReport;
pub use round::{RoundContext, RoundReport};

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("table schema: {0}")]
    Schema(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the catalog accepted commit {commit_id} of topic {topic}, but the table does not hold it"
    )]
    CommitNotVisible { topic: String, commit_id: String },
}

/// Compactor settings.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// Time between rounds; bounds how stale the table is.
    pub interval: Duration,
    /// Catalog namespace of the topic tables.
    pub namespace: String,
    /// Largest amount of WAL data folded into one round (bytes).
    pub max_round_bytes: usize,
    /// Data files roll over at this size.
    pub target_file_bytes: usize,
    /// Rows per Parquet row group (the unit consumers' reads of compacted offsets fetch).
    pub row_group_rows: usize,
    /// This compactor's name in leases.
    pub holder: String,
    /// Unreferenced table metadata files older than this are deleted.
    pub metadata_grace: Duration,
    /// How long a topic lease outlives its holder's last renewal: after a crash, another
    /// compactor takes the topic over this long after the holder's last renewal.
    pub lease_ttl: Duration,
    /// Snapshots older than this are expired (the newest `keep_snapshots` always stay).
    pub snapshot_retention: Duration,
    pub keep_snapshots: usize,
    /// At most this many snapshots are retained, however young (the table metadata file
    /// lists every retained snapshot, and is rewritten at every commit).
    pub max_snapshots: usize,
    /// When commits merge small manifests.
    pub manifest_merge: ManifestMerge,
    /// Time between small-file rewrites (and snapshot expiry) of each table.
    pub rewrite_interval: Duration,
    /// How many adjacent small files of one size tier are merged at once.
    pub rewrite_fan_in: usize,
    /// Small files (under 3/4 of `target_file_bytes`) a partition may keep; beyond this its
    /// newest small files are merged.
    pub max_small_files: usize,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            namespace: "kafka".into(),
            max_round_bytes: 256 * 1024 * 1024,
            target_file_bytes: 128 * 1024 * 1024,
            row_group_rows: 16 * 1024,
            holder: format!("compactor-{}", Uuid::new_v4().simple()),
            lease_ttl: Duration::from_secs(10),
            metadata_grace: Duration::from_secs(600),
            snapshot_retention: Duration::from_secs(3600),
            keep_snapshots: 10,
            max_snapshots: 100,
            manifest_merge: ManifestMerge::default(),
            rewrite_interval: Duration::from_secs(10),
            rewrite_fan_in: 4,
            max_small_files: 16,
        }
    }
}

/// Told about index swaps, so readers drop cached WAL locations.
pub trait SwapListener: Send + Sync {
    fn on_swap(&self, topic_id: Uuid, partition: i32, entries: &[IndexEntry]);
    /// The log start of a partition moved (retention).
    fn on_trim(&self, topic_id: Uuid, partition: i32, log_start: i64);
}

/// Crash points for tests: when `ICESTREAM_TEST_FAILPOINT` names this point, the process
/// aborts here, as a `kill -9` would stop it.
pub fn failpoint(name: &str) {
    if std::env::var("ICESTREAM_TEST_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

pub struct Compactor {
    pub meta: MetaStore,
    pub objects: Objects,
    pub catalog: Arc<dyn Catalog>,
    pub config: CompactorConfig,
    pub listener: Option<Arc<dyn SwapListener>>,
}

impl Compactor {
    fn context(&self) -> RoundContext<'_> {
        RoundContext {
            meta: &self.meta,
            objects: &self.objects,
            catalog: &self.catalog,
            config: &self.config,
            listener: self.listener.as_ref(),
        }
    }

    fn lease_name(topic: &TopicMeta) -> String {
        format!("compact/{}", topic.id)
    }

    /// One round over every topic whose lease this compactor holds or can take.
    pub async fn compact_all(&self) -> Result<Vec<(String, RoundReport)>, CompactError> {
        let ttl = self.lease_ttl_ms();
        let mut reports = Vec::new();
        for topic in self.meta.topics().await? {
            let lease = Self::lease_name(&topic);
            if !self
                .meta
                .acquire_lease(&lease, &self.config.holder, ttl)
                .await?
            {
                continue;
            }
            // The lease is renewed while the round runs, however long it takes; it lapses
            // only when this compactor stops renewing it (it died).
            let context = self.context();
            let round = context.run(&topic);
            let renew = async {
                let every = Duration::from_millis((ttl / 3).max(50) as u64);
                loop {
                    tokio::time::sleep(every).await;
                    match self
                        .meta
                        .acquire_lease(&lease, &self.config.holder, ttl)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(topic = %topic.name, "compaction lease taken over mid-round")
                        }
                        Err(e) => {
                            tracing::warn!(topic = %topic.name, error = %e, "renewing the compaction lease failed")
                        }
                    }
                }
            };
            let outcome = tokio::select! {
                outcome = round => outcome,
                never = renew => never,
            };
            match outcome {
                Ok(r) => {
                    if r.files > 0 {
                        metrics::inc(&metrics::ROUNDS);
                    }
                    metrics::add(&metrics::ROWS, r.rows);
                    metrics::add(&metrics::BYTES, r.bytes);
                    if let Some(lag) = metrics::LAG.as_ref() {
                        lag.with_label_values(&[topic.name.as_str()]).set(r.lag);
                    }
                    reports.push((topic.name.clone(), r))
                }
                Err(e) => {
                    metrics::inc(&metrics::ROUNDS_FAILED);
                    tracing::warn!(topic = %topic.name, error = %e, "compaction round failed")
                }
            }
        }
        Ok(reports)
    }

    /// Expires old snapshots of every topic table this compactor holds.
    pub async fn expire_snapshots(&self) -> Result<(), CompactError> {
        let now = self.meta.now_ms();
        for topic in self.meta.topics().await? {
            if !self.holds(&topic).await? {
                continue;
            }
            let ident = table_ident(&self.config.namespace, &topic.name)?;
            if !self.catalog.table_exists(&ident).await? {
                continue;
            }
            let table = self.catalog.load_table(&ident).await?;
            let mut older_than = now - self.config.snapshot_retention.as_millis() as i64;
            // Beyond `max_snapshots`, the oldest go whatever their age.
            let mut stamps: Vec<i64> = table
                .metadata()
                .snapshots()
                .map(|s| s.timestamp_ms())
                .collect();
            stamps.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(cut) = stamps.get(self.config.max_snapshots.max(1) - 1) {
                older_than = older_than.max(*cut);
            }
            let expirable = table
                .metadata()
                .snapshots()
                .filter(|s| s.timestamp_ms() < older_than)
                .count();
            let total = table.metadata().snapshots().count();
            metrics::set(&metrics::TABLE_SNAPSHOTS, &topic.name, total as i64);
            if expirable == 0 || total <= self.config.keep_snapshots {
                continue;
            }
            match icestream_catalog::commit::expire_snapshots(
                &self.catalog,
                &table,
                older_than,
                self.config.keep_snapshots,
            )
            .await
            {
                Ok(t) => {
                    metrics::set(
                        &metrics::TABLE_SNAPSHOTS,
                        &topic.name,
                        t.metadata().snapshots().count() as i64,
                    );
                    if let Err(e) = icestream_catalog::table::write_version_hint(&t).await {
                        tracing::warn!(topic = %topic.name, error = %e, "writing version-hint.text");
                    }
                }
                Err(e) => {
                    tracing::debug!(topic = %topic.name, error = %e, "snapshot expiry deferred")
                }
            }
        }
        Ok(())
    }

    /// Whether this compactor holds (or could take) `topic`'s lease.
    async fn holds(&self, topic: &TopicMeta) -> Result<bool, CompactError> {
        Ok(self
            .meta
            .acquire_lease(
                &Self::lease_name(topic),
                &self.config.holder,
                self.lease_ttl_ms(),
            )
            .await?)
    }

    /// Deletes the unreferenced metadata files of every topic table this compactor holds,
    /// and the data files no retained snapshot lists (replaced by rewrites, or left by
    /// rounds that never committed).
    pub async fn sweep_tables(&self) -> Result<usize, CompactError> {
        let mut deleted = 0;
        for topic in self.meta.topics().await? {
            if !self.holds(&topic).await? {
                continue;
            }
            let ident = table_ident(&self.config.namespace, &topic.name)?;
            if !self.catalog.table_exists(&ident).await? {
                continue;
            }
            let table = self.catalog.load_table(&ident).await?;
            match janitor::sweep_metadata(&self.objects, &table, self.config.metadata_grace).await {
                Ok(sweep) => {
                    if sweep.deleted > 0 {
                        tracing::debug!(topic = %topic.name, files = sweep.deleted, "table.sweep");
                    }
                    metrics::set(
                        &metrics::TABLE_METADATA_BYTES,
                        &topic.name,
                        sweep.bytes as i64,
                    );
                    metrics::set(
                        &metrics::TABLE_METADATA_FILE_BYTES,
                        &topic.name,
                        sweep.metadata_file_bytes as i64,
                    );
                    deleted += sweep.deleted;
                }
                Err(e) => tracing::warn!(topic = %topic.name, error = %e, "table sweep failed"),
            }
            // Data files in flight (a round or rewrite between writing and index swap)
            // are left alone until it is resolved.
            if self.meta.round_intent(topic.id).await?.is_some()
                || self.meta.rewrite_intent(topic.id).await?.is_some()
            {
                continue;
            }
            match janitor::sweep_data(&self.objects, &table, self.config.metadata_grace).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(topic = %topic.name, files = n, "table.sweep_data");
                    }
                    deleted += n;
                }
                Err(e) => tracing::warn!(topic = %topic.name, error = %e, "data file sweep failed"),
            }
        }
        Ok(deleted)
    }

    /// Rewrites small files of every topic table this compactor holds.
    pub async fn rewrite_all(&self) -> Result<Vec<(String, RewriteReport)>, CompactError> {
        let mut reports = Vec::new();
        for topic in self.meta.topics().await? {
            if !self.holds(&topic).await? {
                continue;
            }
            match self.context().rewrite(&topic).await {
                Ok(r) => {
                    metrics::set(&metrics::TABLE_DATA_FILES, &topic.name, r.data_files as i64);
                    metrics::set(&metrics::TABLE_MANIFESTS, &topic.name, r.manifests as i64);
                    if r.groups > 0 {
                        let now = self.meta.now_ms() / 1000;
                        metrics::set(&metrics::TABLE_LAST_REWRITE, &topic.name, now);
                        tracing::debug!(topic = %topic.name, files_in = r.files_in, files_out = r.files_out, bytes = r.bytes_in, "table.rewrite");
                    }
                    reports.push((topic.name.clone(), r));
                }
                Err(e) => tracing::warn!(topic = %topic.name, error = %e, "table rewrite failed"),
            }
        }
        Ok(reports)
    }

    /// Applies `retention.ms` / `retention.bytes` of every topic: the log start moves past
    /// expired entries, but never past what the table holds (rows are not lost to
    /// retention before they are in the table). Also removes the entries DeleteRecords left
    /// below a log start, once the table holds their rows.
    pub async fn apply_retention(&self, broker_retention_ms: i64) -> Result<(), CompactError> {
        let now = self.meta.now_ms();
        // The cluster's dynamic broker configs override the settings' defaults.
        let dynamic = self.meta.broker_configs().await?;
        let dynamic_long = |name: &str| dynamic.get(name).and_then(|v| v.parse::<i64>().ok());
        let broker_retention_ms = dynamic_long("log.retention.ms").unwrap_or(broker_retention_ms);
        let broker_retention_bytes = dynamic_long("log.retention.bytes").unwrap_or(-1);
        for topic in self.meta.topics().await? {
            let retention_ms = topic
                .configs
                .get("retention.ms")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(broker_retention_ms);
            let retention_bytes = topic
                .configs
                .get("retention.bytes")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(broker_retention_bytes);
            let retained = retention_ms >= 0 || retention_bytes >= 0;
            // What the table holds, per partition; loaded when first needed.
            let mut committed: Option<std::collections::BTreeMap<i32, i64>> = None;
            for p in 0..topic.partitions {
                let Some(state) = self.meta.partition_state(topic.id, p).await? else {
                    continue;
                };
                let first = self.meta.index_entries(topic.id, p, 0, 1).await?;
                let below_start = first
                    .first()
                    .is_some_and(|e| e.last_offset < state.log_start_offset);
                if !retained && !below_start {
                    continue;
                }
                let limit = match &committed {
                    Some(c) => c.get(&p).copied().unwrap_or(0),
                    None => {
                        let ident = table_ident(&self.config.namespace, &topic.name)?;
                        let c = if self.catalog.table_exists(&ident).await? {
                            committed_offsets(&self.catalog.load_table(&ident).await?).await?
                        } else {
                            Default::default()
                        };
                        let limit = c.get(&p).copied().unwrap_or(0);
                        committed = Some(c);
                        limit
                    }
                };
                let mut new_start = state.log_start_offset;
                let mut size = state.size_bytes as i64;
                let mut from = state.log_start_offset;
                'scan: loop {
                    if !retained {
                        break;
                    }
                    let page = self.meta.index_entries(topic.id, p, from, 256).await?;
                    let Some(last) = page.last() else { break };
                    from = last.next_offset();
                    for e in &page {
                        let too_old = retention_ms >= 0 && e.max_timestamp < now - retention_ms;
                        let too_big = retention_bytes >= 0 && size > retention_bytes;
                        if !(too_old || too_big) || e.next_offset() > limit {
                            break 'scan;
                        }
                        new_start = e.next_offset();
                        size -= e.size_bytes() as i64;
                    }
                }
                if new_start > state.log_start_offset {
                    tracing::info!(topic = %topic.name, partition = p, log_start = new_start, "retention.trim");
                    if let Some(state) = self.meta.trim_log(topic.id, p, new_start).await? {
                        if let Some(l) = &self.listener {
                            l.on_trim(topic.id, p, state.log_start_offset);
                        }
                    }
                } else if below_start {
                    let upto = state.log_start_offset.min(limit);
                    if first.first().is_some_and(|e| e.last_offset < upto) {
                        tracing::info!(topic = %topic.name, partition = p, upto, "deleted_records.release");
                        self.meta.trim_log(topic.id, p, upto).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs rounds every `interval`, and table maintenance (small-file rewrites, snapshot
    /// expiry, sweeps) every `rewrite_interval` alongside them, until `shutdown`, finishing
    /// the work in progress.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, broker_retention_ms: i64) {
        metrics::register();
        tokio::join!(
            self.run_rounds(&shutdown, broker_retention_ms),
            self.run_maintenance(&shutdown)
        );
        self.release_leases().await;
    }

    async fn run_rounds(&self, shutdown: &CancellationToken, broker_retention_ms: i64) {
        let mut rounds: u64 = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = shutdown.cancelled() => break,
            }
            match self.compact_all().await {
                Ok(reports) => {
                    for (topic, r) in reports.iter().filter(|(_, r)| r.rows > 0) {
                        tracing::debug!(topic = %topic, rows = r.rows, bytes = r.bytes, files = r.files, "compaction.round");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "compaction pass failed"),
            }
            rounds += 1;
            if rounds.is_multiple_of(30) {
                if let Err(e) = self.apply_retention(broker_retention_ms).await {
                    tracing::warn!(error = %e, "retention pass failed");
                }
            }
        }
    }

    async fn run_maintenance(&self, shutdown: &CancellationToken) {
        let mut passes: u64 = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.rewrite_interval) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.rewrite_all().await {
                tracing::warn!(error = %e, "rewrite pass failed");
            }
            if let Err(e) = self.expire_snapshots().await {
                tracing::warn!(error = %e, "snapshot expiry failed");
            }
            passes += 1;
            if passes.is_multiple_of(6) {
                if let Err(e) = self.sweep_tables().await {
                    tracing::warn!(error = %e, "table sweep failed");
                }
            }
        }
    }

    fn lease_ttl_ms(&self) -> i64 {
        self.config.lease_ttl.as_millis().max(1) as i64
    }

    /// Gives up this compactor's topic leases (a graceful stop), so another compactor
    /// takes the topics over at its next round instead of after the lease TTL.
    pub async fn release_leases(&self) {
        let topics = match self.meta.topics().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list topics to release compaction leases");
                return;
            }
        };
        for topic in topics {
            if let Err(e) = self
                .meta
                .release_lease(&Self::lease_name(&topic), &self.config.holder)
                .await
            {
                tracing::warn!(topic = %topic.name, error = %e, "releasing a compaction lease failed");
            }
        }
    }
}
