//! The admin HTTP endpoint: `GET /metrics` (Prometheus text format) and `GET /health`
//! (200 while the broker serves and its metadata store answers; `/ready` is the same).
//! With HTTP authentication on, everything but `/health` and `/ready` asks for a user's
//! password (HTTP basic). Served with the limits of [`crate::http_serve`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::http_serve::{self, Limits};
use crate::security::HttpAuth;

pub async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: CancellationToken) {
    http_serve::serve(
        "admin",
        listener,
        router(broker),
        Limits::default(),
        shutdown,
    )
    .await;
}

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(health))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain")],
                "try /metrics or /health",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            broker.clone(),
            authenticate,
        ))
        .with_state(broker)
}

/// `/health` and `/ready` stay open for load balancers and orchestrators.
async fn authenticate(State(broker): State<Arc<Broker>>, request: Request, next: Next) -> Response {
    if matches!(request.uri().path(), "/health" | "/ready") {
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match broker.security.http(authorization).await {
        HttpAuth::Denied => (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, "Basic realm=\"icestream\""),
                (header::CONTENT_TYPE, "text/plain"),
            ],
            "authentication required",
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

async fn metrics(State(broker): State<Arc<Broker>>) -> Response {
    crate::metrics::set(
        &crate::metrics::LIVE_BROKERS,
        broker.cluster.brokers().len() as i64,
    );
    crate::metrics::set(
        &crate::metrics::GROUPS,
        (broker.groups.active().await.len() + broker.consumer_groups.ids().await.len()) as i64,
    );
    let mut out = Vec::new();
    if TextEncoder::new()
        .encode(&prometheus::gather(), &mut out)
        .is_err()
    {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "encoding failed",
        )
            .into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn health(State(broker): State<Arc<Broker>>) -> Response {
    let (status, body) = match broker.meta.cluster_id().await {
        Ok(_) => (
            StatusCode::OK,
            format!(
                "{{\"status\":\"ok\",\"node_id\":{},\"brokers\":{}}}",
                broker.endpoint.node_id,
                broker.cluster.brokers().len()
            ),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{{\"status\":\"unavailable\",\"error\":{:?}}}",
                e.to_string()
            ),
        ),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
