//! The reverse proxy: with `gateway.upstream` set, every request that is not
//! the node's own goes to the upstream, and its answer back to the client.
//!
//! [`proxied`] is a step of the request pipeline, after the connection
//! watchdog and the body deadline, before the router: the node's error
//! pages, metrics, `no-store` and framing headers never touch a proxied
//! response. The node's own paths
//! ([`is_own`]): `/.edge` and below, `/v1` and below,
//! `/.well-known/jwks.json`, `/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json` (and everything on a separate ops listener).
//!
//! One request, in order:
//!
//! 1. the session cookie is loaded (a store error: 503, fail closed) and,
//!    for a live session bound to a user, its identity built;
//! 2. a protected path without an identity is answered here
//!    ([`super::protect`]); a WebSocket upgrade goes to
//!    [`super::websocket`];
//! 3. the request goes upstream with the headers of [`super::headers`],
//!    the identity headers and a fresh `X-Edge-Nonce`, its body streamed
//!    (`Content-Length` kept when known, else chunked);
//! 4. the response head is read: an upstream that cannot be reached is 502
//!    `upstream_unavailable`; one that sends no head within
//!    `gateway.upstream_timeout_ms` after the request body ended is 504
//!    `upstream_timeout`;
//! 5. the response's action, if validly signed, is carried out before
//!    anything is sent ([`super::actions`]): a failure is answered instead
//!    of the upstream's response;
//! 6. the response body streams back as the client reads it.
//!
//! Bodies are never buffered: a proxied body is not limited by
//! `server.max_body_bytes` (that limit is for what the node itself parses);
//! each direction moves only as fast as its reader takes it.
//!
//! Each worker has its own client and connection pool (at most
//! `gateway.upstream_max_connections` connections). Idle upstream
//! connections are closed after [`UPSTREAM_IDLE`], shorter than Node.js's
//! default 5 s keep-alive, so a request is never sent on a connection the
//! upstream is closing.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::{BodyStream, SizedStream};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use awc::error::SendRequestError;
use futures_core::Stream;
use tokio::sync::oneshot;

use super::inflight::Slot;
use super::upstream::{caller, upstream_error, Upstream};
use super::{actions, headers, protect, websocket};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::http::throttle::{addr_key, client_addr};
use crate::http::EDGE_PREFIX;

/// Whether `path` (as the router reads it) is one of the node's own.
pub fn is_own(path: &str) -> bool {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under(EDGE_PREFIX)
        || under("/v1")
        || matches!(
            path,
            "/.well-known/jwks.json" | "/healthz" | "/readyz" | "/metrics" | "/openapi.json"
        )
}

/// Whether `req` goes upstream: not the node's own path, not on the ops
/// listener (`ops`).
pub fn is_proxied(req: &ServiceRequest, ops: Option<std::net::SocketAddr>) -> bool {
    let on_ops = ops.is_some_and(|ops| ops == req.app_config().local_addr());
    !on_ops && !is_own(req.match_info().as_str())
}

/// Proxy `req` to `upstream`; every failure is answered here.
pub async fn proxied(req: ServiceRequest, upstream: Rc<Upstream>) -> ServiceResponse {
    let (req, payload) = req.into_parts();
    let res = match serve(&upstream, &req, payload).await {
        Ok(res) => res,
        Err(e) => error_response(e),
    };
    count(res.status());
    ServiceResponse::new(req, res)
}

/// Count a proxied request by the class of its answer.
fn count(status: StatusCode) {
    let class = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("edge_session_gateway_requests_total", "status" => class).increment(1);
}

/// An error answered by the proxy itself: JSON, never cached.
pub(super) fn error_response(e: ApiError) -> HttpResponse {
    let mut res = e.into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Proxy one request.
async fn serve(
    upstream: &Upstream,
    req: &HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("app() registers the state");
    let caller = caller(state, req).await?;
    if let Some(refusal) = protect::refusal(&upstream.protected, req, caller.identity.is_some()) {
        return Ok(refusal);
    }
    if websocket::is_upgrade(req) {
        return websocket::relay(upstream, state, req, payload, caller).await;
    }
    let client = addr_key(client_addr(req, &state.trusted_proxies));
    let Some(slot) = state.inflight.enter(client) else {
        metrics::counter!("edge_session_gateway_inflight_refused_total").increment(1);
        return Err(ApiError::too_many_requests());
    };
    let nonce = headers::nonce().map_err(|e| {
        tracing::error!(error = %e, "the OS random source failed");
        ApiError::internal()
    })?;
    let mut outbound = upstream
        .client
        .request(req.method().clone(), upstream.url(req, "http")?);
    *outbound.headers_mut() = upstream.request_headers(req, state, &caller, nonce.clone())?;
    let res = send(upstream, outbound, req.headers(), payload).await?;
    let outcome = actions::carry_out(state, req, &caller, &nonce, res.headers()).await?;
    let mut out = response(res, req.method(), &state.cookie_name, slot);
    actions::finish(state, outcome, &mut out)?;
    Ok(out)
}

/// Send `outbound` with the request body `payload`: the response head, or
/// 502/504.
async fn send(
    upstream: &Upstream,
    outbound: awc::ClientRequest,
    headers: &HeaderMap,
    payload: Payload,
) -> Result<awc::ClientResponse, ApiError> {
    let (ended, body_ended) = oneshot::channel();
    let body = BodyEnd {
        inner: payload,
        ended: Some(ended),
    };
    let sending = if headers.contains_key(header::TRANSFER_ENCODING) {
        outbound.send_stream(body)
    } else {
        match content_length(headers) {
            Some(len) => outbound.send_body(SizedStream::new(len, body)),
            None => {
                drop(body);
                outbound.send()
            }
        }
    };
    // The upstream has `response_timeout` after the request body ended.
    let deadline = async {
        let _ = body_ended.await;
        tokio::time::sleep(upstream.response_timeout).await;
    };
    tokio::select! {
        res = sending => res.map_err(upstream_error),
        () = deadline => Err(upstream_error(SendRequestError::Timeout)),
    }
}

/// `Content-Length` of `headers`, if it is one number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The client's response for the upstream's `res` to a `method` request:
/// its status, its end-to-end headers, its body streamed.
fn response(
    mut res: awc::ClientResponse,
    method: &Method,
    cookie_name: &str,
    slot: Slot,
) -> HttpResponse {
    let status = res.status();
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = content_length(res.headers());
    // The client's slot is held until its answer's last byte is sent.
    let payload = Holding {
        inner: res.take_payload(),
        _slot: slot,
    };
    let mut out = HttpResponse::build(status);
    let mut out = match length {
        _ if no_body => out.finish(),
        // A HEAD answer announces the length of a body it does not carry.
        Some(len) if *method == Method::HEAD => out.body(SizedStream::new(len, EmptyBody)),
        Some(len) => out.body(SizedStream::new(len, payload)),
        None => out.body(BodyStream::new(payload)),
    };
    let headers = out.headers_mut();
    for (name, value) in headers::to_client(res.headers(), cookie_name) {
        headers.append(name, value);
    }
    out
}

/// A stream that holds a client's in-flight slot until it is dropped.
struct Holding<S> {
    inner: S,
    _slot: Slot,
}

impl<S: Stream + Unpin> Stream for Holding<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// No bytes: the body of an answer to HEAD.
struct EmptyBody;

impl Stream for EmptyBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(None)
    }
}

/// The request body, telling when it ended (or failed, or was dropped).
struct BodyEnd {
    inner: Payload,
    ended: Option<oneshot::Sender<()>>,
}

impl Stream for BodyEnd {
    type Item = <Payload as Stream>::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let item = Pin::new(&mut this.inner).poll_next(cx);
        if matches!(item, Poll::Ready(None | Some(Err(_)))) {
            this.ended.take();
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_own_paths_stay_here() {
        for own in [
            "/.edge",
            "/.edge/",
            "/.edge/login",
            "/v1",
            "/v1/session",
            "/.well-known/jwks.json",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(is_own(own), "{own}");
        }
        for proxied in [
            "/",
            "/login",
            "/.edgex",
            "/v10",
            "/v1x/a",
            "/healthz/x",
            "/auth/check",
            "/.well-known/other",
        ] {
            assert!(!is_own(proxied), "{proxied}");
        }
    }
}
