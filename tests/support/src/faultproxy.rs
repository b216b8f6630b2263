//! A fault-injecting TCP proxy between a node's AWS SDK client and the
//! tests' DynamoDB-wire server: the narrow seam where the failure tests
//! inject faults. It listens on 127.0.0.1:0 and forwards bytes unchanged in
//! [`Fault::Pass`]; [`FaultProxy::set`] switches the fault at run time.
//!
//! A switch closes every connection opened under the previous fault, so each
//! connection lives under exactly one fault (the SDK reconnects, as it would
//! after a real network change).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

mod answers;
mod index;

use answers::{contains, exchange, next_request, throttle, Answer};
pub use index::IndexLag;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Stop listening: connects fail with ECONNREFUSED (the port stays
    /// reserved by a bound, non-listening socket). Open connections are cut.
    Refuse,
    /// Accept, then close at once: requests die on a reset connection.
    Reset,
    /// Accept and never answer: requests are swallowed, nothing comes back.
    BlackHole,
    /// Forward both ways, each chunk held back this long. (A request the
    /// client gave up on still reaches the server late: a slow network.)
    Latency(Duration),
    /// Forward requests; cut each connection halfway through the first
    /// response. The server did the work; the client cannot know.
    CutResponse,
    /// As [`Fault::CutResponse`], but only responses to requests whose bytes
    /// contain this text (an `X-Amz-Target` operation name such as
    /// `TransactWriteItems`); everything else passes.
    CutResponseTo(&'static str),
    /// As [`Fault::CutResponseTo`], but only the first such response after
    /// the switch: a retry of the same request then gets its answer.
    CutOneResponseTo(&'static str),
    /// Forward requests, but hold back every request whose bytes contain
    /// this text (an operation name such as `GetShardIterator`) until the
    /// fault changes: a slow start of just that call, for as long as the
    /// test needs. Everything else passes.
    HoldRequestsTo(&'static str),
    /// Forward everything, but hold each request whose bytes contain this
    /// text back this long before it reaches the server (responses pass):
    /// that node's writes commit late, as over a slow link or through the
    /// SDK's retry of the same body.
    SlowRequestsTo(&'static str, Duration),
    /// Answer every `GetRecords` itself with no records and the iterator it
    /// was given, and forward everything else: a change feed that answers
    /// every poll and delivers nothing (a stuck feed that looks healthy).
    StallFeed,
    /// DynamoDB's per-partition write limit: at most this many write units
    /// a second on any one partition key, of the table (`sid`) or of an
    /// index (`jb`, `uid`), counted as DynamoDB bills them (1 per item, 2
    /// inside a transaction on the table, 1 per index write). A write that
    /// would pass it on any key it touches is refused as DynamoDB refuses
    /// it, index back-pressure included: `ThrottlingException`, or
    /// `TransactionCanceledException` with `ThrottlingError` for a
    /// transaction. Everything else passes.
    PartitionLimit(u32),
    /// What the stream delivers shows up this late, as DynamoDB Streams
    /// allows: each `GetRecords` answer is held back this long. Everything
    /// else passes.
    FeedDelay(Duration),
    /// A global secondary index updated late, as DynamoDB updates one: an
    /// item written through this proxy is missing from `Query` answers on
    /// an index until its delay has passed (`faultproxy/index.rs`).
    /// Everything else passes.
    IndexDelay(IndexLag),
    /// Answer every request itself, as DynamoDB does when it throttles:
    /// HTTP 400 with the AWS JSON protocol's error shape (`x-amzn-ErrorType`
    /// and `__type` `ThrottlingException`). Nothing reaches the server.
    Throttle,
}

/// DynamoDB's answer to a throttled request (AWS JSON 1.0 error shape).
const THROTTLED_BODY: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#;

/// A running proxy. Dropping it stops it and cuts its connections.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    accepted: Arc<AtomicU64>,
    /// Responses `CutOneResponseTo` may still cut.
    cuts_left: Arc<AtomicU64>,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

/// What the proxy did to requests, across connections.
#[derive(Debug, Default)]
struct Counts {
    /// Requests answered with `ThrottlingException`.
    throttled: AtomicU64,
    /// Requests held back by `HoldRequestsTo`.
    held: AtomicU64,
    /// `GetRecords` answered empty by `StallFeed`.
    stalled: AtomicU64,
    /// Per partition key: the second and the write units used in it.
    windows: std::sync::Mutex<std::collections::HashMap<String, (u64, u32)>>,
    /// Items written through the proxy, for `IndexDelay`.
    written: std::sync::Mutex<index::Written>,
    /// Items `IndexDelay` left out of index queries.
    index_hidden: AtomicU64,
    /// Index queries answered under `IndexDelay`.
    index_queries: AtomicU64,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `host:port` of an `http://` URL.
fn socket_of(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    use std::net::ToSocketAddrs;
    authority.to_socket_addrs().ok()?.next()
}

/// A listening socket on `addr` that another socket may share (so the port
/// can be held while nothing listens on it).
fn shared_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

impl FaultProxy {
    /// A proxy in front of the tests' shared DynamoDB endpoint
    /// ([`crate::dynamo::endpoint`]), or `None` when that endpoint is not a
    /// plain `http://` URL (real AWS over TLS): the caller then skips its
    /// test.
    pub async fn to_harness() -> Option<FaultProxy> {
        let url = match crate::dynamo::endpoint() {
            edge_session_sync::Endpoint::Embedded(url) => url,
            edge_session_sync::Endpoint::Url(url) => url,
            _ => return None,
        };
        let upstream = socket_of(&url)?;
        Some(FaultProxy::start(upstream).await)
    }

    /// A proxy to `upstream`, passing traffic.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let socket = shared_socket("127.0.0.1:0".parse().expect("a literal address"))
            .expect("bind the proxy");
        let addr = socket.local_addr().expect("the proxy's address");
        let listener = socket.listen(1024).expect("listen");
        let (fault, watcher) = watch::channel(Fault::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let cuts_left = Arc::new(AtomicU64::new(0));
        let counts = Arc::new(Counts::default());
        let task = tokio::spawn(accept_loop(
            listener,
            addr,
            upstream,
            watcher,
            Arc::clone(&accepted),
            Shared {
                cuts_left: Arc::clone(&cuts_left),
                counts: Arc::clone(&counts),
            },
        ));
        FaultProxy {
            addr,
            fault,
            accepted,
            cuts_left,
            counts,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, the endpoint URL for a node's config.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether a `CutOneResponseTo` fault has made its cut.
    pub fn cut_made(&self) -> bool {
        self.cuts_left.load(Ordering::SeqCst) == 0
    }

    /// Switch the fault. Connections opened under the previous one are cut.
    pub fn set(&self, fault: Fault) {
        let cuts = u64::from(matches!(fault, Fault::CutOneResponseTo(_)));
        self.cuts_left.store(cuts, Ordering::SeqCst);
        self.fault.send_replace(fault);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Requests answered with `ThrottlingException` so far ([`Fault::Throttle`]).
    pub fn throttled(&self) -> u64 {
        self.counts.throttled.load(Ordering::SeqCst)
    }

    /// Requests held back so far ([`Fault::HoldRequestsTo`]).
    pub fn held(&self) -> u64 {
        self.counts.held.load(Ordering::SeqCst)
    }

    /// Items left out of index queries so far ([`Fault::IndexDelay`]).
    pub fn index_hidden(&self) -> u64 {
        self.counts.index_hidden.load(Ordering::SeqCst)
    }

    /// Index queries answered so far under [`Fault::IndexDelay`].
    pub fn index_queries(&self) -> u64 {
        self.counts.index_queries.load(Ordering::SeqCst)
    }

    /// `GetRecords` answered empty so far ([`Fault::StallFeed`]).
    pub fn stalled(&self) -> u64 {
        self.counts.stalled.load(Ordering::SeqCst)
    }
}

/// What every connection's task shares.
#[derive(Clone)]
struct Shared {
    /// Responses `CutOneResponseTo` may still cut.
    cuts_left: Arc<AtomicU64>,
    counts: Arc<Counts>,
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut fault: watch::Receiver<Fault>,
    accepted: Arc<AtomicU64>,
    shared: Shared,
) {
    let mut listener = Some(listener);
    loop {
        let current = *fault.borrow_and_update();
        if current == Fault::Refuse {
            // Hold the port with a bound socket that does not listen: the
            // kernel answers connects with RST, and no other socket can take
            // the port meanwhile.
            let hold = shared_socket(addr).expect("hold the proxy's port");
            drop(listener.take());
            if fault.changed().await.is_err() {
                return;
            }
            let socket = shared_socket(addr).expect("rebind the proxy's port");
            drop(hold);
            listener = Some(socket.listen(1024).expect("listen again"));
            continue;
        }
        let Some(active) = listener.as_ref() else {
            return;
        };
        tokio::select! {
            changed = fault.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            conn = active.accept() => {
                let Ok((client, _)) = conn else { continue };
                accepted.fetch_add(1, Ordering::Relaxed);
                // The fault as of now (it may have changed since `current`).
                let mut watcher = fault.clone();
                let now = *watcher.borrow_and_update();
                tokio::spawn(serve(client, upstream, now, watcher, shared.clone()));
            }
        }
    }
}

/// One client connection under `fault`, until it ends or the fault changes.
async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    mut changes: watch::Receiver<Fault>,
    shared: Shared,
) {
    let _ = client.set_nodelay(true);
    let work = async move {
        match fault {
            Fault::Refuse | Fault::Reset => {
                // Close with RST rather than FIN: what a crashed server does.
                // (Deprecated because a non-zero linger blocks the thread on
                // drop; a zero linger resets at once.)
                #[allow(deprecated)]
                let _ = client.set_linger(Some(Duration::ZERO));
                drop(client);
            }
            Fault::BlackHole => {
                let mut client = client;
                let mut sink = [0u8; 4096];
                while let Ok(n) = client.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                // Keep the socket open and silent until the fault changes.
                std::future::pending::<()>().await;
            }
            Fault::Throttle => throttle(client, &shared.counts).await,
            Fault::Pass
            | Fault::Latency(_)
            | Fault::CutResponse
            | Fault::CutResponseTo(_)
            | Fault::CutOneResponseTo(_)
            | Fault::HoldRequestsTo(_)
            | Fault::SlowRequestsTo(..)
            | Fault::PartitionLimit(_)
            | Fault::FeedDelay(_)
            | Fault::IndexDelay(_)
            | Fault::StallFeed => {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = server.set_nodelay(true);
                let delay = match fault {
                    Fault::Latency(d) => d,
                    _ => Duration::ZERO,
                };
                // Requests on one HTTP/1.1 connection go one at a time, so
                // the response after a marked request is that request's.
                let (mark, armed, budget) = match fault {
                    Fault::CutResponse => (None, Arc::new(AtomicBool::new(true)), None),
                    Fault::CutResponseTo(text) => {
                        (Some(text), Arc::new(AtomicBool::new(false)), None)
                    }
                    Fault::CutOneResponseTo(text) => (
                        Some(text),
                        Arc::new(AtomicBool::new(false)),
                        Some(shared.cuts_left),
                    ),
                    _ => (None, Arc::new(AtomicBool::new(false)), None),
                };
                if let Fault::FeedDelay(by) = fault {
                    exchange(client, server, by).await;
                    return;
                }
                if let Fault::IndexDelay(lag) = fault {
                    index::exchange(client, server, lag, &shared.counts).await;
                    return;
                }
                let (client_read, client_write) = client.into_split();
                let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
                let (server_read, server_write) = server.into_split();
                let hold = match fault {
                    Fault::HoldRequestsTo(text) => Some((text, Arc::clone(&shared.counts))),
                    _ => None,
                };
                let slow = match fault {
                    Fault::SlowRequestsTo(text, by) => Some((text, by)),
                    _ => None,
                };
                let stall = match fault {
                    Fault::StallFeed => Some(Answer::EmptyRecords),
                    Fault::PartitionLimit(units) => Some(Answer::OverLimit(units)),
                    _ => None,
                }
                .map(|answer| {
                    (
                        Arc::clone(&client_write),
                        Arc::clone(&shared.counts),
                        answer,
                    )
                });
                let requests = Requests {
                    delay,
                    mark,
                    armed: Arc::clone(&armed),
                    budget,
                    hold,
                    slow,
                    stall,
                };
                let responses = Responses { delay, armed };
                tokio::select! {
                    _ = requests.pump(client_read, server_write) => {}
                    _ = responses.pump(server_read, client_write) => {}
                }
            }
        }
    };
    tokio::select! {
        _ = work => {}
        // Any switch ends this connection (dropping both sockets).
        _ = changes.changed() => {}
    }
}

/// The client-to-server half of a connection.
struct Requests {
    delay: Duration,
    /// Text that marks a request whose response is to be cut.
    mark: Option<&'static str>,
    armed: Arc<AtomicBool>,
    /// Cuts left across the proxy (`CutOneResponseTo`); `None`: no limit.
    budget: Option<Arc<AtomicU64>>,
    /// Text that marks a request to hold back until the fault changes.
    hold: Option<(&'static str, Arc<Counts>)>,
    /// Text that marks a request to forward late, and by how much.
    slow: Option<(&'static str, Duration)>,
    /// Answer `GetRecords` here, on the client's side of the connection.
    stall: Option<(SharedWrite, Arc<Counts>, Answer)>,
}

/// The client's half of a connection, written by both pumps.
type SharedWrite = Arc<tokio::sync::Mutex<OwnedWriteHalf>>;

impl Requests {
    async fn pump(self, mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
        if let Some((client, counts, answer)) = &self.stall {
            // Requests on one HTTP/1.1 connection go one at a time, so no
            // response is in flight while this one is answered here.
            let mut pending = Vec::new();
            while let Some(request) = next_request(&mut from, &mut pending).await {
                if let Some(response) = answer.to(&request, counts) {
                    if client
                        .lock()
                        .await
                        .write_all(response.as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                } else if to.write_all(&request).await.is_err() {
                    return;
                }
            }
            return;
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if let Some(mark) = self.mark {
                let allowed = || {
                    self.budget.as_ref().is_none_or(|left| {
                        left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                    })
                };
                if buf[..n].windows(mark.len()).any(|w| w == mark.as_bytes()) && allowed() {
                    self.armed.store(true, Ordering::SeqCst);
                }
            }
            if let Some((text, counts)) = &self.hold {
                if buf[..n].windows(text.len()).any(|w| w == text.as_bytes()) {
                    counts.held.fetch_add(1, Ordering::SeqCst);
                    // Never forwarded: the switch that lifts the hold ends
                    // this connection, and the client retries on a new one.
                    std::future::pending::<()>().await;
                }
            }
            if let Some((text, by)) = self.slow {
                if contains(&buf[..n], text) {
                    tokio::time::sleep(by).await;
                }
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}

/// The server-to-client half of a connection.
struct Responses {
    delay: Duration,
    /// Cut the next response.
    armed: Arc<AtomicBool>,
}

impl Responses {
    async fn pump(self, mut from: OwnedReadHalf, to: SharedWrite) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let mut to = to.lock().await;
            if self.armed.load(Ordering::SeqCst) {
                let _ = to.write_all(&buf[..cut_point(&buf[..n])]).await;
                let _ = to.flush().await;
                // Returning drops both halves of both sockets: the client
                // sees the connection end mid-response.
                return;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}

/// Where to cut a response chunk: the headers and half the body (at least
/// one body byte short of complete), or half the chunk if the headers are not
/// all in it.
fn cut_point(chunk: &[u8]) -> usize {
    match chunk.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => {
            let body_start = end + 4;
            let body = chunk.len() - body_start;
            body_start + body / 2
        }
        None => chunk.len() / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_point_keeps_headers_and_half_the_body() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n{\"a\"";
        let at = cut_point(response);
        assert_eq!(
            &response[..at],
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n{\""
        );
        assert_eq!(cut_point(b"HTTP/1.1 200"), 6);
    }
}
