//! Broker membership: every broker registers with a lease it renews; a broker whose lease
//! lapsed is dead to the others. Node ids are allocated when not configured.

use serde::{Deserialize, Serialize};

use super::keys;
use super::values::{decode_i64, encode_i64};
use super::{MetaError, MetaStore, Result};
use crate::kv::{prefix_end, KvStoreExt};

const BROKER: u8 = b'b';

fn broker_key(node_id: i32) -> Vec<u8> {
    let mut k = vec![BROKER];
    k.extend_from_slice(&(node_id as u32).to_be_bytes());
    k
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Distinguishes restarts of the same node id.
    pub incarnation: String,
    pub expires_ms: i64,
    /// The address of each listener (by security protocol name) when the broker has more
    /// than one; `host` and `port` are its first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerAddress>,
}

/// Where a broker's listener is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerAddress {
    pub name: String,
    pub host: String,
    pub port: i32,
}

impl BrokerRecord {
    /// The address clients of `listener` use (the first listener's when the broker has
    /// none of that name).
    pub fn address(&self, listener: &str) -> (String, i32) {
        self.listeners
            .iter()
            .find(|l| l.name == listener)
            .map_or_else(
                || (self.host.clone(), self.port),
                |l| (l.host.clone(), l.port),
            )
    }
}

impl MetaStore {
    /// A node id no broker has used.
    pub async fn allocate_node_id(&self) -> Result<i32> {
        self.kv
            .transact(|tx| {
                Box::pin(async move {
                    let key = keys::counter("node_id");
                    let next = match tx.get(&key).await? {
                        Some(v) => decode_i64(&v, "node id counter")?,
                        None => 1,
                    };
                    tx.set(&key, &encode_i64(next + 1));
                    Ok(next as i32)
                })
            })
            .await
    }

    /// Registers or renews a broker until `now + lease_ms`. Fails if a live broker of
    /// another incarnation holds the node id, unless it advertises the same address (the
    /// same broker restarted before its old lease lapsed) or `takeover` is set.
    pub async fn register_broker(
        &self,
        record: BrokerRecord,
        lease_ms: i64,
        takeover: bool,
    ) -> Result<()> {
        let now = self.now_ms();
        self.kv
            .transact(|tx| {
                let mut record = record.clone();
                Box::pin(async move {
                    let key = broker_key(record.node_id);
                    if let Some(v) = tx.get(&key).await? {
                        let current: BrokerRecord =
                            serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt {
                                what: "broker record",
                                reason: e.to_string(),
                            })?;
                        let same_address =
                            current.host == record.host && current.port == record.port;
                        if current.incarnation != record.incarnation
                            && current.expires_ms > now
                            && !takeover
                            && !same_address
                        {
                            return Err(MetaError::NodeIdInUse(record.node_id));
                        }
                    }
                    record.expires_ms = now + lease_ms;
                    tx.set(&key, &serde_json::to_vec(&record).unwrap_or_default());
                    Ok(())
                })
            })
            .await
    }

    /// Removes a broker's registration (clean shutdown).
    pub async fn deregister_broker(&self, node_id: i32, incarnation: &str) -> Result<()> {
        let incarnation = incarnation.to_owned();
        self.kv
            .transact(|tx| {
                let incarnation = incarnation.clone();
                Box::pin(async move {
                    let key = broker_key(node_id);
                    if let Some(v) = tx.get(&key).await? {
                        if let Ok(current) = serde_json::from_slice::<BrokerRecord>(&v) {
                            if current.incarnation == incarnation {
                                tx.clear(&key);
                            }
                        }
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Brokers whose lease has not lapsed, by node id.
    pub async fn live_brokers(&self) -> Result<Vec<BrokerRecord>> {
        let now = self.now_ms();
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let begin = [BROKER];
                    let rows = tx.get_range(&begin, &prefix_end(&begin), 0, false).await?;
                    let mut out = Vec::new();
                    for (_, v) in rows {
                        let r: BrokerRecord =
                            serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt {
                                what: "broker record",
                                reason: e.to_string(),
                            })?;
                        if r.expires_ms > now {
                            out.push(r);
                        }
                    }
                    Ok(out)
                })
            })
            .await
    }

    /// High watermarks and log starts of several partitions in one read.
    pub async fn partition_states(
        &self,
        partitions: &[(uuid::Uuid, i32)],
    ) -> Result<Vec<Option<super::PartitionState>>> {
        let keys: Vec<Vec<u8>> = partitions
            .iter()
            .map(|(t, p)| keys::partition(*t, *p))
            .collect();
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    tx.get_many(&keys)
                        .await?
                        .into_iter()
                        .map(|v| v.map(|v| super::PartitionState::decode(&v)).transpose())
                        .collect()
                })
            })
            .await
    }
}
