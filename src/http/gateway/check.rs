//! Forward auth: `/auth/check` answers whether the request's cookie names a
//! live session bound to a user, and who, for a proxy that asks before it
//! forwards (nginx `auth_request`, Caddy `forward_auth`, Traefik
//! ForwardAuth, Envoy ext_authz). It reads only: it never creates a session
//! and never sets a cookie. `/.well-known/jwks.json` publishes the keys that
//! verify its `X-Edge-Assertion`.

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::identity;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::state::AppState;
use crate::record::now;

/// `?role=R`: the role the request needs.
#[derive(Debug, Deserialize)]
pub struct CheckQuery {
    role: Option<String>,
}

/// `/auth/check` (any method; Envoy's ext_authz appends the original path,
/// so `/auth/check/<anything>` is the same check). 200 with the identity
/// headers; 401 without a signed-in session; 403 when `?role=` names
/// another role.
pub async fn check(
    req: HttpRequest,
    query: web::Query<CheckQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let t = now();
    let Some((_, session)) = state.cookie_session(&req).await? else {
        return Err(ApiError::unauthenticated());
    };
    let identity = state
        .assertions
        .identity(&session, t)
        .map_err(|e| {
            tracing::error!(error = %e, "signing an identity assertion");
            ApiError::internal()
        })?
        .ok_or_else(ApiError::unauthenticated)?;
    if let Some(role) = &query.role {
        if *role != identity.role {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::WrongRole,
                "the signed-in user does not have the role this route needs",
            ));
        }
    }
    let mut res = HttpResponse::Ok();
    for pair in identity::headers(&identity)? {
        res.insert_header(pair);
    }
    Ok(res.finish())
}

/// `GET /.well-known/jwks.json`: the public keys of the assertions. Cached
/// for five minutes: a rotation publishes the new key before it signs.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(state.assertions.jwks_json().to_owned())
}
