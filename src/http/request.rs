//! Reading a request: the session token (header or cookie), the API key,
//! the body's media type, JSON-object bodies, and the one length limit on
//! ids. Every refusal is an [`ApiError`].

use actix_web::error::JsonPayloadError;
use actix_web::http::header;
use actix_web::{web, HttpRequest};

use super::error::{ApiError, ErrorCode};
use crate::token::SessionToken;

/// The longest user id, role, username or data key, in characters (not
/// bytes).
pub const MAX_ID_CHARS: usize = 256;

/// Whether `text` is within [`MAX_ID_CHARS`].
pub fn within_id_limit(text: &str) -> bool {
    text.chars().count() <= MAX_ID_CHARS
}

/// Whether `text` is a usable id: 1 to [`MAX_ID_CHARS`] characters.
pub fn is_valid_id(text: &str) -> bool {
    !text.is_empty() && within_id_limit(text)
}

/// The header carrying the session token on `/v1`.
pub const TOKEN_HEADER: &str = "x-session-token";

/// The token from `X-Session-Token`: 400 if missing or malformed.
pub fn header_token(req: &HttpRequest) -> Result<SessionToken, ApiError> {
    let value = req.headers().get(TOKEN_HEADER).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::MissingToken,
            "the X-Session-Token header is required",
        )
    })?;
    let text = value.to_str().map_err(|_| {
        ApiError::bad_request(
            ErrorCode::MalformedToken,
            "X-Session-Token is not a session token",
        )
    })?;
    SessionToken::parse(text.trim()).map_err(|e| {
        ApiError::bad_request(ErrorCode::MalformedToken, format!("X-Session-Token: {e}"))
    })
}

/// The session token from the cookie named `name`, if it parses. Malformed
/// values are treated as no cookie at all.
pub fn cookie_token(req: &HttpRequest, name: &str) -> Option<SessionToken> {
    // The Cookie header(s) read in place: no parse of every cookie into
    // owned values. A token is base64url, so it is never percent-encoded.
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .and_then(|(_, value)| SessionToken::parse(value.trim_matches('"')).ok())
}

/// The key presented as `Authorization: Bearer <key>`, if any. The scheme
/// is case-insensitive (RFC 9110 §11.1).
pub fn bearer_key(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?
        .trim_start();
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

/// The body's media type: the `Content-Type` without parameters, lower
/// case; empty when absent or not text.
pub fn media_type(req: &HttpRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The media type of JSON bodies.
pub const JSON: &str = "application/json";

/// The media type of HTML form bodies.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// 415 for a route that takes only JSON.
pub fn json_only() -> ApiError {
    ApiError::unsupported_media_type("send Content-Type: application/json")
}

/// Whether the client asked for JSON (JSON body or `Accept`), else a form.
pub fn wants_json(req: &HttpRequest) -> bool {
    let has = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(JSON))
    };
    has(header::CONTENT_TYPE) || has(header::ACCEPT)
}

/// State-changing browser routes refuse cross-origin requests: an `Origin`
/// header that is not this server's own origin, or `Sec-Fetch-Site:
/// cross-site`, gets 403. (No `Origin` at all: a non-browser client; the
/// SameSite=Strict cookie already keeps cross-site browser requests out.)
pub fn check_same_origin(req: &HttpRequest) -> Result<(), ApiError> {
    if let Some(site) = req.headers().get("sec-fetch-site") {
        if site.as_bytes().eq_ignore_ascii_case(b"cross-site") {
            return Err(ApiError::cross_origin());
        }
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    match origin.to_str() {
        Ok(origin) if origin.eq_ignore_ascii_case(&own) => Ok(()),
        _ => Err(ApiError::cross_origin()),
    }
}

/// A JSON request body. Bodies are read as an object first: serde's derived
/// `Deserialize` would also take a struct from an array of its fields in
/// order (`[{"k":"v"}, 3]`), which the API does not accept.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// `object` as `T`: 400 `malformed_json` if it does not fit.
pub fn from_object<T: serde::de::DeserializeOwned>(object: JsonObject) -> Result<T, ApiError> {
    object_as(object).map_err(|e| ApiError::bad_request(ErrorCode::MalformedJson, e))
}

/// `body` as a JSON object, then as `T`; the error is the parser's message.
pub fn parse_json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice::<JsonObject>(body)
        .map_err(|e| e.to_string())
        .and_then(object_as)
}

fn object_as<T: serde::de::DeserializeOwned>(object: JsonObject) -> Result<T, String> {
    T::deserialize(serde_json::Value::Object(object)).map_err(|e| e.to_string())
}

/// JSON extractor settings: size limit and JSON error bodies.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| {
            let api = match &err {
                JsonPayloadError::OverflowKnownLength { .. }
                | JsonPayloadError::Overflow { .. } => ApiError::payload_too_large(),
                JsonPayloadError::ContentType => json_only(),
                JsonPayloadError::Deserialize(e) => {
                    ApiError::bad_request(ErrorCode::MalformedJson, e.to_string())
                }
                _ => ApiError::bad_request(
                    ErrorCode::MalformedJson,
                    "the request body is not valid JSON",
                ),
            };
            api.into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_objects_not_arrays_of_fields() {
        assert!(serde_json::from_str::<JsonObject>(r#"[{"k":"v"}, 3]"#).is_err());
        assert!(parse_json_object::<JsonObject>(br#"[{"k":"v"}, 3]"#).is_err());
        assert!(parse_json_object::<JsonObject>(br#"{"k":"v"}"#).is_ok());
    }

    #[test]
    fn the_id_limit_counts_characters_not_bytes() {
        assert!(is_valid_id(&"ü".repeat(MAX_ID_CHARS)));
        assert!(!is_valid_id(&"ü".repeat(MAX_ID_CHARS + 1)));
        assert!(!is_valid_id(""));
        assert!(within_id_limit(""));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let key = |value: &str| {
            let req = actix_web::test::TestRequest::default()
                .insert_header((header::AUTHORIZATION, value))
                .to_http_request();
            bearer_key(&req).map(str::to_owned)
        };
        for value in ["Bearer k", "bearer k", "BEARER k", "bEaReR   k "] {
            assert_eq!(key(value).as_deref(), Some("k"), "{value}");
        }
        assert_eq!(key("Basic k"), None);
        assert_eq!(key("Bearer"), None);
        assert_eq!(key("Bearer "), None);
        assert_eq!(key("Bearerk"), None);
    }

    #[test]
    fn media_type_is_the_essence_in_lower_case() {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::CONTENT_TYPE, "Application/JSON ; charset=utf-8"))
            .to_http_request();
        assert_eq!(media_type(&req), JSON);
        let req = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(media_type(&req), "");
    }
}
