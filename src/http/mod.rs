//! HTTP: the webhook endpoint (SPEC §4), `/healthz`, `/metrics`, and the JSON
//! answers for unknown paths and methods.

mod error;
mod webhook;

pub use error::ApiError;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::signature::Verifier;
use crate::store::Store;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Checks signatures.
    pub verifier: Verifier,
    /// The database.
    pub store: Store,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// Time allowed to read the body.
    pub body_timeout: std::time::Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<IpAddr>>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Wakes the worker when an event is stored.
    pub wake_worker: Arc<tokio::sync::Notify>,
}

impl AppState {
    /// The client address to log: the peer, or the `X-Forwarded-For` client
    /// when the peer is a trusted proxy.
    pub fn client_addr(&self, req: &HttpRequest) -> Option<String> {
        let peer: Option<SocketAddr> = req.peer_addr();
        let peer_ip = peer.map(|p| p.ip());
        if let Some(ip) = peer_ip {
            if self.trusted_proxies.contains(&ip) {
                if let Some(xff) = req
                    .headers()
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                {
                    // The right-most entry is the one our trusted proxy added.
                    if let Some(client) = xff.rsplit(',').map(str::trim).find(|s| !s.is_empty()) {
                        if client.parse::<IpAddr>().is_ok() {
                            return Some(client.to_owned());
                        }
                    }
                }
            }
        }
        peer.map(|p| p.to_string())
    }
}

/// Registers every route; used by `serve` and by tests alike.
pub fn configure_routes(cfg: &mut web::ServiceConfig, webhook_path: &str) {
    cfg.service(
        web::resource(webhook_path)
            .route(web::post().to(webhook::receive))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(healthz))
            .route(web::head().to(healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(metrics))
            .default_service(web::to(method_not_allowed)),
    )
    .default_service(web::to(not_found));
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ok"})),
        Err(e) => {
            tracing::warn!(error = %e, "health check: the database does not answer");
            ApiError::StorageUnavailable.response()
        }
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let now = state.clock.now_ms();
    let counts = state.store.queue_counts(now).await;
    match counts {
        Ok(counts) => {
            state.metrics.set_queue(&counts);
            HttpResponse::Ok()
                .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
                .body(state.metrics.render())
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the queue");
            ApiError::StorageUnavailable.response()
        }
    }
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    refuse(&req, ApiError::NotFound(req.path().to_owned()))
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    refuse(&req, ApiError::MethodNotAllowed(req.method().to_string()))
}

fn refuse(req: &HttpRequest, e: ApiError) -> HttpResponse {
    tracing::info!(
        method = %req.method(),
        path = req.path(),
        status = e.status().as_u16(),
        code = e.code(),
        "request refused"
    );
    e.response()
}
