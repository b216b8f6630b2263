//! `GET /openapi.json`: the OpenAPI 3 description of every route, kept in
//! the repository as `docs/openapi.json` and compiled in.

use actix_web::http::header;
use actix_web::HttpResponse;

/// The spec, verbatim.
pub const SPEC: &str = include_str!("../../docs/openapi.json");

/// `GET /openapi.json`.
pub async fn spec() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(SPEC)
}
