//! The operator's HTTP endpoint: `GET /health` (JSON, 200 when ready, 503
//! when not) and `GET /metrics` (Prometheus text). Read-only by design: no
//! route changes state, other methods get 405. Bound to loopback unless the
//! config says otherwise; it serves no secret (see `health.rs`).

use super::health::Health;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The routes, for the server and for tests.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route(
            "/health",
            get(move || {
                let health = Arc::clone(&health);
                async move {
                    let report = health.report();
                    let code = if report.ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, axum::Json(report))
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    super::prom::render(),
                )
                    .into_response()
            }),
        )
}

/// Binds `addr` and serves until `cancel` fires. Returns the bound address
/// (port 0 picks a free one) and the server task.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), HttpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    if !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "The HTTP endpoint listens beyond loopback; /health and /metrics are readable by anyone who can reach it.");
    }
    tracing::info!(listen = %local, "HTTP endpoint serving /health and /metrics.");
    let app = router(health);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await
        {
            tracing::error!(listen = %local, %error, "HTTP endpoint stopped.");
        }
    });
    Ok((local, task))
}
