//! JSON errors: `{"error": code, "message": text}` with the right status.
//! Messages never carry a session token; internal failures are opaque to the
//! client and logged with their cause. The codes are the closed set
//! [`ErrorCode`]; `docs/openapi.json` documents them.

use std::borrow::Cow;

use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::store;

/// Declares [`ErrorCode`] with its wire strings and [`ErrorCode::ALL`] from
/// one list, so the list of codes cannot miss one.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $wire:literal,)*) => {
        /// The `"error"` string of a JSON error: stable, machine-readable.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                }
            }
        }
    };
}

error_codes! {
    /// 400: the body is not the JSON object the route takes.
    MalformedJson = "malformed_json",
    /// 400: the login form does not parse.
    MalformedForm = "malformed_form",
    /// 400: a value is out of range (lengths, counts).
    MalformedInput = "malformed_input",
    /// 400: no `X-Session-Token` header.
    MissingToken = "missing_token",
    /// 400: `X-Session-Token` is not a session token.
    MalformedToken = "malformed_token",
    /// 400 from the framework (a request it could not read).
    BadRequest = "bad_request",
    /// 401: missing or invalid API key on `/v1`.
    Unauthorized = "unauthorized",
    /// 401: no signed-in browser session.
    Unauthenticated = "unauthenticated",
    /// 401: wrong username or password at login.
    InvalidCredentials = "invalid_credentials",
    /// 403: a cross-origin state change.
    CrossOrigin = "cross_origin",
    /// 403 from the framework.
    Forbidden = "forbidden",
    /// 403: forward auth's `?role=` names a role the user does not have.
    WrongRole = "wrong_role",
    /// 403: ending another session needs a recent sign-in, or the password
    /// sent again.
    ReauthRequired = "reauth_required",
    /// 404: no live session for this token or handle.
    UnknownSession = "unknown_session",
    /// 404: no such route.
    NotFound = "not_found",
    /// 404: session events are off on this node (`events.enabled`).
    EventsDisabled = "events_disabled",
    /// 410: the event log no longer holds what follows this cursor.
    CursorExpired = "cursor_expired",
    /// 405: the route does not take this method.
    MethodNotAllowed = "method_not_allowed",
    /// 409: the session changed since it was read.
    VersionConflict = "version_conflict",
    /// 408: the request body came slower than its deadline.
    BodyTimeout = "body_timeout",
    /// 413: the body is over `server.max_body_bytes`.
    PayloadTooLarge = "payload_too_large",
    /// 413: the session record would be over `session.max_record_bytes`.
    RecordTooLarge = "record_too_large",
    /// 415: a body of a type the route does not take.
    UnsupportedMediaType = "unsupported_media_type",
    /// 431: request headers too large.
    HeadersTooLarge = "headers_too_large",
    /// 429: login attempts over budget, or too many in progress
    /// (`Retry-After` says when to retry).
    TooManyAttempts = "too_many_attempts",
    /// 429: a client has `gateway.max_inflight_per_client` proxied
    /// requests in flight (with `Retry-After`).
    TooManyRequests = "too_many_requests",
    /// 503: DynamoDB cannot be reached.
    StoreUnavailable = "store_unavailable",
    /// 503: DynamoDB throttled the call (capacity, not an outage); with
    /// `Retry-After`.
    StoreThrottled = "store_throttled",
    /// 502: the gateway's upstream cannot be reached.
    UpstreamUnavailable = "upstream_unavailable",
    /// 504: the gateway's upstream sent no response head in time.
    UpstreamTimeout = "upstream_timeout",
    /// 5xx: an internal failure (details only in the log).
    Internal = "internal",
    /// Any other status the framework answers with.
    Other = "error",
}

impl ErrorCode {
    /// The code for a status that reached the client without a JSON body
    /// (actix's own 404, 405, 413, 431 ...).
    fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadersTooLarge,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::StoreUnavailable,
            s if s.is_server_error() => ErrorCode::Internal,
            _ => ErrorCode::Other,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation (most are fixed texts: no allocation).
    pub message: Cow<'static, str>,
    /// `Retry-After`, in seconds, if any.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// The same error with `Retry-After: secs`.
    pub fn retry_after(self, secs: u64) -> Self {
        ApiError {
            retry_after_secs: Some(secs),
            ..self
        }
    }

    /// 400 for input that does not parse.
    pub fn bad_request(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 on browser routes that need a signed-in user.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            "no signed-in session",
        )
    }

    /// 404 for a session that is unknown, expired or revoked.
    pub fn unknown_session() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownSession,
            "no live session for this token",
        )
    }

    /// 409 on a version conflict.
    pub fn conflict() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ErrorCode::VersionConflict,
            "the session changed since it was read; reload and retry",
        )
    }

    /// 403 for a cross-origin state change.
    pub fn cross_origin() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::CrossOrigin,
            "cross-origin requests may not change session state",
        )
    }

    /// 403: ending another session needs a recent authentication.
    pub fn reauth_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::ReauthRequired,
            "ending another session needs a sign-in within session.reauth_window_secs, or the password sent as `password`",
        )
    }

    /// 408 for a request body slower than its deadline.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BodyTimeout,
            "request body too slow",
        )
    }

    /// 429 for a client with too many proxied requests in flight.
    pub fn too_many_requests() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyRequests,
            "too many requests in flight from this client",
        )
        .retry_after(1)
    }

    /// 413 for a body over `server.max_body_bytes`.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "request body too large",
        )
    }

    /// 415 for a body of a type the route does not take; `message` names
    /// the types it does.
    pub fn unsupported_media_type(message: &'static str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            message,
        )
    }

    /// 500, opaque: the cause belongs in the log, not the answer.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        )
    }

    /// The response for this error, for a handler that answers it itself.
    pub fn into_response(self) -> HttpResponse {
        self.error_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED && self.code == ErrorCode::Unauthorized {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response
            .content_type(header::ContentType::json())
            .body(error_body(self.code, &self.message))
    }
}

impl From<store::Error> for ApiError {
    fn from(err: store::Error) -> Self {
        if let store::Error::RecordTooLarge { size, max } = err {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::RecordTooLarge,
                format!("the session record would be {size} bytes; at most {max} are kept"),
            );
        }
        if matches!(&err, store::Error::Dynamo(e) if e.is_throttled()) {
            // Capacity, not an outage: the client may retry after a second.
            tracing::warn!(%err, "DynamoDB throttled");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreThrottled,
                "the session store is over its capacity; retry after a second",
            )
            .retry_after(1)
        } else if err.is_unavailable() {
            tracing::warn!(%err, "DynamoDB unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable,
                "the session store cannot be reached; retry later",
            )
        } else {
            tracing::error!(%err, "session store failure");
            ApiError::internal()
        }
    }
}

/// `{"error": code, "message": message}`, written in one allocation.
fn error_body(code: ErrorCode, message: &str) -> Vec<u8> {
    let code = code.as_str();
    let mut body = Vec::with_capacity(32 + code.len() + message.len());
    body.extend_from_slice(b"{\"error\":\"");
    // Codes are snake_case ASCII words: nothing to escape.
    body.extend_from_slice(code.as_bytes());
    body.extend_from_slice(b"\",\"message\":");
    serde_json::to_writer(&mut body, message).expect("a string always serializes");
    body.push(b'}');
    body
}

/// Give an error answer (4xx, 5xx) that is not already JSON (or an HTML
/// page) the JSON error shape; any other answer is left as it is. The
/// original body is dropped: actix's plain-text messages can echo parts of
/// the request.
pub fn json_error(res: ServiceResponse) -> ServiceResponse {
    let status = res.status();
    if !status.is_client_error() && !status.is_server_error() {
        return res;
    }
    let is_typed = res.headers().get(header::CONTENT_TYPE).is_some_and(|ct| {
        let ct = ct.as_bytes();
        ct.starts_with(b"application/json") || ct.starts_with(b"text/html")
    });
    if is_typed {
        return res;
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_owned(),
        StatusCode::NOT_FOUND => "no such route".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_owned(),
        s => s.canonical_reason().unwrap_or("error").to_ascii_lowercase(),
    };
    let body = error_body(ErrorCode::for_status(status), &message);
    let (req, res) = res.into_parts();
    let mut res = res.set_body(body);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    ServiceResponse::new(req, res.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_words() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} listed twice");
            assert!(text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
