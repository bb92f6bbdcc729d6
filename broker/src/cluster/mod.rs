//! The leaderless cluster: this broker's registration (renewed lease), the live brokers,
//! and rendezvous hashing over them for partition "leaders" (only a load-spreading hint:
//! every broker serves every partition) and group coordinators; what every broker shares
//! besides: the [`topics`] and the dynamic [`broker_configs`].

pub mod broker_configs;
pub mod topics;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use icestream_storage::meta::BrokerRecord;
use icestream_storage::{MetaError, MetaStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::Endpoint;

pub struct Cluster {
    meta: MetaStore,
    pub me: Endpoint,
    incarnation: String,
    lease_ms: i64,
    live: RwLock<Vec<BrokerRecord>>,
}

/// FNV-1a, then a splitmix64 finish: stable across processes and versions.
fn score(key: &[u8], node: i32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.iter().chain(node.to_be_bytes().iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Cluster {
    /// Registers this broker and keeps its lease renewed (and the live list fresh) until
    /// `shutdown`, then deregisters it.
    pub async fn start(
        meta: MetaStore,
        me: Endpoint,
        lease_ms: i64,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Self>, JoinHandle<()>), MetaError> {
        let cluster = Arc::new(Self {
            meta,
            incarnation: Uuid::new_v4().to_string(),
            lease_ms,
            live: RwLock::new(Vec::new()),
            me,
        });
        // Another live broker with our node id: wait for its lease to lapse (a crashed
        // predecessor), then give up.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(lease_ms as u64 + 1000);
        loop {
            match cluster.renew().await {
                Err(MetaError::NodeIdInUse(id)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(
                        node_id = id,
                        "node id registered by a live broker; waiting for its lease"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => break other?,
            }
        }
        cluster.refresh().await?;
        let task = {
            let c = cluster.clone();
            tokio::spawn(async move {
                let renew_every = Duration::from_millis((c.lease_ms / 3).max(100) as u64);
                let mut last_renew = tokio::time::Instant::now();
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    if last_renew.elapsed() >= renew_every {
                        match c.renew().await {
                            Ok(()) => last_renew = tokio::time::Instant::now(),
                            Err(e) => {
                                tracing::warn!(error = %e, "renewing the broker lease failed")
                            }
                        }
                    }
                    if let Err(e) = c.refresh().await {
                        tracing::warn!(error = %e, "reading live brokers failed");
                    }
                }
                if let Err(e) = c.meta.deregister_broker(c.me.node_id, &c.incarnation).await {
                    tracing::warn!(error = %e, "deregistering failed");
                }
            })
        };
        Ok((cluster, task))
    }

    fn record(&self) -> BrokerRecord {
        BrokerRecord {
            node_id: self.me.node_id,
            host: self.me.host.clone(),
            port: self.me.port,
            rack: self.me.rack.clone(),
            incarnation: self.incarnation.clone(),
            expires_ms: 0,
            listeners: self.me.listeners.clone(),
        }
    }

    async fn renew(&self) -> Result<(), MetaError> {
        // The embedded store is exclusive to this process: any registration in it is a
        // previous run's.
        let takeover = !self.meta.kv().shared();
        self.meta
            .register_broker(self.record(), self.lease_ms, takeover)
            .await
    }

    async fn refresh(&self) -> Result<(), MetaError> {
        let mut live = self.meta.live_brokers().await?;
        if !live.iter().any(|b| b.node_id == self.me.node_id) {
            live.push(self.record());
        }
        live.sort_by_key(|b| b.node_id);
        let before: Vec<i32> = self.brokers().iter().map(|b| b.node_id).collect();
        let after: Vec<i32> = live.iter().map(|b| b.node_id).collect();
        if before != after && !before.is_empty() {
            tracing::info!(?after, "cluster.membership");
        }
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
        Ok(())
    }

    /// Live brokers (always including this one), by node id.
    pub fn brokers(&self) -> Vec<BrokerRecord> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn pick(&self, key: &[u8]) -> BrokerRecord {
        self.brokers()
            .into_iter()
            .max_by_key(|b| score(key, b.node_id))
            .unwrap_or_else(|| self.record())
    }

    /// The broker Metadata names as a partition's leader.
    pub fn leader(&self, topic_id: Uuid, partition: i32) -> i32 {
        let mut key = topic_id.as_bytes().to_vec();
        key.extend_from_slice(&partition.to_be_bytes());
        self.pick(&key).node_id
    }

    /// KIP-392: the broker a consumer in `rack` should fetch a partition from, when this
    /// broker is the partition's leader but not in that rack: a live broker of the rack,
    /// by the same hashing (every broker serves every partition). `None`: fetch here.
    pub fn preferred_read_replica(
        &self,
        topic_id: Uuid,
        partition: i32,
        rack: &str,
    ) -> Option<i32> {
        if rack.is_empty() || self.me.rack.as_deref() == Some(rack) {
            return None;
        }
        if self.leader(topic_id, partition) != self.me.node_id {
            // The client already fetches from a replica of its choosing.
            return None;
        }
        let mut key = topic_id.as_bytes().to_vec();
        key.extend_from_slice(&partition.to_be_bytes());
        self.brokers()
            .into_iter()
            .filter(|b| b.rack.as_deref() == Some(rack) && b.node_id != self.me.node_id)
            .max_by_key(|b| score(&key, b.node_id))
            .map(|b| b.node_id)
    }

    /// The broker coordinating a group (or transactional id).
    pub fn coordinator(&self, key: &str) -> BrokerRecord {
        self.pick(key.as_bytes())
    }

    pub fn is_coordinator(&self, key: &str) -> bool {
        self.coordinator(key).node_id == self.me.node_id
    }

    pub fn controller(&self) -> i32 {
        self.brokers()
            .first()
            .map(|b| b.node_id)
            .unwrap_or(self.me.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_the_dead_brokers_keys() {
        let nodes = [1, 2, 3];
        let pick = |nodes: &[i32], key: &[u8]| {
            *nodes.iter().max_by_key(|n| score(key, **n)).expect("nodes")
        };
        let keys: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let before: Vec<i32> = keys.iter().map(|k| pick(&nodes, k)).collect();
        for n in nodes {
            let share = before.iter().filter(|b| **b == n).count();
            assert!(share > 60, "node {n} got {share} of 300 keys");
        }
        let after: Vec<i32> = keys.iter().map(|k| pick(&[1, 3], k)).collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(a, b, "keys of live brokers stay put");
            }
        }
    }
}
