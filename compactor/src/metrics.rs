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

pub static BYTES: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "icestream_compaction_wal_bytes_total",
        "WAL bytes folded into topic tables"
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

/// Registers every compactor metric, so each is exported from the start (at zero).
pub fn register() {
    LazyLock::force(&LAG);
    LazyLock::force(&ROWS);
    LazyLock::force(&BYTES);
    LazyLock::force(&ROUNDS_FAILED);
    LazyLock::force(&COMMIT_FAILURES);
    LazyLock::force(&QUARANTINED);
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
