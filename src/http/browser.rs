//! Browser routes. The session token lives only in the `__Host-sid` cookie.
//!
//! Nothing durable for nothing to keep: `GET /` and every read route write
//! nothing in either tier and set no cookie for a visitor without a session
//! or with an unknown token (an unknown cookie is left as it is: a read
//! route changes nothing). The login page needs no pre-login session; the
//! cross-origin checks protect `POST /login`.
//!
//! A login with a live prior session goes through the store's
//! one-transaction `regenerate`, so the identifier the browser carried before
//! login (possibly planted by an attacker) is dead in both tiers afterwards.
//! A login without one creates the bound session directly: one conditional
//! write, in one transaction with the user's epoch check. A failed login
//! leaves the session exactly as it was.

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::SignedIn;
use super::error::{ApiError, ErrorCode};
use super::page::{self, SessionRow};
use super::paging::{self, PageQuery};
use super::request::{self, check_same_origin, same_origin_path, wants_json, within_id_limit};
use super::state::AppState;
use crate::record::{now, secs, Text};
use crate::store::{End, Session, UserBinding};
use crate::token::StorageKey;

/// The longest password accepted, in characters.
const MAX_PASSWORD_CHARS: usize = 1024;

/// A login form or JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginForm {
    username: String,
    password: String,
    /// Where a form login goes next: followed only if it is a path on this
    /// origin ([`same_origin_path`]), else `/`.
    #[serde(default)]
    next: Option<String>,
}

/// `?next=` of the login page.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(ContentType::html())
        .body(body)
}

/// `GET /`: the login page, or the signed-in view. Writes nothing and sets
/// no cookie.
pub async fn index(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.cookie_session(&req).await? {
        Some((_, session)) if session.record.user_id.is_some() => {
            let user = session
                .record
                .user_id
                .as_deref()
                .unwrap_or_default()
                .to_owned();
            // One page, not the user's whole listing; the rest is a link away.
            let first = PageQuery {
                limit: PAGE_VIEW_LIMIT,
                after: None,
            };
            let (mut rows, next) = list_rows(&state, &user, &session, &first).await?;
            rows.sort_by_key(|r| r.created_at);
            let base = state.browser_base();
            let mine = format!("{base}{MY_SESSIONS}");
            let more = next.map(|n| paging::next_href(&mine, first.limit, &n));
            let role = session.record.role.as_deref().unwrap_or("");
            // Signed in too long ago to end another session without the
            // password: the forms ask for it.
            let ask_password =
                now().saturating_sub(session.record.created_at) > state.reauth_window_ms;
            Ok(html(
                StatusCode::OK,
                page::signed_in(&user, role, &rows, more.as_deref(), base, ask_password),
            ))
        }
        Some(_) | None => Ok(html(
            StatusCode::OK,
            page::login(None, state.browser_base(), None),
        )),
    }
}

/// `GET /login?next=`: the login page, carrying `next` if it is a path on
/// this origin (where a protected path sends a browser). Writes nothing.
pub async fn login_page(query: web::Query<NextQuery>, state: web::Data<AppState>) -> HttpResponse {
    let next = query.next.as_deref().and_then(same_origin_path);
    html(
        StatusCode::OK,
        page::login(None, state.browser_base(), next),
    )
}

/// Parse a login body: form or JSON, by content type.
fn parse_login(req: &HttpRequest, body: &[u8]) -> Result<LoginForm, ApiError> {
    match request::media_type(req).as_str() {
        request::JSON => request::parse_json_object(body).map_err(|e| {
            ApiError::bad_request(ErrorCode::MalformedJson, format!("login body: {e}"))
        }),
        request::FORM => serde_urlencoded::from_bytes(body).map_err(|e| {
            ApiError::bad_request(ErrorCode::MalformedForm, format!("login form: {e}"))
        }),
        _ => Err(ApiError::unsupported_media_type(
            "send application/x-www-form-urlencoded or application/json",
        )),
    }
}

/// `POST /login`.
pub async fn login(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Refused before the body is read: the cheapest answer to a flood.
    let _admitted = state.login.admit()?;
    check_same_origin(&req)?;
    let body = match payload.to_bytes_limited(state.max_body_bytes).await {
        Ok(Ok(body)) => body,
        // A body cut by its deadline becomes 408 in `body::deadline`.
        Ok(Err(_)) => {
            return Err(ApiError::bad_request(
                ErrorCode::BadRequest,
                "the request body could not be read",
            ))
        }
        Err(_) => return Err(ApiError::payload_too_large()),
    };
    let form = parse_login(&req, &body)?;
    let json = wants_json(&req);
    if !within_id_limit(&form.username) || form.password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(ApiError::bad_request(
            ErrorCode::MalformedInput,
            "username or password too long",
        ));
    }
    let signed_in = state
        .login
        .sign_in(&req, form.username, form.password)
        .await?;
    let Some(SignedIn { user_id, role }) = signed_in else {
        // Nothing about the session changes on a failed login.
        return Ok(if json {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "wrong username or password",
            )
            .into_response()
        } else {
            html(
                StatusCode::UNAUTHORIZED,
                page::login(
                    Some("Wrong username or password."),
                    state.browser_base(),
                    form.next.as_deref().and_then(same_origin_path),
                ),
            )
        });
    };
    let binding = UserBinding {
        user_id: user_id.clone(),
        role: Some(role),
        client: None,
    };
    let token = state.sign_in(&req, binding).await?;
    let mut res = if json {
        HttpResponse::Ok().json(serde_json::json!({ "user_id": user_id }))
    } else {
        see_other(
            form.next
                .as_deref()
                .and_then(same_origin_path)
                .unwrap_or("/"),
        )
    };
    res.add_cookie(&state.session_cookie(&token))
        .map_err(|_| ApiError::internal())?;
    Ok(res)
}

/// 303 to `location` (a checked path).
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// `POST /logout`: destroy in both tiers, expire the cookie.
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_same_origin(&req)?;
    if let Some(token) = state.cookie_token(&req) {
        state.store.destroy(&token, now()).await?;
    }
    let mut res = if wants_json(&req) {
        HttpResponse::NoContent().finish()
    } else {
        see_other("/")
    };
    res.add_cookie(&state.removal_cookie())
        .map_err(|_| ApiError::internal())?;
    Ok(res)
}

/// The signed-in user (an in-place copy: no allocation) and session, or
/// 401.
async fn signed_in_session(
    state: &AppState,
    req: &HttpRequest,
) -> Result<(Text, Session), ApiError> {
    match state.cookie_session(req).await? {
        Some((_, session)) => match session.record.user_id.clone() {
            Some(user) => Ok((user, session)),
            None => Err(ApiError::unauthenticated()),
        },
        None => Err(ApiError::unauthenticated()),
    }
}

/// `GET /whoami`.
pub async fn whoami(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    #[derive(serde::Serialize)]
    struct WhoAmI<'a> {
        created_at: u64,
        expires_at: u64,
        role: Option<&'a str>,
        user_id: &'a str,
    }
    let (user, session) = signed_in_session(&state, &req).await?;
    Ok(HttpResponse::Ok().json(WhoAmI {
        created_at: secs(session.record.created_at),
        expires_at: secs(session.record.expires_at()),
        role: session.record.role.as_deref(),
        user_id: &user,
    }))
}

/// The path of "my sessions".
const MY_SESSIONS: &str = "/me/sessions";

/// How many of the user's sessions the signed-in page shows.
const PAGE_VIEW_LIMIT: u32 = 20;

/// One page of the user's live sessions (GSI listing, expiry and local
/// revocations applied), and where the next page starts.
async fn list_rows(
    state: &AppState,
    user: &str,
    current: &Session,
    page: &PageQuery,
) -> Result<(Vec<SessionRow>, Option<StorageKey>), ApiError> {
    let listed = state
        .store
        .list_user_sessions(user, page.after, page.limit, now())
        .await?;
    let rows = listed
        .sessions
        .into_iter()
        .map(|s| SessionRow {
            handle: s.key.handle(),
            created_at: secs(s.record.created_at),
            last_seen_at: secs(s.record.last_seen_at),
            current: current.key == s.key,
            client: s.record.client,
        })
        .collect();
    Ok((rows, listed.next))
}

/// `GET /me/sessions?limit=&after=`: one page of the signed-in user's
/// sessions, `Link: <...>; rel="next"` when more may follow.
pub async fn my_sessions(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let page = PageQuery::from_request(&req)?;
    let (user, session) = signed_in_session(&state, &req).await?;
    let (rows, next) = list_rows(&state, &user, &session, &page).await?;
    let body: Vec<_> = rows
        .iter()
        .map(|r| {
            super::service::with_client(
                serde_json::json!({
                    "handle": r.handle, "created_at": r.created_at, "last_seen_at": r.last_seen_at, "current": r.current,
                }),
                r.client.as_ref(),
            )
        })
        .collect();
    let mut res = HttpResponse::Ok();
    paging::link_next(&mut res, &req, &page, next.as_ref());
    Ok(res.json(body))
}

/// What a request ending another session may carry: the password, sent
/// again (form or JSON `password`).
#[derive(Debug, Default, serde::Deserialize)]
struct Reauth {
    password: Option<String>,
}

/// The password `body` carries, if any.
fn reauth_password(req: &HttpRequest, body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    let reauth: Reauth = match request::media_type(req).as_str() {
        request::JSON => request::parse_json_object(body)
            .map_err(|e| ApiError::bad_request(ErrorCode::MalformedJson, e))?,
        request::FORM => serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::bad_request(ErrorCode::MalformedForm, e.to_string()))?,
        _ => {
            return Err(ApiError::unsupported_media_type(
                "send application/x-www-form-urlencoded or application/json",
            ))
        }
    };
    Ok(reauth.password.filter(|p| !p.is_empty()))
}

/// End the session `handle` of the signed-in user. Ending the current one
/// is a sign-out; ending another needs a recent authentication: a sign-in
/// within `session.reauth_window_secs` (every sign-in makes a new session,
/// so that is the current session's age), or the password sent again,
/// checked as a login is (budgets, hash threads). Otherwise 403
/// `reauth_required`.
async fn end_mine(
    state: &AppState,
    req: &HttpRequest,
    handle: &str,
    body: &[u8],
) -> Result<(), ApiError> {
    check_same_origin(req)?;
    let (user, session) = signed_in_session(state, req).await?;
    let current = session.key.handle() == handle;
    let recent = now().saturating_sub(session.record.created_at) <= state.reauth_window_ms;
    if !current && !recent {
        let Some(password) = reauth_password(req, body)? else {
            return Err(ApiError::reauth_required());
        };
        match state.login.sign_in(req, user.to_string(), password).await? {
            Some(signed) if user == signed.user_id => {}
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::InvalidCredentials,
                    "wrong password",
                ))
            }
        }
    }
    state.revoke_handle(&user, handle, End::ByUser).await?;
    Ok(())
}

/// `DELETE /me/sessions/{handle}`.
pub async fn revoke_mine(
    req: HttpRequest,
    handle: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    end_mine(&state, &req, &handle, &body).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /me/sessions/{handle}/revoke`: the same for a plain HTML form.
pub async fn revoke_mine_form(
    req: HttpRequest,
    handle: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    end_mine(&state, &req, &handle, &body).await?;
    Ok(see_other(&format!("{}/", state.browser_base())))
}
