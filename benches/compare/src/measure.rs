//! The measuring part of a run: `GET /whoami` on every target, login
//! (`regenerate` beside the raw transaction, its parts, the node's whole
//! `POST /login`).
//!
//! Contract: every scenario runs once per round; within a round the targets
//! run one after the other in an order rotated by the round (login: the two
//! sides alternate), so each round holds all of them side by side. Every
//! slice is printed as it ends; the result holds one [`Measured`] per
//! scenario, rounds merged.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use edge_session_test_support::child::Node;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};

use crate::args::BenchArgs;
use crate::load::{drive, Connection, Http, Op, RequestTemplate, Sample};
use crate::login::LoginBench;
use crate::names::{ACTION_LOGIN, RAW, REGENERATE};
use crate::results::{Logins, Measured, Timing};
use crate::targets::{sign_in, Target};

/// `GET path` on every target at every concurrency, once per round.
pub async fn whoami(
    args: &BenchArgs,
    load: &tokio::runtime::Handle,
    targets: &[Target],
    timing: Timing,
) -> anyhow::Result<Vec<Measured>> {
    let mut whoami: Vec<Measured> = Vec::new();
    for c in &args.concurrency {
        for t in targets {
            whoami.push(Measured::new(t.name, *c));
        }
    }
    for round in 0..args.rounds {
        for c in &args.concurrency {
            let mut order: Vec<&Target> = targets.iter().collect();
            if !order.is_empty() {
                let n = order.len();
                order.rotate_left(round % n);
            }
            for t in order {
                let sample = slice(load, t, *c, timing.warmup, timing.per_round).await?;
                println!(
                    "round {}/{} GET {} {:<22} c={:<3} {:>9.0} req/s  p50 {:>8.1} µs  p99 {:>8.1} µs  errors {}",
                    round + 1,
                    args.rounds,
                    t.path,
                    t.name,
                    c,
                    sample.rate(),
                    sample.micros(0.5),
                    sample.micros(0.99),
                    sample.errors
                );
                if let Some(m) = whoami
                    .iter_mut()
                    .find(|m| m.target == t.name && m.concurrency == *c)
                {
                    m.add(&sample);
                }
            }
        }
    }
    Ok(whoami)
}

/// Measure one slice of `GET path` at `concurrency` on the load runtime.
async fn slice(
    load: &tokio::runtime::Handle,
    target: &Target,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Sample> {
    let (addr, path, cookie) = (target.addr, target.path, target.cookie.clone());
    load.spawn(async move {
        let req =
            RequestTemplate::new(addr, Method::GET, path, &[("cookie", cookie)], Bytes::new())?;
        let mut ops = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            ops.push(Http {
                conn: Connection::open(addr).await?,
                req: req.clone(),
                expect: StatusCode::OK,
            });
        }
        Ok(drive(ops, warmup, measure).await)
    })
    .await?
}

/// Login: the store's regenerate beside the raw transaction (a store of its
/// own under `dir`), its other parts, and the `node`'s whole `POST /login`
/// (argon2 included) with `form`.
pub async fn login(
    args: &BenchArgs,
    load: &tokio::runtime::Handle,
    dir: &Path,
    node: Option<&Node>,
    form: Bytes,
    timing: Timing,
    action: Option<SocketAddr>,
) -> anyhow::Result<Logins> {
    std::fs::create_dir_all(dir)?;
    let bench = {
        let dir = dir.to_owned();
        load.spawn(async move { LoginBench::start(&dir).await })
            .await??
    };
    let bench = Arc::new(bench);
    let rows = login_rounds(args, load, &bench, action).await?;
    let b = Arc::clone(&bench);
    let (epoch, tomb) = load
        .spawn(async move { (b.epoch_read(300).await, b.durable_tombstone(300).await) })
        .await?;
    let mut parts = vec![
        ("consistent GetItem of the user's epoch", epoch),
        ("sled tombstone + outbox, flushed", tomb),
    ];
    if let Ok(bench) = Arc::try_unwrap(bench) {
        load.spawn(bench.stop()).await??;
    }
    if let Some(node) = node {
        let duration = timing.per_round * args.rounds as u32;
        let sample = node_login(load, node, form, timing.warmup, duration).await?;
        let mut m = Measured::new("POST /login (node, argon2id)", 1);
        m.add(&sample);
        parts.push((
            "POST /login on the node (argon2id + regenerate), c=1",
            m.sample,
        ));
    }
    Ok(Logins { rows, parts })
}

/// `RAW` and `REGENERATE` (and `ACTION_LOGIN` through the proxy at
/// `action`) at every login concurrency, in an order rotated by the round,
/// once per login round.
async fn login_rounds(
    args: &BenchArgs,
    load: &tokio::runtime::Handle,
    bench: &Arc<LoginBench>,
    action: Option<SocketAddr>,
) -> anyhow::Result<Vec<Measured>> {
    let mut kinds = vec![RAW, REGENERATE];
    if action.is_some() {
        kinds.push(ACTION_LOGIN);
    }
    let mut logins: Vec<Measured> = Vec::new();
    for c in &args.login_concurrency {
        for kind in &kinds {
            logins.push(Measured::new(kind, *c));
        }
    }
    let per_login_round = Duration::from_secs_f64(args.duration / args.login_rounds as f64);
    for round in 0..args.login_rounds {
        for c in args.login_concurrency.clone() {
            let mut order = kinds.clone();
            order.rotate_left(round % kinds.len());
            for which in order {
                let b = Arc::clone(bench);
                let sample = load
                    .spawn(async move {
                        match (which, action) {
                            (RAW, _) => b.raw_transaction(c, per_login_round).await,
                            (ACTION_LOGIN, Some(proxy)) => {
                                action_logins(proxy, c, per_login_round).await
                            }
                            _ => b.regenerate(c, per_login_round).await,
                        }
                    })
                    .await??;
                println!(
                    "round {}/{} login {:<24} c={:<3} {:>7.0} ops/s  p50 {:>8.1} µs  p99 {:>8.1} µs  errors {}",
                    round + 1,
                    args.login_rounds,
                    which,
                    c,
                    sample.rate(),
                    sample.micros(0.5),
                    sample.micros(0.99),
                    sample.errors
                );
                if let Some(m) = logins
                    .iter_mut()
                    .find(|m| m.target == which && m.concurrency == c)
                {
                    m.add(&sample);
                }
            }
        }
    }
    Ok(logins)
}

/// A login request (answered 303) carrying the previous login's cookie:
/// every call regenerates.
struct Relogin {
    conn: Connection,
    req: RequestTemplate,
}

impl Op for Relogin {
    async fn once(&mut self) -> anyhow::Result<bool> {
        let res = self.conn.send(&self.req).await?;
        match res.cookie("__Host-sid") {
            Some(cookie) if res.status == StatusCode::SEE_OTHER => {
                self.req
                    .set_header("cookie", HeaderValue::from_str(&cookie)?);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Logins the proxy at `proxy` carries out on the app's signed action, on
/// `c` connections each carrying its previous login's cookie (each first
/// signed in untimed on its own connection), for `duration`.
async fn action_logins(proxy: SocketAddr, c: usize, duration: Duration) -> anyhow::Result<Sample> {
    let mut ops = Vec::with_capacity(c);
    for _ in 0..c {
        let mut conn = Connection::open(proxy).await?;
        let mut req =
            RequestTemplate::new(proxy, Method::POST, "/login-action", &[], Bytes::new())?;
        let res = conn.send(&req).await?;
        let first = res
            .cookie("__Host-sid")
            .filter(|_| res.status == StatusCode::SEE_OTHER)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "POST /login-action through the proxy answered {}",
                    res.status
                )
            })?;
        req.set_header("cookie", HeaderValue::from_str(&first)?);
        ops.push(Relogin { conn, req });
    }
    Ok(drive(ops, Duration::ZERO, duration).await)
}

/// The node's whole `POST /login` (argon2id + load + regenerate) at c=1,
/// each login carrying the previous one's cookie.
async fn node_login(
    load: &tokio::runtime::Handle,
    node: &Node,
    form: Bytes,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let addr = node.addr;
    let first = sign_in(
        load,
        addr,
        form.clone(),
        "__Host-sid",
        StatusCode::SEE_OTHER,
        "/whoami",
    )
    .await?;
    load.spawn(async move {
        let mut req = RequestTemplate::new(
            addr,
            Method::POST,
            "/login",
            &[(
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            )],
            form,
        )?;
        req.set_header("cookie", HeaderValue::from_str(&first)?);
        let op = Relogin {
            conn: Connection::open(addr).await?,
            req,
        };
        anyhow::Ok(drive(vec![op], warmup, duration).await)
    })
    .await?
}
