//! Request-body deadlines, for every request the node reads a body of: its
//! own routes and the proxied ones alike (`server.client_body_timeout_ms`,
//! `server.client_body_min_rate`).
//!
//! A body must be complete by `timeout + received / min_rate` after its
//! request reached the handler: a grace period, then the rate. A body
//! trickled slower is cut: the stream the handler (or the proxy, sending it
//! upstream) reads fails, and the client gets 408 `body_timeout` with
//! `Connection: close`. For the proxy that happens while the body streams
//! upstream, so the upstream connection it held is given up at once, not
//! when the client chooses to finish.
//!
//! WebSocket upgrades are not bodies (their payload is the socket's frames)
//! and are left alone.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::ConnectionType;
use actix_web::web::Bytes;
use actix_web::HttpMessage as _;
use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use super::error::ApiError;

/// The deadline's two settings.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// The grace period (`server.client_body_timeout_ms`).
    pub timeout: Duration,
    /// Bytes a second past the grace period (`server.client_body_min_rate`).
    pub min_rate: u64,
}

impl BodyLimits {
    /// When a body that has delivered `received` bytes must be complete.
    fn deadline(&self, started: Instant, received: u64) -> Instant {
        let rate = self.min_rate.max(1);
        started + self.timeout + Duration::from_secs_f64(received as f64 / rate as f64)
    }
}

/// Whether `req` has a body to read (and is not a WebSocket upgrade).
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let length = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0");
    !upgrade && (length || headers.contains_key(header::TRANSFER_ENCODING))
}

/// Put `req`'s body, if it has one, behind its deadline. The answer is
/// whether the body was cut: once it is, the answer to the request is
/// [`timed_out`], whatever the handler made of the failed read.
pub fn guard(req: &mut ServiceRequest, limits: BodyLimits) -> Option<Cut> {
    if !has_body(req) {
        return None;
    }
    let cut = Cut::default();
    let started = Instant::now();
    let body = Deadline {
        inner: req.take_payload(),
        limits,
        started,
        received: 0,
        sleep: Box::pin(tokio::time::sleep_until(limits.deadline(started, 0))),
        cut: cut.clone(),
    };
    req.set_payload(Payload::from(
        Box::pin(body) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
    ));
    Some(cut)
}

/// Whether a guarded body was cut (shared by the body and the pipeline, on
/// the request's worker).
#[derive(Clone, Default)]
pub struct Cut(Rc<Cell<bool>>);

impl Cut {
    /// The body was too slow.
    pub fn is_cut(&self) -> bool {
        self.0.get()
    }
}

/// The answer to a request whose body was cut, in place of `res`: 408
/// `body_timeout`, not stored, and the connection closed (the rest of the
/// body may still be on its way).
pub fn timed_out<B>(res: ServiceResponse<B>) -> ServiceResponse<BoxBody> {
    metrics::counter!("edge_session_body_timeouts_total").increment(1);
    let mut timeout = ApiError::body_timeout().into_response();
    timeout
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    timeout
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    res.into_response(timeout)
}

/// A request body that fails once it is later than its deadline.
struct Deadline {
    inner: Payload,
    limits: BodyLimits,
    started: Instant,
    received: u64,
    sleep: Pin<Box<Sleep>>,
    cut: Cut,
}

impl Deadline {
    fn too_slow(&mut self) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.cut.0.set(true);
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "request body too slow",
        )))))
    }
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.cut.is_cut() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                this.received += bytes.len() as u64;
                let due = this.limits.deadline(this.started, this.received);
                if Instant::now() > due {
                    return this.too_slow();
                }
                this.sleep.as_mut().reset(due);
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(end) => Poll::Ready(end),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => this.too_slow(),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_a_grace_period_then_the_rate() {
        let limits = BodyLimits {
            timeout: Duration::from_secs(10),
            min_rate: 1024,
        };
        let t0 = Instant::now();
        assert_eq!(limits.deadline(t0, 0), t0 + Duration::from_secs(10));
        assert_eq!(limits.deadline(t0, 10 * 1024), t0 + Duration::from_secs(20));
    }
}
