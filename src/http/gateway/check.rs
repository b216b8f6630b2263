//! Forward auth: `/auth/check` answers whether the request's cookie names a
//! live session bound to a user, and who, for a proxy that asks before it
//! forwards (nginx `auth_request`, Caddy `forward_auth`, Traefik
//! ForwardAuth, Envoy ext_authz). It reads only: it never creates a session
//! and never sets a cookie. `/.well-known/jwks.json` publishes the keys that
//! verify its `X-Edge-Assertion`.

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::identity;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::state::AppState;
use crate::record::now;

/// `/auth/check` (any method; Envoy's ext_authz appends the original path,
/// so `/auth/check/<anything>` is the same check). 200 with the identity
/// headers; 401 without a signed-in session; 403 when `?role=` names
/// another role; 400 when `?role=` is empty or given twice.
pub async fn check(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let required = required_role(req.query_string())?;
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
    if let Some(role) = &required {
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

/// The role `?role=R` asks for, if any. Every other parameter is left
/// alone (Envoy passes on the original request's query). An empty role, or
/// one given twice, leaves the check ambiguous: 400 `malformed_input`.
fn required_role(query: &str) -> Result<Option<String>, ApiError> {
    if query.is_empty() {
        return Ok(None);
    }
    let malformed = || {
        ApiError::bad_request(
            ErrorCode::MalformedInput,
            "`role` must be given at most once, and not empty",
        )
    };
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|_| malformed())?;
    let mut roles = pairs
        .into_iter()
        .filter(|(k, _)| k == "role")
        .map(|(_, v)| v);
    match (roles.next(), roles.next()) {
        (None, _) => Ok(None),
        (Some(role), None) if !role.is_empty() => Ok(Some(role)),
        _ => Err(malformed()),
    }
}

/// `GET /.well-known/jwks.json`: the public keys of the assertions. Cached
/// for five minutes: a rotation publishes the new key before it signs.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(state.assertions.jwks_json().to_owned())
}

#[cfg(test)]
mod tests {
    use super::required_role;
    use crate::http::error::ErrorCode;
    use actix_web::http::StatusCode;

    #[test]
    fn the_required_role_is_read_once_and_not_empty() {
        assert_eq!(required_role("").unwrap(), None);
        assert_eq!(required_role("x=1&y").unwrap(), None);
        assert_eq!(
            required_role("role=admin&x=1").unwrap().as_deref(),
            Some("admin")
        );
        assert_eq!(required_role("role=a%20b").unwrap().as_deref(), Some("a b"));
        for bad in ["role=", "role=a&role=b", "role=a&role=a", "role"] {
            let err = required_role(bad).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(err.code, ErrorCode::MalformedInput, "{bad}");
        }
    }
}
