//! The identity headers the gateway sends: `X-Edge-User`, `X-Edge-Role`,
//! `X-Edge-Session`, `X-Edge-Auth-Time`, `X-Edge-Assertion`, for a live
//! session bound to a user.

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::assertion::Identity;
use crate::http::error::ApiError;

/// `X-Edge-User`: the bound user.
pub const USER: HeaderName = HeaderName::from_static("x-edge-user");
/// `X-Edge-Role`: the user's role, empty if none.
pub const ROLE: HeaderName = HeaderName::from_static("x-edge-role");
/// `X-Edge-Session`: the session's public handle.
pub const SESSION: HeaderName = HeaderName::from_static("x-edge-session");
/// `X-Edge-Auth-Time`: Unix seconds of the user's last authentication (an
/// app asks for step-up when it is too old).
pub const AUTH_TIME: HeaderName = HeaderName::from_static("x-edge-auth-time");
/// `X-Edge-Assertion`: the signed JWT.
pub const ASSERTION: HeaderName = HeaderName::from_static("x-edge-assertion");

/// The five headers of `identity`. A user id or role that is not a valid
/// header value (a control character) is refused rather than altered: the
/// app must see exactly the user the session names.
pub fn headers(identity: &Identity) -> Result<[(HeaderName, HeaderValue); 5], ApiError> {
    let values = identity.header_values.get_or_init(|| {
        let value = |text: &str| HeaderValue::from_bytes(text.as_bytes()).ok();
        Some([
            value(&identity.user)?,
            value(&identity.role)?,
            value(&identity.handle)?,
            HeaderValue::from(identity.auth_time),
            value(&identity.assertion)?,
        ])
    });
    let Some([user, role, session, auth_time, assertion]) = values.clone() else {
        tracing::error!("a user id or role holds a character a header cannot carry");
        return Err(ApiError::internal());
    };
    Ok([
        (USER, user),
        (ROLE, role),
        (SESSION, session),
        (AUTH_TIME, auth_time),
        (ASSERTION, assertion),
    ])
}
