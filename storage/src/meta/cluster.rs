//! Cluster-wide identity: the cluster id, created once by the first broker.

use uuid::Uuid;

use super::keys;
use super::{MetaStore, Result};
use crate::kv::KvStoreExt;

const CLUSTER_ID: &str = "cluster_id";

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

fn encode_cluster_id(id: Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 0x3f) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 0x3f) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = encode_cluster_id(Uuid::from_u128(0));
        assert_eq!(id, "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(encode_cluster_id(Uuid::new_v4()).len(), 22);
    }
}
