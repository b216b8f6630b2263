//! The HTTP surface: browser routes (cookie), the `/v1` service API (bearer
//! key, `X-Session-Token`), and operations. The contract is the OpenAPI
//! document served at `/openapi.json` and kept as `docs/openapi.json`.
//!
//! This module is the router: the route table ([`ROOT_ROUTES`] and
//! [`V1_ROUTES`], listed by [`route_table`]; a test holds that list and
//! `docs/openapi.json` to each other) and the app built from it.
//!
//! - [`browser`] serves the login page, `/login`, `/logout`, `/whoami`, `/me/sessions`.
//! - [`service`] serves `/v1` (and checks its API key).
//! - [`ops`] serves `/healthz`, `/readyz`, `/metrics`.
//! - [`openapi`] serves `/openapi.json`, the spec of all of the above.
//! - [`state`] is what handlers share; [`request`] reads requests;
//!   [`paging`] reads a listing's `limit`/`after` and writes its `Link`;
//!   [`error`] is the JSON error shape and its codes.
//! - [`pipeline`] is the one middleware around every request, which
//!   [`no_store`] (`Cache-Control: no-store` per the table), [`observe`]
//!   (per-route metrics), [`framing`] (HTML may not be framed), [`conn`]
//!   (cuts connections that trickle a request head) and [`body`] (body
//!   deadlines) serve; [`throttle`] holds the login budgets.

mod auth;
mod body;
mod browser;
mod conn;
mod error;
mod events;
mod framing;
mod gateway;
mod no_store;
mod observe;
mod openapi;
mod ops;
mod page;
mod paging;
mod pipeline;
mod request;
mod service;
mod state;
mod throttle;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::web;

use no_store::Caching;
use pipeline::{Pipeline, Route};

pub use auth::hash_password;
pub use conn::on_connect as watch_connection;
pub use error::ErrorCode;
pub use openapi::SPEC;
pub use state::AppState;

/// One route: method, path, caching and handler. The path is both the
/// actix pattern and the OpenAPI path (`{name}` segments).
#[derive(Clone, Copy)]
struct Endpoint {
    /// HTTP method, upper case.
    method: &'static str,
    /// Full path, `/v1` prefix included.
    path: &'static str,
    caching: Caching,
    handler: fn(actix_web::Route) -> actix_web::Route,
    /// A browser route: under [`EDGE_PREFIX`] when the node is a reverse
    /// proxy, so the app behind it keeps every other path.
    browser: bool,
    /// The handler also answers every other method on this path.
    any_method: bool,
}

/// Where the browser routes go when the node is a reverse proxy.
pub const EDGE_PREFIX: &str = "/.edge";

impl Endpoint {
    /// `handler` attaches the handler to a route already guarded by `method`.
    /// Every answer carries `Cache-Control: no-store`.
    const fn no_store(
        method: &'static str,
        path: &'static str,
        handler: fn(actix_web::Route) -> actix_web::Route,
    ) -> Self {
        Endpoint {
            method,
            path,
            caching: Caching::NoStore,
            handler,
            browser: false,
            any_method: false,
        }
    }

    /// Served under [`EDGE_PREFIX`] when the node is a reverse proxy.
    const fn browser(self) -> Self {
        Endpoint {
            browser: true,
            ..self
        }
    }

    /// The handler answers any method (documented as its `method`).
    const fn any_method(self) -> Self {
        Endpoint {
            any_method: true,
            ..self
        }
    }

    /// As [`Endpoint::no_store`], but the handler's own answers keep their
    /// own caching headers (errors still carry `no-store`).
    const fn as_answered(
        method: &'static str,
        path: &'static str,
        handler: fn(actix_web::Route) -> actix_web::Route,
    ) -> Self {
        Endpoint {
            caching: Caching::AsAnswered,
            ..Endpoint::no_store(method, path, handler)
        }
    }
}

/// Routes outside `/v1`.
const ROOT_ROUTES: &[Endpoint] = &[
    Endpoint::as_answered("GET", "/healthz", |r| r.to(ops::healthz)),
    Endpoint::as_answered("GET", "/readyz", |r| r.to(ops::readyz)),
    Endpoint::as_answered("GET", "/metrics", |r| r.to(ops::metrics)),
    Endpoint::as_answered("GET", "/openapi.json", |r| r.to(openapi::spec)),
    Endpoint::as_answered("GET", "/.well-known/jwks.json", |r| {
        r.to(gateway::check::jwks)
    }),
    Endpoint::no_store("GET", "/", |r| r.to(browser::index)).browser(),
    Endpoint::no_store("GET", "/login", |r| r.to(browser::login_page)).browser(),
    Endpoint::no_store("POST", "/login", |r| r.to(browser::login)).browser(),
    Endpoint::no_store("POST", "/logout", |r| r.to(browser::logout)).browser(),
    Endpoint::no_store("GET", "/whoami", |r| r.to(browser::whoami)).browser(),
    Endpoint::no_store("GET", "/me/sessions", |r| r.to(browser::my_sessions)).browser(),
    Endpoint::no_store("DELETE", "/me/sessions/{handle}", |r| {
        r.to(browser::revoke_mine)
    })
    .browser(),
    Endpoint::no_store("POST", "/me/sessions/{handle}/revoke", |r| {
        r.to(browser::revoke_mine_form)
    })
    .browser(),
    Endpoint::no_store("GET", "/auth/check", |r| r.to(gateway::check::check))
        .browser()
        .any_method(),
];

/// The prefix of the service API's scope.
const V1_PREFIX: &str = "/v1";

/// The `/v1` routes (full paths), behind the API-key check.
const V1_ROUTES: &[Endpoint] = &[
    Endpoint::no_store("POST", "/v1/sessions", |r| r.to(service::create)),
    Endpoint::no_store("DELETE", "/v1/sessions", |r| r.to(service::revoke_everyone)),
    Endpoint::no_store("GET", "/v1/session", |r| r.to(service::read)),
    Endpoint::no_store("PATCH", "/v1/session", |r| r.to(service::update)),
    Endpoint::as_answered("DELETE", "/v1/session", |r| r.to(service::destroy)),
    Endpoint::no_store("POST", "/v1/session/regenerate", |r| {
        r.to(service::regenerate)
    }),
    Endpoint::no_store("GET", "/v1/events", |r| r.to(events::feed)),
    Endpoint::no_store("GET", "/v1/users/{user_id}/sessions", |r| {
        r.to(service::list_user)
    }),
    Endpoint::no_store("DELETE", "/v1/users/{user_id}/sessions", |r| {
        r.to(service::revoke_user)
    }),
    Endpoint::as_answered("DELETE", "/v1/users/{user_id}/sessions/{handle}", |r| {
        r.to(service::revoke_one)
    }),
];

fn endpoints() -> impl Iterator<Item = &'static Endpoint> {
    ROOT_ROUTES.iter().chain(V1_ROUTES)
}

/// Every route the router serves, as `(method, path)`: what `routes()`
/// registers, in registration order.
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    endpoints().map(|e| (e.method, e.path)).collect()
}

/// The caching of the route serving `method` on `pattern` (a browser
/// route's pattern may carry [`EDGE_PREFIX`]).
fn caching(method: &Method, pattern: &str) -> Option<Caching> {
    let unprefixed = pattern.strip_prefix(EDGE_PREFIX);
    endpoints()
        .find(|e| {
            let path_matches =
                e.path == pattern || (e.browser && unprefixed.is_some_and(|p| p == e.path));
            path_matches && e.method == method.as_str()
        })
        .map(|e| e.caching)
}

/// Where `e` is served: its path, under [`EDGE_PREFIX`] for a browser route
/// when the node is a reverse proxy.
fn served_path(e: &Endpoint, proxy: bool) -> String {
    if proxy && e.browser {
        format!("{EDGE_PREFIX}{}", e.path)
    } else {
        e.path.to_owned()
    }
}

/// The method of `e`.
fn method(e: &Endpoint) -> Method {
    Method::from_bytes(e.method.as_bytes()).expect("route tables hold valid method names")
}

/// One actix resource per distinct path in `table` (a path may carry several
/// methods), in order of first appearance; `strip` is removed from each path
/// (the prefix of the scope the resources go into).
fn resources(table: &[Endpoint], strip: &str, proxy: bool) -> Vec<actix_web::Resource> {
    let mut paths: Vec<&'static str> = Vec::new();
    for e in table {
        if !paths.contains(&e.path) {
            paths.push(e.path);
        }
    }
    paths
        .into_iter()
        .map(|path| {
            let mine = table.iter().filter(|e| e.path == path);
            let first = mine.clone().next().expect("the path came from the table");
            let served = served_path(first, proxy);
            let local = served.strip_prefix(strip).unwrap_or(&served).to_owned();
            let caching = mine.clone().map(|e| (method(e), e.caching)).collect();
            let route = Route::new(&served, caching);
            mine.fold(web::resource(local).app_data(route), |resource, e| {
                let resource = resource.route((e.handler)(web::route().method(method(e))));
                if e.any_method {
                    resource.default_service((e.handler)(web::route()))
                } else {
                    resource
                }
            })
        })
        .collect()
}

/// Register every route on `cfg`; `proxy`: the node is a reverse proxy.
fn routes(cfg: &mut web::ServiceConfig, proxy: bool) {
    for resource in resources(ROOT_ROUTES, "", proxy) {
        cfg.service(resource);
    }
    // Envoy's ext_authz asks `<path_prefix><original path>`.
    let base = if proxy { EDGE_PREFIX } else { "" };
    let check = format!("{base}/auth/check/{{tail:.*}}");
    cfg.service(
        web::resource(check.as_str())
            .app_data(Route::new(&check, vec![(Method::GET, Caching::NoStore)]))
            .default_service(web::route().to(gateway::check::check)),
    );
    let v1 = resources(V1_ROUTES, V1_PREFIX, proxy).into_iter().fold(
        web::scope(V1_PREFIX).wrap_fn(service::require_api_key),
        |scope, resource| scope.service(resource),
    );
    cfg.service(v1);
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
    let proxy = state.gateway.upstream.is_some();
    // The App factory runs once per worker: each gets its own client.
    let upstream = gateway::upstream::Upstream::new(&state.gateway, state.trusted_proxies.clone());
    let pipeline = Pipeline::new(state.body_limits, upstream, state.ops_addr.clone(), caching);
    actix_web::App::new()
        .app_data(web::Data::new(state))
        .app_data(web::PayloadConfig::new(limit))
        .app_data(request::json_config(limit))
        .app_data(web::FormConfig::default().limit(limit))
        .wrap(pipeline)
        .configure(move |cfg| routes(cfg, proxy))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each route's caching is what `docs/openapi.json` documents: a
    /// `NoStore` route documents `Cache-Control: no-store` on every
    /// response; an `AsAnswered` route has some response without it.
    #[test]
    fn caching_is_the_documented_cache_control() {
        let spec: serde_json::Value = serde_json::from_str(SPEC).unwrap();
        let resolve = |v: &serde_json::Value| match v["$ref"].as_str() {
            Some(r) => spec.pointer(r.trim_start_matches('#')).unwrap().clone(),
            None => v.clone(),
        };
        for e in endpoints() {
            let op = &spec["paths"][e.path][e.method.to_ascii_lowercase()];
            let responses = op["responses"].as_object().unwrap();
            let without: Vec<&String> = responses
                .iter()
                .filter(|(_, r)| {
                    let header = resolve(&resolve(r)["headers"]["Cache-Control"]);
                    !header.to_string().contains("no-store")
                })
                .map(|(status, _)| status)
                .collect();
            match e.caching {
                Caching::NoStore => assert!(without.is_empty(), "{} {}", e.method, e.path),
                Caching::AsAnswered => assert!(!without.is_empty(), "{} {}", e.method, e.path),
            }
        }
    }
}
