//! `/v1`: the service API for apps in any language. Every call carries
//! `Authorization: Bearer <api key>`; the session token travels in the
//! `X-Session-Token` header, never in the URL. JSON in and out.

use std::collections::BTreeMap;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::JsonPayloadError;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::browser::revoke_handle;
use super::{now, secs, ApiError, AppState};
use crate::store::{Destroyed, NewSession, Session, SessionChange, UserBinding};
use crate::token::SessionToken;

/// The header carrying the session token.
pub const TOKEN_HEADER: &str = "x-session-token";

/// JSON extractor settings: size limit and JSON error bodies.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| {
            let api = match &err {
                JsonPayloadError::OverflowKnownLength { .. }
                | JsonPayloadError::Overflow { .. } => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body too large",
                ),
                JsonPayloadError::ContentType => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send Content-Type: application/json",
                ),
                JsonPayloadError::Deserialize(e) => {
                    ApiError::bad_request("malformed_json", e.to_string())
                }
                _ => ApiError::bad_request("malformed_json", "the request body is not valid JSON"),
            };
            api.into()
        })
}

/// Refuse any `/v1` call without a valid bearer key.
async fn require_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = match (state, presented) {
        (Some(state), Some(key)) => state.api_keys.accepts(key),
        _ => false,
    };
    if !ok {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid API key",
        )
        .into());
    }
    next.call(req).await
}

/// The `/v1` scope.
pub fn scope() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::scope("/v1")
        .wrap(actix_web::middleware::from_fn(require_api_key))
        .service(web::resource("/sessions").route(web::post().to(create)))
        .service(
            web::resource("/session")
                .route(web::get().to(read))
                .route(web::patch().to(update))
                .route(web::delete().to(destroy)),
        )
        .service(web::resource("/session/regenerate").route(web::post().to(regenerate)))
        .service(
            web::resource("/users/{user_id}/sessions")
                .route(web::get().to(list_user))
                .route(web::delete().to(revoke_user)),
        )
        .service(
            web::resource("/users/{user_id}/sessions/{handle}").route(web::delete().to(revoke_one)),
        )
}

/// The token from `X-Session-Token`: 400 if missing or malformed.
fn header_token(req: &HttpRequest) -> Result<SessionToken, ApiError> {
    let value = req.headers().get(TOKEN_HEADER).ok_or_else(|| {
        ApiError::bad_request("missing_token", "the X-Session-Token header is required")
    })?;
    let text = value.to_str().map_err(|_| {
        ApiError::bad_request("malformed_token", "X-Session-Token is not a session token")
    })?;
    SessionToken::parse(text.trim())
        .map_err(|e| ApiError::bad_request("malformed_token", format!("X-Session-Token: {e}")))
}

/// The live session named by the header: 404 if unknown, expired or revoked.
async fn header_session(
    state: &AppState,
    req: &HttpRequest,
) -> Result<(SessionToken, Session), ApiError> {
    let token = header_token(req)?;
    match state.store.load(&token, now()).await? {
        Some(session) => Ok((token, session)),
        None => Err(ApiError::unknown_session()),
    }
}

fn session_json(s: &Session) -> serde_json::Value {
    serde_json::json!({
        "user_id": s.record.user_id,
        "role": s.record.role,
        "data": s.record.data,
        "created_at": secs(s.record.created_at),
        "last_seen_at": secs(s.record.last_seen_at),
        "expires_at": secs(s.record.expires_at()),
        "version": s.record.version,
    })
}

fn no_store() -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::Ok();
    b.insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

fn validate_data(data: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if data.len() > 256 || data.keys().any(|k| k.is_empty() || k.len() > 256) {
        return Err(ApiError::bad_request(
            "malformed_input",
            "data: at most 256 keys of 1-256 characters",
        ));
    }
    Ok(())
}

/// `POST /v1/sessions` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// `POST /v1/sessions`: a new anonymous session. The body is optional.
pub async fn create(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: CreateBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateBody::default()
    } else {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?
    };
    validate_data(&body.data)?;
    let (token, session) = state
        .store
        .create(NewSession::anonymous(body.data), now())
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "token": token.expose(), "expires_at": secs(session.record.expires_at()) })))
}

/// `GET /v1/session`.
pub async fn read(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, session) = header_session(&state, &req).await?;
    Ok(no_store().json(session_json(&session)))
}

/// `PATCH /v1/session` body: keys to set (a `null` value removes the key),
/// and optionally the version the change is based on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    data: BTreeMap<String, Option<String>>,
    #[serde(default)]
    version: Option<u64>,
}

/// `PATCH /v1/session`: merge `data`. With `version`, the change applies
/// only to that version (409 otherwise); without it, to the latest one.
pub async fn update(
    req: HttpRequest,
    body: web::Json<PatchBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let token = header_token(&req)?;
    for _ in 0..3 {
        let t = now();
        let session = state
            .store
            .load(&token, t)
            .await?
            .ok_or_else(ApiError::unknown_session)?;
        if body.version.is_some_and(|v| v != session.record.version) {
            return Err(ApiError::conflict());
        }
        let mut data = session.record.data.clone();
        for (k, v) in &body.data {
            match v {
                Some(v) => data.insert(k.clone(), v.clone()),
                None => data.remove(k),
            };
        }
        validate_data(&data)?;
        match state
            .store
            .update(&session, SessionChange::data(data), t)
            .await?
        {
            Ok(updated) => return Ok(no_store().json(session_json(&updated))),
            Err(_) if body.version.is_some() => return Err(ApiError::conflict()),
            // No version given: the caller wants the latest; retry on it.
            Err(_) => continue,
        }
    }
    Err(ApiError::conflict())
}

/// `POST /v1/session/regenerate` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegenerateBody {
    user_id: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    keep_data: bool,
}

/// `POST /v1/session/regenerate`: a new token bound to `user_id`; the old
/// token is dead in both tiers.
pub async fn regenerate(
    req: HttpRequest,
    body: web::Json<RegenerateBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.user_id.is_empty()
        || body.user_id.len() > 256
        || body.role.as_ref().is_some_and(|r| r.len() > 256)
    {
        return Err(ApiError::bad_request(
            "malformed_input",
            "user_id must be 1-256 characters, role at most 256",
        ));
    }
    let (_, session) = header_session(&state, &req).await?;
    let binding = UserBinding {
        user_id: body.user_id,
        role: body.role,
    };
    match state.store.regenerate(&session, Some(binding), body.keep_data, now()).await? {
        Ok((token, new)) => Ok(no_store()
            .json(serde_json::json!({ "token": token.expose(), "expires_at": secs(new.record.expires_at()) }))),
        Err(_) => Err(ApiError::conflict()),
    }
}

/// `DELETE /v1/session`.
pub async fn destroy(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = header_token(&req)?;
    match state.store.destroy(&token, now()).await? {
        Destroyed::NotFound | Destroyed::AlreadyRevoked => Err(ApiError::unknown_session()),
        _ => Ok(HttpResponse::NoContent().finish()),
    }
}

fn valid_user(user_id: &str) -> Result<(), ApiError> {
    if user_id.is_empty() || user_id.len() > 256 {
        return Err(ApiError::bad_request(
            "malformed_input",
            "user_id must be 1-256 characters",
        ));
    }
    Ok(())
}

/// `GET /v1/users/{user_id}/sessions`.
pub async fn list_user(
    user_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    valid_user(&user_id)?;
    let sessions = state.store.list_user_sessions(&user_id, now()).await?;
    let body: Vec<_> = sessions
        .iter()
        .map(|s| {
            serde_json::json!({
                "handle": s.key.handle(),
                "created_at": secs(s.record.created_at),
                "last_seen_at": secs(s.record.last_seen_at),
            })
        })
        .collect();
    Ok(no_store().json(body))
}

/// `DELETE /v1/users/{user_id}/sessions`: log out everywhere.
pub async fn revoke_user(
    user_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    valid_user(&user_id)?;
    let revoked = state.store.revoke_user(&user_id, now()).await?;
    Ok(no_store().json(serde_json::json!({ "revoked": revoked })))
}

/// `DELETE /v1/users/{user_id}/sessions/{handle}`.
pub async fn revoke_one(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (user_id, handle) = path.into_inner();
    valid_user(&user_id)?;
    revoke_handle(&state, &user_id, &handle).await?;
    Ok(HttpResponse::NoContent().finish())
}
