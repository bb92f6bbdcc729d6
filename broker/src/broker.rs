//! The broker: its components (metadata store, object store, topic cache, read side,
//! appender) built from settings, shared by every connection.

use std::sync::Arc;

use icestream_storage::kv::{self, KvError};
use icestream_storage::meta::ListenerAddress;
use icestream_storage::{MetaError, MetaStore, Objects, SystemClock};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::topics::Topics;
use crate::log::appender::{Appender, AppenderConfig};
use crate::log::Log;
use crate::security::ListenerConfig;
use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("metadata store: {0}")]
    Metadata(#[from] KvError),
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
    #[error("object store: {0}")]
    Objects(#[from] icestream_storage::objects::ObjectStoreUrlError),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listener {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("advertised listener {0:?} is not host:port")]
    Advertised(String),
    #[error("security: {0}")]
    Security(String),
}

/// Components given to the broker instead of being opened from the settings' URLs: the
/// seams through which tests inject fault-injecting stores (and through which an embedding
/// program can share its own). Settings stay plain data; components are objects.
#[derive(Default, Clone)]
pub struct Components {
    /// The metadata store (default: opened from `settings.metadata`).
    pub kv: Option<Arc<dyn icestream_storage::kv::KvStore>>,
    /// The object store (default: opened from `settings.object_store`).
    pub objects: Option<Objects>,
    /// The clock of the metadata store: leases, retention, segment ages (default: the
    /// system clock).
    pub clock: Option<Arc<dyn icestream_storage::Clock>>,
}

/// Where clients reach this broker.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Every listener's advertised address (empty with a single listener).
    pub listeners: Vec<ListenerAddress>,
}

pub struct Broker {
    pub settings: Settings,
    pub cluster_id: String,
    pub endpoint: Endpoint,
    pub meta: MetaStore,
    pub objects: Objects,
    pub topics: Arc<Topics>,
    pub log: Arc<Log>,
    pub appender: Appender,
    pub groups: Arc<crate::groups::Coordinator>,
    pub consumer_groups: Arc<crate::groups::ConsumerGroups>,
    pub cluster: Arc<crate::cluster::Cluster>,
    pub transactions: Arc<crate::txn::Transactions>,
    pub registry: Arc<crate::registry::Registry>,
    pub security: Arc<crate::security::Security>,
    /// The cluster's dynamic broker configs (AlterConfigs on the broker resource).
    pub dynamic: Arc<crate::cluster::broker_configs::DynamicConfigs>,
    /// Incremental fetch sessions (KIP-227).
    pub fetch_sessions: crate::fetch_sessions::FetchSessions,
}

/// Background tasks to wait for at shutdown.
pub struct Tasks {
    pub appender: JoinHandle<()>,
    pub cluster: JoinHandle<()>,
    pub refresh: Option<JoinHandle<()>>,
    pub group_timers: JoinHandle<()>,
    pub consumer_group_timers: JoinHandle<()>,
    pub txn_timers: JoinHandle<()>,
    pub compactor: Option<std::thread::JoinHandle<()>>,
}

impl Broker {
    /// Opens every component. `bound` are the listeners' protocols and bound addresses,
    /// advertised where no advertised address is configured.
    pub async fn open(
        settings: Settings,
        components: Components,
        bound: &[(ListenerConfig, std::net::SocketAddr)],
        shutdown: CancellationToken,
    ) -> Result<(Arc<Self>, Tasks), StartError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartError::DataDir {
            path: settings.data_dir.display().to_string(),
            source,
        })?;
        let shutdown_for_groups = shutdown.clone();
        let shutdown_for_refresh = shutdown.clone();
        let shutdown_for_txns = shutdown.clone();
        let kv = match components.kv {
            Some(kv) => kv,
            None => kv::open(&settings.metadata, &settings.data_dir).await?,
        };
        let clock = components.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let meta = MetaStore::new(kv, clock);
        let objects = match components.objects {
            Some(objects) => objects,
            None => Objects::open(&settings.object_store_url())?,
        };
        let cluster_id = meta.cluster_id().await?;
        let shared = meta.kv().shared();
        let node_id = match settings.node_id {
            Some(id) => id,
            None if shared => meta.allocate_node_id().await?,
            None => 0,
        };
        let endpoint = endpoint(&settings, bound, node_id)?;
        let security = Arc::new(
            crate::security::Security::new(
                &settings,
                bound.iter().any(|(l, _)| l.protocol.sasl()),
                meta.clone(),
            )
            .map_err(StartError::Security)?,
        );
        if security.authorizer.enabled {
            security.authorizer.reload().await?;
        }
        let (cluster, cluster_task) = crate::cluster::Cluster::start(
            meta.clone(),
            endpoint.clone(),
            settings.broker_lease_ms as i64,
            shutdown.clone(),
        )
        .await?;
        let log = Arc::new(Log::new(
            meta.clone(),
            objects.clone(),
            settings.cache_bytes,
        ));
        let (appender, appender_task) = Appender::start(
            AppenderConfig {
                flush_interval: settings.flush_interval(objects.kind),
                flush_burst: settings.flush_burst,
                flush_eager_bytes: settings.flush_eager_bytes,
                flush_when_clients_wait: settings.flush_when_clients_wait,
                flush_bytes: settings.flush_bytes,
                max_inflight_bytes: settings.max_inflight_bytes,
                max_inflight_flushes: settings.max_inflight_flushes,
                max_segment_age_ms: (settings.segment_grace_ms / 2) as i64,
            },
            objects.clone(),
            meta.clone(),
            log.clone(),
            shutdown.clone(),
        );
        let compactor = if settings.compaction {
            let listener: Arc<dyn icestream_compactor::SwapListener> = log.clone();
            Some(
                crate::compaction::spawn(
                    settings.clone(),
                    meta.clone(),
                    objects.clone(),
                    Some(listener),
                    format!(
                        "broker-{}-{}",
                        endpoint.node_id,
                        uuid::Uuid::new_v4().simple()
                    ),
                    shutdown,
                )
                .map_err(|source| StartError::DataDir {
                    path: "compactor thread".into(),
                    source,
                })?,
            )
        } else {
            None
        };
        tracing::info!(
            cluster_id = %cluster_id,
            node_id = endpoint.node_id,
            metadata = meta.kv().kind(),
            objects = %objects.display_url,
            "broker.open"
        );
        let groups = Arc::new(crate::groups::Coordinator::new(
            meta.clone(),
            crate::groups::GroupConfig {
                initial_rebalance_delay: std::time::Duration::from_millis(
                    settings.group_initial_rebalance_delay_ms,
                ),
                min_session_timeout_ms: settings.group_min_session_timeout_ms,
                max_session_timeout_ms: settings.group_max_session_timeout_ms,
            },
        ));
        let group_timers = tokio::spawn(groups.clone().run_timers(shutdown_for_groups.clone()));
        let topics = Arc::new(Topics::new(meta.clone()));
        let consumer_groups = Arc::new(crate::groups::ConsumerGroups::new(
            crate::groups::ConsumerGroupConfig {
                heartbeat_interval_ms: settings.group_consumer_heartbeat_interval_ms,
                session_timeout: std::time::Duration::from_millis(
                    settings.group_consumer_session_timeout_ms,
                ),
            },
        ));
        let consumer_group_timers = tokio::spawn(
            consumer_groups
                .clone()
                .run_timers(topics.clone(), shutdown_for_groups),
        );
        // Other brokers append too: keep high watermarks fresh for fetches and long polls.
        let refresh_task = if shared {
            let log = log.clone();
            let every = std::time::Duration::from_millis(settings.metadata_refresh_ms.max(10));
            let shutdown = shutdown_for_refresh;
            Some(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    if let Err(e) = log.refresh().await {
                        tracing::debug!(error = %e, "refreshing partition states failed");
                    }
                }
            }))
        } else {
            None
        };
        let transactions = Arc::new(crate::txn::Transactions::new(
            meta.clone(),
            appender.clone(),
            cluster.clone(),
            crate::txn::TxnConfig {
                max_timeout_ms: settings.transaction_max_timeout_ms,
                id_expiration_ms: settings.transactional_id_expiration_ms,
                check_interval: std::time::Duration::from_millis(
                    settings.transaction_check_interval_ms.max(10),
                ),
            },
        ));
        let txn_timers = tokio::spawn(transactions.clone().run_timers(shutdown_for_txns.clone()));
        if security.authorizer.enabled {
            tokio::spawn(security.authorizer.clone().run(
                std::time::Duration::from_millis(settings.metadata_refresh_ms.max(10)),
                shutdown_for_txns.clone(),
            ));
        }
        let dynamic = Arc::new(crate::cluster::broker_configs::DynamicConfigs::new(
            meta.clone(),
        ));
        dynamic.reload().await?;
        tokio::spawn(dynamic.clone().run(
            std::time::Duration::from_millis(settings.metadata_refresh_ms.max(10)),
            shutdown_for_txns.clone(),
        ));
        let registry = Arc::new(crate::registry::Registry::new(meta.clone()));
        let broker = Arc::new(Self {
            fetch_sessions: crate::fetch_sessions::FetchSessions::new(
                settings.fetch_session_cache_slots,
                settings.fetch_session_cache_partitions,
            ),
            dynamic,
            security,
            registry,
            transactions,
            cluster,
            groups,
            consumer_groups,
            topics,
            settings,
            cluster_id,
            endpoint,
            meta,
            objects,
            log,
            appender,
        });
        Ok((
            broker,
            Tasks {
                appender: appender_task,
                cluster: cluster_task,
                refresh: refresh_task,
                group_timers,
                consumer_group_timers,
                txn_timers,
                compactor,
            },
        ))
    }
}

fn endpoint(
    settings: &Settings,
    bound: &[(ListenerConfig, std::net::SocketAddr)],
    node_id: i32,
) -> Result<Endpoint, StartError> {
    let mut listeners = Vec::new();
    for (listener, addr) in bound {
        let (host, port) = match &listener.advertised {
            Some(adv) => {
                let (h, p) = adv
                    .rsplit_once(':')
                    .ok_or_else(|| StartError::Advertised(adv.clone()))?;
                let port: i32 = p.parse().map_err(|_| StartError::Advertised(adv.clone()))?;
                (h.to_string(), port)
            }
            None => {
                let host = if addr.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    addr.ip().to_string()
                };
                (host, i32::from(addr.port()))
            }
        };
        listeners.push(ListenerAddress {
            name: listener.protocol.name().to_string(),
            host,
            port,
        });
    }
    let first = listeners
        .first()
        .cloned()
        .ok_or_else(|| StartError::Security("no listener".into()))?;
    if listeners.len() == 1 {
        listeners.clear();
    }
    Ok(Endpoint {
        node_id,
        host: first.host,
        port: first.port,
        rack: settings.rack.clone(),
        listeners,
    })
}
