//! Topics as the broker sees them: a cache over the metadata store (by name and by id),
//! name validation, and the topic configs icestream knows with their defaults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use icestream_storage::meta::TopicMeta;
use icestream_storage::{MetaError, MetaStore};
use uuid::Uuid;

/// How long a cached topic is trusted before it is read again (other brokers may change
/// topics; this broker invalidates its own changes at once).
const TOPIC_TTL: Duration = Duration::from_secs(5);

/// A topic config: its name, Kafka's default, and whether its value is numeric.
pub struct ConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    pub numeric: bool,
}

/// The topic configs clients may set and read. Values are kept as given; the ones
/// icestream acts on are `max.message.bytes`, `retention.ms`, `retention.bytes`.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        default: "delete",
        numeric: false,
    },
    ConfigDef {
        name: "compression.type",
        default: "producer",
        numeric: false,
    },
    ConfigDef {
        name: "confluent.key.schema.validation",
        default: "false",
        numeric: false,
    },
    ConfigDef {
        name: "confluent.value.schema.validation",
        default: "false",
        numeric: false,
    },
    ConfigDef {
        name: "delete.retention.ms",
        default: "86400000",
        numeric: true,
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        default: "60000",
        numeric: true,
    },
    ConfigDef {
        name: "flush.messages",
        default: "9223372036854775807",
        numeric: true,
    },
    ConfigDef {
        name: "flush.ms",
        default: "9223372036854775807",
        numeric: true,
    },
    ConfigDef {
        name: "index.interval.bytes",
        default: "4096",
        numeric: true,
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        default: "9223372036854775807",
        numeric: true,
    },
    ConfigDef {
        name: "max.message.bytes",
        default: "1048588",
        numeric: true,
    },
    ConfigDef {
        name: "message.downconversion.enable",
        default: "true",
        numeric: false,
    },
    ConfigDef {
        name: "message.format.version",
        default: "3.0-IV1",
        numeric: false,
    },
    ConfigDef {
        name: "message.timestamp.type",
        default: "CreateTime",
        numeric: false,
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        default: "9223372036854775807",
        numeric: true,
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        default: "9223372036854775807",
        numeric: true,
    },
    ConfigDef {
        name: "message.timestamp.difference.max.ms",
        default: "9223372036854775807",
        numeric: true,
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        default: "0.5",
        numeric: false,
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        default: "0",
        numeric: true,
    },
    ConfigDef {
        name: "min.insync.replicas",
        default: "1",
        numeric: true,
    },
    ConfigDef {
        name: "preallocate",
        default: "false",
        numeric: false,
    },
    ConfigDef {
        name: "retention.bytes",
        default: "-1",
        numeric: true,
    },
    ConfigDef {
        name: "retention.ms",
        default: "604800000",
        numeric: true,
    },
    ConfigDef {
        name: "segment.bytes",
        default: "1073741824",
        numeric: true,
    },
    ConfigDef {
        name: "segment.index.bytes",
        default: "10485760",
        numeric: true,
    },
    ConfigDef {
        name: "segment.jitter.ms",
        default: "0",
        numeric: true,
    },
    ConfigDef {
        name: "segment.ms",
        default: "604800000",
        numeric: true,
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        default: "false",
        numeric: false,
    },
];

pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|c| c.name == name)
}

/// Checks a topic config given by a client; the error message is sent back to it.
pub fn validate_config(name: &str, value: &str) -> Result<(), String> {
    let Some(def) = config_def(name) else {
        return Err(format!("unknown topic config {name:?}"));
    };
    if def.numeric && value.parse::<i64>().is_err() {
        return Err(format!(
            "topic config {name} must be an integer, not {value:?}"
        ));
    }
    match name {
        "cleanup.policy"
            if !value
                .split(',')
                .all(|p| matches!(p.trim(), "delete" | "compact")) =>
        {
            return Err(format!("invalid cleanup.policy {value:?}"));
        }
        "message.timestamp.type" if !matches!(value, "CreateTime" | "LogAppendTime") => {
            return Err(format!("invalid message.timestamp.type {value:?}"));
        }
        "confluent.key.schema.validation" | "confluent.value.schema.validation"
            if !matches!(value, "true" | "false") =>
        {
            return Err(format!("{name} must be true or false, not {value:?}"));
        }
        // Accepted and without effect, as in Kafka 3 (records are always stored in message
        // format v2), so tools and clients that still set it keep working.
        "message.format.version" if !is_kafka_version(value) => {
            return Err(format!("invalid message.format.version {value:?}"));
        }
        "message.downconversion.enable" if !matches!(value, "true" | "false") => {
            return Err(format!("{name} must be true or false, not {value:?}"));
        }
        "max.message.bytes" if value.parse::<i64>().unwrap_or(0) < 1 => {
            return Err("max.message.bytes must be positive".into());
        }
        _ => {}
    }
    Ok(())
}

/// A Kafka version as `message.format.version` takes it: `0.10.0`, `0.10.0.0`, `2.8`,
/// `3.0-IV1`.
fn is_kafka_version(value: &str) -> bool {
    let (version, iv) = match value.split_once("-IV") {
        Some((v, iv)) => (v, Some(iv)),
        None => (value, None),
    };
    // Kafka reads the first three segments of a 0.x version and two of later ones, and
    // ignores the rest ("0.10.0.0" is 0.10.0, "2.8.1" is 2.8).
    let parts: Vec<&str> = version.split('.').collect();
    (2..=4).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && iv.is_none_or(|iv| !iv.is_empty() && iv.bytes().all(|b| b.is_ascii_digit()))
}

/// Kafka's topic name rules: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if name.len() > 249 {
        return Err("topic name is longer than 249 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} contains {c:?}; only ASCII letters, digits, '.', '_' and '-' \
             are allowed"
        ));
    }
    Ok(())
}

#[derive(Clone)]
struct Cached {
    topic: Arc<TopicMeta>,
    loaded: Instant,
}

/// Topic cache over the metadata store.
pub struct Topics {
    meta: MetaStore,
    by_name: DashMap<String, Cached>,
    by_id: DashMap<Uuid, Cached>,
}

impl Topics {
    pub fn new(meta: MetaStore) -> Self {
        Self {
            meta,
            by_name: DashMap::new(),
            by_id: DashMap::new(),
        }
    }

    fn remember(&self, topic: TopicMeta) -> Arc<TopicMeta> {
        let cached = Cached {
            topic: Arc::new(topic),
            loaded: Instant::now(),
        };
        self.by_name
            .insert(cached.topic.name.clone(), cached.clone());
        self.by_id.insert(cached.topic.id, cached.clone());
        cached.topic
    }

    pub fn forget(&self, name: &str, id: Uuid) {
        self.by_name.remove(name);
        self.by_id.remove(&id);
    }

    pub async fn get(&self, name: &str) -> Result<Option<Arc<TopicMeta>>, MetaError> {
        if let Some(c) = self.by_name.get(name) {
            if c.loaded.elapsed() < TOPIC_TTL {
                return Ok(Some(c.topic.clone()));
            }
        }
        match self.meta.topic(name).await? {
            Some(t) => Ok(Some(self.remember(t))),
            None => {
                if let Some((_, c)) = self.by_name.remove(name) {
                    self.by_id.remove(&c.topic.id);
                }
                Ok(None)
            }
        }
    }

    pub async fn get_by_id(&self, id: Uuid) -> Result<Option<Arc<TopicMeta>>, MetaError> {
        if let Some(c) = self.by_id.get(&id) {
            if c.loaded.elapsed() < TOPIC_TTL {
                return Ok(Some(c.topic.clone()));
            }
        }
        match self.meta.topic_by_id(id).await? {
            Some(t) => Ok(Some(self.remember(t))),
            None => {
                if let Some((_, c)) = self.by_id.remove(&id) {
                    self.by_name.remove(&c.topic.name);
                }
                Ok(None)
            }
        }
    }

    /// Every topic, read from the metadata store.
    pub async fn list(&self) -> Result<Vec<Arc<TopicMeta>>, MetaError> {
        let topics = self.meta.topics().await?;
        Ok(topics.into_iter().map(|t| self.remember(t)).collect())
    }

    pub async fn create(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<TopicMeta>, MetaError> {
        let topic = self.meta.create_topic(name, partitions, configs).await?;
        tracing::info!(topic = name, partitions, id = %topic.id, "topic.created");
        Ok(self.remember(topic))
    }

    /// Returns the topic, creating it with the default partition count if it does not
    /// exist (racing creators both end up with the same topic).
    pub async fn get_or_create(
        &self,
        name: &str,
        partitions: i32,
    ) -> Result<Arc<TopicMeta>, MetaError> {
        if let Some(t) = self.get(name).await? {
            return Ok(t);
        }
        match self.create(name, partitions, BTreeMap::new()).await {
            Err(MetaError::TopicExists(_)) => self
                .get(name)
                .await?
                .ok_or_else(|| MetaError::UnknownTopic(name.to_string())),
            other => other,
        }
    }

    pub async fn delete(
        &self,
        name: Option<&str>,
        id: Option<Uuid>,
    ) -> Result<TopicMeta, MetaError> {
        let topic = self.meta.delete_topic(name, id).await?;
        self.forget(&topic.name, topic.id);
        tracing::info!(topic = %topic.name, id = %topic.id, "topic.deleted");
        Ok(topic)
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        total: i32,
    ) -> Result<Arc<TopicMeta>, MetaError> {
        let topic = self.meta.create_partitions(name, total).await?;
        Ok(self.remember(topic))
    }

    pub async fn alter_configs(
        &self,
        name: &str,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<Arc<TopicMeta>, MetaError> {
        let topic = self.meta.alter_topic_configs(name, changes).await?;
        Ok(self.remember(topic))
    }
}

/// The effective value of a topic config (the topic's own, else the default).
pub fn effective_config<'a>(topic: &'a TopicMeta, name: &str) -> Option<&'a str> {
    topic
        .configs
        .get(name)
        .map(String::as_str)
        .or_else(|| config_def(name).map(|d| d.default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("orders.v1_x-y").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("..").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn configs() {
        assert!(validate_config("retention.ms", "1000").is_ok());
        assert!(validate_config("retention.ms", "soon").is_err());
        for ok in [
            "0.10.0",
            "0.10.0.0",
            "0.11.0-IV2",
            "2.8",
            "2.8.1",
            "3.0-IV1",
        ] {
            assert!(
                validate_config("message.format.version", ok).is_ok(),
                "{ok}"
            );
        }
        for bad in ["", "3", "three", "3.0-IV", "3..0", "3.0-beta", "1.2.3.4.5"] {
            assert!(
                validate_config("message.format.version", bad).is_err(),
                "{bad}"
            );
        }
        assert!(validate_config("no.such.config", "1").is_err());
        assert!(validate_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_config("cleanup.policy", "forever").is_err());
    }
}
