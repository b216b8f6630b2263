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
//! - each segment cut at `;` (path parameters) and at a NUL byte;
//! - with a front controller's script taken away (`/index.php/admin` is
//!   `/admin` to Laravel and Symfony);
//! - a prefix's segment also covers its suffixed forms, `admin.html`,
//!   `admin.json`, `admin.` and `admin ` (Rails serves `/admin.html` from
//!   the `/admin` route; older Spring matches `/admin.x` to `/admin`).
//!
//! Over-matching costs a sign-in on a strange URL; under-matching would
//! hand a protected page to someone not signed in.
//!
//! Deny by default: `protect = ["/*"]` (or `["/"]`) covers every path, and
//! `gateway.public` lists the prefixes anyone may reach. A path is public
//! only if *every* reading of it falls under a public prefix, segment for
//! segment with no suffixed forms: `/assets/../admin` and `/login.php` are
//! not public because `/assets` and `/login` are.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse};

use crate::http::error::ApiError;
use crate::http::request::percent_decoded;
use crate::http::EDGE_PREFIX;

/// The protected prefixes and the public ones, each as its normalized
/// segments.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    protect: Vec<Vec<String>>,
    public: Vec<Vec<String>>,
}

impl Protected {
    /// From `gateway.protect` and `gateway.public`.
    pub fn new(prefixes: &[String], public: &[String]) -> Self {
        let parse = |list: &[String]| -> Vec<Vec<String>> {
            list.iter()
                .map(|p| match p.as_str() {
                    "/*" => Vec::new(),
                    p => segments(&percent_decoded(p), true),
                })
                .collect()
        };
        Protected {
            protect: parse(prefixes),
            public: parse(public),
        }
    }

    /// Whether `path` (raw, as received) needs a signed-in user: it is under
    /// a protected prefix in any of the forms it can be read in, and not
    /// under a public prefix in all of them.
    pub fn covers(&self, path: &str) -> bool {
        if self.protect.is_empty() {
            return false;
        }
        let readings = readings(path);
        let protected = readings.iter().any(|path| {
            self.protect
                .iter()
                .any(|prefix| under(path, prefix, suffixed))
        });
        protected
            && !readings.iter().all(|path| {
                self.public
                    .iter()
                    .any(|prefix| under(path, prefix, |seg, p| seg == p))
            })
    }
}

/// Every reading of the raw `path` an upstream might route by, as
/// normalized segments.
fn readings(path: &str) -> Vec<Vec<String>> {
    let text = percent_decoded(path);
    let mut out = Vec::new();
    for resolve in [true, false] {
        let segs = segments(&text, resolve);
        // A front controller's script (`/index.php/admin`, also under a
        // directory: `/app/index.php/admin`) routes what follows it.
        for (i, seg) in segs.iter().enumerate() {
            if seg.ends_with(".php") {
                out.push(segs[i + 1..].to_vec());
            }
        }
        out.push(segs);
    }
    out
}

/// Whether `path` starts with `prefix`, segment by segment as `matches`
/// says.
fn under(path: &[String], prefix: &[String], matches: fn(&str, &str) -> bool) -> bool {
    path.len() >= prefix.len() && path.iter().zip(prefix).all(|(seg, p)| matches(seg, p))
}

/// A protected prefix's segment `p` covers `seg` itself and its suffixed
/// forms: `p.<anything>`, and `p` with trailing dots and spaces.
fn suffixed(seg: &str, p: &str) -> bool {
    let trimmed = seg.trim_end_matches(['.', ' ']);
    trimmed == p
        || seg
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('.'))
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
        let p = Protected::new(&["/admin".into(), "/Team/Settings".into()], &[]);
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
        assert!(!Protected::new(&[], &[]).covers("/admin"));
        assert!(Protected::new(&["/".into()], &[]).covers("/anything"));
    }

    #[test]
    fn suffixed_and_front_controller_forms_are_covered() {
        let p = Protected::new(&["/admin".into()], &[]);
        for covered in [
            "/admin.html",
            "/admin.json",
            "/admin.",
            "/admin..",
            "/admin%20",
            "/admin.%20",
            "/admin.x/y",
            "/ADMIN.HTML",
            "/index.php/admin",
            "/index.php/admin.json",
            "/app/index.php/admin",
            "/index.php/x/../admin",
        ] {
            assert!(p.covers(covered), "{covered}");
        }
        for open in ["/adminx", "/admin-x.html", "/index.php", "/index.php/x"] {
            assert!(!p.covers(open), "{open}");
        }
    }

    #[test]
    fn deny_by_default_opens_only_paths_public_in_every_reading() {
        let p = Protected::new(&["/*".into()], &["/".into()]);
        assert!(!p.covers("/anything"), "everything public");
        let p = Protected::new(&["/*".into()], &["/assets".into(), "/login".into()]);
        for open in [
            "/assets",
            "/assets/app.js",
            "/ASSETS/x",
            "/login",
            "/login;x=1",
        ] {
            assert!(!p.covers(open), "{open}");
        }
        for covered in [
            "/",
            "/admin",
            "/assets/../admin",
            "/assets/%2e%2e/admin",
            "/assets%2F..%2Fadmin",
            "/login.php",
            "/login.json",
            "/loginx",
            "/index.php/login",
        ] {
            assert!(p.covers(covered), "{covered}");
        }
    }
}
