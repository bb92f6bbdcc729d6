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
