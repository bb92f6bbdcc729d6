//! Broker settings: serde data with a default for everything, layered
//! defaults → TOML file → `ICESTREAM_*` environment → command-line flags.
//!
//! Keys are flat snake_case names (`flush_interval_ms`); in the environment they are upper
//! case with the `ICESTREAM_` prefix (`ICESTREAM_FLUSH_INTERVAL_MS=5`); on the command line
//! `--set flush_interval_ms=5` (or the dedicated flags). Unknown keys are errors, so a typo
//! never silently falls back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use icestream_storage::StoreKind;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid settings: {0}")]
    Invalid(String),
}

/// Every setting of `icestream serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the Kafka listener binds.
    pub listen: String,
    /// Address of the admin HTTP endpoint (`/metrics`, `/health`); empty disables it.
    pub admin_listen: String,
    /// Address of the schema registry (Confluent's REST API); empty disables it.
    pub schema_registry_listen: String,
    /// `host:port` given to clients in Metadata responses (default: the listen address).
    pub advertised_listener: Option<String>,
    /// Kafka listeners with their security protocols, replacing `listen`:
    /// `PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093` (PLAINTEXT, SSL,
    /// SASL_PLAINTEXT, SASL_SSL; one of each).
    pub listeners: String,
    /// What each listener tells clients: `SASL_SSL://kafka.example.com:9093,...`.
    pub advertised_listeners: String,
    /// PEM certificate chain of SSL and SASL_SSL listeners (read again when it changes).
    pub ssl_certificate_file: Option<PathBuf>,
    /// PEM private key of that certificate.
    pub ssl_key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to.
    pub ssl_client_ca_file: Option<PathBuf>,
    /// Client certificates: `none`, `requested` or `required` (mTLS).
    pub ssl_client_auth: String,
    /// SASL mechanisms offered on SASL listeners.
    pub sasl_enabled_mechanisms: String,
    /// Connections on SASL listeners that have not authenticated by then are closed.
    pub sasl_authentication_timeout_ms: u64,
    /// KIP-368: SASL sessions last this long, then clients re-authenticate (0: forever).
    pub connections_max_reauth_ms: u64,
    /// `acl` checks every request against the ACLs, `none` allows everything; empty: `acl`
    /// when a SASL listener is configured.
    pub authorizer: String,
    /// Principals allowed everything: `User:admin;User:ops`.
    pub super_users: String,
    /// Allow requests on resources that no ACL mentions (Kafka's
    /// `allow.everyone.if.no.acl.found`).
    pub allow_everyone_if_no_acl_found: bool,
    /// The admin and schema registry HTTP endpoints ask for a user's password (HTTP basic)
    /// — `basic` or `none`; empty: `basic` when a SASL listener is configured.
    pub http_authentication: String,
    /// Directory for embedded state (metadata store, local objects, catalog).
    pub data_dir: PathBuf,
    /// Object store URL for WAL segments and table files (default `file://DATA_DIR/objects`).
    pub object_store: Option<String>,
    /// Metadata store URL: `embedded`, `postgres://…` or `fdb://CLUSTER_FILE`.
    pub metadata: String,
    /// This broker's node id (default: 0 with the embedded store, allocated from the shared
    /// metadata store otherwise).
    pub node_id: Option<i32>,
    /// A broker is dead to the others when it has not renewed its registration for this
    /// long.
    pub broker_lease_ms: u64,
    /// With a shared metadata store: how often high watermarks appended by other brokers
    /// are read (bounds how late a long-polling fetch wakes up).
    pub metadata_refresh_ms: u64,
    /// Rack reported in Metadata responses.
    pub rack: Option<String>,

    /// Longest time produced data waits before its WAL segment is written, and the spacing
    /// of segment writes under load, so about 1000/this PUTs per second (default 5 ms on
    /// local and memory stores, 100 ms on S3).
    pub flush_interval_ms: Option<u64>,
    /// Segment writes that may start at once, ahead of `flush_interval_ms`, when no write
    /// is in flight: a lightly loaded broker answers in one PUT. They accrue at one per
    /// `flush_interval_ms`; 0 turns them off.
    pub flush_burst: usize,
    /// While no segment write is in flight, waiting data of at most this many bytes is
    /// written at once without spending a `flush_burst` credit, so every produce is
    /// answered after one PUT and one commit and segments follow each other as fast as they
    /// complete; more waits for the interval. Lower latency for more PUTs and CPU: 0 (off)
    /// by default.
    pub flush_eager_bytes: usize,
    /// While no segment write is in flight, waiting data is written at once without
    /// spending a `flush_burst` credit when a waiting request's client can send nothing
    /// more until it is answered (the fifth request in flight of an idempotent producer;
    /// transaction markers): waiting would gather nothing more from it. While such clients
    /// keep waiting, segments follow each other as fast as they complete (on S3, one PUT per
    /// PUT latency instead of one per `flush_interval_ms`).
    pub flush_when_clients_wait: bool,
    /// A segment is written as soon as this many bytes are waiting.
    pub flush_bytes: usize,
    /// Produced bytes accepted but not yet acknowledged, across all connections; producers
    /// wait (backpressure) beyond it.
    pub max_inflight_bytes: usize,
    /// Segments being written or committed at once.
    pub max_inflight_flushes: usize,

    /// Create unknown topics when clients ask for them in Metadata requests.
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics with -1.
    pub num_partitions: i32,
    /// Largest record batch accepted (Kafka's `message.max.bytes`).
    pub message_max_bytes: usize,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`).
    pub socket_request_max_bytes: usize,
    /// Request bytes being read or decoded at once across all connections (Kafka's
    /// `queued.max.request.bytes`); connections wait to read beyond it. Raised to
    /// `socket_request_max_bytes` if smaller.
    pub queued_max_request_bytes: usize,
    /// Most client connections served at once.
    pub max_connections: usize,

    /// Memory for cached record batch data (bytes).
    pub cache_bytes: usize,
    /// Incremental fetch sessions (KIP-227) kept at once (Kafka's
    /// `max.incremental.fetch.session.cache.slots`); 0 turns them off.
    pub fetch_session_cache_slots: usize,
    /// Partitions kept in fetch sessions, over all of them.
    pub fetch_session_cache_partitions: usize,
    /// Age after which a WAL segment nothing points at may be deleted.
    pub segment_grace_ms: u64,
    /// How often the garbage collector runs.
    pub gc_interval_ms: u64,

    /// Iceberg catalog URL: `sqlite://PATH` (default `sqlite://DATA_DIR/catalog.db`),
    /// `postgres://…`, or a REST catalog `http(s)://…`.
    pub catalog: Option<String>,
    /// Where table files go (default: `warehouse/` in the object store).
    pub warehouse: Option<String>,
    /// Catalog namespace of the topic tables.
    pub table_namespace: String,
    /// Run the compactor inside `serve`.
    pub compaction: bool,
    /// Time between compaction rounds: bounds how stale the tables are.
    pub compaction_interval_ms: u64,
    /// WAL bytes folded into one round at most.
    pub compaction_max_bytes: usize,
    /// Data files roll over at this size.
    pub table_file_bytes: usize,
    /// Snapshots older than this expire (the newest `keep_snapshots` always stay).
    pub snapshot_retention_ms: u64,
    pub keep_snapshots: usize,
    /// At most this many snapshots are retained, however young.
    pub max_snapshots: usize,
    /// Time between small-file rewrites (and snapshot expiry) of each table.
    pub table_rewrite_interval_ms: u64,
    /// Data files under 3/4 of `table_file_bytes` a partition may keep before its newest
    /// are merged.
    pub table_max_small_files: usize,
    /// A commit merges small manifests once the snapshot would list this many.
    pub table_manifest_merge_count: usize,
    /// Table metadata files (old metadata JSON, manifest lists of expired snapshots,
    /// leftovers of failed commits) that nothing references are deleted after this.
    pub table_metadata_grace_ms: u64,
    /// Default `retention.ms` of topics (Kafka's `log.retention.ms`); -1 keeps forever.
    pub log_retention_ms: i64,

    /// Kafka's `group.initial.rebalance.delay.ms`: a new group's first rebalance waits this
    /// long for more members.
    pub group_initial_rebalance_delay_ms: u64,
    /// Kafka's `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// Kafka's `offsets.retention.minutes`: committed offsets of groups without members
    /// expire after this long.
    pub offsets_retention_minutes: u64,
    /// KIP-848 groups: Kafka's `group.consumer.heartbeat.interval.ms` and
    /// `group.consumer.session.timeout.ms`.
    pub group_consumer_heartbeat_interval_ms: i32,
    pub group_consumer_session_timeout_ms: u64,

    /// Kafka's `transaction.max.timeout.ms`: the longest transaction timeout a producer may
    /// ask for (1 hour, not Kafka's 15 minutes: Flink's Kafka sink asks for 1 hour).
    pub transaction_max_timeout_ms: i32,
    /// Kafka's `transactional.id.expiration.ms`: transactional ids idle this long are
    /// forgotten.
    pub transactional_id_expiration_ms: i64,
    /// How often the transaction coordinator looks for timed-out transactions
    /// (Kafka's `transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub transaction_check_interval_ms: u64,
    /// The finalized `transaction.version` feature advertised in ApiVersions: 2 lets
    /// clients use transactions v2 (KIP-890: Produce enrolls partitions, every EndTxn
    /// bumps the epoch), 1 keeps them on AddPartitionsToTxn.
    pub transaction_version: i16,
}

/// Every key of [`Settings`] (checked against serde's view by a test).
pub const KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "schema_registry_listen",
    "advertised_listener",
    "listeners",
    "advertised_listeners",
    "ssl_certificate_file",
    "ssl_key_file",
    "ssl_client_ca_file",
    "ssl_client_auth",
    "sasl_enabled_mechanisms",
    "sasl_authentication_timeout_ms",
    "connections_max_reauth_ms",
    "authorizer",
    "super_users",
    "allow_everyone_if_no_acl_found",
    "http_authentication",
    "data_dir",
    "object_store",
    "metadata",
    "node_id",
    "broker_lease_ms",
    "metadata_refresh_ms",
    "rack",
    "flush_interval_ms",
    "flush_burst",
    "flush_eager_bytes",
    "flush_when_clients_wait",
    "flush_bytes",
    "max_inflight_bytes",
    "max_inflight_flushes",
    "auto_create_topics",
    "num_partitions",
    "message_max_bytes",
    "socket_request_max_bytes",
    "queued_max_request_bytes",
    "max_connections",
    "cache_bytes",
    "fetch_session_cache_slots",
    "fetch_session_cache_partitions",
    "segment_grace_ms",
    "gc_interval_ms",
    "catalog",
    "warehouse",
    "table_namespace",
    "compaction",
    "compaction_interval_ms",
    "compaction_max_bytes",
    "table_file_bytes",
    "snapshot_retention_ms",
    "keep_snapshots",
    "max_snapshots",
    "table_rewrite_interval_ms",
    "table_max_small_files",
    "table_manifest_merge_count",
    "table_metadata_grace_ms",
    "log_retention_ms",
    "group_initial_rebalance_delay_ms",
    "group_min_session_timeout_ms",
    "group_max_session_timeout_ms",
    "offsets_retention_minutes",
    "group_consumer_heartbeat_interval_ms",
    "group_consumer_session_timeout_ms",
    "transaction_max_timeout_ms",
    "transactional_id_expiration_ms",
    "transaction_check_interval_ms",
    "transaction_version",
];

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9092".into(),
            admin_listen: "127.0.0.1:9644".into(),
            schema_registry_listen: "127.0.0.1:8081".into(),
            advertised_listener: None,
            listeners: String::new(),
            advertised_listeners: String::new(),
            ssl_certificate_file: None,
            ssl_key_file: None,
            ssl_client_ca_file: None,
            ssl_client_auth: "none".into(),
            sasl_enabled_mechanisms: "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into(),
            sasl_authentication_timeout_ms: 10_000,
            connections_max_reauth_ms: 0,
            authorizer: String::new(),
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
            http_authentication: String::new(),
            data_dir: PathBuf::from("./data"),
            object_store: None,
            metadata: "embedded".into(),
            node_id: None,
            broker_lease_ms: 10_000,
            metadata_refresh_ms: 100,
            rack: None,
            flush_interval_ms: None,
            flush_burst: 20,
            flush_eager_bytes: 0,
            flush_when_clients_wait: true,
            flush_bytes: 8 * 1024 * 1024,
            max_inflight_bytes: 256 * 1024 * 1024,
            max_inflight_flushes: 8,
            auto_create_topics: true,
            num_partitions: 1,
            message_max_bytes: 1_048_588,
            socket_request_max_bytes: 104_857_600,
            queued_max_request_bytes: 512 * 1024 * 1024,
            max_connections: 10_000,
            cache_bytes: 512 * 1024 * 1024,
            fetch_session_cache_slots: 1000,
            fetch_session_cache_partitions: 1_000_000,
            segment_grace_ms: 10 * 60 * 1000,
            gc_interval_ms: 60 * 1000,
            catalog: None,
            warehouse: None,
            table_namespace: "kafka".into(),
            compaction: true,
            compaction_interval_ms: 2000,
            compaction_max_bytes: 256 * 1024 * 1024,
            table_file_bytes: 128 * 1024 * 1024,
            snapshot_retention_ms: 60 * 60 * 1000,
            keep_snapshots: 10,
            max_snapshots: 100,
            table_rewrite_interval_ms: 10_000,
            table_max_small_files: 16,
            table_manifest_merge_count: 16,
            table_metadata_grace_ms: 10 * 60 * 1000,
            log_retention_ms: 7 * 24 * 60 * 60 * 1000,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_retention_minutes: 7 * 24 * 60,
            group_consumer_heartbeat_interval_ms: 5000,
            group_consumer_session_timeout_ms: 45_000,
            transaction_max_timeout_ms: 3_600_000,
            transactional_id_expiration_ms: 7 * 24 * 60 * 60 * 1000,
            transaction_check_interval_ms: 1000,
            transaction_version: 2,
        }
    }
}

impl Settings {
    /// Layers the sources: defaults, then `file`, then `env` (`ICESTREAM_*` pairs), then
    /// `overrides` (`key=value` from flags).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> Result<Self, SettingsError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                path: path.display().to_string(),
                source,
            })?;
            table = toml::from_str(&text).map_err(|source| SettingsError::Parse {
                path: path.display().to_string(),
                source,
            })?;
        }
        // Environment variables that name no setting are ignored with a warning: the
        // environment holds variables icestream does not own (Kubernetes injects
        // `ICESTREAM_PORT` for a service named icestream).
        let env: BTreeMap<String, String> = env
            .into_iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("ICESTREAM_")?.to_ascii_lowercase();
                // ICESTREAM_USER_PASSWORD is `icestream users add`'s, not a setting.
                if key == "config" || key == "user_password" || key.starts_with("test_") {
                    return None;
                }
                if !KEYS.contains(&key.as_str()) {
                    tracing::warn!(variable = %k, "environment variable names no setting; ignored");
                    return None;
                }
                Some((key, v))
            })
            .collect();
        for (k, v) in env.iter().chain(overrides.iter().map(|(k, v)| (k, v))) {
            table.insert(k.clone(), parse_value(v));
        }
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| SettingsError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let bad = |m: &str| Err(SettingsError::Invalid(m.to_string()));
        if self.num_partitions < 1 {
            return bad("num_partitions must be at least 1");
        }
        if self.message_max_bytes < 1024 {
            return bad("message_max_bytes must be at least 1024");
        }
        if self.message_max_bytes > self.max_inflight_bytes {
            return bad("max_inflight_bytes must be at least message_max_bytes");
        }
        if self.max_inflight_flushes == 0 || self.flush_bytes == 0 {
            return bad("max_inflight_flushes and flush_bytes must be positive");
        }
        if self.segment_grace_ms < 10_000 {
            return bad("segment_grace_ms must be at least 10000");
        }
        if self.compaction_interval_ms < 100 {
            return bad("compaction_interval_ms must be at least 100");
        }
        if self.max_snapshots == 0 || self.keep_snapshots > self.max_snapshots {
            return bad("max_snapshots must be positive and at least keep_snapshots");
        }
        if self.table_rewrite_interval_ms < 100 {
            return bad("table_rewrite_interval_ms must be at least 100");
        }
        if self.table_manifest_merge_count < 2 {
            return bad("table_manifest_merge_count must be at least 2");
        }
        if self.table_namespace.is_empty() {
            return bad("table_namespace must not be empty");
        }
        if !(1..=2).contains(&self.transaction_version) {
            return bad("transaction_version must be 1 or 2");
        }
        let listeners = crate::security::listeners(self).map_err(SettingsError::Invalid)?;
        if crate::security::tls::ClientAuth::parse(&self.ssl_client_auth).is_none() {
            return bad("ssl_client_auth must be none, requested or required");
        }
        if listeners.iter().any(|l| l.protocol.tls())
            && (self.ssl_certificate_file.is_none() || self.ssl_key_file.is_none())
        {
            return bad("SSL and SASL_SSL listeners need ssl_certificate_file and ssl_key_file");
        }
        if !matches!(self.http_authentication.as_str(), "" | "basic" | "none") {
            return bad("http_authentication must be basic or none");
        }
        Ok(())
    }

    pub fn object_store_url(&self) -> String {
        self.object_store
            .clone()
            .unwrap_or_else(|| format!("file://{}", self.data_dir.join("objects").display()))
    }

    pub fn catalog_url(&self) -> String {
        self.catalog
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("catalog.db").display()))
    }

    pub fn flush_interval(&self, kind: StoreKind) -> std::time::Duration {
        let ms = self.flush_interval_ms.unwrap_or(match kind {
            StoreKind::Local | StoreKind::Memory => 5,
            StoreKind::S3 => 100,
        });
        std::time::Duration::from_millis(ms.max(1))
    }
}

/// A value from the environment or a flag: TOML syntax when it parses (numbers, booleans),
/// otherwise the plain string.
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("icestream.toml");
        std::fs::write(
            &file,
            "flush_bytes = 1000\nnum_partitions = 3\nlisten = \"0.0.0.0:1\"\n",
        )
        .expect("write");
        let env = vec![
            ("ICESTREAM_NUM_PARTITIONS".to_string(), "6".to_string()),
            ("ICESTREAM_METADATA".to_string(), "postgres://x".to_string()),
            (
                "ICESTREAM_TEST_SOMETHING".to_string(),
                "ignored".to_string(),
            ),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let flags = vec![("listen".to_string(), "127.0.0.1:9".to_string())];
        let s = Settings::load(Some(&file), env, &flags).expect("load");
        assert_eq!(s.flush_bytes, 1000);
        assert_eq!(s.num_partitions, 6);
        assert_eq!(s.metadata, "postgres://x");
        assert_eq!(s.listen, "127.0.0.1:9");
        assert_eq!(s.message_max_bytes, Settings::default().message_max_bytes);
    }

    #[test]
    fn rejects_unknown_and_invalid() {
        let err =
            Settings::load(None, vec![], &[("flush_byts".into(), "1".into())]).expect_err("typo");
        assert!(err.to_string().contains("flush_byts"), "{err}");
        assert!(Settings::load(None, vec![], &[("num_partitions".into(), "0".into())]).is_err());
        assert!(Settings::load(None, vec![], &[("flush_bytes".into(), "abc".into())]).is_err());
    }

    #[test]
    fn keys_list_every_setting() {
        let full = Settings {
            advertised_listener: Some("h:1".into()),
            ssl_certificate_file: Some("c.pem".into()),
            ssl_key_file: Some("k.pem".into()),
            ssl_client_ca_file: Some("ca.pem".into()),
            object_store: Some("memory://".into()),
            node_id: Some(1),
            rack: Some("r".into()),
            flush_interval_ms: Some(1),
            flush_eager_bytes: 65536,
            catalog: Some("sqlite://x".into()),
            warehouse: Some("file:///w".into()),
            ..Settings::default()
        };
        let table = toml::Table::try_from(full).expect("serialize");
        let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut expected = KEYS.to_vec();
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn defaults_work_alone() {
        let s = Settings::load(None, vec![], &[]).expect("defaults");
        assert_eq!(s, Settings::default());
        assert!(s.object_store_url().starts_with("file://"));
        assert_eq!(
            s.flush_interval(StoreKind::S3),
            std::time::Duration::from_millis(100)
        );
    }
}
