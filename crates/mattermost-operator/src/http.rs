//! One HTTP port: `/healthz` (process alive), `/readyz` (caches synced, or standing by as a
//! leader-election follower) and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Shared state of the HTTP server.
pub struct HttpState {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    phase: AtomicU8,
}

const STARTING: u8 = 0;
const STANDBY: u8 = 1;
const READY: u8 = 2;

impl HttpState {
    /// Not ready until [`HttpState::set_ready`].
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            phase: AtomicU8::new(STARTING),
        }
    }

    /// Marks the caches as synced.
    pub fn set_ready(&self) {
        self.phase.store(READY, Ordering::Relaxed);
    }

    /// A follower waiting for the leader Lease: ready to take over, so it counts as ready.
    pub fn set_standby(&self) {
        self.phase.store(STANDBY, Ordering::Relaxed);
    }

    /// The leader is starting its controllers: not ready until the caches synced.
    pub fn set_starting(&self) {
        self.phase.store(STARTING, Ordering::Relaxed);
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    match state.phase.load(Ordering::Relaxed) {
        READY => (StatusCode::OK, "ok"),
        STANDBY => (StatusCode::OK, "standby: waiting for the leader Lease"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced"),
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The routes.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Binds the port first, so that a taken port fails the start loudly.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_status(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn health_ready_and_metrics() {
        let state = Arc::new(HttpState::new(Arc::new(Metrics::new(&["mattermost"], 1))));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        assert!(get_status(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get_status(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        state.set_standby();
        assert!(get_status(addr, "/readyz").await.contains("standby"));
        state.set_starting();
        assert!(get_status(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        state.set_ready();
        assert!(get_status(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get_status(addr, "/metrics").await;
        assert!(m.contains("controller_runtime_reconcile_total"), "{m}");
    }
}
