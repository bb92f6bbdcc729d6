//! Security state shared by every broker: users' SCRAM credentials (salted, never the
//! password) and ACL bindings.

use serde::{Deserialize, Serialize};

use super::keys;
use super::{MetaError, MetaStore, Result};
use crate::kv::{prefix_end, KvStoreExt};

/// A user's SCRAM credential for one mechanism (RFC 5802: the salt, the iteration count,
/// and the stored and server keys derived from the salted password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// One ACL binding, with Kafka's codes for the resource type, pattern type, operation and
/// permission type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission_type: i8,
}

fn corrupt(what: &'static str, e: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt {
        what,
        reason: e.to_string(),
    }
}

fn acl_key(binding: &AclBinding) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(binding).map_err(|e| corrupt("acl", e))?;
    Ok(keys::acl(&json))
}

impl MetaStore {
    /// Sets (or replaces) a user's credential for `mechanism`.
    pub async fn set_scram_credential(
        &self,
        user: &str,
        mechanism: &str,
        credential: &ScramCredential,
    ) -> Result<()> {
        let key = keys::scram_credential(user, mechanism);
        let value = serde_json::to_vec(credential).map_err(|e| corrupt("credential", e))?;
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

    /// Removes a user's credential for `mechanism`; `false` if there was none.
    pub async fn delete_scram_credential(&self, user: &str, mechanism: &str) -> Result<bool> {
        let key = keys::scram_credential(user, mechanism);
        self.kv
            .transact(|tx| {
                let key = key.clone();
                Box::pin(async move {
                    let there = tx.get(&key).await?.is_some();
                    tx.clear(&key);
                    Ok(there)
                })
            })
            .await
    }

    pub async fn scram_credential(
        &self,
        user: &str,
        mechanism: &str,
    ) -> Result<Option<ScramCredential>> {
        let key = keys::scram_credential(user, mechanism);
        self.kv
            .read(|tx| {
                let key = key.clone();
                Box::pin(async move {
                    tx.get(&key)
                        .await?
                        .map(|v| serde_json::from_slice(&v).map_err(|e| corrupt("credential", e)))
                        .transpose()
                })
            })
            .await
    }

    /// Every user with credentials: (user, mechanism, iterations), sorted by user.
    pub async fn scram_users(&self) -> Result<Vec<(String, String, u32)>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let prefix = keys::scram_credentials();
                    let rows = tx
                        .get_range(&prefix, &prefix_end(&prefix), 0, false)
                        .await?;
                    let mut out = Vec::new();
                    for (k, v) in rows {
                        let Some((user, mechanism)) = keys::scram_credential_of(&k) else {
                            continue;
                        };
                        let c: ScramCredential =
                            serde_json::from_slice(&v).map_err(|e| corrupt("credential", e))?;
                        out.push((user, mechanism, c.iterations));
                    }
                    Ok(out)
                })
            })
            .await
    }

    /// Adds ACL bindings (adding one that exists changes nothing).
    pub async fn create_acls(&self, bindings: &[AclBinding]) -> Result<()> {
        let keys = bindings.iter().map(acl_key).collect::<Result<Vec<_>>>()?;
        self.kv
            .transact(|tx| {
                let keys = keys.clone();
                Box::pin(async move {
                    for k in &keys {
                        tx.set(k, b"");
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Removes ACL bindings; the ones that were there.
    pub async fn delete_acls(&self, bindings: &[AclBinding]) -> Result<Vec<AclBinding>> {
        let keyed = bindings
            .iter()
            .map(|b| Ok((acl_key(b)?, b.clone())))
            .collect::<Result<Vec<_>>>()?;
        self.kv
            .transact(|tx| {
                let keyed = keyed.clone();
                Box::pin(async move {
                    let mut removed = Vec::new();
                    for (k, b) in keyed {
                        if tx.get(&k).await?.is_some() {
                            tx.clear(&k);
                            removed.push(b);
                        }
                    }
                    Ok(removed)
                })
            })
            .await
    }

    /// Every ACL binding.
    pub async fn acls(&self) -> Result<Vec<AclBinding>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let prefix = keys::acls();
                    let rows = tx
                        .get_range(&prefix, &prefix_end(&prefix), 0, false)
                        .await?;
                    rows.iter()
                        .map(|(k, _)| {
                            serde_json::from_slice(&k[prefix.len()..])
                                .map_err(|e| corrupt("acl", e))
                        })
                        .collect()
                })
            })
            .await
    }
}
