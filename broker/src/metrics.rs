//! Prometheus metrics of the broker, registered in the default registry (the storage and
//! compactor crates register theirs there too), served by `crate::admin_http`.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_gauge, Histogram, IntCounter, IntGauge,
};

macro_rules! counter {
    ($name:ident, $metric:expr, $help:expr) => {
        pub static $name: LazyLock<Option<IntCounter>> =
            LazyLock::new(|| register_int_counter!($metric, $help).ok());
    };
}

macro_rules! gauge {
    ($name:ident, $metric:expr, $help:expr) => {
        pub static $name: LazyLock<Option<IntGauge>> =
            LazyLock::new(|| register_int_gauge!($metric, $help).ok());
    };
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

macro_rules! histogram {
    ($name:ident, $metric:expr, $help:expr, $buckets:expr) => {
        pub static $name: LazyLock<Option<Histogram>> =
            LazyLock::new(|| register_histogram!($metric, $help, $buckets.to_vec()).ok());
    };
}

counter!(
    PRODUCE_REQUESTS,
    "icestream_produce_requests_total",
    "produce requests"
);
counter!(
    PRODUCE_BYTES,
    "icestream_produce_bytes_total",
    "record batch bytes produced and acknowledged"
);
counter!(
    PRODUCE_ERRORS,
    "icestream_produce_partition_errors_total",
    "partitions of produce requests answered with an error"
);
histogram!(
    PRODUCE_SECONDS,
    "icestream_produce_latency_seconds",
    "produce request latency, arrival to response",
    LATENCY_BUCKETS
);
counter!(
    MALFORMED_REQUESTS,
    "icestream_malformed_requests_total",
    "connections closed because a request frame could not be decoded"
);
counter!(
    AUTHENTICATION_FAILURES,
    "icestream_authentication_failures_total",
    "failed authentications: wrong credentials, failed TLS handshakes, clients that did not \
     authenticate in time (Kafka and HTTP)"
);
counter!(
    AUTHORIZATION_FAILURES,
    "icestream_authorization_failures_total",
    "requests (or parts of them) refused by the ACLs"
);
counter!(
    FETCH_REQUESTS,
    "icestream_fetch_requests_total",
    "fetch requests"
);
counter!(
    FETCH_BYTES,
    "icestream_fetch_bytes_total",
    "record batch bytes served to consumers"
);
counter!(
    FETCH_INCREMENTAL_REQUESTS,
    "icestream_fetch_incremental_requests_total",
    "fetch requests served from a fetch session (KIP-227)"
);
counter!(
    FETCH_SESSION_EVICTIONS,
    "icestream_fetch_session_evictions_total",
    "fetch sessions evicted to make room for new ones"
);
gauge!(
    FETCH_SESSIONS,
    "icestream_fetch_sessions",
    "fetch sessions cached"
);
gauge!(
    FETCH_SESSION_PARTITIONS,
    "icestream_fetch_session_partitions",
    "partitions cached in fetch sessions"
);
histogram!(
    FETCH_SECONDS,
    "icestream_fetch_latency_seconds",
    "fetch request latency (long polls included)",
    LATENCY_BUCKETS
);
counter!(
    TABLE_READS,
    "icestream_table_reads_total",
    "reads of table (Parquet) files to serve fetches of compacted offsets"
);
counter!(
    TABLE_READ_CACHE_HITS,
    "icestream_table_read_cache_hits_total",
    "fetches of compacted offsets served from the cache of rebuilt batches"
);
counter!(
    SEGMENT_PUTS,
    "icestream_segment_puts_total",
    "WAL segment objects written"
);
histogram!(
    SEGMENT_PUT_SECONDS,
    "icestream_segment_put_seconds",
    "WAL segment PUT latency",
    LATENCY_BUCKETS
);
histogram!(
    FLUSH_BYTES,
    "icestream_flush_bytes",
    "bytes per WAL segment",
    &[1024.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 8388608.0, 16777216.0, 67108864.0]
);
gauge!(
    CONNECTIONS,
    "icestream_connections",
    "open client connections"
);
gauge!(
    LIVE_BROKERS,
    "icestream_live_brokers",
    "brokers with a live registration"
);
gauge!(
    GROUPS,
    "icestream_groups",
    "consumer groups this broker coordinates"
);

pub fn inc(c: &LazyLock<Option<IntCounter>>) {
    if let Some(c) = c.as_ref() {
        c.inc();
    }
}

pub fn add(c: &LazyLock<Option<IntCounter>>, v: u64) {
    if let Some(c) = c.as_ref() {
        c.inc_by(v);
    }
}

pub fn observe(h: &LazyLock<Option<Histogram>>, v: f64) {
    if let Some(h) = h.as_ref() {
        h.observe(v);
    }
}

pub fn set(g: &LazyLock<Option<IntGauge>>, v: i64) {
    if let Some(g) = g.as_ref() {
        g.set(v);
    }
}

pub fn gauge_add(g: &LazyLock<Option<IntGauge>>, v: i64) {
    if let Some(g) = g.as_ref() {
        g.add(v);
    }
}
counter!(
    TXN_COMMITS,
    "icestream_transactions_committed_total",
    "transactions committed (markers written, offsets moved)"
);
counter!(
    TXN_ABORTS,
    "icestream_transactions_aborted_total",
    "transactions aborted, by the producer, a new instance or a timeout"
);
counter!(
    TXN_TIMEOUTS,
    "icestream_transactions_timed_out_total",
    "transactions the coordinator aborted because they outlived their timeout"
);
counter!(
    SCHEMA_VALIDATION_FAILURES,
    "icestream_schema_validation_failures_total",
    "produced records refused because their schema id is not registered for the topic"
);
