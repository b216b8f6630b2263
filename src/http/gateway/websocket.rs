//! WebSocket pass-through: an `Upgrade: websocket` request to a proxied path
//! opens the upstream's WebSocket first (the same header rules as any
//! proxied request: identity headers, nonce, no session cookie; plus
//! `Sec-WebSocket-Protocol` and `Origin`), then answers the client's
//! handshake and relays frames both ways as they come: text, binary, ping,
//! pong, continuation, close. Frames are at most [`MAX_FRAME_BYTES`] each
//! way (a fragmented message may be longer). An upstream that refuses the
//! handshake has its status passed on; one that cannot be reached is 502,
//! one that does not answer within `gateway.upstream_timeout_ms` is 504.
//!
//! A socket opened with a live session bound to a user is re-checked every
//! `gateway.websocket_check_ms` (a load from the local tier: within the
//! lease it costs microseconds and no DynamoDB call). The re-check never
//! touches the session, so an open socket alone does not keep an idle
//! session alive; a frame from the client is the user's activity and
//! touches it as a request would (at most once per
//! `session.touch_interval_secs`). Once the session is
//! no longer live (logout, revocation or expiry, on this node or on any
//! other: the stream follower makes another node's revocation a tombstone
//! here), both sides are closed with 1008 "session revoked". A store error
//! on a re-check leaves the socket open until the next one: this node's own
//! revocations are in its local tier, which answers without DynamoDB.
//!
//! WebSockets use a connection pool of their own (each socket holds its
//! connection for its whole life), so they never take the connections
//! plain requests need. Closes are counted as
//! `edge_session_gateway_websocket_closes_total{by=client|upstream|revoked|error}`.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest as _, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use awc::error::{SendRequestError, WsClientError};
use awc::ws::Frame;

use super::headers;
use super::upstream::{upstream_error, Caller, Upstream};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::state::AppState;
use crate::record::now;
use crate::token::SessionToken;

/// The largest frame relayed, in bytes, either way.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// How long a closing side may take to answer the other's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

type UpstreamSocket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// Whether `req` asks to become a WebSocket.
pub fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::UPGRADE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Answer the client's handshake once the upstream's WebSocket for `req`
/// is open, and relay frames until either side closes (or the session is
/// revoked).
pub async fn relay(
    upstream: &Upstream,
    state: &web::Data<AppState>,
    req: &HttpRequest,
    mut payload: Payload,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    // The client's handshake is checked before the upstream is bothered.
    let body = web::Payload::from_request(req, &mut payload)
        .await
        .map_err(|_| ApiError::internal())?;
    let (mut response, client, from_client) = actix_ws::handle(req, body).map_err(|_| {
        ApiError::bad_request(ErrorCode::BadRequest, "not a valid WebSocket handshake")
    })?;
    let (res, socket) = match connect(upstream, state, req, &caller).await? {
        Ok(pair) => pair,
        Err(refusal) => return Ok(refusal),
    };
    if let Some(protocol) = res.headers().get(header::SEC_WEBSOCKET_PROTOCOL) {
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, protocol.clone());
    }
    let watch = match (&caller.identity, state.cookie_token(req)) {
        (Some(_), Some(token)) => Some(Watch {
            state: state.clone(),
            token,
            every: Duration::from_millis(state.gateway.websocket_check_ms),
        }),
        _ => None,
    };
    let from_client = from_client.max_frame_size(MAX_FRAME_BYTES);
    actix_web::rt::spawn(pump(client, from_client, socket, watch));
    Ok(response)
}

/// Open the upstream's WebSocket for `req`: the socket, or (`Err` inside)
/// the upstream's refusal to pass on; 502/504 as for any request.
async fn connect(
    upstream: &Upstream,
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
) -> Result<Result<(awc::ClientResponse, UpstreamSocket), HttpResponse>, ApiError> {
    let nonce = headers::nonce().map_err(|_| ApiError::internal())?;
    let forwarded = upstream.request_headers(req, state, caller, nonce)?;
    let mut outbound = upstream
        .ws_client
        .ws(upstream.url(req, "http")?)
        .max_frame_size(MAX_FRAME_BYTES);
    for (name, value) in &forwarded {
        // The key, version and extensions are the node's own, per hop.
        let per_hop =
            name.as_str().starts_with("sec-websocket-") && *name != header::SEC_WEBSOCKET_PROTOCOL;
        if !per_hop {
            outbound = outbound.header(name.clone(), value.clone());
        }
    }
    match tokio::time::timeout(upstream.response_timeout, outbound.connect()).await {
        Err(_) => Err(upstream_error(SendRequestError::Timeout)),
        Ok(Err(WsClientError::InvalidResponseStatus(status))) => {
            Ok(Err(HttpResponse::build(status).finish()))
        }
        Ok(Err(WsClientError::SendRequest(e))) => Err(upstream_error(e)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the upstream's WebSocket handshake failed");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::UpstreamUnavailable,
                "the upstream's WebSocket handshake failed",
            ))
        }
        Ok(Ok(pair)) => Ok(Ok(pair)),
    }
}

/// The session a socket was opened under, re-checked every `every`.
struct Watch {
    state: web::Data<AppState>,
    token: SessionToken,
    every: Duration,
}

impl Watch {
    /// Whether the session is no longer live (a store error: not known).
    /// A check, not the user's activity: the session is not touched.
    async fn revoked(&self) -> bool {
        match self.state.store.check(&self.token, now()).await {
            Ok(session) => session.is_none(),
            Err(e) => {
                tracing::debug!(error = %e, "re-checking a WebSocket's session");
                false
            }
        }
    }

    /// A frame from the client: the user's activity, served as a request
    /// is (the session touched when due). Whether it is no longer live.
    async fn active(&self) -> bool {
        match self.state.store.load(&self.token, now()).await {
            Ok(session) => session.is_none(),
            Err(e) => {
                tracing::debug!(error = %e, "serving a WebSocket frame's session");
                false
            }
        }
    }
}

/// A client's frames count as activity at most this often (a touch itself
/// is at most once per `session.touch_interval_secs`).
const ACTIVITY_EVERY: Duration = Duration::from_secs(1);

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed (its close frame went upstream).
    Client,
    /// The upstream closed (its close frame went to the client).
    Upstream,
    /// The session is no longer live.
    Revoked,
    /// A side failed or vanished without a close.
    Error,
}

/// Relay frames until one side closes or the session is revoked, then
/// finish the closing handshake.
async fn pump(
    mut client: Session,
    mut from_client: MessageStream,
    mut upstream: UpstreamSocket,
    watch: Option<Watch>,
) {
    let every = watch
        .as_ref()
        .map_or(Duration::from_secs(3600), |w| w.every);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut active_at = tokio::time::Instant::now();
    let end = loop {
        tokio::select! {
            msg = from_client.recv() => match msg {
                Some(Ok(Message::Nop)) => {}
                Some(Ok(Message::Close(reason))) => {
                    let _ = send_up(&mut upstream, Message::Close(reason)).await;
                    break End::Client;
                }
                Some(Ok(msg)) => {
                    if let Some(w) = &watch {
                        if active_at.elapsed() >= ACTIVITY_EVERY {
                            active_at = tokio::time::Instant::now();
                            if w.active().await {
                                break End::Revoked;
                            }
                        }
                    }
                    if send_up(&mut upstream, msg).await.is_err() {
                        break End::Error;
                    }
                }
                Some(Err(_)) | None => break End::Error,
            },
            frame = poll_fn(|cx| Pin::new(&mut upstream).next_item(cx)) => match frame {
                Some(Ok(Frame::Close(reason))) => {
                    let _ = client.clone().close(reason).await;
                    break End::Upstream;
                }
                Some(Ok(frame)) => {
                    if to_client(&mut client, frame).await.is_err() {
                        break End::Error;
                    }
                }
                Some(Err(_)) | None => break End::Error,
            },
            _ = tick.tick(), if watch.is_some() => {
                if let Some(w) = &watch {
                    if w.revoked().await {
                        break End::Revoked;
                    }
                }
            }
        }
    };
    finish(end, client, from_client, upstream).await;
}

/// Complete the close: pass the other side's answer to a close frame on
/// (within [`CLOSE_GRACE`]), or close both sides ourselves.
async fn finish(
    end: End,
    client: Session,
    mut from_client: MessageStream,
    mut upstream: UpstreamSocket,
) {
    let by = match end {
        End::Client => "client",
        End::Upstream => "upstream",
        End::Revoked => "revoked",
        End::Error => "error",
    };
    metrics::counter!("edge_session_gateway_websocket_closes_total", "by" => by).increment(1);
    match end {
        End::Client => {
            let answer = tokio::time::timeout(CLOSE_GRACE, async {
                loop {
                    match poll_fn(|cx| Pin::new(&mut upstream).next_item(cx)).await {
                        Some(Ok(Frame::Close(reason))) => return reason,
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return None,
                    }
                }
            });
            let _ = client.close(answer.await.unwrap_or(None)).await;
        }
        End::Upstream => {
            let answer = tokio::time::timeout(CLOSE_GRACE, async {
                loop {
                    match from_client.recv().await {
                        Some(Ok(Message::Close(reason))) => return reason,
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return None,
                    }
                }
            });
            let reason = answer.await.unwrap_or(None);
            let _ = send_up(&mut upstream, Message::Close(reason)).await;
        }
        End::Revoked => {
            let reason = CloseReason {
                code: CloseCode::Policy,
                description: Some("session revoked".into()),
            };
            let _ = send_up(&mut upstream, Message::Close(Some(reason.clone()))).await;
            let _ = client.close(Some(reason)).await;
        }
        End::Error => {
            let reason = CloseReason::from(CloseCode::Error);
            let _ = send_up(&mut upstream, Message::Close(Some(reason.clone()))).await;
            let _ = client.close(Some(reason)).await;
        }
    }
}

/// Write `msg` to the upstream and flush it (backpressure: the next client
/// frame is read only once the upstream took this one).
async fn send_up(
    upstream: &mut UpstreamSocket,
    msg: Message,
) -> Result<(), actix_ws::ProtocolError> {
    Pin::new(&mut *upstream).write(msg)?;
    poll_fn(|cx| Pin::new(&mut *upstream).flush(cx)).await
}

/// Relay an upstream frame (not a close) to the client.
async fn to_client(client: &mut Session, frame: Frame) -> Result<(), actix_ws::Closed> {
    match frame {
        Frame::Text(bytes) => match String::from_utf8(bytes.to_vec()) {
            Ok(text) => client.text(text).await,
            // Not UTF-8: what the client would refuse anyway.
            Err(_) => Err(actix_ws::Closed),
        },
        Frame::Binary(bytes) => client.binary(bytes).await,
        Frame::Continuation(item) => client.continuation(item).await,
        Frame::Ping(bytes) => client.ping(&bytes).await,
        Frame::Pong(bytes) => client.pong(&bytes).await,
        Frame::Close(reason) => client.clone().close(reason).await,
    }
}
