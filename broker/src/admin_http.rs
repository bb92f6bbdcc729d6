//! The admin HTTP endpoint: `GET /metrics` (Prometheus text format) and `GET /health`
//! (200 while the broker serves and its metadata store answers). With HTTP authentication
//! on, everything but `/health` asks for a user's password (HTTP basic).

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Encoder, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::security::HttpAuth;

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// Time for a client to send its request head, and for the response to be written.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let (mut stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(error = %e, "admin endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read_head = async {
                while len < buf.len() {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                true
            };
            if !matches!(tokio::time::timeout(IO_TIMEOUT, read_head).await, Ok(true)) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let authorization = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("authorization")
                    .then(|| value.trim().to_string())
            });
            // /health stays open for load balancers and orchestrators.
            let open = matches!(path, "/health" | "/ready");
            let allowed =
                open || broker.security.http(authorization.as_deref()).await != HttpAuth::Denied;
            let (status, content_type, body, extra) = if allowed {
                let (s, c, b) = respond(&broker, path).await;
                (s, c, b, "")
            } else {
                (
                    "401 Unauthorized",
                    "text/plain",
                    b"authentication required".to_vec(),
                    "www-authenticate: Basic realm=\"icestream\"\r\n",
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
                body.len()
            );
            let write = async {
                stream.write_all(response.as_bytes()).await?;
                stream.write_all(&body).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(IO_TIMEOUT, write).await;
        });
    }
}

async fn respond(broker: &Broker, path: &str) -> (&'static str, &'static str, Vec<u8>) {
    match path {
        "/metrics" => {
            crate::metrics::set(
                &crate::metrics::LIVE_BROKERS,
                broker.cluster.brokers().len() as i64,
            );
            crate::metrics::set(
                &crate::metrics::GROUPS,
                (broker.groups.active().await.len() + broker.consumer_groups.ids().await.len())
                    as i64,
            );
            let mut out = Vec::new();
            let encoder = TextEncoder::new();
            if encoder.encode(&prometheus::gather(), &mut out).is_err() {
                return (
                    "500 Internal Server Error",
                    "text/plain",
                    b"encoding failed".to_vec(),
                );
            }
            ("200 OK", "text/plain; version=0.0.4", out)
        }
        "/health" | "/ready" => match broker.meta.cluster_id().await {
            Ok(_) => (
                "200 OK",
                "application/json",
                format!(
                    "{{\"status\":\"ok\",\"node_id\":{},\"brokers\":{}}}",
                    broker.endpoint.node_id,
                    broker.cluster.brokers().len()
                )
                .into_bytes(),
            ),
            Err(e) => (
                "503 Service Unavailable",
                "application/json",
                format!(
                    "{{\"status\":\"unavailable\",\"error\":{:?}}}",
                    e.to_string()
                )
                .into_bytes(),
            ),
        },
        _ => (
            "404 Not Found",
            "text/plain",
            b"try /metrics or /health".to_vec(),
        ),
    }
}
