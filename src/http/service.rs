//! `/v1`: the service API for apps in any language. Every call carries
//! `Authorization: Bearer <api key>`; the session token travels in the
//! `X-Session-Token` header, never in the URL. JSON in and out.

use std::collections::BTreeMap;
use std::future::{ready, Future, Ready};
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::{ApiError, ErrorCode};
use super::paging::{self, PageQuery};
use super::request::{
    self, bearer_key, from_object, header_token, is_valid_id, within_id_limit, JsonObject,
};
use super::state::AppState;
use super::throttle::client_addr;
use crate::client::ClientInfo;
use crate::record::{now, secs};
use crate::store::{Destroyed, End, NewSession, Session, SessionChange, UserBinding};
use crate::token::SessionToken;
use edge_session_sync::RotateConflict;

/// The most keys a session's data may hold.
const MAX_DATA_KEYS: usize = 256;

/// Refuse any `/v1` call without a valid bearer key (the `/v1` scope's
/// `wrap_fn`).
pub fn require_api_key<S>(req: ServiceRequest, service: &S) -> KeyChecked<S::Future>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
{
    let ok = match (
        req.app_data::<web::Data<AppState>>(),
        bearer_key(req.request()),
    ) {
        (Some(state), Some(key)) => state.api_keys.accepts(key),
        _ => false,
    };
    if ok {
        return KeyChecked::Passed(service.call(req));
    }
    let refusal = ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        "missing or invalid API key",
    );
    let (req, _) = req.into_parts();
    KeyChecked::Refused(ready(Ok(ServiceResponse::from_err(refusal, req))))
}

/// The answer to a `/v1` call: the route's, or the key check's refusal.
pub enum KeyChecked<F> {
    /// The key was accepted.
    Passed(F),
    /// It was not.
    Refused(Ready<Result<ServiceResponse, actix_web::Error>>),
}

impl<F> Future for KeyChecked<F>
where
    F: Future<Output = Result<ServiceResponse, actix_web::Error>> + Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.get_mut() {
            KeyChecked::Passed(fut) => Pin::new(fut).poll(cx),
            KeyChecked::Refused(res) => Pin::new(res).poll(cx),
        }
    }
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

/// A listed session's JSON with its `client` object, when the sign-in
/// recorded one (each of its fields is left out when unknown).
pub(super) fn with_client(
    mut listed: serde_json::Value,
    client: Option<&ClientInfo>,
) -> serde_json::Value {
    if let (Some(obj), Some(client)) = (listed.as_object_mut(), client) {
        if let Ok(fields) = serde_json::to_value(client.fields()) {
            obj.insert("client".to_owned(), fields);
        }
    }
    listed
}

fn validate_data(data: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if data.len() > MAX_DATA_KEYS || !data.keys().all(|k| is_valid_id(k)) {
        return Err(ApiError::bad_request(
            ErrorCode::MalformedInput,
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
        if request::media_type(&req) != request::JSON {
            return Err(request::json_only());
        }
        request::parse_json_object(&body)
            .map_err(|e| ApiError::bad_request(ErrorCode::MalformedJson, e))?
    };
    validate_data(&body.data)?;
    let (token, session) = state
        .store
        .create(NewSession::anonymous(body.data), now())
        .await?;
    Ok(HttpResponse::Created()
        .json(serde_json::json!({ "token": token.expose(), "expires_at": secs(session.record.expires_at()) })))
}

/// `GET /v1/session`.
pub async fn read(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, session) = header_session(&state, &req).await?;
    Ok(HttpResponse::Ok().json(session_json(&session)))
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
            Ok(updated) => return Ok(HttpResponse::Ok().json(session_json(&updated))),
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
    /// The end user's client, as the app saw it; without it, the request's
    /// own address (through `server.trusted_proxies`) and `User-Agent`.
    #[serde(default)]
    client: Option<ClientBody>,
}

/// `client` of a regenerate: what the app saw of its user's client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientBody {
    address: Option<String>,
    user_agent: Option<String>,
}

/// `POST /v1/session/regenerate`: a new token bound to `user_id`; the old
/// token is dead in both tiers.
pub async fn regenerate(
    req: HttpRequest,
    body: web::Json<JsonObject>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: RegenerateBody = from_object(body.into_inner())?;
    if !is_valid_id(&body.user_id) || body.role.as_deref().is_some_and(|r| !within_id_limit(r)) {
        return Err(ApiError::bad_request(
            ErrorCode::MalformedInput,
            "user_id must be 1-256 characters, role at most 256",
        ));
    }
    let client = match &body.client {
        None => state.client_of(&req),
        Some(c) => {
            let address = match c.address.as_deref().map(str::parse::<IpAddr>) {
                None => client_addr(&req, &state.trusted_proxies),
                Some(Ok(ip)) => ip,
                Some(Err(_)) => {
                    return Err(ApiError::bad_request(
                        ErrorCode::MalformedInput,
                        "client.address must be an IPv4 or IPv6 address",
                    ))
                }
            };
            state.client.record(address, c.user_agent.as_deref())
        }
    };
    let (_, session) = header_session(&state, &req).await?;
    let binding = UserBinding {
        user_id: body.user_id,
        role: body.role,
        client,
    };
    match state.store.regenerate(&session, Some(binding), body.keep_data, now()).await? {
        Ok((token, new)) => Ok(HttpResponse::Ok()
            .json(serde_json::json!({ "token": token.expose(), "expires_at": secs(new.record.expires_at()) }))),
        Err(conflict) => {
            let why = match conflict {
                RotateConflict::EpochChanged => "the user was logged out everywhere meanwhile",
                RotateConflict::TransactionInProgress => "another write to this session is in progress",
                _ => "the session changed or ended since it was read",
            };
            Err(ApiError::new(StatusCode::CONFLICT, ErrorCode::VersionConflict, format!("{why}; reload and retry")))
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
    if !is_valid_id(user_id) {
        return Err(ApiError::bad_request(
            ErrorCode::MalformedInput,
            "user_id must be 1-256 characters",
        ));
    }
    Ok(())
}

/// `GET /v1/users/{user_id}/sessions?limit=&after=`: one page of the
/// user's live sessions, `Link: <...>; rel="next"` when more may follow.
pub async fn list_user(
    req: HttpRequest,
    user_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    valid_user(&user_id)?;
    let page = PageQuery::from_request(&req)?;
    let listed = state
        .store
        .list_user_sessions(&user_id, page.after, page.limit, now())
        .await?;
    let body: Vec<_> = listed
        .sessions
        .iter()
        .map(|s| {
            with_client(
                serde_json::json!({
                    "handle": s.key.handle(),
                    "created_at": secs(s.record.created_at),
                    "last_seen_at": secs(s.record.last_seen_at),
                }),
                s.record.client.as_ref(),
            )
        })
        .collect();
    let mut res = HttpResponse::Ok();
    paging::link_next(&mut res, &req, &page, listed.next.as_ref());
    Ok(res.json(body))
}

/// `DELETE /v1/sessions`: end every session of every user (the fleet's
/// global epoch, raised once).
pub async fn revoke_everyone(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let epoch = state.store.revoke_everyone(now()).await?;
    tracing::warn!(
        epoch,
        "every session of every user ended (DELETE /v1/sessions)"
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({ "global_epoch": epoch })))
}

/// `DELETE /v1/users/{user_id}/sessions`: log out everywhere.
pub async fn revoke_user(
    user_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    valid_user(&user_id)?;
    let revoked = state.store.revoke_user(&user_id, now()).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "revoked": revoked })))
}

/// `DELETE /v1/users/{user_id}/sessions/{handle}`.
pub async fn revoke_one(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (user_id, handle) = path.into_inner();
    valid_user(&user_id)?;
    state.revoke_handle(&user_id, &handle, End::ByAdmin).await?;
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
        assert_eq!(err.code.as_str(), "malformed_json");
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
            assert_eq!(
                patch(&text).unwrap_err().code.as_str(),
                "malformed_json",
                "{bad}"
            );
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
