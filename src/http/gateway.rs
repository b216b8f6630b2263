//! The gateway: edge-session in front of an app that keeps no session code
//! (docs/gateway.md).
//!
//! - [`check`]: forward auth (`/auth/check`) for nginx `auth_request`,
//!   Caddy `forward_auth`, Traefik ForwardAuth and Envoy ext_authz, and the
//!   JWK Set that verifies its assertions.
//! - [`identity`]: the `X-Edge-*` identity headers of a session.
//! - [`actions`]: the upstream's signed sign-in and sign-out answers.
//! - [`protect`]: `gateway.protect`, paths that need a signed-in user.
//! - [`proxy`]: the reverse proxy in front of `gateway.upstream`, with the
//!   header rules of [`headers`], and [`websocket`] pass-through; both
//!   reach the app through the worker's [`upstream`].

pub mod actions;
pub mod check;
pub mod headers;
pub mod identity;
pub mod inflight;
pub mod protect;
pub mod proxy;
pub mod upstream;
pub mod websocket;
