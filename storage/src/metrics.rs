//! Prometheus metrics of the storage layer, registered in the default registry.

use std::sync::LazyLock;

use prometheus::{register_histogram, register_int_counter, Histogram, IntCounter};

/// Metadata transaction commits that conflicted and were retried.
pub static META_CONFLICTS: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "icestream_meta_conflicts_total",
        "metadata transactions retried after a conflict"
    )
    .ok()
});

/// Latency of segment commits (the offset-assigning metadata transaction).
pub static META_COMMIT_SECONDS: LazyLock<Option<Histogram>> = LazyLock::new(|| {
    register_histogram!(
        "icestream_meta_commit_seconds",
        "latency of WAL segment commits in the metadata store",
        vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
    )
    .ok()
});

pub fn inc(counter: &LazyLock<Option<IntCounter>>) {
    if let Some(c) = counter.as_ref() {
        c.inc();
    }
}

pub fn observe(histogram: &LazyLock<Option<Histogram>>, value: f64) {
    if let Some(h) = histogram.as_ref() {
        h.observe(value);
    }
}
