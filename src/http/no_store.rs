//! `Cache-Control: no-store`, set here and nowhere else. Each route declares
//! its [`Caching`] in the route table; this middleware, wrapped around the
//! whole app, applies it to every answer as it leaves:
//!
//! - a [`Caching::NoStore`] route: every answer (browser routes, and the
//!   `/v1` routes that return session state);
//! - a [`Caching::AsAnswered`] route: only answers raised as errors (an
//!   `ApiError`, a failed extractor); an answer
//!   its handler built keeps its own headers (health, readiness — even its
//!   503 —, metrics, the spec, a bare 204);
//! - no route (the router's own 404 and 405) and errors raised by a
//!   middleware (the `/v1` 401): always.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

/// Whether caches may keep a route's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Every answer carries `Cache-Control: no-store`.
    NoStore,
    /// The handler's answers as built; errors still carry `no-store`.
    AsAnswered,
}

/// The [`Caching`] of the route serving `method` on the matched `pattern`,
/// if there is one.
pub type RouteCaching = fn(&Method, &str) -> Option<Caching>;

const NO_STORE: &str = "no-store";

/// The middleware; `caching` looks a route up in the route table.
pub async fn no_store(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    caching: RouteCaching,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let mut res = next.call(req).await.map_err(Raised)?;
    let request = res.request();
    let route = request
        .match_pattern()
        .and_then(|pattern| caching(request.method(), &pattern));
    let no_store = match route {
        Some(Caching::NoStore) | None => true,
        Some(Caching::AsAnswered) => res.response().error().is_some(),
    };
    if no_store {
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    }
    Ok(res)
}

/// An error raised past the app's handlers (by a middleware): answered as
/// it would be, plus `no-store`.
#[derive(Debug)]
struct Raised(actix_web::Error);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for Raised {
    fn status_code(&self) -> StatusCode {
        self.0.as_response_error().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = self.0.error_response();
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
        res
    }
}
