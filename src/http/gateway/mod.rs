//! The gateway: edge-session in front of an app that keeps no session code
//! (docs/gateway.md).
//!
//! - [`check`]: forward auth (`/auth/check`) for nginx `auth_request`,
//!   Caddy `forward_auth`, Traefik ForwardAuth and Envoy ext_authz, and the
//!   JWK Set that verifies its assertions.
//! - [`identity`]: the `X-Edge-*` identity headers of a session.

pub mod check;
pub mod identity;
