//! The HTTP surface: browser routes (cookie), the `/v1` service API (bearer
//! key, `X-Session-Token`), and operations. See `shared/API.md`.
//!
//! - [`browser`] serves the login page, `/login`, `/logout`, `/whoami`, `/me/sessions`.
//! - [`service`] serves `/v1`.
//! - [`ops`] serves `/healthz`, `/readyz`, `/metrics`.
//! - [`openapi`] serves `/openapi.json`, the spec of all of the above.
//! - [`error`] is the JSON error shape.
//!
//! The router is built from two tables of [`Endpoint`]s (this module's and
//! [`service`]'s); [`route_table`] lists them, and a test holds that list
//! and `docs/openapi.json` to each other.

pub mod auth;
pub mod browser;
pub mod error;
pub mod openapi;
pub mod ops;
pub mod page;
pub mod service;

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::body::MessageBody;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{ErrorHandlers, Next};
use actix_web::{web, HttpRequest};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::record::UnixMillis;
use crate::store::{Session, TieredStore};
use crate::token::SessionToken;

pub use error::ApiError;

/// Everything a handler needs. Shared by all workers.
#[derive(Clone)]
pub struct AppState {
    /// The two-tier store.
    pub store: TieredStore,
    /// Login-page users.
    pub users: auth::Users,
    /// Service API keys.
    pub api_keys: auth::ApiKeys,
    /// Session cookie name.
    pub cookie_name: String,
    /// Session cookie `Secure` attribute.
    pub cookie_secure: bool,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
}

/// Wall-clock now.
pub fn now() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds to whole epoch seconds, for JSON.
pub fn secs(ms: UnixMillis) -> u64 {
    ms / 1000
}

impl AppState {
    /// The session token from the cookie, if it parses. Malformed values are
    /// treated as no cookie at all.
    pub fn cookie_token(&self, req: &HttpRequest) -> Option<SessionToken> {
        // The Cookie header(s) read in place: no parse of every cookie into
        // owned values. A token is base64url, so it is never percent-encoded.
        req.headers()
            .get_all(header::COOKIE)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie_name)
            .and_then(|(_, value)| SessionToken::parse(value.trim_matches('"')).ok())
    }

    /// The live session carried by the cookie.
    pub async fn cookie_session(
        &self,
        req: &HttpRequest,
    ) -> Result<Option<(SessionToken, Session)>, ApiError> {
        let Some(token) = self.cookie_token(req) else {
            return Ok(None);
        };
        Ok(self.store.load(&token, now()).await?.map(|s| (token, s)))
    }

    /// The `Set-Cookie` for `token`: `__Host-` rules (Secure, Path=/, no
    /// Domain), HttpOnly, SameSite=Strict. A browser-session cookie: the
    /// server-side record enforces the idle and absolute timeouts.
    pub fn session_cookie(&self, token: &SessionToken) -> Cookie<'static> {
        Cookie::build(self.cookie_name.clone(), token.expose())
            .path("/")
            .secure(self.cookie_secure)
            .http_only(true)
            .same_site(SameSite::Strict)
            .finish()
    }

    /// A `Set-Cookie` that removes the session cookie.
    pub fn removal_cookie(&self) -> Cookie<'static> {
        let mut cookie = Cookie::build(self.cookie_name.clone(), "")
            .path("/")
            .secure(self.cookie_secure)
            .http_only(true)
            .same_site(SameSite::Strict)
            .finish();
        cookie.make_removal();
        cookie
    }
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

/// Whether the client asked for JSON (JSON body or `Accept`), else a form.
pub fn wants_json(req: &HttpRequest) -> bool {
    let has = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"))
    };
    has(header::CONTENT_TYPE) || has(header::ACCEPT)
}

/// Per-route request metrics and one structured log line per request.
/// Never logs headers, cookies or bodies.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    // Metric handles per (method, route, status), cached per worker thread:
    // the registry (label keys, hashing, its lock) is paid once per series.
    // Every label is from a bounded set: methods outside the standard ones
    // are "OTHER", routes are patterns or "unmatched".
    type Series = (&'static str, String, u16);
    thread_local! {
        static HANDLES: std::cell::RefCell<HashMap<Series, (metrics::Histogram, metrics::Counter)>> =
            std::cell::RefCell::new(HashMap::new());
    }
    HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        let series = (method, route, status);
        if let Some((h, c)) = handles.get(&series) {
            h.record(elapsed);
            c.increment(1);
            return;
        }
        let route = series.1.clone();
        let h = metrics::histogram!("edge_session_http_request_duration_seconds", "route" => route.clone(), "method" => method);
        let c = metrics::counter!("edge_session_http_requests_total", "route" => route, "method" => method, "status" => status.to_string());
        h.record(elapsed);
        c.increment(1);
        handles.insert(series, (h, c));
    });
    tracing::debug!(method, status, elapsed_ms = elapsed * 1000.0, "request");
    Ok(res)
}

/// A method as a metric label: the standard ones by name, any other
/// (clients may send any token) as "OTHER", so labels stay a bounded set.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// One route: method, path and handler. The path is both the actix pattern
/// and the OpenAPI path (`{name}` segments).
#[derive(Clone, Copy)]
pub struct Endpoint {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Full path, `/v1` prefix included.
    pub path: &'static str,
    handler: fn(actix_web::Route) -> actix_web::Route,
}

impl Endpoint {
    /// `handler` attaches the handler to a route already guarded by `method`.
    const fn new(
        method: &'static str,
        path: &'static str,
        handler: fn(actix_web::Route) -> actix_web::Route,
    ) -> Self {
        Endpoint {
            method,
            path,
            handler,
        }
    }
}

/// Routes outside `/v1`.
const ROOT_ROUTES: &[Endpoint] = &[
    Endpoint::new("GET", "/healthz", |r| r.to(ops::healthz)),
    Endpoint::new("GET", "/readyz", |r| r.to(ops::readyz)),
    Endpoint::new("GET", "/metrics", |r| r.to(ops::metrics)),
    Endpoint::new("GET", "/openapi.json", |r| r.to(openapi::spec)),
    Endpoint::new("GET", "/", |r| r.to(browser::index)),
    Endpoint::new("POST", "/login", |r| r.to(browser::login)),
    Endpoint::new("POST", "/logout", |r| r.to(browser::logout)),
    Endpoint::new("GET", "/whoami", |r| r.to(browser::whoami)),
    Endpoint::new("GET", "/me/sessions", |r| r.to(browser::my_sessions)),
    Endpoint::new("DELETE", "/me/sessions/{handle}", |r| {
        r.to(browser::revoke_mine)
    }),
    Endpoint::new("POST", "/me/sessions/{handle}/revoke", |r| {
        r.to(browser::revoke_mine_form)
    }),
];

/// Every route the router serves, as `(method, path)`: what `routes()`
/// registers, in registration order.
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    ROOT_ROUTES
        .iter()
        .chain(service::ROUTES)
        .map(|e| (e.method, e.path))
        .collect()
}

/// One actix resource per distinct path in `table` (a path may carry several
/// methods), in order of first appearance; `strip` is removed from each path
/// (the prefix of the scope the resources go into).
fn resources(table: &[Endpoint], strip: &str) -> Vec<actix_web::Resource> {
    let mut paths: Vec<&'static str> = Vec::new();
    for e in table {
        if !paths.contains(&e.path) {
            paths.push(e.path);
        }
    }
    paths
        .into_iter()
        .map(|path| {
            let local = path.strip_prefix(strip).unwrap_or(path);
            table
                .iter()
                .filter(|e| e.path == path)
                .fold(web::resource(local), |resource, e| {
                    let method = actix_web::http::Method::from_bytes(e.method.as_bytes())
                        .expect("route tables hold valid method names");
                    resource.route((e.handler)(web::route().method(method)))
                })
        })
        .collect()
}

/// Register every route on `cfg`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for resource in resources(ROOT_ROUTES, "") {
        cfg.service(resource);
    }
    cfg.service(service::scope());
}

/// Build the actix `App` around `state` (used by the server and by tests).
pub fn app(
    state: AppState,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let limit = state.max_body_bytes;
    actix_web::App::new()
        .app_data(web::Data::new(state))
        .app_data(web::PayloadConfig::new(limit))
        .app_data(service::json_config(limit))
        .app_data(web::FormConfig::default().limit(limit))
        .wrap(ErrorHandlers::new().default_handler(error::render_json_error))
        .wrap(actix_web::middleware::from_fn(observe))
        .configure(routes)
}
