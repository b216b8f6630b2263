//! The upstream of one worker ([`Upstream`]: its clients, pools and the
//! headers a request takes upstream), who is calling ([`Caller`]), and how a
//! failure to reach the upstream is answered ([`upstream_error`]): what the
//! proxy, the actions and the WebSocket relay share.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use awc::error::SendRequestError;

use super::protect::Protected;
use super::{headers, identity};
use crate::assertion::Identity;
use crate::config::{GatewayConfig, IpNet};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::state::AppState;
use crate::record::now;

/// How long an idle upstream connection is kept for reuse.
pub const UPSTREAM_IDLE: Duration = Duration::from_secs(4);

/// The upstream of one worker: its client (and connection pool) and
/// settings.
pub struct Upstream {
    pub(super) client: awc::Client,
    /// WebSockets' own pool: each holds its connection for its whole life.
    pub(super) ws_client: awc::Client,
    /// `host:port` of the upstream (its scheme is the request's: `http` or `ws`).
    authority: String,
    pub(super) response_timeout: Duration,
    trusted_proxies: Arc<[IpNet]>,
    pub(super) protected: Protected,
}

/// The live session a request carries, and its identity if bound.
pub struct Caller {
    /// The identity of a bound session.
    pub identity: Option<Arc<Identity>>,
}

impl Upstream {
    /// The upstream of `config`, if the node is a reverse proxy. Call once
    /// per worker (the client is the worker's own).
    pub fn new(config: &GatewayConfig, trusted_proxies: Arc<[IpNet]>) -> Option<Rc<Self>> {
        let uri = config.upstream_uri()?;
        let client = || {
            let connector = awc::Connector::new()
                .timeout(Duration::from_millis(config.upstream_connect_timeout_ms))
                .limit(config.upstream_max_connections)
                .conn_keep_alive(UPSTREAM_IDLE);
            awc::Client::builder()
                .connector(connector)
                .disable_redirects()
                .disable_timeout()
                .no_default_headers()
                .finish()
        };
        let authority = uri
            .authority()
            .expect("validated: the upstream has an authority");
        Some(Rc::new(Upstream {
            client: client(),
            ws_client: client(),
            authority: authority.to_string(),
            response_timeout: Duration::from_millis(config.upstream_timeout_ms),
            trusted_proxies,
            protected: Protected::new(&config.protect, &config.public),
        }))
    }

    /// The upstream URL of `req`'s path and query; 400 for a target that is
    /// not a path (`OPTIONS *`).
    pub(super) fn url(&self, req: &HttpRequest, scheme: &str) -> Result<String, ApiError> {
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        if !target.starts_with('/') {
            return Err(ApiError::bad_request(
                ErrorCode::BadRequest,
                "the request target is not a path",
            ));
        }
        Ok(format!("{scheme}://{}{target}", self.authority))
    }

    /// The headers to send upstream for `req` from `caller`, with `nonce`.
    pub(super) fn request_headers(
        &self,
        req: &HttpRequest,
        state: &AppState,
        caller: &Caller,
        nonce: HeaderValue,
    ) -> Result<HeaderMap, ApiError> {
        let peer = req.peer_addr().map(|a| a.ip());
        let hop = headers::Hop {
            peer,
            trusted: peer.is_some_and(|ip| self.trusted_proxies.iter().any(|n| n.contains(ip))),
            secure: req.app_config().secure(),
            cookie_name: &state.cookie_name,
        };
        let mut out = headers::to_upstream(req.headers(), &hop);
        if let Some(identity) = &caller.identity {
            for (name, value) in identity::headers(identity)? {
                out.insert(name, value);
            }
        }
        out.insert(headers::NONCE, nonce);
        Ok(out)
    }
}

/// The session the request's cookie carries, and its identity: a store
/// error is 503 (fail closed: no request goes upstream unidentified because
/// the store could not say who sent it).
pub(super) async fn caller(state: &AppState, req: &HttpRequest) -> Result<Caller, ApiError> {
    let session = state.cookie_session(req).await?;
    let identity = match &session {
        Some((_, s)) => state.assertions.identity(s, now()).map_err(|e| {
            tracing::error!(error = %e, "signing an identity assertion");
            ApiError::internal()
        })?,
        None => None,
    };
    Ok(Caller { identity })
}

/// 502, 504 or (a client body that could not be read) 400, counted and
/// logged.
pub(super) fn upstream_error(e: SendRequestError) -> ApiError {
    let (kind, error) = match &e {
        SendRequestError::Timeout => (
            "timeout",
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::UpstreamTimeout,
                "the upstream did not answer in time",
            ),
        ),
        SendRequestError::Body(_) => (
            "client_body",
            ApiError::bad_request(ErrorCode::BadRequest, "the request body could not be read"),
        ),
        _ => (
            "unavailable",
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::UpstreamUnavailable,
                "the upstream cannot be reached",
            ),
        ),
    };
    tracing::warn!(error = %e, kind, "proxying to the upstream failed");
    metrics::counter!("edge_session_gateway_upstream_errors_total", "kind" => kind).increment(1);
    error
}
