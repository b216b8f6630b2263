//! JSON errors: `{"error": code, "message": text}` with the right status.
//! Messages never carry a session token; internal failures are opaque to the
//! client and logged with their cause.

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};

use crate::store;

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 for input that does not parse.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 on browser routes that need a signed-in user.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "no signed-in session",
        )
    }

    /// 404 for a session that is unknown, expired or revoked.
    pub fn unknown_session() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "no live session for this token",
        )
    }

    /// 409 on a version conflict.
    pub fn conflict() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "version_conflict",
            "the session changed since it was read; reload and retry",
        )
    }

    /// 403 for a cross-origin state change.
    pub fn cross_origin() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "cross-origin requests may not change session state",
        )
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
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if self.status == StatusCode::UNAUTHORIZED && self.code == "unauthorized" {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if self.code == "store_throttled" {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(serde_json::json!({ "error": self.code, "message": self.message }))
    }
}

impl From<store::Error> for ApiError {
    fn from(err: store::Error) -> Self {
        if matches!(&err, store::Error::Dynamo(e) if e.is_throttled()) {
            // Capacity, not an outage: the client may retry after a second.
            tracing::warn!(%err, "DynamoDB throttled");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_throttled",
                "the session store is over its capacity; retry after a second",
            )
        } else if err.is_unavailable() {
            tracing::warn!(%err, "DynamoDB unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the session store cannot be reached; retry later",
            )
        } else {
            tracing::error!(%err, "session store failure");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

/// The code for a status that reached the client without a JSON body
/// (actix's own 404, 405, 413, 431 ...).
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "store_unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// `ErrorHandlers` default: give every error response that is not already
/// JSON (or an HTML page) the JSON error shape. The original body is dropped:
/// actix's plain-text messages can echo parts of the request.
pub fn render_json_error<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let status = res.status();
    let is_typed = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/html"));
    if is_typed {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_owned(),
        StatusCode::NOT_FOUND => "no such route".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_owned(),
        s => s.canonical_reason().unwrap_or("error").to_ascii_lowercase(),
    };
    let body = serde_json::json!({ "error": code_for(status), "message": message }).to_string();
    let (req, res) = res.into_parts();
    let mut res = res.set_body(body);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, res.map_into_boxed_body()).map_into_right_body(),
    ))
}
