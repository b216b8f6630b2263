//! Protected paths (`gateway.protect`): a request for one of them without a
//! signed-in user is answered by the node and never reaches the upstream.
//! A browser (GET or HEAD accepting `text/html`) is sent to the login page,
//! `303 /.edge/login?next=<the original path and query>`; anything else
//! gets 401 `unauthenticated`.
//!
//! A prefix covers whole path segments: `/admin` covers `/admin` and
//! `/admin/x`, not `/administrator`. The request's path is compared in
//! every form an upstream might read it in, and it is protected if any of
//! them falls under a prefix:
//!
//! - percent-decoded (repeatedly, so `%2561` is `a` too), `%2F` and `\` as
//!   separators, empty segments dropped (`//admin`);
//! - with the dot segments resolved (`/x/../admin`, `/./admin`) and, for
//!   upstreams that never resolve them, without (`/admin/..%2F..` is still
//!   under `/admin` for a router that matches segments literally);
//! - case-insensitively (Express routes ignore case by default);
//! - each segment cut at `;` (path parameters) and at a NUL byte.
//!
//! Over-matching costs a sign-in on a strange URL; under-matching would
//! hand a protected page to someone not signed in.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse};

use crate::http::error::ApiError;
use crate::http::request::percent_decoded;
use crate::http::EDGE_PREFIX;

/// The protected prefixes, each as its normalized segments.
#[derive(Debug, Clone, Default)]
pub struct Protected(Vec<Vec<String>>);

impl Protected {
    /// From `gateway.protect`.
    pub fn new(prefixes: &[String]) -> Self {
        Protected(
            prefixes
                .iter()
                .map(|p| segments(&percent_decoded(p), true))
                .collect(),
        )
    }

    /// Whether `path` (raw, as received) is under a protected prefix in any
    /// of the forms it can be read in.
    pub fn covers(&self, path: &str) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let text = percent_decoded(path);
        [segments(&text, true), segments(&text, false)]
            .iter()
            .any(|path| self.0.iter().any(|prefix| path.starts_with(prefix)))
    }
}

/// The segments of a decoded path, lower case, each cut at `;` and NUL,
/// empty ones dropped; dot segments resolved if `resolve`.
fn segments(path: &str, resolve: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in path.split(['/', '\\']) {
        let segment = raw.split([';', '\0']).next().unwrap_or("").to_lowercase();
        match segment.as_str() {
            "" => {}
            "." if resolve => {}
            ".." if resolve => {
                out.pop();
            }
            _ => out.push(segment),
        }
    }
    out
}

/// Whether the client takes HTML (a browser navigating).
fn accepts_html(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// The node's answer to `req` if its path is protected and the caller is
/// not signed in (`signed_in`); `None` lets it through.
pub fn refusal(protected: &Protected, req: &HttpRequest, signed_in: bool) -> Option<HttpResponse> {
    if signed_in || !protected.covers(req.uri().path()) {
        return None;
    }
    let browser = matches!(*req.method(), Method::GET | Method::HEAD) && accepts_html(req);
    let mut res = if browser {
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let query = serde_urlencoded::to_string([("next", target)]).unwrap_or_default();
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("{EDGE_PREFIX}/login?{query}")))
            .finish()
    } else {
        ApiError::unauthenticated().into_response()
    };
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_whole_segments_in_every_spelling() {
        let p = Protected::new(&["/admin".into(), "/Team/Settings".into()]);
        for covered in [
            "/admin",
            "/admin/",
            "/admin/x",
            "/ADMIN",
            "/Admin/X",
            "/%61dmin",
            "/%2561dmin",
            "/%41DMIN",
            "//admin",
            "///admin//x",
            "/x/../admin",
            "/x/%2e%2e/admin",
            "/./admin",
            "/admin;jsessionid=1",
            "/admin%00.html",
            "/%2Fadmin",
            "/x%2F..%2Fadmin",
            "/admin%2Fx",
            "/admin/..%2F..",
            "/\\admin",
            "/x\\..\\admin",
            "/team/settings/a",
            "/TEAM//SETTINGS",
        ] {
            assert!(p.covers(covered), "{covered}");
        }
        for open in [
            "/",
            "/administrator",
            "/admin-panel",
            "/x/admin",
            "/adm%69n2",
            "/team",
            "/team/settingsx",
            "/public",
        ] {
            assert!(!p.covers(open), "{open}");
        }
        assert!(!Protected::new(&[]).covers("/admin"));
        assert!(Protected::new(&["/".into()]).covers("/anything"));
    }
}
