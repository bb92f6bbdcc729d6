//! Consumer groups: committed offsets (durable when the commit returns) and the group
//! record a coordinator saves at every stable point, so groups survive restarts and move
//! between coordinators.

use bytes::{Buf, BufMut};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{MetaError, MetaStore, Result};
use crate::kv::{prefix_end, KvStoreExt};

const GROUP: u8 = b'g';
const OFFSET: u8 = b'o';

fn group_key(group: &str) -> Vec<u8> {
    let mut k = vec![GROUP];
    k.extend_from_slice(group.as_bytes());
    k
}

fn offsets_prefix(group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + group.len() + 20);
    k.push(OFFSET);
    k.extend_from_slice(&(group.len() as u16).to_be_bytes());
    k.extend_from_slice(group.as_bytes());
    k
}

fn offset_key(group: &str, topic_id: Uuid, partition: i32) -> Vec<u8> {
    let mut k = offsets_prefix(group);
    k.extend_from_slice(topic_id.as_bytes());
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

fn parse_offset_key(key: &[u8]) -> Option<(String, Uuid, i32)> {
    let len = u16::from_be_bytes(key.get(1..3)?.try_into().ok()?) as usize;
    let group = String::from_utf8(key.get(3..3 + len)?.to_vec()).ok()?;
    let rest = key.get(3 + len..)?;
    let id = Uuid::from_bytes(rest.get(..16)?.try_into().ok()?);
    let p = u32::from_be_bytes(rest.get(16..20)?.try_into().ok()?) as i32;
    Some((group, id, p))
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

impl CommittedOffset {
    const VERSION: u8 = 1;

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24);
        b.put_u8(Self::VERSION);
        b.put_i64(self.offset);
        b.put_i32(self.leader_epoch);
        b.put_i64(self.commit_ms);
        match &self.metadata {
            None => b.put_i32(-1),
            Some(m) => {
                b.put_i32(m.len() as i32);
                b.put_slice(m.as_bytes());
            }
        }
        b
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: &str| MetaError::Corrupt {
            what: "committed offset",
            reason: reason.to_string(),
        };
        if bytes.len() < 25 {
            return Err(corrupt("too short"));
        }
        if bytes.get_u8() != Self::VERSION {
            return Err(corrupt("unknown version"));
        }
        let offset = bytes.get_i64();
        let leader_epoch = bytes.get_i32();
        let commit_ms = bytes.get_i64();
        let len = bytes.get_i32();
        let metadata = if len < 0 {
            None
        } else {
            let len = len as usize;
            if bytes.len() < len {
                return Err(corrupt("metadata truncated"));
            }
            Some(String::from_utf8_lossy(&bytes[..len]).into_owned())
        };
        Ok(Self {
            offset,
            leader_epoch,
            metadata,
            commit_ms,
        })
    }
}

/// A member as the group record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (protocol name, subscription metadata) in preference order.
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

/// A classic group at its last stable point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub v: u32,
    pub group_id: String,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: Vec<StoredMember>,
    pub saved_ms: i64,
}

impl GroupRecord {
    pub const VERSION: u32 = 1;
}

/// Writes committed offsets of a group inside a metadata transaction.
pub(super) fn write_offsets(
    tx: &mut dyn crate::kv::KvTxn,
    group: &str,
    offsets: &[(Uuid, i32, CommittedOffset)],
) {
    for (topic, p, o) in offsets {
        tx.set(&offset_key(group, *topic, *p), &o.encode());
    }
}

impl MetaStore {
    /// Stores committed offsets atomically; durable when this returns.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(Uuid, i32, CommittedOffset)>,
    ) -> Result<()> {
        let group = group.to_owned();
        self.kv
            .transact(|tx| {
                let (group, offsets) = (group.clone(), offsets.clone());
                Box::pin(async move {
                    write_offsets(tx, &group, &offsets);
                    Ok(())
                })
            })
            .await
    }

    /// Committed offsets of a group: of the given partitions, or all of them.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<(Uuid, i32)>>,
    ) -> Result<Vec<(Uuid, i32, CommittedOffset)>> {
        let group = group.to_owned();
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let mut out = Vec::new();
                    match partitions {
                        Some(list) => {
                            let keys: Vec<Vec<u8>> = list
                                .iter()
                                .map(|(t, p)| offset_key(&group, *t, *p))
                                .collect();
                            for ((t, p), v) in list.iter().zip(tx.get_many(&keys).await?) {
                                if let Some(v) = v {
                                    out.push((*t, *p, CommittedOffset::decode(&v)?));
                                }
                            }
                        }
                        None => {
                            let prefix = offsets_prefix(&group);
                            for (k, v) in tx
                                .get_range(&prefix, &prefix_end(&prefix), 0, false)
                                .await?
                            {
                                if let Some((_, t, p)) = parse_offset_key(&k) {
                                    out.push((t, p, CommittedOffset::decode(&v)?));
                                }
                            }
                        }
                    }
                    Ok(out)
                })
            })
            .await
    }

    pub async fn delete_offsets(&self, group: &str, partitions: Vec<(Uuid, i32)>) -> Result<()> {
        let group = group.to_owned();
        self.kv
            .transact(|tx| {
                let (group, partitions) = (group.clone(), partitions.clone());
                Box::pin(async move {
                    for (t, p) in &partitions {
                        tx.clear(&offset_key(&group, *t, *p));
                    }
                    Ok(())
                })
            })
            .await
    }

    pub async fn save_group(&self, record: &GroupRecord) -> Result<()> {
        let value = serde_json::to_vec(record).unwrap_or_default();
        let key = group_key(&record.group_id);
        self.kv
            .transact(|tx| {
                let (key, value) = (key.clone(), value.clone());
                Box::pin(async move {
                    tx.set(&key, &value);
                    Ok(())
                })
            })
            .await
    }

    pub async fn load_group(&self, group: &str) -> Result<Option<GroupRecord>> {
        let key = group_key(group);
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    tx.get(&key)
                        .await?
                        .map(|v| {
                            serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt {
                                what: "group record",
                                reason: e.to_string(),
                            })
                        })
                        .transpose()
                })
            })
            .await
    }

    /// Every group with a record or committed offsets.
    pub async fn group_ids(&self) -> Result<Vec<String>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let mut ids = std::collections::BTreeSet::new();
                    let g = [GROUP];
                    for (k, _) in tx.get_range(&g, &prefix_end(&g), 0, false).await? {
                        ids.insert(String::from_utf8_lossy(&k[1..]).into_owned());
                    }
                    let o = [OFFSET];
                    let mut from = o.to_vec();
                    let end = prefix_end(&o);
                    // One row per group: skip past each group's offsets.
                    loop {
                        let row = tx.get_range(&from, &end, 1, false).await?;
                        let Some((k, _)) = row.first() else { break };
                        let Some((group, _, _)) = parse_offset_key(k) else {
                            break;
                        };
                        from = prefix_end(&offsets_prefix(&group));
                        ids.insert(group);
                    }
                    Ok(ids.into_iter().collect())
                })
            })
            .await
    }

    /// Removes a group's record and offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let group = group.to_owned();
        self.kv
            .transact(|tx| {
                let group = group.clone();
                Box::pin(async move {
                    tx.clear(&group_key(&group));
                    let prefix = offsets_prefix(&group);
                    tx.clear_range(&prefix, &prefix_end(&prefix));
                    Ok(())
                })
            })
            .await
    }

    /// Deletes offsets committed before `cutoff_ms` for the groups in `groups` (groups
    /// without members, per `offsets.retention.minutes`). Returns how many were removed.
    pub async fn expire_offsets(&self, groups: &[String], cutoff_ms: i64) -> Result<usize> {
        let mut removed = 0;
        for group in groups {
            let stale: Vec<(Uuid, i32)> = self
                .fetch_offsets(group, None)
                .await?
                .into_iter()
                .filter(|(_, _, o)| o.commit_ms < cutoff_ms)
                .map(|(t, p, _)| (t, p))
                .collect();
            removed += stale.len();
            if !stale.is_empty() {
                self.delete_offsets(group, stale).await?;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_values_round_trip() {
        for metadata in [None, Some(String::new()), Some("checkpoint-7".to_string())] {
            let o = CommittedOffset {
                offset: 42,
                leader_epoch: 0,
                metadata,
                commit_ms: 1_700_000_000_000,
            };
            assert_eq!(CommittedOffset::decode(&o.encode()).expect("decode"), o);
        }
        let id = Uuid::new_v4();
        assert_eq!(
            parse_offset_key(&offset_key("g1", id, 7)),
            Some(("g1".to_string(), id, 7))
        );
    }
}
