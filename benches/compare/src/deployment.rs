//! Target mode (`--target URL --api-key K`): measure a running deployment
//! (a node on real DynamoDB, or any other) through its `/v1` API, starting
//! nothing.
//!
//! Set-up (untimed): `--sessions` sessions created with `POST /v1/sessions`;
//! with `--miss-ratio`, a pool of sessions created through `--create-via`
//! (another node on the same table), which the target has never cached.
//!
//! Scenarios, each once per round at every `--concurrency` (closed loop)
//! and, with `--rate`, in an open loop at that rate:
//!
//! - `read`: `GET /v1/session`, cycling through the hot sessions;
//! - `read (miss R)`: the same, a share R of them sessions of the miss pool,
//!   each read once (the DynamoDB path); the share actually served is
//!   printed, since a pool can run out;
//! - `regenerate`: `POST /v1/session/regenerate` with a user binding, each
//!   connection carrying the token its previous call returned (a login).
//!
//! The results: a table (p50/p90/p99/p99.9/max), `target.csv`,
//! `target.json` and `target-latency.svg` under `--out`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use anyhow::Context as _;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};

use crate::args::BenchArgs;
use crate::load::{drive, drive_open, Connection, Op, RequestTemplate, Sample, PROGRESS};
use crate::results::{Measured, Timing};

/// The scenarios, in the order they run within a round.
const READ: &str = "read";
const MISS: &str = "read (miss)";
const REGENERATE: &str = "regenerate";

/// A node of the deployment: where it is and its API key header.
#[derive(Clone)]
struct Api {
    addr: SocketAddr,
    auth: String,
}

impl Api {
    async fn new(url: &str, key: &str) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("--target {url}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "{url}: only http:// is supported (put the harness next to the node, or behind the TLS terminator)"
        );
        let host = uri.host().context("no host in the URL")?;
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Api {
            addr,
            auth: format!("Bearer {key}"),
        })
    }

    fn request(&self, method: Method, path: &str, body: &str) -> anyhow::Result<RequestTemplate> {
        RequestTemplate::new(
            self.addr,
            method,
            path,
            &[
                ("authorization", self.auth.clone()),
                ("content-type", "application/json".to_owned()),
            ],
            Bytes::from(body.to_owned()),
        )
    }

    /// Create `n` anonymous sessions, 16 at a time: their tokens.
    async fn create(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let made = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let left = Arc::new(AtomicU64::new(n as u64));
        let mut tasks = Vec::new();
        for _ in 0..16.min(n.max(1)) {
            let (api, made, left) = (self.clone(), Arc::clone(&made), Arc::clone(&left));
            tasks.push(tokio::spawn(async move {
                let req = api.request(Method::POST, "/v1/sessions", r#"{"data":{"bench":"1"}}"#)?;
                let mut conn = Connection::open(api.addr).await?;
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                    .is_ok()
                {
                    let res = conn.send(&req).await?;
                    let token = token_of(&res.body).with_context(|| {
                        format!(
                            "POST /v1/sessions answered {}: {}",
                            res.status,
                            String::from_utf8_lossy(&res.body)
                        )
                    })?;
                    made.lock().expect("not poisoned").push(token);
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let tokens = std::mem::take(&mut *made.lock().expect("not poisoned"));
        Ok(tokens)
    }
}

/// The `token` of a `/v1` JSON answer.
fn token_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["token"].as_str().map(str::to_owned)
}

/// `GET /v1/session`, hot sessions in turn, or with probability `miss` a
/// session of the miss pool (read once).
struct Read {
    conn: Connection,
    req: RequestTemplate,
    hot: Arc<[String]>,
    next: usize,
    misses: Option<Misses>,
    rng: u64,
}

/// The miss pool and what was drawn from it.
#[derive(Clone)]
struct Misses {
    ratio: f64,
    pool: Arc<Mutex<Vec<String>>>,
    served: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
}

impl Read {
    fn pick(&mut self) -> String {
        // xorshift: a miss decision per read, no shared state.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if let Some(m) = &self.misses {
            m.reads.fetch_add(1, Ordering::Relaxed);
            let draw = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
            if draw < m.ratio {
                if let Some(token) = m.pool.lock().expect("not poisoned").pop() {
                    m.served.fetch_add(1, Ordering::Relaxed);
                    return token;
                }
            }
        }
        self.next = (self.next + 1) % self.hot.len();
        self.hot[self.next].clone()
    }
}

impl Op for Read {
    async fn once(&mut self) -> anyhow::Result<bool> {
        let token = self.pick();
        self.req
            .set_header("x-session-token", HeaderValue::from_str(&token)?);
        Ok(self.conn.send(&self.req).await?.status == StatusCode::OK)
    }
}

/// `POST /v1/session/regenerate` with the token the previous call returned.
struct Regenerate {
    conn: Connection,
    req: RequestTemplate,
}

impl Op for Regenerate {
    async fn once(&mut self) -> anyhow::Result<bool> {
        let res = self.conn.send(&self.req).await?;
        match token_of(&res.body) {
            Some(token) if res.status == StatusCode::OK => {
                self.req
                    .set_header("x-session-token", HeaderValue::from_str(&token)?);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// What the scenarios share.
struct Setup {
    api: Api,
    hot: Arc<[String]>,
    misses: Option<Misses>,
    users: AtomicU64,
}

impl Setup {
    async fn ops(&self, scenario: &str, n: usize) -> anyhow::Result<Vec<Box<dyn DynOp>>> {
        let mut ops: Vec<Box<dyn DynOp>> = Vec::with_capacity(n);
        for i in 0..n {
            let conn = Connection::open(self.api.addr).await?;
            if scenario == REGENERATE {
                let token = self.api.create(1).await?.pop().context("no session made")?;
                let user = self.users.fetch_add(1, Ordering::Relaxed);
                let body = format!(r#"{{"user_id":"bench-{user}","role":"member"}}"#);
                let mut req = self
                    .api
                    .request(Method::POST, "/v1/session/regenerate", &body)?;
                req.set_header("x-session-token", HeaderValue::from_str(&token)?);
                ops.push(Box::new(Regenerate { conn, req }));
            } else {
                ops.push(Box::new(Read {
                    conn,
                    req: self.api.request(Method::GET, "/v1/session", "")?,
                    hot: Arc::clone(&self.hot),
                    next: i * 7919,
                    misses: if scenario == MISS {
                        self.misses.clone()
                    } else {
                        None
                    },
                    rng: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
                }));
            }
        }
        Ok(ops)
    }
}

/// [`Op`] behind a box, so one loop drives every scenario.
trait DynOp: Send {
    fn once_boxed(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<bool>> + Send + '_>>;
}

impl<O: Op> DynOp for O {
    fn once_boxed(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<bool>> + Send + '_>>
    {
        Box::pin(self.once())
    }
}

impl Op for Box<dyn DynOp> {
    async fn once(&mut self) -> anyhow::Result<bool> {
        // The boxed op's own method: `Box<dyn DynOp>` is an `Op` too, and
        // through the blanket impl a `DynOp`, which would call back here.
        (**self).once_boxed().await
    }
}

/// Run target mode to the end: set up, measure, report.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
        .context("load generator runtime")?;
    rt.block_on(measure_target(args))
}

async fn measure_target(args: BenchArgs) -> anyhow::Result<()> {
    let url = args.target.clone().context("--target")?;
    let key = args.api_key.clone().context("--api-key")?;
    anyhow::ensure!(args.sessions > 0, "--sessions must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.miss_ratio),
        "--miss-ratio must be 0-1"
    );
    let api = Api::new(&url, &key).await?;
    println!(
        "edge-session-bench: target {url} ({}), {} rounds",
        api.addr, args.rounds
    );
    let hot: Arc<[String]> = api.create(args.sessions).await?.into();
    println!("created {} sessions on the target", hot.len());
    let misses = match (&args.create_via, args.miss_ratio > 0.0) {
        (Some(via), true) => Some(miss_pool(&args, via, &key).await?),
        _ => None,
    };
    let setup = Setup {
        api,
        hot,
        misses,
        users: AtomicU64::new(0),
    };
    let timing = Timing {
        warmup: Duration::from_secs_f64(args.warmup),
        per_round: Duration::from_secs_f64(args.duration / args.rounds as f64),
    };
    let rows = scenarios(&args, &setup, timing).await?;
    if let Some(m) = &setup.misses {
        let reads = m.reads.load(Ordering::Relaxed).max(1);
        println!(
            "miss share actually served: {:.3} ({} misses over {} reads of the mixed scenario)",
            m.served.load(Ordering::Relaxed) as f64 / reads as f64,
            m.served.load(Ordering::Relaxed),
            reads
        );
    }
    crate::report::write_target(&args, &url, &rows)
}

/// Sessions for the misses, created through `via`: as many as the mixed
/// scenario can draw at the fastest rate this machine is likely to reach.
async fn miss_pool(args: &BenchArgs, via: &str, key: &str) -> anyhow::Result<Misses> {
    let expected =
        args.rate.unwrap_or(20_000.0) * (args.duration + args.warmup * args.rounds as f64);
    let n = ((expected * args.miss_ratio) as usize).clamp(100, 200_000);
    let api = Api::new(via, key).await?;
    let started = Instant::now();
    let pool = api.create(n).await?;
    println!(
        "created {} sessions for misses through {via} in {:.1} s",
        pool.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Misses {
        ratio: args.miss_ratio,
        pool: Arc::new(Mutex::new(pool)),
        served: Arc::default(),
        reads: Arc::default(),
    })
}

/// Every scenario at every concurrency (and the open loop), once per round,
/// the scenarios in an order rotated by the round.
async fn scenarios(
    args: &BenchArgs,
    setup: &Setup,
    timing: Timing,
) -> anyhow::Result<Vec<Measured>> {
    let mut names = vec![READ];
    if setup.misses.is_some() {
        names.push(MISS);
    }
    names.push(REGENERATE);
    let top = args.concurrency.iter().copied().max().unwrap_or(1);
    let mut slices: Vec<(String, &str, usize, Option<f64>)> = Vec::new();
    for c in &args.concurrency {
        for n in &names {
            slices.push((format!("{n} (closed)"), *n, *c, None));
        }
    }
    if let Some(rate) = args.rate {
        for n in &names {
            slices.push((format!("{n} @ {rate:.0}/s"), *n, top, Some(rate)));
        }
    }
    let mut rows: Vec<Measured> = slices
        .iter()
        .map(|(l, _, c, _)| Measured::new(l, *c))
        .collect();
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..slices.len()).collect();
        order.rotate_left(round % slices.len().max(1));
        for i in order {
            let (label, scenario, c, rate) = &slices[i];
            let ops = setup.ops(scenario, *c).await?;
            let progress = progress_line(
                format!("round {}/{} {label} c={c}", round + 1, args.rounds),
                timing,
            );
            let sample: Sample = match rate {
                None => drive(ops, timing.warmup, timing.per_round).await,
                Some(rate) => drive_open(ops, *rate, timing.warmup, timing.per_round).await,
            };
            progress.abort();
            eprintln!();
            println!(
                "round {}/{} {label:<28} c={c:<3} {:>9.0} ops/s  p50 {:>8.1} µs  p99 {:>8.1} µs  errors {}",
                round + 1,
                args.rounds,
                sample.rate(),
                sample.micros(0.5),
                sample.micros(0.99),
                sample.errors
            );
            rows[i].add(&sample);
        }
    }
    Ok(rows)
}

/// A line on stderr, rewritten every second while a slice runs: its name,
/// seconds so far, operations completed.
fn progress_line(label: String, timing: Timing) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let base = PROGRESS.load(Ordering::Relaxed);
        let total = (timing.warmup + timing.per_round).as_secs_f64();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            eprint!(
                "\r{label}: {:.0}/{total:.0} s, {} ops   ",
                start.elapsed().as_secs_f64(),
                PROGRESS.load(Ordering::Relaxed) - base
            );
        }
    })
}
