//! The worker's HTTP endpoints: `/metrics` (Prometheus text), `/livez` (the loop turns; never
//! touches the database, so an outage does not cause restarts) and `/readyz` (initialised and
//! the database answered recently; leadership is not required).

use crate::ops::metrics::{Health, Metrics};
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    live_max_age_s: i64,
}

/// Binds `addr` and serves until the process exits. Binding errors are returned at once.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    live_max_age_s: i64,
) -> crate::error::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::error::Error::Config(format!("cannot listen on {addr} (--listen): {e}"))
    })?;
    // With port 0 the OS picks the port; the log line names the one actually bound.
    let bound = listener.local_addr().unwrap_or(addr);
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            metrics,
            health,
            live_max_age_s,
        });
    tracing::info!(addr = %bound, "serving /metrics, /livez and /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "http server stopped");
        }
    }))
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn livez(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.live(s.live_max_age_s) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "worker loop stalled\n")
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
