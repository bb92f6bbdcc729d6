//! Cluster-wide identity and settings: the cluster id, created once by the first broker,
//! and the dynamic broker configs (Kafka's AlterConfigs on the broker resource).

use std::collections::BTreeMap;

use uuid::Uuid;

use super::keys;
use super::{MetaError, MetaStore, Result};
use crate::kv::KvStoreExt;

const CLUSTER_ID: &str = "cluster_id";
const BROKER_CONFIGS: &str = "broker_configs";

fn decode_configs(v: Option<bytes::Bytes>) -> Result<BTreeMap<String, String>> {
    match v {
        None => Ok(BTreeMap::new()),
        Some(v) => serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt {
            what: "broker configs",
            reason: e.to_string(),
        }),
    }
}

impl MetaStore {
    /// The cluster id, created on first use (Kafka-style: 22 characters of url-safe
    /// base64 of a random uuid).
    pub async fn cluster_id(&self) -> Result<String> {
        let fresh = encode_cluster_id(Uuid::new_v4());
        self.kv
            .transact(|tx| {
                let fresh = fresh.clone();
                Box::pin(async move {
                    let key = keys::counter(CLUSTER_ID);
                    if let Some(v) = tx.get(&key).await? {
                        return Ok(String::from_utf8_lossy(&v).into_owned());
                    }
                    tx.set(&key, fresh.as_bytes());
                    Ok(fresh)
                })
            })
            .await
    }
}

impl MetaStore {
    /// The dynamic broker configs every broker applies (name → value).
    pub async fn broker_configs(&self) -> Result<BTreeMap<String, String>> {
        self.kv
            .read(|tx| {
                Box::pin(
                    async move { decode_configs(tx.get(&keys::counter(BROKER_CONFIGS)).await?) },
                )
            })
            .await
    }

    /// Applies `changes` (`None` removes a config) to the dynamic broker configs, after
    /// removing every config first when `replace` (legacy AlterConfigs replaces the set);
    /// returns the configs now in force.
    pub async fn alter_broker_configs(
        &self,
        changes: &[(String, Option<String>)],
        replace: bool,
    ) -> Result<BTreeMap<String, String>> {
        let changes = changes.to_vec();
        self.kv
            .transact(|tx| {
                let changes = changes.clone();
                Box::pin(async move {
                    let key = keys::counter(BROKER_CONFIGS);
                    let mut configs = if replace {
                        BTreeMap::new()
                    } else {
                        decode_configs(tx.get(&key).await?)?
                    };
                    for (name, value) in changes {
                        match value {
                            Some(v) => configs.insert(name, v),
                            None => configs.remove(&name),
                        };
                    }
                    let encoded = serde_json::to_vec(&configs).map_err(|e| MetaError::Corrupt {
                        what: "broker configs",
                        reason: e.to_string(),
                    })?;
                    tx.set(&key, &encoded);
                    Ok(configs)
                })
            })
            .await
    }
}

/// Kafka's form: URL-safe base64 of the 16 bytes, unpadded (22 characters).
fn encode_cluster_id(id: Uuid) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = encode_cluster_id(Uuid::from_u128(0));
        assert_eq!(id, "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(encode_cluster_id(Uuid::new_v4()).len(), 22);
        // Six bits per character, in the URL-safe alphabet, as Kafka writes them.
        let id = Uuid::from_u128(0x00108310_5187_2092_8b30_d38f41149351);
        assert_eq!(encode_cluster_id(id), "ABCDEFGHIJKLMNOPQRSTUQ");
        let id = Uuid::from_u128(u128::MAX);
        assert_eq!(encode_cluster_id(id), "_____________________w");
    }
}
