//! The feed a relay serves on `relay.listen`: `GET /feed?after=<seq>&epoch=
//! <epoch>&nonce=<nonce>&mac=<mac>`, answered with a long-lived stream of
//! signed frame lines (`frame`). 403 without a valid MAC, 503 while this
//! node holds no slot or its position is not yet taken, 404 elsewhere.
//!
//! A connection starts with a hello (`resumed`: the feed goes on right
//! after the subscriber's `after` in the same epoch), then every frame
//! after that, as the hub publishes them. A subscriber that falls more than
//! the hub's ring behind is cut, and resubscribes.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections at once, each holding
//! one task and a channel of 64 lines; a request head must arrive within
//! 5 s, and hyper caps its size; nothing is served before the MAC
//! verifies, so an outsider costs one HMAC per request. The listener is
//! meant for the fleet's private network: the feed is signed, not
//! encrypted (it carries hashed session keys and versions, never a token).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::web::Bytes;
use hyper::body::{Body as HttpBody, Frame as HttpFrame};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::frame::{self, Body, Frame};
use super::hub::Hub;

/// A body fed line by line from a channel: the feed's response, and the
/// (empty) body of a subscription request.
pub struct Lines(pub mpsc::Receiver<Bytes>);

impl HttpBody for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<HttpFrame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(HttpFrame::data(b))))
    }
}

impl Lines {
    /// A body of `text` alone (empty for none).
    pub fn once(text: &str) -> Lines {
        let (tx, rx) = mpsc::channel(1);
        if !text.is_empty() {
            let _ = tx.try_send(Bytes::copy_from_slice(text.as_bytes()));
        }
        Lines(rx)
    }
}

/// The hub this node serves, while it holds a slot.
pub type Current = Arc<RwLock<Option<Arc<Hub>>>>;

/// The hub being served, if any.
pub fn current(hubs: &Current) -> Option<Arc<Hub>> {
    hubs.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn answer(status: StatusCode, text: &str) -> Response<Lines> {
    let mut response = Response::new(Lines::once(text));
    *response.status_mut() = status;
    response
}

/// Connections the feed serves at once; more wait in the listen backlog.
/// A fleet needs one per node and slot.
pub const MAX_CONNECTIONS: usize = 4096;

/// How long a connection may take to send its request head.
const HEAD_WITHIN: Duration = Duration::from_secs(5);

/// Serve the feed on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, secret: Arc<[u8]>, hubs: Current) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (secret, hubs) = (Arc::clone(&secret), Arc::clone(&hubs));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (secret, hubs) = (Arc::clone(&secret), Arc::clone(&hubs));
                async move { Ok::<_, Infallible>(handle(&req, secret, hubs)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_WITHIN)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// The query's parameters, parsed.
struct Subscription {
    after: u64,
    epoch: u64,
    nonce: String,
    mac: String,
}

fn parse(query: &str) -> Option<Subscription> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let nonce = get("nonce")?;
    if nonce.is_empty() || nonce.len() > 64 {
        return None;
    }
    Some(Subscription {
        after: get("after")?.parse().ok()?,
        epoch: get("epoch")?.parse().ok()?,
        nonce,
        mac: get("mac")?,
    })
}

fn handle(
    req: &Request<hyper::body::Incoming>,
    secret: Arc<[u8]>,
    hubs: Current,
) -> Response<Lines> {
    if req.uri().path() != "/feed" || req.method() != hyper::Method::GET {
        return answer(StatusCode::NOT_FOUND, "no such route\n");
    }
    let Some(sub) = req.uri().query().and_then(parse) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "after, epoch, nonce and mac are required\n",
        );
    };
    if !frame::subscribe_mac_ok(&secret, &sub.nonce, &sub.mac) {
        metrics::counter!("edge_session_relay_subscriptions_refused_total").increment(1);
        return answer(StatusCode::FORBIDDEN, "bad subscription signature\n");
    }
    let Some(hub) = current(&hubs).filter(|hub| hub.is_ready()) else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "not relaying\n");
    };
    let resumed = sub.epoch == hub.epoch() && sub.after > 0 && hub.since(sub.after).is_ok();
    let start = if resumed { sub.after } else { hub.head() };
    let node = req
        .headers()
        .get(frame::NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unnamed");
    tracing::debug!(node, resumed, start, "relay: a node subscribed");
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(stream_to(tx, hub, hubs, secret, sub.nonce, start, resumed));
    let mut response = Response::new(Lines(rx));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Send the hello, then every frame after `start` as it is published, until
/// the subscriber goes, falls out of the ring, or this hub stops being served.
async fn stream_to(
    tx: mpsc::Sender<Bytes>,
    hub: Arc<Hub>,
    hubs: Current,
    secret: Arc<[u8]>,
    nonce: String,
    start: u64,
    resumed: bool,
) {
    let send = |text: &str| Bytes::from(frame::sign(&secret, &nonce, text));
    let hello = frame::json(&Frame {
        e: hub.epoch(),
        s: start,
        body: Body::Hello { resumed },
    });
    if tx.send(send(&hello)).await.is_err() {
        return;
    }
    let mut last = start;
    let mut wake = hub.watch();
    loop {
        let Ok(frames) = hub.since(last) else {
            return; // fell out of the ring: the subscriber resubscribes
        };
        for (seq, text) in frames {
            if tx.send(send(&text)).await.is_err() {
                return;
            }
            last = seq;
        }
        let still_served = current(&hubs).is_some_and(|h| Arc::ptr_eq(&h, &hub));
        if !still_served {
            return;
        }
        // Woken by the next frame, or after a second to check the hub.
        let _ = tokio::time::timeout(Duration::from_secs(1), wake.changed()).await;
    }
}
