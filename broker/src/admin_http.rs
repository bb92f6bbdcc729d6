//! The admin HTTP endpoint: `GET /metrics` (Prometheus text format) and `GET /health`
//! (200 while the broker serves and its metadata store answers).

use std::sync::Arc;

use prometheus::{Encoder, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

pub async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: CancellationToken) {
    loop {
        let (mut stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            _ = shutdown.cancelled() => return,
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            while len < buf.len() {
                match stream.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = respond(&broker, path).await;
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            let _ = stream.shutdown().await;
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
