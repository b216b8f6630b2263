//! An HTTP proxy that enforces DynamoDB Streams' read limits in front of a
//! DynamoDB-wire server that enforces none (the embedded server), so a fleet
//! of nodes following one table's stream meets the throttling it would meet
//! in production.
//!
//! # What it enforces
//!
//! The figures are AWS's own (the [`Default`] of [`StreamsLimits`]):
//!
//! | call | limit | AWS's figure |
//! |---|---|---|
//! | `GetRecords` | readers per shard: a reader is *active* on a shard if it called `GetRecords` on it within `reader_window`; a call from a reader that is not active while `max_readers_per_shard` others are is throttled (and the caller does not become active) | no more than 2 processes should read one shard at a time |
//! | `GetRecords` | rate per shard: a token bucket of `get_records_per_shard_per_sec` tokens a second, burst equal to the rate (at least 1) | 5 calls a second per shard |
//! | `DescribeStream` | rate for the whole proxy (one account): one token bucket of `describe_stream_per_sec` | 10 calls a second |
//!
//! The reader check comes first: a third reader's call takes no token. A
//! reader that passes it stays active even if the rate then throttles its
//! call (it is still reading the shard). Every other call passes.
//!
//! A throttled call is answered by the proxy and never reaches the server:
//! HTTP 400, `x-amzn-ErrorType: LimitExceededException` and the AWS JSON 1.0
//! error body, as DynamoDB Streams answers. The SDK reads it as a throttling
//! error (and retries it, unless its attempts are 1).
//!
//! # How calls are identified
//!
//! - The operation: the part of `X-Amz-Target` after the dot
//!   (`DynamoDBStreams_20120810.GetRecords` → `GetRecords`); `unknown` if
//!   the header is missing.
//! - The reader (the client process): the access key id in
//!   `Authorization: AWS4-HMAC-SHA256 Credential=<AKID>/...`; `anonymous` if
//!   there is none. Give each node its own dummy key id.
//! - The shard of a `GetRecords`: the `shard_id` in its `ShardIterator`,
//!   which the embedded server encodes as standard base64 of JSON; an
//!   iterator that does not decode is its own shard key.
//!
//! # Forwarding
//!
//! HTTP/1.1 with keep-alive towards clients, pooled connections towards the
//! server. Method, path, headers and body go upstream unchanged (the server
//! checks no signature) and the answer comes back unchanged. The proxy runs
//! on its own thread and Tokio runtime; dropping it stops it. It counts every
//! call by reader and operation ([`StreamsLimitProxy::counts`]).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use base64::Engine as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;

/// The reader of a call without an access key id.
pub const ANONYMOUS: &str = "anonymous";

/// The operation of a call without `X-Amz-Target`.
pub const UNKNOWN_OPERATION: &str = "unknown";

const GET_RECORDS: &str = "GetRecords";
const DESCRIBE_STREAM: &str = "DescribeStream";

/// What the proxy enforces. `usize::MAX` readers and infinite rates enforce
/// nothing ([`StreamsLimits::none`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamsLimits {
    /// Readers that may be active on one shard at a time.
    pub max_readers_per_shard: usize,
    /// How long after its last `GetRecords` on a shard a reader stays active.
    pub reader_window: Duration,
    /// `GetRecords` calls a second per shard (also the burst, at least 1).
    pub get_records_per_shard_per_sec: f64,
    /// `DescribeStream` calls a second for the whole proxy (also the burst).
    pub describe_stream_per_sec: f64,
}

impl Default for StreamsLimits {
    /// AWS's figures: 2 readers per shard, 5 `GetRecords` a second per shard,
    /// 10 `DescribeStream` a second.
    fn default() -> Self {
        StreamsLimits {
            max_readers_per_shard: 2,
            reader_window: Duration::from_secs(1),
            get_records_per_shard_per_sec: 5.0,
            describe_stream_per_sec: 10.0,
        }
    }
}

impl StreamsLimits {
    /// Nothing enforced: the proxy passes every call and counts it.
    pub fn none() -> Self {
        StreamsLimits {
            max_readers_per_shard: usize::MAX,
            reader_window: Duration::ZERO,
            get_records_per_shard_per_sec: f64::INFINITY,
            describe_stream_per_sec: f64::INFINITY,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            self.max_readers_per_shard >= 1,
            "max_readers_per_shard: expected at least 1, got 0"
        );
        for (name, rate) in [
            (
                "get_records_per_shard_per_sec",
                self.get_records_per_shard_per_sec,
            ),
            ("describe_stream_per_sec", self.describe_stream_per_sec),
        ] {
            ensure!(
                rate > 0.0,
                "{name}: expected a rate above 0 (or infinity), got {rate}"
            );
        }
        Ok(())
    }
}

/// What the proxy did with one reader's calls of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Calls sent on to the server.
    pub forwarded: u64,
    /// Calls answered with `LimitExceededException`.
    pub throttled: u64,
}

type Counts = HashMap<(String, String), OpCounts>;

/// A running proxy. Dropping it stops it and waits for its thread.
pub struct StreamsLimitProxy {
    addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for StreamsLimitProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamsLimitProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl StreamsLimitProxy {
    /// Listen on 127.0.0.1:0 and forward to `upstream` under `limits`.
    pub fn start(upstream: SocketAddr, limits: StreamsLimits) -> anyhow::Result<Self> {
        limits.check()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        listener.set_nonblocking(true).context("non-blocking")?;
        let addr = listener.local_addr().context("local address")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("streams-limit-proxy")
            .enable_all()
            .build()
            .context("proxy runtime")?;
        let counts = Arc::new(Mutex::new(Counts::new()));
        let proxy = Arc::new(Proxy {
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            limiter: Mutex::new(Limiter::new(limits, Instant::now())),
            counts: counts.clone(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("streams-limit-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // Cannot fail: inside a runtime with IO enabled.
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("a non-blocking listener inside the proxy runtime");
                    tokio::select! {
                        () = accept(listener, proxy) => {}
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .context("proxy thread")?;
        Ok(StreamsLimitProxy {
            addr,
            counts,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint URL for the SDK: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Calls so far, by (reader, operation).
    pub fn counts(&self) -> BTreeMap<(String, String), OpCounts> {
        lock(&self.counts)
            .iter()
            .map(|(key, counts)| (key.clone(), *counts))
            .collect()
    }

    /// Forget the calls so far (the limits' state stays).
    pub fn reset_counts(&self) {
        lock(&self.counts).clear();
    }
}

impl Drop for StreamsLimitProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A poisoned lock only means a panic elsewhere; the maps stay usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// The proxy's state, shared by its connections.
struct Proxy {
    upstream: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    limiter: Mutex<Limiter>,
    counts: Arc<Mutex<Counts>>,
}

async fn accept(listener: tokio::net::TcpListener, proxy: Arc<Proxy>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors and the like: wait for connections to close.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req).await) }
            });
            // A client that hangs up mid-request ends only its connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Proxy {
    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(err) => return plain(StatusCode::BAD_REQUEST, format!("reading the body: {err}")),
        };
        let call = Call::of(&parts.headers, &body);
        let verdict = lock(&self.limiter).admit(&call, Instant::now());
        self.count(call.reader, call.op, verdict.is_none());
        if let Some(message) = verdict {
            return throttled(&message);
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = match format!("http://{}{path}", self.upstream).parse() {
            Ok(uri) => uri,
            Err(err) => return plain(StatusCode::BAD_REQUEST, format!("request path: {err}")),
        };
        let mut upstream = Request::from_parts(parts, Full::new(body));
        *upstream.uri_mut() = uri;
        match self.client.request(upstream).await {
            Ok(response) => response.map(BodyExt::boxed),
            Err(err) => plain(StatusCode::BAD_GATEWAY, format!("upstream: {err}")),
        }
    }

    fn count(&self, reader: String, op: String, forwarded: bool) {
        let mut counts = lock(&self.counts);
        let entry = counts.entry((reader, op)).or_default();
        if forwarded {
            entry.forwarded += 1;
        } else {
            entry.throttled += 1;
        }
    }
}

/// DynamoDB Streams' answer to a call over its limits (AWS JSON 1.0).
fn throttled(message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "__type": "com.amazonaws.dynamodb.v20120810#LimitExceededException",
        "message": message,
    });
    let mut response = full(StatusCode::BAD_REQUEST, body.to_string());
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    headers.insert(
        "x-amzn-errortype",
        HeaderValue::from_static("LimitExceededException"),
    );
    headers.insert(
        "x-amzn-requestid",
        HeaderValue::from_static("streams-limit-proxy"),
    );
    response
}

/// The proxy's own failure (bad request, server unreachable), as text.
fn plain(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = full(status, message);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn full(status: StatusCode, body: String) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// Who called what, on which shard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    reader: String,
    op: String,
    /// The shard key of a `GetRecords` with a `ShardIterator`.
    shard: Option<String>,
}

impl Call {
    fn of(headers: &HeaderMap, body: &[u8]) -> Call {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let op = text("x-amz-target").map_or(UNKNOWN_OPERATION, operation);
        let reader = text(AUTHORIZATION.as_str())
            .and_then(access_key_id)
            .unwrap_or(ANONYMOUS);
        let shard = (op == GET_RECORDS).then(|| shard_key(body)).flatten();
        Call {
            reader: reader.to_owned(),
            op: op.to_owned(),
            shard,
        }
    }
}

/// `DynamoDBStreams_20120810.GetRecords` → `GetRecords`.
fn operation(target: &str) -> &str {
    target.split_once('.').map_or(target, |(_, op)| op)
}

/// The access key id of a SigV4 `Authorization` header.
fn access_key_id(authorization: &str) -> Option<&str> {
    const CREDENTIAL: &str = "Credential=";
    let start = authorization.find(CREDENTIAL)? + CREDENTIAL.len();
    let id = authorization[start..].split(['/', ',', ' ']).next()?;
    (!id.is_empty()).then_some(id)
}

/// The shard a `GetRecords` body reads: the `shard_id` inside the embedded
/// server's iterator, or the iterator itself if it does not decode.
fn shard_key(body: &[u8]) -> Option<String> {
    let request: serde_json::Value = serde_json::from_slice(body).ok()?;
    let iterator = request.get("ShardIterator")?.as_str()?;
    let decoded = || -> Option<String> {
        let json = base64::engine::general_purpose::STANDARD
            .decode(iterator)
            .ok()?;
        let data: serde_json::Value = serde_json::from_slice(&json).ok()?;
        Some(data.get("shard_id")?.as_str()?.to_owned())
    };
    Some(decoded().unwrap_or_else(|| iterator.to_owned()))
}

/// The limits' state. Pure: the caller passes the time.
#[derive(Debug)]
struct Limiter {
    limits: StreamsLimits,
    shards: HashMap<String, ShardState>,
    describe_stream: TokenBucket,
}

#[derive(Debug)]
struct ShardState {
    /// Each reader's last `GetRecords` on the shard.
    readers: HashMap<String, Instant>,
    get_records: TokenBucket,
}

impl Limiter {
    fn new(limits: StreamsLimits, now: Instant) -> Self {
        Limiter {
            limits,
            shards: HashMap::new(),
            describe_stream: TokenBucket::new(limits.describe_stream_per_sec, now),
        }
    }

    /// `None` to forward `call`, or the message it is throttled with.
    fn admit(&mut self, call: &Call, now: Instant) -> Option<String> {
        match (call.op.as_str(), &call.shard) {
            (GET_RECORDS, Some(shard)) => self.admit_get_records(&call.reader, shard, now),
            (DESCRIBE_STREAM, _) => (!self.describe_stream.take(now)).then(|| {
                format!(
                    "Rate exceeded: more than {} DescribeStream calls per second.",
                    self.limits.describe_stream_per_sec
                )
            }),
            _ => None,
        }
    }

    fn admit_get_records(&mut self, reader: &str, shard: &str, now: Instant) -> Option<String> {
        let limits = self.limits;
        let state = self
            .shards
            .entry(shard.to_owned())
            .or_insert_with(|| ShardState {
                readers: HashMap::new(),
                get_records: TokenBucket::new(limits.get_records_per_shard_per_sec, now),
            });
        state
            .readers
            .retain(|_, last| now.saturating_duration_since(*last) < limits.reader_window);
        if !state.readers.contains_key(reader)
            && state.readers.len() >= limits.max_readers_per_shard
        {
            return Some(format!(
                "Too many readers on shard {shard}: at most {} processes may read a shard at once.",
                limits.max_readers_per_shard
            ));
        }
        state.readers.insert(reader.to_owned(), now);
        (!state.get_records.take(now)).then(|| {
            format!(
                "Rate exceeded for shard {shard}: more than {} GetRecords calls per second.",
                limits.get_records_per_shard_per_sec
            )
        })
    }
}

/// `rate` tokens a second up to a burst of `max(rate, 1)`; starts full. An
/// infinite rate always has a token.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, now: Instant) -> Self {
        let burst = rate.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Take a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        if self.rate.is_infinite() {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(reader: &str, op: &str, shard: Option<&str>) -> Call {
        Call {
            reader: reader.to_owned(),
            op: op.to_owned(),
            shard: shard.map(str::to_owned),
        }
    }

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    /// Whether `limiter` admits `reader`'s `GetRecords` on `shard` at `now`.
    fn reads(limiter: &mut Limiter, reader: &str, shard: &str, now: Instant) -> bool {
        limiter
            .admit(&call(reader, GET_RECORDS, Some(shard)), now)
            .is_none()
    }

    #[test]
    fn calls_are_identified_by_target_access_key_and_iterator() {
        let iterator = base64::engine::general_purpose::STANDARD
            .encode(r#"{"table_name":"t","shard_id":"shardId-00000001-t","position":0}"#);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amz-target",
            HeaderValue::from_static("DynamoDBStreams_20120810.GetRecords"),
        );
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=node-a/20240101/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=00",
            ),
        );
        let body = serde_json::json!({ "ShardIterator": iterator }).to_string();
        assert_eq!(
            Call::of(&headers, body.as_bytes()),
            call("node-a", "GetRecords", Some("shardId-00000001-t"))
        );
        assert_eq!(
            Call::of(&HeaderMap::new(), b"{}"),
            call(ANONYMOUS, UNKNOWN_OPERATION, None)
        );
        assert_eq!(access_key_id("AWS4-HMAC-SHA256 Credential=/x"), None);
        assert_eq!(
            shard_key(br#"{"ShardIterator":"not base64!"}"#).as_deref(),
            Some("not base64!")
        );
        assert_eq!(shard_key(b"not json"), None);
    }

    #[test]
    fn a_third_reader_waits_until_one_of_two_goes_quiet() {
        let start = Instant::now();
        let mut limiter = Limiter::new(StreamsLimits::default(), start);
        assert!(reads(&mut limiter, "a", "s", start));
        assert!(reads(&mut limiter, "b", "s", at(start, 100)));
        assert!(!reads(&mut limiter, "c", "s", at(start, 900)));
        // Another shard has room.
        assert!(reads(&mut limiter, "c", "t", at(start, 900)));
        // `a` went quiet a window ago; the refused `c` never became active.
        assert!(reads(&mut limiter, "c", "s", at(start, 1000)));
        assert!(!reads(&mut limiter, "a", "s", at(start, 1001)));
    }

    #[test]
    fn get_records_is_a_token_bucket_per_shard() {
        let start = Instant::now();
        let mut limiter = Limiter::new(StreamsLimits::default(), start);
        let passed = |limiter: &mut Limiter, shard, now| {
            (0..20).filter(|_| reads(limiter, "a", shard, now)).count()
        };
        assert_eq!(passed(&mut limiter, "s", start), 5, "the burst");
        assert_eq!(passed(&mut limiter, "t", start), 5, "another shard's burst");
        assert_eq!(passed(&mut limiter, "s", at(start, 400)), 2, "5 a second");
        assert_eq!(passed(&mut limiter, "s", at(start, 10_000)), 5, "capped");
    }

    #[test]
    fn describe_stream_is_one_bucket_and_other_calls_pass() {
        let start = Instant::now();
        let mut limiter = Limiter::new(StreamsLimits::default(), start);
        let refused = (0..15)
            .filter(|i| {
                let reader = if i % 2 == 0 { "a" } else { "b" };
                limiter
                    .admit(&call(reader, DESCRIBE_STREAM, None), start)
                    .is_some()
            })
            .count();
        assert_eq!(refused, 5);
        assert_eq!(limiter.admit(&call("a", "GetItem", None), start), None);
        assert_eq!(limiter.admit(&call("a", GET_RECORDS, None), start), None);
    }

    #[test]
    fn none_enforces_nothing_and_bad_limits_are_refused() {
        let start = Instant::now();
        let mut limiter = Limiter::new(StreamsLimits::none(), start);
        for i in 0..100 {
            let reader = format!("r{i}");
            assert!(reads(&mut limiter, &reader, "s", start), "{reader}");
            assert_eq!(
                limiter.admit(&call(&reader, DESCRIBE_STREAM, None), start),
                None
            );
        }
        let zero_rate = StreamsLimits {
            get_records_per_shard_per_sec: 0.0,
            ..StreamsLimits::default()
        };
        let err = zero_rate.check().unwrap_err().to_string();
        assert!(err.contains("get_records_per_shard_per_sec"), "{err}");
        let nan = StreamsLimits {
            describe_stream_per_sec: f64::NAN,
            ..StreamsLimits::default()
        };
        assert!(nan.check().is_err());
    }
}
