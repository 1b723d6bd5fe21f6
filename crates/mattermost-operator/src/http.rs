//! One HTTP port: `/healthz` (process alive), `/readyz` and `/metrics`.
//!
//! `/readyz` answers 200 when the operator can do its work: as the leader (or without leader
//! election) once every cache synced and while every watch is live, i.e. the API server is
//! reachable and changes reach the operator; as a follower while it stands by for the Lease.
//! It answers 503 while starting, and while any watch has failed and not yet recovered (see
//! [`crate::watch`]); the body names the failing watches. `/healthz` stays 200: an unreachable
//! API server is not cured by restarting the operator, which heals on its own within seconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::watch::Health;

/// Shared state of the HTTP server.
pub struct HttpState {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    phase: AtomicU8,
    watches: Health,
}

const STARTING: u8 = 0;
const STANDBY: u8 = 1;
const READY: u8 = 2;

impl HttpState {
    /// Not ready until [`HttpState::set_ready`]; then ready while every watch in `watches` is live.
    pub fn new(metrics: Arc<Metrics>, watches: Health) -> Self {
        Self {
            metrics,
            phase: AtomicU8::new(STARTING),
            watches,
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

async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, String) {
    match state.phase.load(Ordering::Relaxed) {
        READY => {
            let failing = state.watches.failing();
            if failing.is_empty() {
                return (StatusCode::OK, "ok".to_owned());
            }
            let lines: Vec<String> = failing
                .iter()
                .map(|(name, since, error)| format!("watch {name} failing for {}s: {error}", since.as_secs()))
                .collect();
            (StatusCode::SERVICE_UNAVAILABLE, lines.join("\n"))
        }
        STANDBY => (StatusCode::OK, "standby: waiting for the leader Lease".to_owned()),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced".to_owned()),
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
        let health = Health::new();
        let state = Arc::new(HttpState::new(
            Arc::new(Metrics::new(&["mattermost"], 1)),
            health.clone(),
        ));
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
        // A failing watch makes the leader unready, and says which one.
        let bad: Vec<Result<u8, kube::runtime::watcher::Error>> =
            vec![Err(kube::runtime::watcher::Error::NoResourceVersion)];
        let _ = futures::StreamExt::collect::<Vec<_>>(crate::watch::guarded(
            "Service in ns".into(),
            futures::stream::iter(bad),
            &health,
        ))
        .await;
        let r = get_status(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("watch Service in ns failing"),
            "{r}"
        );
        let m = get_status(addr, "/metrics").await;
        assert!(m.contains("controller_runtime_reconcile_total"), "{m}");
    }
}
