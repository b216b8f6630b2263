//! The connection watchdog: the deadline actix keeps only for a
//! connection's first request head.
//!
//! actix answers 408 when the FIRST request head takes longer than
//! `client_request_timeout`, and closes a connection idle for `keep_alive`.
//! But once a kept-alive connection receives a byte of its next request,
//! its keep-alive timer stops and no head timer starts: a client that
//! trickles a later head one byte at a time holds the connection forever.
//!
//! So each connection gets a watchdog task (one timer per connection,
//! none per request). It knows, from [`enter`] (called by the request
//! pipeline), whether a request is being handled (until its response
//! body has been sent: a download or a proxied WebSocket may outlast its
//! handler by far) and when the last one ended. A connection with no
//! request in flight that is still open `keep_alive +
//! client_request_timeout` after its last request ended (or after it was
//! opened) is either idle past keep-alive or receiving a head
//! that took longer than the request timeout: the watchdog shuts the
//! socket down. The task ends with its connection.
//!
//! Bound: a connection that sends no complete head lives at most
//! `keep_alive_ms + client_request_timeout_ms` (plus `client_disconnect_timeout_ms`).

use std::any::Any;
use std::cell::Cell;
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest};
use actix_web::rt::net::TcpStream;
use actix_web::web::Bytes;

type TlsStream = actix_tls::accept::rustls_0_23::TlsStream<TcpStream>;

/// What the watchdog knows of its connection. A connection, its requests
/// and its watchdog all live on one worker thread.
struct Activity {
    opened: Instant,
    /// Requests being handled.
    in_flight: Cell<u32>,
    /// Milliseconds after `opened` when the last request ended.
    idle_since_ms: Cell<u64>,
}

/// In the connection's data; dropped with the connection, which ends the
/// watchdog.
struct Watched {
    activity: Rc<Activity>,
    _closed: tokio::sync::oneshot::Sender<()>,
}

/// Marks one request in flight until dropped.
pub struct InFlight(Rc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since_ms.set(a.opened.elapsed().as_millis() as u64);
        a.in_flight.set(a.in_flight.get() - 1);
    }
}

/// The `HttpServer::on_connect` callback: start the watchdog of a new
/// connection that may go `allowed` without a request in flight. It runs on
/// the worker that serves the connection, and the watchdog is spawned there.
pub fn on_connect(allowed: Duration) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync {
    move |io, ext| {
        let tcp = io
            .downcast_ref::<TcpStream>()
            .or_else(|| io.downcast_ref::<TlsStream>().map(|tls| tls.get_ref().0));
        // A second handle on the socket (dup): shutting it down ends the
        // connection actix is serving.
        let Some(socket) = tcp.and_then(|tcp| socket2::SockRef::from(tcp).try_clone().ok()) else {
            return;
        };
        let activity = Rc::new(Activity {
            opened: Instant::now(),
            in_flight: Cell::new(0),
            idle_since_ms: Cell::new(0),
        });
        let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
        ext.insert(Watched {
            activity: activity.clone(),
            _closed: closed_tx,
        });
        actix_web::rt::spawn(async move {
            loop {
                let deadline = match activity.in_flight.get() {
                    // Check again once a request as long as the allowance ended.
                    0 => {
                        let idle = activity.idle_since_ms.get();
                        activity.opened + Duration::from_millis(idle) + allowed
                    }
                    _ => Instant::now() + allowed,
                };
                tokio::select! {
                    _ = &mut closed => return,
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
                let idle = activity.idle_since_ms.get();
                let quiet = activity
                    .opened
                    .elapsed()
                    .saturating_sub(Duration::from_millis(idle));
                if activity.in_flight.get() == 0 && quiet >= allowed {
                    tracing::debug!("closing a connection with no complete request head");
                    metrics::counter!("edge_session_connections_cut_total").increment(1);
                    let _ = socket.shutdown(Shutdown::Both);
                    return;
                }
            }
        });
    }
}

/// Tell the connection's watchdog a request is in flight, until the
/// returned mark is dropped: with the response body (see [`Tracked`]), since
/// a streamed body, a download or a WebSocket may outlast the handler by
/// far. No timer is started: the watchdog keeps one per connection.
pub fn enter(req: &ServiceRequest) -> Option<InFlight> {
    req.conn_data::<Watched>().map(|w| {
        let a = &w.activity;
        a.in_flight.set(a.in_flight.get() + 1);
        InFlight(Rc::clone(a))
    })
}

/// A response body that keeps its request in flight until it is dropped.
pub struct Tracked {
    body: BoxBody,
    _in_flight: Option<InFlight>,
}

impl Tracked {
    /// `body`, its request in flight while it lives.
    pub fn new(body: BoxBody, in_flight: Option<InFlight>) -> Self {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl MessageBody for Tracked {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}
