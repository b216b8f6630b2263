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

/// `text` percent-decoded until nothing changes (at most four rounds, so
/// `%2561` is `a` too); malformed escapes stay as they are, bytes that are
/// not UTF-8 become U+FFFD.
pub fn percent_decoded(text: &str) -> String {
    let mut text = text.to_owned();
    for _ in 0..4 {
        let next = percent_decode_once(&text);
        if next == text {
            break;
        }
        text = next;
    }
    text
}

fn percent_decode_once(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The longest `next` a login follows.
const MAX_NEXT_CHARS: usize = 2048;

/// `next` if it is a path on this origin to send a browser to after login:
/// it starts with one `/` (not `//` or `/\`, which browsers read as
/// another host), holds no control character (browsers drop tabs and line
/// breaks, which would join `/` and `/`), and is still such a path once
/// percent-decoded (`/%2F%2Fevil.example`); as sent, it is printable ASCII
/// (it becomes a `Location` header). `None` otherwise.
pub fn same_origin_path(next: &str) -> Option<&str> {
    let safe = |text: &str| {
        text.starts_with('/')
            && !text.starts_with("//")
            && !text.starts_with("/\\")
            && !text.chars().any(char::is_control)
    };
    let printable = next.bytes().all(|b| (0x20..0x7f).contains(&b));
    (next.len() <= MAX_NEXT_CHARS && printable && safe(next) && safe(&percent_decoded(next)))
        .then_some(next)
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
    fn only_same_origin_paths_are_followed_after_login() {
        for good in [
            "/",
            "/admin",
            "/admin?tab=1&x=%20",
            "/a//b",
            "/a/%2F/b",
            "/%C3%A9",
        ] {
            assert_eq!(same_origin_path(good), Some(good), "{good}");
        }
        for bad in [
            "",
            "admin",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "/%2Fevil.example",
            "/%2F%2Fevil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%255Cevil.example",
            "/%252F%252Fevil.example",
            "https://evil.example",
            "javascript:alert(1)",
            " //evil.example",
            "/\t/evil.example",
            "/%09/evil.example",
            "/x\r\nSet-Cookie: a=b",
            "/%0d%0aSet-Cookie:%20a=b",
            "/é",
        ] {
            assert_eq!(same_origin_path(bad), None, "{bad:?}");
        }
        assert_eq!(same_origin_path(&format!("/{}", "a".repeat(2048))), None);
    }

    #[test]
    fn percent_decoding_repeats_and_keeps_malformed_escapes() {
        assert_eq!(percent_decoded("/%61dmin"), "/admin");
        assert_eq!(percent_decoded("/%2561dmin"), "/admin");
        assert_eq!(percent_decoded("/%zz%4"), "/%zz%4");
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
