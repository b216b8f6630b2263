//! The load generator: keep-alive HTTP/1.1 connections through hyper's
//! connection-level client (no pool, one request in flight per connection:
//! a closed loop), every response time recorded in an HDR histogram.
//!
//! Two drivers: [`drive`] runs operations for a warm-up and then a fixed
//! measuring window; [`drain`] runs a prepared batch of operations (whose
//! untimed set-up happened before) and times the batch.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use anyhow::Context as _;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderMap, HeaderValue, HOST};
use hyper::{Method, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Latencies are recorded in nanoseconds, 3 significant digits, up to a minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds are valid")
}

/// What one scenario measured.
#[derive(Clone)]
pub struct Sample {
    /// Response times (ns) of the operations started in the window.
    pub hist: Histogram<u64>,
    /// Operations that failed (connection error or unexpected status).
    pub errors: u64,
    /// Length of the measuring window (summed over rounds).
    pub elapsed: Duration,
}

impl Sample {
    /// Nothing measured yet.
    pub fn empty() -> Self {
        Sample {
            hist: histogram(),
            errors: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Successful operations.
    pub fn ok(&self) -> u64 {
        self.hist.len()
    }

    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.ok() as f64 / self.elapsed.as_secs_f64()
        }
    }

    /// The latency at quantile `q`, in microseconds.
    pub fn micros(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// Mean latency in microseconds.
    pub fn mean_micros(&self) -> f64 {
        self.hist.mean() / 1000.0
    }

    /// Add another round of the same scenario.
    pub fn merge(&mut self, other: &Sample) {
        // Same bounds on both sides: adding cannot fail.
        self.hist
            .add(&other.hist)
            .expect("histograms share their bounds");
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }
}

/// A request, built once and sent many times.
#[derive(Clone)]
pub struct RequestTemplate {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl RequestTemplate {
    /// `method path` to `addr`, with `headers` and `body`.
    pub fn new(
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> anyhow::Result<Self> {
        let mut map = HeaderMap::new();
        map.insert(HOST, HeaderValue::from_str(&addr.to_string())?);
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value)?);
        }
        Ok(RequestTemplate {
            method,
            uri: path.parse().with_context(|| format!("path {path}"))?,
            headers: map,
            body,
        })
    }

    /// Replace (or add) one header.
    pub fn set_header(&mut self, name: &'static str, value: HeaderValue) {
        self.headers.insert(name, value);
    }

    fn build(&self) -> hyper::Request<Full<Bytes>> {
        let mut req = hyper::Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// A response, body read in full.
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// The `name=value` part of the `Set-Cookie` header for cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(hyper::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|pair| pair.split_once('=').is_some_and(|(n, _)| n.trim() == name))
            .map(|pair| pair.trim().to_owned())
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    addr: SocketAddr,
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Connect (TCP_NODELAY, as every HTTP client does).
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the server
            // closes it; either way there is nobody to tell.
            let _ = conn.await;
        });
        Ok(Connection { addr, sender })
    }

    /// Send one request and read the whole response.
    pub async fn send(&mut self, req: &RequestTemplate) -> anyhow::Result<Response> {
        if self.sender.ready().await.is_err() {
            // The server closed the connection: open another.
            *self = Connection::open(self.addr).await?;
        }
        let res = self
            .sender
            .send_request(req.build())
            .await
            .context("sending a request")?;
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .context("reading a response body")?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// One closed-loop operation (a request, a store call, ...).
pub trait Op: Send + 'static {
    /// Run once; `Ok(true)` when it did what was expected.
    fn once(&mut self) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// `GET` (or any request) expecting one status.
pub struct Http {
    /// The connection.
    pub conn: Connection,
    /// What to send.
    pub req: RequestTemplate,
    /// What a success answers.
    pub expect: StatusCode,
}

impl Op for Http {
    async fn once(&mut self) -> anyhow::Result<bool> {
        Ok(self.conn.send(&self.req).await?.status == self.expect)
    }
}

/// Run each of `ops` in its own task, in a closed loop: `warmup` unrecorded,
/// then every operation started within `measure` is recorded. Must be called
/// on the load generator's runtime.
pub async fn drive<O: Op>(ops: Vec<O>, warmup: Duration, measure: Duration) -> Sample {
    let start = Instant::now();
    let recording = start + warmup;
    let end = recording + measure;
    let tasks: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            tokio::spawn(async move {
                let mut sample = Sample::empty();
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let ok = matches!(op.once().await, Ok(true));
                    PROGRESS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if t0 >= recording {
                        if ok {
                            let ns = t0.elapsed().as_nanos() as u64;
                            sample.hist.saturating_record(ns.max(1));
                        } else {
                            sample.errors += 1;
                        }
                    }
                    if !ok {
                        // Do not spin on a dead target.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                sample
            })
        })
        .collect();
    let mut total = merged(tasks).await;
    total.elapsed = measure;
    total
}

/// Run `items` through `op` with `concurrency` workers, timing each call and
/// the whole batch (its wall time is the sample's `elapsed`).
pub async fn drain<T, F, Fut>(items: Vec<T>, concurrency: usize, op: F) -> Sample
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<bool>> + Send,
{
    let queue = Arc::new(Mutex::new(items));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let queue = Arc::clone(&queue);
            let op = op.clone();
            tokio::spawn(async move {
                let mut sample = Sample::empty();
                loop {
                    let item = queue.lock().expect("queue lock poisoned").pop();
                    let Some(item) = item else { break };
                    let t0 = Instant::now();
                    match op(item).await {
                        Ok(true) => {
                            let ns = t0.elapsed().as_nanos() as u64;
                            sample.hist.saturating_record(ns.max(1));
                        }
                        _ => sample.errors += 1,
                    }
                }
                sample
            })
        })
        .collect();
    let mut total = Sample::empty();
    for task in tasks {
        match task.await {
            Ok(sample) => total.merge(&sample),
            Err(_) => total.errors += 1,
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Run `ops` in an open loop: operation `i` is scheduled at `start + i /
/// rate`, whichever connection is free takes the next one, and its latency
/// counts from the schedule, not from when it was sent (so a stall of the
/// target shows as the latency every request scheduled meanwhile would have
/// seen: no coordinated omission, as in wrk2). Scheduled operations still
/// waiting `GRACE` after the window are counted as errors.
pub async fn drive_open<O: Op>(
    ops: Vec<O>,
    rate: f64,
    warmup: Duration,
    measure: Duration,
) -> Sample {
    const GRACE: Duration = Duration::from_secs(5);
    let start = Instant::now();
    let recording = start + warmup;
    let end = recording + measure;
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut sample = Sample::empty();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let scheduled = start + interval.mul_f64(i as f64);
                    if scheduled >= end {
                        break;
                    }
                    if Instant::now() > end + GRACE {
                        sample.errors += u64::from(scheduled >= recording);
                        continue;
                    }
                    tokio::time::sleep_until(scheduled.into()).await;
                    let ok = matches!(op.once().await, Ok(true));
                    PROGRESS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if scheduled >= recording {
                        if ok {
                            let ns = scheduled.elapsed().as_nanos() as u64;
                            sample.hist.saturating_record(ns.max(1));
                        } else {
                            sample.errors += 1;
                        }
                    }
                }
                sample
            })
        })
        .collect();
    let mut total = merged(tasks).await;
    total.elapsed = measure;
    total
}

/// Operations completed by [`drive`] and [`drive_open`] since the process
/// started: what the progress line counts.
pub static PROGRESS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The samples of `tasks` merged (a task that panicked counts as an error).
async fn merged(tasks: Vec<tokio::task::JoinHandle<Sample>>) -> Sample {
    let mut total = Sample::empty();
    for task in tasks {
        match task.await {
            Ok(sample) => total.merge(&sample),
            Err(_) => total.errors += 1,
        }
    }
    total
}
