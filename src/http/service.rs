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
use super::{now, secs, ApiError, AppState, Endpoint};
use crate::store::{Destroyed, NewSession, Session, SessionChange, UserBinding};
use crate::sync::RotateConflict;
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
    super::resources(ROUTES, PREFIX).into_iter().fold(
        web::scope(PREFIX).wrap(actix_web::middleware::from_fn(require_api_key)),
        |scope, resource| scope.service(resource),
    )
}

/// The scope's prefix.
pub const PREFIX: &str = "/v1";

/// The `/v1` routes (full paths); [`scope`] registers them.
pub(super) const ROUTES: &[Endpoint] = &[
    Endpoint::new("POST", "/v1/sessions", |r| r.to(create)),
    Endpoint::new("GET", "/v1/session", |r| r.to(read)),
    Endpoint::new("PATCH", "/v1/session", |r| r.to(update)),
    Endpoint::new("DELETE", "/v1/session", |r| r.to(destroy)),
    Endpoint::new("POST", "/v1/session/regenerate", |r| r.to(regenerate)),
    Endpoint::new("GET", "/v1/users/{user_id}/sessions", |r| r.to(list_user)),
    Endpoint::new("DELETE", "/v1/users/{user_id}/sessions", |r| {
        r.to(revoke_user)
    }),
    Endpoint::new("DELETE", "/v1/users/{user_id}/sessions/{handle}", |r| {
        r.to(revoke_one)
    }),
];

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
    if data.len() > 256 || data.keys().any(|k| k.is_empty() || k.chars().count() > 256) {
        return Err(ApiError::bad_request(
            "malformed_input",
            "data: at most 256 keys of 1-256 characters",
        ));
    }
    Ok(())
}

/// A JSON request body. Bodies are read as an object first: serde's derived
/// `Deserialize` would also take a struct from an array of its fields in
/// order (`[{"k":"v"}, 3]`), which the API does not accept.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// `object` as `T`: 400 `malformed_json` if it does not fit.
pub fn from_object<T: serde::de::DeserializeOwned>(object: JsonObject) -> Result<T, ApiError> {
    T::deserialize(serde_json::Value::Object(object))
        .map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))
}

/// `POST /v1/sessions` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// `POST /v1/sessions`: a new anonymous session. The body is optional: an
/// empty one means no data.
pub async fn create(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: CreateBody = if body.is_empty() {
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
        from_object(
            serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?,
        )?
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
    #[serde(default, deserialize_with = "json_version")]
    version: Option<u64>,
}

/// The largest `version` accepted: 2^53 - 1, the largest integer that every
/// JSON implementation holds exactly.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// A `version`: a JSON integer from 0 to [`MAX_VERSION`], written `7` or
/// `7.0` (JSON does not tell the two apart, and some encoders add the `.0`).
fn json_version<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(de)? else {
        return Ok(None);
    };
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=MAX_VERSION as f64).contains(f))
            .map(|f| f as u64)
    });
    match whole {
        Some(v) if v <= MAX_VERSION => Ok(Some(v)),
        _ => Err(serde::de::Error::custom(format!(
            "version: expected an integer from 0 to {MAX_VERSION}, found {number}"
        ))),
    }
}

/// `PATCH /v1/session`: merge `data`. With `version`, the change applies
/// only to that version (409 otherwise); without it, to the latest one.
pub async fn update(
    req: HttpRequest,
    body: web::Json<JsonObject>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: PatchBody = from_object(body.into_inner())?;
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
    body: web::Json<JsonObject>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: RegenerateBody = from_object(body.into_inner())?;
    if body.user_id.is_empty()
        || body.user_id.chars().count() > 256
        || body.role.as_ref().is_some_and(|r| r.chars().count() > 256)
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
        Err(conflict) => {
            let why = match conflict {
                RotateConflict::EpochChanged => "the user was logged out everywhere meanwhile",
                RotateConflict::TransactionInProgress => "another write to this session is in progress",
                _ => "the session changed or ended since it was read",
            };
            Err(ApiError::new(StatusCode::CONFLICT, "version_conflict", format!("{why}; reload and retry")))
        }
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
    if user_id.is_empty() || user_id.chars().count() > 256 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(text: &str) -> Result<PatchBody, ApiError> {
        from_object(serde_json::from_str(text).expect("test bodies are JSON objects"))
    }

    #[test]
    fn bodies_are_objects_not_arrays_of_fields() {
        assert!(serde_json::from_str::<JsonObject>(r#"[{"k":"v"}, 3]"#).is_err());
        assert!(from_object::<CreateBody>(JsonObject::new()).is_ok());
        let err = patch(r#"{"data":{"k":"v"},"extra":1}"#).unwrap_err();
        assert_eq!(err.code, "malformed_json");
    }

    #[test]
    fn version_is_a_whole_number_up_to_2_pow_53_minus_1() {
        assert_eq!(
            patch(r#"{"data":{},"version":7}"#).unwrap().version,
            Some(7)
        );
        assert_eq!(
            patch(r#"{"data":{},"version":7.0}"#).unwrap().version,
            Some(7)
        );
        assert_eq!(
            patch(r#"{"data":{},"version":null}"#).unwrap().version,
            None
        );
        assert_eq!(patch(r#"{"data":{}}"#).unwrap().version, None);
        assert_eq!(
            patch(r#"{"data":{},"version":9007199254740991}"#)
                .unwrap()
                .version,
            Some(MAX_VERSION)
        );
        for bad in ["7.5", "-1", "9007199254740992", "1e300", "\"7\""] {
            let text = format!(r#"{{"data":{{}},"version":{bad}}}"#);
            assert_eq!(patch(&text).unwrap_err().code, "malformed_json", "{bad}");
        }
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let key = "é".repeat(256);
        assert!(validate_data(&BTreeMap::from([(key.clone(), String::new())])).is_ok());
        assert!(validate_data(&BTreeMap::from([(key + "é", String::new())])).is_err());
        assert!(valid_user(&"ü".repeat(256)).is_ok());
        assert!(valid_user(&"ü".repeat(257)).is_err());
    }
}
