//! Topics: creation, deletion (deferred cleanup of the index), partition growth, configs.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::keys;
use super::values::{PartitionState, TopicMeta};
use super::{MetaError, MetaStore, Result};
use crate::kv::{prefix_end, KvStoreExt, KvTxn};

/// Upper bound on partitions per topic, to keep one transaction small.
pub const MAX_PARTITIONS: i32 = 10_000;

async fn load_topic(tx: &mut dyn KvTxn, name: &str) -> Result<Option<TopicMeta>> {
    tx.get(&keys::topic(name))
        .await?
        .map(|v| TopicMeta::decode(&v))
        .transpose()
}

async fn load_topic_by_id(tx: &mut dyn KvTxn, id: Uuid) -> Result<Option<TopicMeta>> {
    let Some(name) = tx.get(&keys::topic_id(id)).await? else {
        return Ok(None);
    };
    let name = String::from_utf8_lossy(&name).into_owned();
    load_topic(tx, &name).await
}

fn check_partitions(partitions: i32) -> Result<()> {
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(MetaError::InvalidPartitions(format!(
            "{partitions} is not between 1 and {MAX_PARTITIONS}"
        )));
    }
    Ok(())
}

impl MetaStore {
    /// Creates a topic with a new random id and empty partitions.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta> {
        check_partitions(partitions)?;
        let now = self.now_ms();
        let id = Uuid::new_v4();
        self.kv
            .transact(|tx| {
                let configs = configs.clone();
                let name = name.to_owned();
                Box::pin(async move {
                    let name = name.as_str();
                    if load_topic(tx, name).await?.is_some() {
                        return Err(MetaError::TopicExists(name.to_string()));
                    }
                    let topic = TopicMeta {
                        v: TopicMeta::VERSION,
                        id,
                        name: name.to_string(),
                        partitions,
                        configs,
                        created_ms: now,
                    };
                    tx.set(&keys::topic(name), &topic.encode());
                    tx.set(&keys::topic_id(id), name.as_bytes());
                    let empty = PartitionState::default().encode();
                    for p in 0..partitions {
                        tx.set(&keys::partition(id, p), &empty);
                    }
                    Ok(topic)
                })
            })
            .await
    }

    pub async fn topic(&self, name: &str) -> Result<Option<TopicMeta>> {
        self.kv
            .read(|tx| {
                let name = name.to_owned();
                Box::pin(async move { load_topic(tx, &name).await })
            })
            .await
    }

    pub async fn topic_by_id(&self, id: Uuid) -> Result<Option<TopicMeta>> {
        self.kv
            .read(|tx| Box::pin(async move { load_topic_by_id(tx, id).await }))
            .await
    }

    /// All topics, by name.
    pub async fn topics(&self) -> Result<Vec<TopicMeta>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let begin = [keys::TOPIC];
                    let rows = tx.get_range(&begin, &prefix_end(&begin), 0, false).await?;
                    rows.iter().map(|(_, v)| TopicMeta::decode(v)).collect()
                })
            })
            .await
    }

    /// Deletes a topic by name or id. The name is free again at once; the partitions'
    /// index entries and producer states are removed later by
    /// [`MetaStore::purge_deleted_topic`], since they may be too many for one transaction.
    pub async fn delete_topic(&self, name: Option<&str>, id: Option<Uuid>) -> Result<TopicMeta> {
        self.kv
            .transact(|tx| {
                let name = name.map(str::to_owned);
                Box::pin(async move {
                    let topic = match (name.as_deref(), id) {
                        (Some(name), _) => load_topic(tx, name)
                            .await?
                            .ok_or_else(|| MetaError::UnknownTopic(name.to_string()))?,
                        (None, Some(id)) => load_topic_by_id(tx, id)
                            .await?
                            .ok_or(MetaError::UnknownTopicId(id))?,
                        (None, None) => return Err(MetaError::UnknownTopic(String::new())),
                    };
                    tx.clear(&keys::topic(&topic.name));
                    tx.clear(&keys::topic_id(topic.id));
                    let parts = keys::partitions_of(topic.id);
                    tx.clear_range(&parts, &prefix_end(&parts));
                    tx.set(&keys::deleted_topic(topic.id), &topic.encode());
                    Ok(topic)
                })
            })
            .await
    }

    /// Grows a topic to `total` partitions.
    pub async fn create_partitions(&self, name: &str, total: i32) -> Result<TopicMeta> {
        check_partitions(total)?;
        self.kv
            .transact(|tx| {
                let name = name.to_owned();
                Box::pin(async move {
                    let name = name.as_str();
                    let mut topic = load_topic(tx, name)
                        .await?
                        .ok_or_else(|| MetaError::UnknownTopic(name.to_string()))?;
                    if total <= topic.partitions {
                        return Err(MetaError::InvalidPartitions(format!(
                            "topic {name:?} has {} partitions; the new count must be larger, \
                             not {total}",
                            topic.partitions
                        )));
                    }
                    let empty = PartitionState::default().encode();
                    for p in topic.partitions..total {
                        tx.set(&keys::partition(topic.id, p), &empty);
                    }
                    topic.partitions = total;
                    tx.set(&keys::topic(name), &topic.encode());
                    Ok(topic)
                })
            })
            .await
    }

    /// Sets (`Some`) or removes (`None`, back to the default) topic configs.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<TopicMeta> {
        self.kv
            .transact(|tx| {
                let changes = changes.clone();
                let name = name.to_owned();
                Box::pin(async move {
                    let name = name.as_str();
                    let mut topic = load_topic(tx, name)
                        .await?
                        .ok_or_else(|| MetaError::UnknownTopic(name.to_string()))?;
                    for (key, value) in changes {
                        match value {
                            Some(v) => topic.configs.insert(key, v),
                            None => topic.configs.remove(&key),
                        };
                    }
                    tx.set(&keys::topic(name), &topic.encode());
                    Ok(topic)
                })
            })
            .await
    }

    /// Deleted topics whose data still awaits cleanup.
    pub async fn deleted_topics(&self) -> Result<Vec<TopicMeta>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let begin = [keys::DELETED_TOPIC];
                    let rows = tx.get_range(&begin, &prefix_end(&begin), 0, false).await?;
                    rows.iter().map(|(_, v)| TopicMeta::decode(v)).collect()
                })
            })
            .await
    }

    /// Removes up to `batch` index entries of a deleted topic, releasing their segments;
    /// when none remain, removes its producer states and the deletion marker. Returns true
    /// when the topic is fully purged. Idempotent: safe to run again after any failure.
    pub async fn purge_deleted_topic(&self, id: Uuid, batch: usize) -> Result<bool> {
        let now = self.now_ms();
        self.kv
            .transact(|tx| {
                Box::pin(async move {
                    let prefix = keys::index_of_topic(id);
                    let rows = tx
                        .get_range(&prefix, &prefix_end(&prefix), batch, false)
                        .await?;
                    if rows.is_empty() {
                        let producers = keys::producers_of_topic(id);
                        tx.clear_range(&producers, &prefix_end(&producers));
                        let aborted = keys::aborted_of_topic(id);
                        tx.clear_range(&aborted, &prefix_end(&aborted));
                        tx.clear(&keys::deleted_topic(id));
                        return Ok(true);
                    }
                    let mut entries = Vec::with_capacity(rows.len());
                    for (k, v) in &rows {
                        let last = keys::index_last_offset(k).unwrap_or_default();
                        entries.push(super::IndexEntry::decode(last, v)?);
                        tx.clear(k);
                    }
                    super::segments::release_entries(tx, &entries, now).await?;
                    Ok(false)
                })
            })
            .await
    }
}
