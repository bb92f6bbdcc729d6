//! The Kafka listener: accepts connections up to `max_connections`, runs one task per
//! connection, runs the garbage collector, and shuts down gracefully: stop accepting,
//! let connections finish their current request, flush and commit everything accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Components, StartError};
use crate::connection;
use crate::gc;
use crate::security::{self, Protocol, Session};
use crate::settings::Settings;
use crate::supervisor::Supervisor;

/// How long a graceful stop waits for background tasks after connections have finished.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// A running broker.
pub struct Server {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's protocol and address.
    pub listeners: Vec<(Protocol, SocketAddr)>,
    pub broker: Arc<Broker>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds the listener and starts serving, with every component opened from `settings`.
    pub async fn start(settings: Settings) -> Result<Self, StartError> {
        Self::start_with(settings, Components::default()).await
    }

    /// Binds the listener and starts serving with the given components.
    pub async fn start_with(
        settings: Settings,
        components: Components,
    ) -> Result<Self, StartError> {
        let configs = security::listeners(&settings).map_err(StartError::Security)?;
        // The HTTP endpoints are bound before the Kafka listeners: a client that finds the
        // Kafka port open (connections queue there from the bind on) finds them open too.
        let admin =
            bind_optional(&settings.admin_listen, "admin endpoint (/metrics, /health)").await;
        let registry = bind_optional(&settings.schema_registry_listen, "schema registry").await;
        let mut bound = Vec::new();
        let mut sockets = Vec::new();
        for config in configs {
            let listener =
                TcpListener::bind(&config.bind)
                    .await
                    .map_err(|source| StartError::Listen {
                        addr: config.bind.clone(),
                        source,
                    })?;
            let addr = listener.local_addr().map_err(|source| StartError::Listen {
                addr: config.bind.clone(),
                source,
            })?;
            let tls = if config.protocol.tls() {
                let auth = security::tls::ClientAuth::parse(&settings.ssl_client_auth)
                    .unwrap_or(security::tls::ClientAuth::None);
                Some(
                    security::tls::acceptor(
                        settings.ssl_certificate_file.as_deref(),
                        settings.ssl_key_file.as_deref(),
                        settings.ssl_client_ca_file.as_deref(),
                        auth,
                    )
                    .map_err(|e| StartError::Security(e.to_string()))?,
                )
            } else {
                None
            };
            sockets.push((config.protocol, listener, tls));
            bound.push((config, addr));
        }
        let addr = bound[0].1;
        let listeners: Vec<(Protocol, SocketAddr)> =
            bound.iter().map(|(c, a)| (c.protocol, *a)).collect();
        let shutdown = CancellationToken::new();
        let (broker, tasks) = Broker::open(settings, components, &bound, shutdown.clone()).await?;
        for (protocol, addr) in &listeners {
            tracing::info!(%addr, listener = protocol.name(), "listening for Kafka clients");
        }
        let mut supervisor = Supervisor::default();
        // Joined in this order: the appender first (everything accepted is committed while
        // the metadata store and registration are still there), the compactor last but one,
        // cluster registration last (deregistration is the last word).
        supervisor.task("appender", tasks.appender);
        supervisor.task(
            "gc",
            tokio::spawn(gc::run(broker.clone(), shutdown.clone())),
        );
        supervisor.task("group timers", tasks.group_timers);
        supervisor.task("consumer group timers", tasks.consumer_group_timers);
        supervisor.task("transaction timers", tasks.txn_timers);
        if let Some(refresh) = tasks.refresh {
            supervisor.task("metadata refresh", refresh);
        }
        if let Some(compactor) = tasks.compactor {
            supervisor.thread("compactor", compactor);
        }
        supervisor.task("cluster registration", tasks.cluster);
        if let Some(l) = admin {
            tokio::spawn(crate::admin_http::serve(
                l,
                broker.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(l) = registry {
            tokio::spawn(crate::registry::http::serve(
                l,
                broker.registry.clone(),
                broker.security.clone(),
                shutdown.clone(),
            ));
        }
        let task = tokio::spawn(accept_loops(
            sockets,
            broker.clone(),
            shutdown.clone(),
            async move {
                let late = supervisor.join(SHUTDOWN_DEADLINE).await;
                if !late.is_empty() {
                    tracing::warn!(tasks = ?late, "stopping without waiting for these tasks");
                }
            },
        ));
        Ok(Self {
            addr,
            listeners,
            broker,
            shutdown,
            task,
        })
    }

    /// Stops accepting, drains, and returns when everything accepted is committed.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Waits until the server stops (after [`Server::shutdown`] from elsewhere or a fatal
    /// error).
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Socket = (Protocol, TcpListener, Option<TlsAcceptor>);

/// Binds an optional endpoint (`addr` empty: none). A busy port is logged, not fatal.
async fn bind_optional(addr: &str, what: &str) -> Option<TcpListener> {
    if addr.is_empty() {
        return None;
    }
    match TcpListener::bind(addr).await {
        Ok(l) => {
            tracing::info!(%addr, "{what}");
            Some(l)
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "{what} not started");
            None
        }
    }
}

async fn accept_loops(
    sockets: Vec<Socket>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    background: impl std::future::Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(broker.settings.max_connections));
    let memory = connection::RequestMemory::new(
        broker.settings.queued_max_request_bytes,
        broker.settings.socket_request_max_bytes,
    );
    let connections = tokio_util::task::TaskTracker::new();
    let loops: Vec<_> = sockets
        .into_iter()
        .map(|(protocol, listener, tls)| {
            accept_loop(
                protocol,
                listener,
                tls,
                broker.clone(),
                shutdown.clone(),
                limit.clone(),
                memory.clone(),
                connections.clone(),
            )
        })
        .collect();
    futures::future::join_all(loops).await;
    connections.close();
    if tokio::time::timeout(Duration::from_secs(30), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections did not finish within 30 s of shutdown");
    }
    background.await;
    tracing::info!("broker stopped");
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    protocol: Protocol,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    limit: Arc<Semaphore>,
    memory: connection::RequestMemory,
    connections: tokio_util::task::TaskTracker,
) {
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        let memory = memory.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => {
                    let session = Session::new(protocol, peer, None);
                    let (reader, writer) = stream.into_split();
                    connection::serve(broker, reader, writer, session, memory, shutdown).await;
                }
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    let stream = match accepted {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            crate::metrics::inc(&crate::metrics::AUTHENTICATION_FAILURES);
                            tracing::info!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            crate::metrics::inc(&crate::metrics::AUTHENTICATION_FAILURES);
                            tracing::info!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    // SSL listeners: the client certificate names the principal; on
                    // SASL_SSL the SASL exchange does.
                    let principal = if protocol.sasl() {
                        None
                    } else {
                        stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(security::tls::principal_of)
                    };
                    let session = Session::new(protocol, peer, principal);
                    let (reader, writer) = tokio::io::split(stream);
                    connection::serve(broker, reader, writer, session, memory, shutdown).await;
                }
            }
            drop(permit);
        });
    }
}
