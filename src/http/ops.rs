//! Operations routes: liveness, readiness, Prometheus metrics; and, with
//! `server.ops_listen`, the split that serves them only there.
//!
//! `/readyz` costs at most one DynamoDB read per [`READY_FOR`] however many
//! probes arrive (the answer is cached), and says only ready or not: the
//! cause goes to the log, not to whoever can reach the probe.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::dev::ServiceRequest;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorCode};
use super::state::AppState;

/// How long a readiness answer is reused.
pub const READY_FOR: Duration = Duration::from_secs(1);

/// The routes served on `server.ops_listen` when it is set.
pub const OPS_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// With an ops listener (`ops`), whether `req` came to the wrong listener:
/// the ops routes are 404 on the main listener and every other route is 404
/// on the ops listener. The path compared is the one the router matches
/// (percent-decoded), so `/%6Detrics` is `/metrics` here too.
pub fn misrouted(req: &ServiceRequest, ops: Option<SocketAddr>) -> bool {
    ops.is_some_and(|ops| {
        let on_ops = req.app_config().local_addr() == ops;
        on_ops != OPS_PATHS.contains(&req.match_info().as_str())
    })
}

/// The answer to a misrouted request.
pub fn no_such_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
}

/// The body of `/healthz`.
const HEALTHY: &str = r#"{"status":"ok"}"#;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(header::ContentType::json())
        .body(HEALTHY)
}

/// `GET /readyz`: DynamoDB answers a read and the cache is open.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ready = {
        let mut last = state.ready.0.lock().await;
        match *last {
            Some((at, ready)) if at.elapsed() < READY_FOR => ready,
            _ => {
                let ready = probe(&state).await;
                *last = Some((Instant::now(), ready));
                ready
            }
        }
    };
    if ready {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "not_ready" }))
    }
}

/// One data-plane read of a fixed key (no session has it) and one sled read.
async fn probe(state: &AppState) -> bool {
    let read = state.store.dynamo().get_version(&[0; 32]);
    let dynamo = match tokio::time::timeout(Duration::from_secs(2), read).await {
        Ok(Ok(_)) => true,
        Ok(Err(err)) => {
            tracing::warn!(%err, "readiness: DynamoDB read failed");
            false
        }
        Err(_) => {
            tracing::warn!("readiness: no answer from DynamoDB within 2 s");
            false
        }
    };
    let cache = match state
        .store
        .cache()
        .is_tombstoned(&crate::token::StorageKey([0; 32]))
    {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(%err, "readiness: cache read failed");
            false
        }
    };
    dynamo && cache
}

/// `GET /metrics`: Prometheus text. (`edge_session_cached_sessions` is set by
/// the upkeep sweep: counting sled entries per scrape would read the tree.)
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics::gauge!("edge_session_outbox_pending").set(state.store.cache().outbox_len() as f64);
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
        .body(state.metrics.render())
}
