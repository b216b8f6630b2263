//! HTML pages may not be framed (clickjacking): every `text/html` answer
//! carries `X-Frame-Options: DENY` and `Content-Security-Policy:
//! frame-ancestors 'none'`.

use actix_web::http::header::{self, HeaderMap, HeaderValue};

/// Add the two headers to an answer carrying `headers`, if it is HTML
/// (errors included).
pub fn deny_framing(headers: &mut HeaderMap) {
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/html"));
    if is_html {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
    }
}
