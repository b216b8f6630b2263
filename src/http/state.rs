//! [`AppState`]: what every handler shares (the store, credentials, cookie
//! settings), and the session operations both the browser routes and `/v1`
//! perform on it.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::HttpRequest;
use metrics_exporter_prometheus::PrometheusHandle;

use super::auth;
use super::error::ApiError;
use super::request;
use super::throttle::client_addr;
use super::EDGE_PREFIX;
use crate::assertion::Assertions;
use crate::client::{ClientInfo, Recorder};
use crate::config::{Config, GatewayConfig, IpNet};
use crate::record::now;
use crate::store::{End, NewSession, Session, TieredStore, UserBinding};
use crate::token::{SessionToken, StorageKey};

/// Everything a handler needs. Shared by all workers.
#[derive(Clone)]
pub struct AppState {
    /// The two-tier store.
    pub store: TieredStore,
    /// Login-page users, behind the attempt budgets and hash threads.
    pub login: auth::Login,
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
    /// The last `/readyz` answer.
    pub ready: ReadyCache,
    /// The ops listener's address, if the ops routes have their own.
    pub ops_addr: OpsAddr,
    /// The identity assertions' signer and JWK Set.
    pub assertions: Arc<Assertions>,
    /// `[gateway]`: forward auth and the reverse proxy.
    pub gateway: Arc<GatewayConfig>,
    /// `server.trusted_proxies`: peers whose forwarding headers are believed.
    pub trusted_proxies: Arc<[IpNet]>,
    /// Proxied requests in flight, by client (`gateway.max_inflight_per_client`).
    pub inflight: Arc<super::gateway::inflight::InFlight>,
    /// `server.client_body_timeout_ms` and `server.client_body_min_rate`.
    pub body_limits: super::body::BodyLimits,
    /// `session.reauth_window_secs`, in milliseconds.
    pub reauth_window_ms: u64,
    /// What a sign-in records about its client (`session.record_client`).
    pub client: Recorder,
    /// The region's event log, when `events.enabled` (`GET /v1/events`).
    pub events: Option<edge_session_sync::EventLog>,
}

impl AppState {
    /// The state for `store`, configured by `config`. Fails if the
    /// gateway's signing key cannot be read or generated.
    pub fn new(
        store: TieredStore,
        config: &Config,
        metrics: PrometheusHandle,
    ) -> anyhow::Result<Self> {
        Ok(AppState {
            store,
            login: auth::Login::new(&config.auth, &config.server.trusted_proxies),
            api_keys: auth::ApiKeys::new(&config.api.keys),
            cookie_name: config.cookie.name.clone(),
            cookie_secure: config.cookie.secure,
            max_body_bytes: config.server.max_body_bytes,
            metrics,
            ready: ReadyCache::default(),
            ops_addr: OpsAddr::default(),
            assertions: Arc::new(Assertions::from_config(config)?),
            gateway: Arc::new(config.gateway.clone()),
            trusted_proxies: config.server.trusted_proxies.as_slice().into(),
            inflight: super::gateway::inflight::InFlight::new(
                config.gateway.max_inflight_per_client,
            ),
            body_limits: super::body::BodyLimits {
                timeout: std::time::Duration::from_millis(config.server.client_body_timeout_ms),
                min_rate: config.server.client_body_min_rate,
            },
            reauth_window_ms: config.session.reauth_window_secs.saturating_mul(1000),
            client: {
                let s = &config.session;
                let recorder = Recorder::new(s.record_client, s.geoip_database.as_deref())
                    .map_err(|e| anyhow::anyhow!("session.geoip_database: {e}"))?;
                recorder.warm();
                recorder
            },
            events: config
                .events
                .enabled
                .then(|| edge_session_sync::EventLog::new(&config.relay.region)),
        })
    }

    /// Where the node's browser routes are: under [`EDGE_PREFIX`] when the
    /// node is a reverse proxy, else at the root (`""`).
    pub fn browser_base(&self) -> &'static str {
        if self.gateway.upstream.is_some() {
            EDGE_PREFIX
        } else {
            ""
        }
    }

    /// The session token from the cookie, if it parses. Malformed values are
    /// treated as no cookie at all.
    pub fn cookie_token(&self, req: &HttpRequest) -> Option<SessionToken> {
        request::cookie_token(req, &self.cookie_name)
    }

    /// The live session carried by the cookie.
    pub async fn cookie_session(
        &self,
        req: &HttpRequest,
    ) -> Result<Option<(SessionToken, Session)>, ApiError> {
        let Some(token) = self.cookie_token(req) else {
            return Ok(None);
        };
        let from = client_addr(req, &self.trusted_proxies);
        Ok(self
            .store
            .load_from(&token, from, now())
            .await?
            .map(|s| (token, s)))
    }

    /// What a sign-in from `req` records about its client: the address as
    /// the throttle reads it (`server.trusted_proxies`) and the `User-Agent`.
    pub fn client_of(&self, req: &HttpRequest) -> Option<ClientInfo> {
        let agent = req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        self.client
            .record(client_addr(req, &self.trusted_proxies), agent)
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

    /// Bind `binding` to a NEW session: regenerate the request's current one
    /// (its token dies in both tiers, in one DynamoDB transaction), or, if
    /// it has none (no cookie, or an unknown one), create the bound session
    /// in one write. The same sign-in for the login page and the gateway's
    /// upstream `login` action; `session.max_per_user` eviction comes with
    /// it. The caller sets the returned token's cookie.
    pub async fn sign_in(
        &self,
        req: &HttpRequest,
        mut binding: UserBinding,
    ) -> Result<SessionToken, ApiError> {
        if binding.client.is_none() {
            binding.client = self.client_of(req);
        }
        for _ in 0..3 {
            let t = now();
            let Some((_, current)) = self.cookie_session(req).await? else {
                let new = NewSession {
                    binding: Some(binding),
                    ..NewSession::default()
                };
                let (token, _) = self.store.create(new, t).await?;
                return Ok(token);
            };
            // Keep the data only when the same user signs in again: an
            // anonymous session's data may have been planted along with its
            // cookie.
            let keep = current.record.user_id.as_deref() == Some(binding.user_id.as_str());
            match self
                .store
                .regenerate(&current, Some(binding.clone()), keep, t)
                .await?
            {
                Ok((token, _)) => return Ok(token),
                // Changed meanwhile (a touch, another tab): reload and retry.
                Err(_) => continue,
            }
        }
        Err(ApiError::conflict())
    }

    /// Revoke `handle` if it is one of `user`'s sessions; 404 otherwise (an
    /// unknown handle and another user's handle are indistinguishable).
    pub async fn revoke_handle(&self, user: &str, handle: &str, end: End) -> Result<(), ApiError> {
        let key = StorageKey::from_handle(handle).ok_or_else(ApiError::unknown_session)?;
        if self
            .store
            .revoke_user_session(user, key, end, now())
            .await?
        {
            Ok(())
        } else {
            Err(ApiError::unknown_session())
        }
    }
}

/// The last readiness answer, shared by every worker; the lock is held
/// across the probe, so concurrent probes wait for one read.
#[derive(Clone, Default)]
pub struct ReadyCache(pub(super) Arc<tokio::sync::Mutex<Option<(Instant, bool)>>>);

/// Where the ops routes are served, when not on the main listener: the
/// bound address (known once bound, so set after the state is built).
#[derive(Clone, Default)]
pub struct OpsAddr(Arc<OnceLock<SocketAddr>>);

impl OpsAddr {
    /// Serve the ops routes on `addr` only. Set once; a later call is
    /// ignored.
    pub fn set(&self, addr: SocketAddr) {
        let _ = self.0.set(addr);
    }

    pub(super) fn get(&self) -> Option<SocketAddr> {
        self.0.get().copied()
    }
}
