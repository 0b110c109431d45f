//! `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Ready means this instance does its part: with leader election, it takes part in the election
/// (a standby is ready, as controller-runtime operators are, so that a rolling update and
/// `helm install --wait` with several replicas finish); without, it has read the first list of
/// TurnCredentials. Who leads shows in the Lease and in `toma_leader`.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub synced: Arc<AtomicBool>,
    /// Whether this instance takes part in leader election (`--leader-elect`).
    pub leader_elect: bool,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>, leader_elect: bool) -> Health {
        Health {
            metrics,
            synced: Arc::default(),
            leader_elect,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.leader_elect || self.synced.load(Ordering::Relaxed)
    }
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], health.metrics.encode())
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_in_the_election_is_ready_at_once_and_one_without_once_synced() {
        let standby = Health::new(Arc::default(), true);
        assert!(standby.is_ready(), "a standby is ready before it leads");
        let single = Health::new(Arc::default(), false);
        assert!(!single.is_ready());
        single.synced.store(true, Ordering::Relaxed);
        assert!(single.is_ready());
    }
}
