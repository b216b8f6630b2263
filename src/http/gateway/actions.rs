//! Upstream actions: the app behind the proxy signs people in and out by
//! answering with
//!
//! ```text
//! X-Edge-Action: login; user=<id>            (or: login; user=<id>; role=<role>,
//!                                                 logout, logout-everywhere)
//! X-Edge-Action-Signature: <lower-case hex HMAC-SHA256(action_secret, nonce + "\n" + action)>
//! ```
//!
//! where `nonce` is the `X-Edge-Nonce` the node sent with that very request:
//! a signature is good for one response, so one seen elsewhere (a log, a
//! cached page, another user's response) cannot be replayed.
//!
//! | the response carries | the node |
//! |---|---|
//! | a valid pair | carries the action out before the response head is sent: `login` is the login page's sign-in (regenerate the request's live session in one DynamoDB transaction, or create it bound), then `Set-Cookie`; `logout` destroys the session, `logout-everywhere` revokes every session of its user; both expire the cookie |
//! | a valid pair whose action fails (store) | answers 503 `store_unavailable` (or the store's error) instead of the upstream's response, with no `Set-Cookie` |
//! | an action with a missing or wrong signature, or one that does not parse | ignores it, passes the response on, logs a warning (no values) and counts it |
//!
//! Both headers are always removed from the response, and the upstream can
//! never set the session cookie itself (`headers::to_client`).
//!
//! A validly signed action is carried out only for a request that could
//! not have come from another site ([`origin_allows`]): not a GET or HEAD
//! (a link or an image must never sign anyone in or out), with a
//! `Sec-Fetch-Site`, when present, of `same-origin` or `none`, and an
//! `Origin`, when present, that is the node's own or in
//! `gateway.action_origins`. Otherwise the client gets 403 `cross_origin`
//! instead of the response, and no cookie. (A sibling subdomain is
//! same-site, so the `SameSite=Strict` cookie alone would not stop it from
//! signing a victim into the attacker's account.)
//!
//! Counted as `edge_session_gateway_actions_total{action,result}`, `action`
//! one of `login`, `logout`, `logout_everywhere`, `unknown`; `result` one of
//! `done`, `failed`, `refused` (the origin rules), `bad_signature`,
//! `malformed`.

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use super::headers::{ACTION, ACTION_SIGNATURE};
use super::upstream::Caller;
use crate::http::error::ApiError;
use crate::http::request::is_valid_id;
use crate::http::state::AppState;
use crate::record::now;
use crate::store::UserBinding;
use crate::token::SessionToken;

/// An action the upstream asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Sign the request's browser in as this user.
    Login(UserBinding),
    /// Sign the request's session out.
    Logout,
    /// Sign out every session of the request's user.
    LogoutEverywhere,
}

/// What a carried-out action does to the response.
#[derive(Debug)]
pub enum Outcome {
    /// Set the cookie of this new session.
    SignedIn(SessionToken),
    /// Expire the session cookie.
    SignedOut,
}

/// An id or role as the grammar takes it: 1 to 256 characters, no `;`, no
/// control character, no white space at either end.
fn id(text: &str) -> Option<&str> {
    let clean = !text.contains(';')
        && !text.chars().any(char::is_control)
        && text.trim() == text
        && is_valid_id(text);
    clean.then_some(text)
}

/// Parse an action (exactly the contract's grammar; `None` otherwise).
pub fn parse(text: &str) -> Option<Action> {
    match text {
        "logout" => return Some(Action::Logout),
        "logout-everywhere" => return Some(Action::LogoutEverywhere),
        _ => {}
    }
    let rest = text.strip_prefix("login; user=")?;
    let (user, role) = match rest.split_once("; role=") {
        Some((user, role)) => (user, Some(id(role)?.to_owned())),
        None => (rest, None),
    };
    Some(Action::Login(UserBinding {
        user_id: id(user)?.to_owned(),
        role,
        client: None,
    }))
}

/// The 32 bytes of a lower-case hex SHA-256 tag.
fn lower_hex(text: &[u8]) -> Option<[u8; 32]> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    if text.len() != 64 {
        return None;
    }
    let mut tag = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        tag[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(tag)
}

/// Whether `signature` is the action's HMAC over `nonce` (compared in
/// constant time).
pub fn signature_valid(secret: &[u8], nonce: &[u8], action: &[u8], signature: &[u8]) -> bool {
    let Some(tag) = lower_hex(signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(nonce);
    mac.update(b"\n");
    mac.update(action);
    mac.verify_slice(&tag).is_ok()
}

fn label(action: Option<&Action>) -> &'static str {
    match action {
        Some(Action::Login(_)) => "login",
        Some(Action::Logout) => "logout",
        Some(Action::LogoutEverywhere) => "logout_everywhere",
        None => "unknown",
    }
}

fn count(action: &'static str, result: &'static str) {
    metrics::counter!("edge_session_gateway_actions_total", "action" => action, "result" => result)
        .increment(1);
}

/// The validly signed action of an upstream response with `headers`, if
/// any; anything else is logged, counted and ignored.
fn signed_action(state: &AppState, nonce: &HeaderValue, headers: &HeaderMap) -> Option<Action> {
    let mut values = headers.get_all(ACTION);
    let value = values.next()?;
    let text = std::str::from_utf8(value.as_bytes()).ok();
    let action = text.and_then(parse);
    let name = label(action.as_ref());
    let secret = state.gateway.action_secret.as_ref()?.expose_secret();
    let mut signatures = headers.get_all(ACTION_SIGNATURE);
    let signed = match (signatures.next(), signatures.next(), values.next()) {
        (Some(sig), None, None) => signature_valid(
            secret.as_bytes(),
            nonce.as_bytes(),
            value.as_bytes(),
            sig.as_bytes(),
        ),
        _ => false,
    };
    if !signed {
        tracing::warn!(
            action = name,
            "ignored an upstream action with a missing or wrong signature"
        );
        count(name, "bad_signature");
        return None;
    }
    if action.is_none() {
        tracing::warn!("ignored a signed upstream action that does not parse");
        count(name, "malformed");
    }
    action
}

/// Carry out the validly signed action of the upstream response `headers`
/// (to the request `req` from `caller`, which was sent `nonce`). `Ok(None)`:
/// nothing to do. An error is the client's answer instead of the response.
pub async fn carry_out(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    nonce: &HeaderValue,
    headers: &HeaderMap,
) -> Result<Option<Outcome>, ApiError> {
    let Some(action) = signed_action(state, nonce, headers) else {
        return Ok(None);
    };
    let name = label(Some(&action));
    if let Err(refused) = origin_allows(state, req) {
        tracing::warn!(
            action = name,
            method = %req.method(),
            "refused an upstream action on a request that may come from another site"
        );
        count(name, "refused");
        return Err(refused);
    }
    let done = match action {
        Action::Login(binding) => state.sign_in(req, binding).await.map(Outcome::SignedIn),
        Action::Logout => sign_out(state, req, None).await,
        Action::LogoutEverywhere => {
            let user = caller.identity.as_ref().map(|i| i.user.as_str());
            sign_out(state, req, user).await
        }
    };
    count(name, if done.is_ok() { "done" } else { "failed" });
    done.map(Some)
}

/// Whether an action may be carried out for `req` (see the module's docs):
/// 403 `cross_origin` if not.
pub fn origin_allows(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::cross_origin());
    }
    if let Some(site) = req.headers().get("sec-fetch-site") {
        let site = site.as_bytes();
        if !(site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none")) {
            return Err(ApiError::cross_origin());
        }
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    let listed = |origin: &str| {
        origin.eq_ignore_ascii_case(&own)
            || state
                .gateway
                .action_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
    };
    match origin.to_str() {
        Ok(origin) if listed(origin) => Ok(()),
        _ => Err(ApiError::cross_origin()),
    }
}

/// Destroy the request's session, and every session of `everywhere`'s
/// user if set.
async fn sign_out(
    state: &AppState,
    req: &HttpRequest,
    everywhere: Option<&str>,
) -> Result<Outcome, ApiError> {
    if let Some(user) = everywhere {
        state.store.revoke_user(user, now()).await?;
    }
    if let Some(token) = state.cookie_token(req) {
        state.store.destroy(&token, now()).await?;
    }
    Ok(Outcome::SignedOut)
}

/// Put `outcome`'s cookie on the response, and make the response
/// uncacheable whatever the app said: a shared cache that kept it would
/// hand one user's session to others.
pub fn finish(
    state: &AppState,
    outcome: Option<Outcome>,
    res: &mut HttpResponse,
) -> Result<(), ApiError> {
    let cookie = match outcome {
        None => return Ok(()),
        Some(Outcome::SignedIn(token)) => state.session_cookie(&token),
        Some(Outcome::SignedOut) => state.removal_cookie(),
    };
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for validator in [header::EXPIRES, header::ETAG, header::LAST_MODIFIED] {
        headers.remove(validator);
    }
    res.add_cookie(&cookie).map_err(|_| ApiError::internal())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user: &str, role: Option<&str>) -> Option<Action> {
        Some(Action::Login(UserBinding {
            user_id: user.into(),
            role: role.map(Into::into),
            client: None,
        }))
    }

    #[test]
    fn the_grammar_is_exactly_the_contracts() {
        assert_eq!(parse("login; user=alice"), login("alice", None));
        assert_eq!(
            parse("login; user=alice; role=admin"),
            login("alice", Some("admin"))
        );
        assert_eq!(parse("login; user=ünï cödé"), login("ünï cödé", None));
        assert_eq!(parse("logout"), Some(Action::Logout));
        assert_eq!(parse("logout-everywhere"), Some(Action::LogoutEverywhere));
        let max = "u".repeat(256);
        assert_eq!(parse(&format!("login; user={max}")), login(&max, None));
        for bad in [
            "",
            "login",
            "login;user=alice",
            "login; user=",
            "login; user=alice;",
            "login; user=alice; role=",
            "login; user=alice; role=a; role=b",
            "login; user=alice; admin=1",
            "login; user= alice",
            "login; user=a\tb",
            "Login; user=alice",
            "logout ",
            "LOGOUT",
            "logout; user=alice",
            "logout-everywhere; user=alice",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse(&format!("login; user={max}u")),
            None,
            "257 characters"
        );
    }

    #[test]
    fn only_the_lower_case_hex_hmac_over_this_nonce_verifies() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(b"NONCE\nlogout");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(signature_valid(secret, b"NONCE", b"logout", hex.as_bytes()));
        assert!(!signature_valid(
            secret,
            b"OTHER",
            b"logout",
            hex.as_bytes()
        ));
        assert!(!signature_valid(
            secret,
            b"NONCE",
            b"logout-everywhere",
            hex.as_bytes()
        ));
        assert!(!signature_valid(
            b"another secret of 32 bytes......",
            b"NONCE",
            b"logout",
            hex.as_bytes()
        ));
        assert!(!signature_valid(
            secret,
            b"NONCE",
            b"logout",
            hex.to_uppercase().as_bytes()
        ));
        assert!(!signature_valid(
            secret,
            b"NONCE",
            b"logout",
            &hex.as_bytes()[..62]
        ));
        assert!(!signature_valid(secret, b"NONCE", b"logout", b""));
    }
}
