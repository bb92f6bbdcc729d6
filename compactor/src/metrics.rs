//! Prometheus metrics of the compactor, registered in the default registry.

use std::sync::LazyLock;

use prometheus::{register_int_counter, register_int_gauge_vec, IntCounter, IntGaugeVec};

/// Offsets acknowledged but not yet in the table, per topic.
pub static LAG: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "icestream_compaction_lag_offsets",
        "offsets acknowledged but not yet committed to the topic table",
        &["topic"]
    )
    .ok()
});

pub static ROWS: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "icestream_compaction_rows_total",
        "rows written to topic tables"
    )
    .ok()
});

pub static UNDECODABLE_VALUES: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "icestream_compaction_undecodable_values_total",
        "record values of schema-typed topics that did not decode (kept as bytes, typed columns null)"
    )
    .ok()
});

pub static BYTES: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "icestream_compaction_wal_bytes_total",
        "WAL bytes folded into topic tables"
    )
    .ok()
});

pub static ROUNDS: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "icestream_compaction_rounds_total",
        "compaction rounds that committed a snapshot"
    )
    .ok()
});

pub static ROUNDS_FAILED: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "icestream_compaction_failures_total",
        "compaction rounds that failed (they are retried)"
    )
    .ok()
});

pub static COMMIT_FAILURES: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "icestream_compaction_commit_failures_total",
        "snapshot commits that did not take effect (failed, or reported done but not in the table)"
    )
    .ok()
});

pub static QUARANTINED: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "icestream_compaction_quarantined_batches_total",
        "stored batches that could not be decoded and were left out of the table"
    )
    .ok()
});

pub static REWRITES: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "icestream_table_rewrites_total",
        "small-file rewrites committed to topic tables"
    )
    .ok()
});

pub static REWRITE_BYTES: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "icestream_table_rewrite_bytes_total",
        "bytes of data files rewritten into larger ones"
    )
    .ok()
});

fn table_gauge(name: &str, help: &str) -> Option<IntGaugeVec> {
    register_int_gauge_vec!(name, help, &["topic"]).ok()
}

/// Live data files of the current snapshot, per topic table.
pub static TABLE_DATA_FILES: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    table_gauge(
        "icestream_table_data_files",
        "live data files of the current snapshot of the topic table",
    )
});

/// Manifests the current snapshot lists, per topic table.
pub static TABLE_MANIFESTS: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    table_gauge(
        "icestream_table_manifests",
        "manifests of the current snapshot of the topic table",
    )
});

/// Snapshots in the table metadata, per topic table.
pub static TABLE_SNAPSHOTS: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    table_gauge(
        "icestream_table_snapshots",
        "snapshots retained in the topic table's metadata",
    )
});

/// Bytes of the current metadata file, per topic table.
pub static TABLE_METADATA_FILE_BYTES: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    table_gauge(
        "icestream_table_metadata_file_bytes",
        "size of the topic table's current metadata JSON file",
    )
});

/// Bytes under the table's metadata/ directory (metadata files, manifest lists,
/// manifests, offset files), per topic table.
pub static TABLE_METADATA_BYTES: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    table_gauge(
        "icestream_table_metadata_bytes",
        "bytes of every file under the topic table's metadata directory",
    )
});

/// Unix time (seconds) of the last rewrite committed, per topic table.
pub static TABLE_LAST_REWRITE: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    table_gauge(
        "icestream_table_last_rewrite_seconds",
        "unix time of the last small-file rewrite committed to the topic table",
    )
});

pub fn set(g: &LazyLock<Option<IntGaugeVec>>, topic: &str, value: i64) {
    if let Some(g) = g.as_ref() {
        g.with_label_values(&[topic]).set(value);
    }
}

/// Registers every compactor metric, so each is exported from the start (at zero).
pub fn register() {
    LazyLock::force(&LAG);
    LazyLock::force(&ROWS);
    LazyLock::force(&ROUNDS);
    LazyLock::force(&BYTES);
    LazyLock::force(&ROUNDS_FAILED);
    LazyLock::force(&COMMIT_FAILURES);
    LazyLock::force(&QUARANTINED);
    LazyLock::force(&REWRITES);
    LazyLock::force(&REWRITE_BYTES);
    LazyLock::force(&TABLE_DATA_FILES);
    LazyLock::force(&TABLE_MANIFESTS);
    LazyLock::force(&TABLE_SNAPSHOTS);
    LazyLock::force(&TABLE_METADATA_FILE_BYTES);
    LazyLock::force(&TABLE_METADATA_BYTES);
    LazyLock::force(&TABLE_LAST_REWRITE);
}

pub fn inc(c: &LazyLock<Option<IntCounter>>) {
    if let Some(c) = c.as_ref() {
        c.inc();
    }
}

pub fn add(c: &LazyLock<Option<IntCounter>>, n: u64) {
    if let Some(c) = c.as_ref() {
        c.inc_by(n);
    }
}
