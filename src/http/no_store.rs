//! `Cache-Control: no-store`, set here and nowhere else. Each route declares
//! its [`Caching`] in the route table; the request pipeline applies it to
//! every answer as it leaves:
//!
//! - a [`Caching::NoStore`] route: every answer (browser routes, and the
//!   `/v1` routes that return session state);
//! - a [`Caching::AsAnswered`] route: only answers raised as errors (an
//!   `ApiError`, a failed extractor); an answer
//!   its handler built keeps its own headers (health, readiness — even its
//!   503 —, metrics, the spec, a bare 204);
//! - no route (the router's own 404 and 405) and errors raised by a
//!   middleware (the `/v1` 401): always.

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// Whether caches may keep a route's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Every answer carries `Cache-Control: no-store`.
    NoStore,
    /// The handler's answers as built; errors still carry `no-store`.
    AsAnswered,
}

const NO_STORE: &str = "no-store";

/// Apply `caching` (`None`: no route) to an answer with `headers`;
/// `is_error`: it was raised as an error.
pub fn apply(headers: &mut HeaderMap, caching: Option<Caching>, is_error: bool) {
    let no_store = match caching {
        Some(Caching::NoStore) | None => true,
        Some(Caching::AsAnswered) => is_error,
    };
    if no_store {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    }
}

/// An error raised past the app's handlers (by a middleware): answered as
/// it would be, plus `no-store`.
#[derive(Debug)]
pub struct Raised(pub actix_web::Error);

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
