//! Dynamic broker configs: Kafka's AlterConfigs / IncrementalAlterConfigs on the broker
//! resource. They are cluster-wide (one set in the metadata store, whatever broker id the
//! request names) and every broker reads them every `metadata_refresh_ms`.
//!
//! Accepted are the configs Kafka changes at run time for which icestream has an
//! equivalent, and the Kerberos settings Kafka accepts dynamically: icestream has no
//! GSSAPI listener, so, as on a Kafka cluster without one, they change nothing. Every
//! other name is refused with INVALID_CONFIG.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use icestream_storage::{MetaError, MetaStore};
use tokio_util::sync::CancellationToken;

pub const LOG_RETENTION_MS: &str = "log.retention.ms";
pub const LOG_RETENTION_BYTES: &str = "log.retention.bytes";
pub const MESSAGE_MAX_BYTES: &str = "message.max.bytes";

/// How a dynamic config's value is checked.
#[derive(Clone, Copy)]
enum Kind {
    /// An integer no smaller than the bound (-1 meaning "no limit" where allowed).
    Long { min: i64 },
    /// A positive number.
    Double,
    /// A comma-separated list.
    List,
}

/// The configs a client may set on the broker resource, and whether they take effect.
const DYNAMIC: &[(&str, Kind, bool)] = &[
    (LOG_RETENTION_MS, Kind::Long { min: -1 }, true),
    (LOG_RETENTION_BYTES, Kind::Long { min: -1 }, true),
    (MESSAGE_MAX_BYTES, Kind::Long { min: 1024 }, true),
    (
        "sasl.kerberos.min.time.before.relogin",
        Kind::Long { min: 0 },
        false,
    ),
    ("sasl.kerberos.ticket.renew.jitter", Kind::Double, false),
    (
        "sasl.kerberos.ticket.renew.window.factor",
        Kind::Double,
        false,
    ),
    ("sasl.kerberos.principal.to.local.rules", Kind::List, false),
];

/// Whether the config is a list (IncrementalAlterConfigs' APPEND and SUBTRACT apply).
pub fn is_list(name: &str) -> bool {
    DYNAMIC
        .iter()
        .any(|(n, k, _)| *n == name && matches!(k, Kind::List))
}

fn kind(name: &str) -> Result<Kind, String> {
    DYNAMIC
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, k, _)| *k)
        .ok_or_else(|| {
            format!(
                "{name:?} cannot be changed at run time on icestream (dynamic broker configs: {})",
                DYNAMIC
                    .iter()
                    .map(|(n, _, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Checks that `name` is a dynamic broker config (one that may be set or removed).
pub fn check_name(name: &str) -> Result<(), String> {
    kind(name).map(|_| ())
}

/// Checks a value for a dynamic broker config; the reason when it is refused.
pub fn validate(name: &str, value: &str, max_inflight_bytes: usize) -> Result<(), String> {
    match kind(name)? {
        Kind::Long { min } => {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| format!("{name} must be an integer, not {value:?}"))?;
            if v < min {
                return Err(format!("{name} must be at least {min}"));
            }
            if name == MESSAGE_MAX_BYTES && v > max_inflight_bytes as i64 {
                return Err(format!(
                    "{name} must not exceed the brokers' max_inflight_bytes ({max_inflight_bytes})"
                ));
            }
        }
        Kind::Double => {
            let v: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("{name} must be a number, not {value:?}"))?;
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number"));
            }
        }
        Kind::List => {}
    }
    Ok(())
}

/// This broker's copy of the cluster's dynamic broker configs.
pub struct DynamicConfigs {
    meta: MetaStore,
    values: RwLock<Arc<BTreeMap<String, String>>>,
}

impl DynamicConfigs {
    pub fn new(meta: MetaStore) -> Self {
        Self {
            meta,
            values: RwLock::new(Arc::new(BTreeMap::new())),
        }
    }

    pub fn values(&self) -> Arc<BTreeMap<String, String>> {
        self.values
            .read()
            .map(|v| v.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn set(&self, values: BTreeMap<String, String>) {
        let mut guard = self.values.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(values);
    }

    pub async fn reload(&self) -> Result<(), MetaError> {
        let values = self.meta.broker_configs().await?;
        self.set(values);
        Ok(())
    }

    /// The cluster's `message.max.bytes`, when set.
    pub fn message_max_bytes(&self) -> Option<usize> {
        self.values()
            .get(MESSAGE_MAX_BYTES)
            .and_then(|v| v.parse().ok())
    }

    /// Keeps the copy fresh until `shutdown`.
    pub async fn run(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "reading dynamic broker configs failed");
            }
        }
    }
}

/// Whether a dynamic config changes what icestream does (the Kerberos ones do not).
pub fn takes_effect(name: &str) -> bool {
    DYNAMIC.iter().any(|(n, _, effect)| *n == name && *effect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_values_and_refuses_other_names() {
        assert!(validate(LOG_RETENTION_MS, "-1", 1 << 30).is_ok());
        assert!(validate(LOG_RETENTION_MS, "-2", 1 << 30).is_err());
        assert!(validate(MESSAGE_MAX_BYTES, "2000000", 1 << 30).is_ok());
        assert!(validate(MESSAGE_MAX_BYTES, "2000000", 1 << 20).is_err());
        assert!(validate(MESSAGE_MAX_BYTES, "100", 1 << 30).is_err());
        assert!(validate("sasl.kerberos.min.time.before.relogin", "58000", 1 << 30).is_ok());
        assert!(validate("sasl.kerberos.ticket.renew.jitter", "x", 1 << 30).is_err());
        let e = validate("num.io.threads", "8", 1 << 30).expect_err("not dynamic here");
        assert!(
            e.contains("num.io.threads") && e.contains(LOG_RETENTION_MS),
            "{e}"
        );
        assert!(is_list("sasl.kerberos.principal.to.local.rules"));
        assert!(takes_effect(LOG_RETENTION_BYTES));
        assert!(!takes_effect("sasl.kerberos.ticket.renew.jitter"));
    }
}
