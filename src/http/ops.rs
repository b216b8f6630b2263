//! Operations routes: liveness, readiness, Prometheus metrics.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::state::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: DynamoDB answers and the cache is open.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let dynamo =
        match tokio::time::timeout(Duration::from_secs(2), state.store.dynamo().ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("no answer within 2 s".to_owned()),
        };
    let cache = state
        .store
        .cache()
        .is_tombstoned(&crate::StorageKey([0; 32]))
        .map(|_| ())
        .map_err(|e| e.to_string());
    let ready = dynamo.is_ok() && cache.is_ok();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "dynamodb": dynamo.err().unwrap_or_else(|| "ok".into()),
        "cache": cache.err().unwrap_or_else(|| "ok".into()),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics`: Prometheus text. (`edge_session_cached_sessions` is set by
/// the upkeep sweep: counting sled entries per scrape would read the tree.)
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics::gauge!("edge_session_outbox_pending").set(state.store.cache().outbox_len() as f64);
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
        .body(state.metrics.render())
}
