//! Paginated listings (`GET /v1/users/{user_id}/sessions`, `GET
//! /me/sessions`): `?limit=` (1 to [`MAX_LIMIT`], default
//! [`DEFAULT_LIMIT`]) and `?after=<handle>` in; when another page may
//! follow, a `Link: <same path?limit=..&after=..>; rel="next"` header out
//! (RFC 8288). The handle in `after` is the last one of the page before: the
//! store resumes its index query right after it, so a page is one bounded
//! DynamoDB query whatever the handle, and pages come in a stable order.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponseBuilder};
use serde::Deserialize;

use super::error::{ApiError, ErrorCode};
use crate::token::StorageKey;

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;

/// The largest `limit` accepted.
pub const MAX_LIMIT: u32 = 1000;

/// A listing's page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// At most this many items (1 to [`MAX_LIMIT`]).
    pub limit: u32,
    /// Start after this handle's session; `None`: from the first.
    pub after: Option<StorageKey>,
}

/// The query string as sent: every value is checked by hand, for a clear
/// message. Other parameters are ignored; a repeated one is refused.
#[derive(Deserialize)]
struct RawQuery {
    limit: Option<String>,
    after: Option<String>,
}

fn malformed(message: String) -> ApiError {
    ApiError::bad_request(ErrorCode::MalformedInput, message)
}

impl PageQuery {
    /// The page `req` asks for: 400 `malformed_input` for a `limit` that is
    /// not an integer from 1 to [`MAX_LIMIT`] or an `after` that is not a
    /// session handle.
    pub fn from_request(req: &HttpRequest) -> Result<Self, ApiError> {
        Self::parse(req.query_string())
    }

    fn parse(query: &str) -> Result<Self, ApiError> {
        let raw: RawQuery = serde_urlencoded::from_str(query)
            .map_err(|e| malformed(format!("query string: {e}")))?;
        let limit = match raw.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    malformed(format!("limit: expected an integer from 1 to {MAX_LIMIT}"))
                })?,
        };
        let after = match raw.after.as_deref() {
            None => None,
            Some(text) => Some(
                StorageKey::from_handle(text)
                    .ok_or_else(|| malformed("after: not a session handle".to_owned()))?,
            ),
        };
        Ok(PageQuery { limit, after })
    }
}

/// The URL of the page after `next` on `path` (a path as received, still
/// percent-encoded), `limit` items long.
pub fn next_href(path: &str, limit: u32, next: &StorageKey) -> String {
    format!("{}?limit={limit}&after={}", link_safe(path), next.handle())
}

/// Add `Link: <...>; rel="next"` to `res` when another page may follow.
pub fn link_next(
    res: &mut HttpResponseBuilder,
    req: &HttpRequest,
    page: &PageQuery,
    next: Option<&StorageKey>,
) {
    if let Some(next) = next {
        let href = next_href(req.uri().path(), page.limit, next);
        res.insert_header((header::LINK, format!("<{href}>; rel=\"next\"")));
    }
}

/// `path` with every byte that may not stand in a URI path (or would end
/// the `<...>` of a Link header) percent-encoded; `%` is kept, the path
/// being already encoded.
fn link_safe(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::SessionToken;

    #[test]
    fn limit_and_after_are_checked() {
        assert_eq!(
            PageQuery::parse("").unwrap(),
            PageQuery {
                limit: DEFAULT_LIMIT,
                after: None
            }
        );
        assert_eq!(PageQuery::parse("limit=1000").unwrap().limit, 1000);
        assert_eq!(PageQuery::parse("other=x&limit=7").unwrap().limit, 7);
        let key = SessionToken::generate().storage_key();
        let query = format!("after={}", key.handle());
        assert_eq!(PageQuery::parse(&query).unwrap().after, Some(key));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=1.5",
            "limit=",
            "limit=ten",
            "limit=99999999999999999999",
            "limit=1&limit=2",
            "after=",
            "after=abc",
            "after=%ZZ",
        ] {
            let err = PageQuery::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::MalformedInput, "{bad}");
        }
    }

    #[test]
    fn next_links_keep_the_path_and_escape_what_would_break_them() {
        let key = SessionToken::generate().storage_key();
        let href = next_href("/v1/users/a%20b/sessions", 5, &key);
        assert_eq!(
            href,
            format!("/v1/users/a%20b/sessions?limit=5&after={}", key.handle())
        );
        assert_eq!(link_safe("/v1/users/<x>\"/s"), "/v1/users/%3Cx%3E%22/s");
    }
}
