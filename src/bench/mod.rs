//! `edge-session bench`: edge-session against its peers, side by side, in one
//! run and one process tree.
//!
//! # Layout
//!
//! - [`load`]: the load generator (keep-alive HTTP/1.1, closed loop, HDR
//!   histograms) and the batch driver for store operations.
//! - [`process`]: child processes: the `edge-session` node under test
//!   (release binary, embedded DynamoDB, temporary `data_dir`, port 0) and
//!   `redis-server`.
//! - [`peers`]: servers the harness runs itself: the actix-web hello world
//!   (the HTTP ceiling) and actix-session 0.11 over Redis.
//! - [`login`]: `regenerate` beside the raw `TransactWriteItems` it wraps.
//! - [`report`]: tables, CSV, the SVG latency plot.
//!
//! Every scenario runs once per round, the targets in a rotated order, so
//! each round holds all of them side by side; throughput ratios are the
//! median of the per-round ratios. The machine is shared and noisy: read the
//! ratios, not the absolute numbers.

mod load;
mod login;
mod peers;
mod process;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::web::Bytes;
use anyhow::Context as _;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};

use self::load::{drive, Connection, Http, Op, RequestTemplate, Response};
use self::report::{p50_ratio, rate_ratio, Measured};

/// Flags of `edge-session bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Seconds measured per scenario, split evenly over the rounds.
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// Seconds of unrecorded warm-up before each measured slice.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Rounds: each scenario runs once per round, beside all the others.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Connections for `GET /whoami` (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// Rounds of the login comparison (short, alternating: the disk is
    /// shared and noisy, the median of many round ratios is not).
    #[arg(long, default_value_t = 10)]
    login_rounds: usize,
    /// Concurrency levels of the login comparison (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    login_concurrency: Vec<usize>,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// The edge-session binary to measure (default: this executable).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// A second edge-session binary (e.g. a patched build) measured beside
    /// the first, as target `edge-session (candidate)`.
    #[arg(long)]
    candidate_bin: Option<PathBuf>,
    /// Prefix for the node's command line, e.g. `valgrind --tool=callgrind`
    /// (split on whitespace).
    #[arg(long)]
    server_wrapper: Option<String>,
    /// The `redis-server` program for the actix-session peer.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// What to run (comma-separated): edge, hello, redis, login; also
    /// hello-inprocess (the ceiling served inside the harness process).
    #[arg(long, value_delimiter = ',', default_value = "edge,hello,redis,login")]
    only: Vec<String>,
    /// Directory for whoami.csv, login.csv and whoami-latency.svg (created).
    #[arg(long, default_value = "docs/perf")]
    out: PathBuf,
    /// Internal: serve only the hello-world ceiling (the harness runs itself
    /// with this as a child process).
    #[arg(long, hide = true)]
    serve_hello: bool,
    /// Internal: actix workers of `--serve-hello`.
    #[arg(long, hide = true, default_value_t = 0)]
    hello_workers: usize,
}

const EDGE: &str = "edge-session";
const CANDIDATE: &str = "edge-session (candidate)";
const HELLO: &str = "hello (ceiling)";
const HELLO_IN_PROCESS: &str = "hello (in-process)";
const REDIS: &str = "actix-session+redis";
const RAW: &str = "raw TransactWriteItems";
const REGENERATE: &str = "TieredStore::regenerate";

/// One HTTP target of the `GET /whoami` comparison.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    path: &'static str,
    cookie: String,
}

/// An edge-session node as a `GET /whoami` target named `name`: signed in
/// through its login form.
async fn edge_target(
    load: &tokio::runtime::Handle,
    node: &process::Node,
    form: Bytes,
    name: &'static str,
) -> anyhow::Result<Target> {
    let cookie = sign_in(
        load,
        node.addr,
        form,
        "__Host-sid",
        StatusCode::SEE_OTHER,
        "/whoami",
    )
    .await
    .with_context(|| format!("signing in on {name}; its output:\n{}", node.output()))?;
    Ok(Target {
        name,
        addr: node.addr,
        path: "/whoami",
        cookie,
    })
}

/// The cookie header of the first target, so every target reads the same
/// request bytes (the ceilings ignore it).
fn same_cookie(targets: &[Target]) -> String {
    targets.first().map_or_else(
        || format!("__Host-sid={}", "A".repeat(43)),
        |t| t.cookie.clone(),
    )
}

/// Run the whole comparison. Blocks until it is done.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.serve_hello {
        return serve_hello(args.hello_workers);
    }
    anyhow::ensure!(
        args.rounds > 0 && args.login_rounds > 0,
        "--rounds and --login-rounds must be at least 1"
    );
    anyhow::ensure!(
        args.duration > 0.0 && args.warmup >= 0.0,
        "--duration must be positive and --warmup not negative"
    );
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("bench-load")
        .enable_all()
        .build()
        .context("load generator runtime")?;
    let handle = load.handle().clone();
    let result = actix_web::rt::System::new().block_on(compare(args, handle));
    load.shutdown_timeout(Duration::from_secs(2));
    result
}

/// `--serve-hello`: the ceiling alone, until SIGTERM.
fn serve_hello(workers: usize) -> anyhow::Result<()> {
    let workers = if workers == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        workers
    };
    actix_web::rt::System::new().block_on(async {
        let server = peers::hello(workers)?;
        println!("edge-session listening on http://{}", server.addr);
        std::io::Write::flush(&mut std::io::stdout())?;
        server.stopped().await;
        Ok(())
    })
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores ({cpu})")
}

/// Send one request on a fresh connection, on the load runtime.
async fn once(
    load: &tokio::runtime::Handle,
    addr: SocketAddr,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
) -> anyhow::Result<Response> {
    load.spawn(async move {
        let req = RequestTemplate::new(addr, method, path, &headers, body)?;
        Connection::open(addr).await?.send(&req).await
    })
    .await?
}

/// Sign in on `target` and check that `GET path` then answers 200.
async fn sign_in(
    load: &tokio::runtime::Handle,
    addr: SocketAddr,
    form: Bytes,
    cookie_name: &str,
    expect: StatusCode,
    whoami: &'static str,
) -> anyhow::Result<String> {
    let res = once(
        load,
        addr,
        Method::POST,
        "/login",
        vec![(
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        )],
        form,
    )
    .await?;
    anyhow::ensure!(
        res.status == expect,
        "POST /login on {addr} answered {} (expected {expect})",
        res.status
    );
    let cookie = res
        .cookie(cookie_name)
        .with_context(|| format!("POST /login on {addr} set no `{cookie_name}` cookie"))?;
    let check = once(
        load,
        addr,
        Method::GET,
        whoami,
        vec![("cookie", cookie.clone())],
        Bytes::new(),
    )
    .await?;
    anyhow::ensure!(
        check.status == StatusCode::OK
            && String::from_utf8_lossy(&check.body).contains(peers::USER_ID),
        "GET {whoami} on {addr} with the login cookie answered {} {:?}",
        check.status,
        check.body
    );
    Ok(cookie)
}

/// `POST /login` with the previous login's cookie: every call regenerates.
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

/// Measure one slice of `GET path` at `concurrency` on the load runtime.
async fn slice(
    load: &tokio::runtime::Handle,
    target: &Target,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<load::Sample> {
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

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

async fn compare(args: BenchArgs, load: tokio::runtime::Handle) -> anyhow::Result<()> {
    let wants = |what: &str| args.only.iter().any(|o| o == what);
    if cfg!(debug_assertions) {
        eprintln!("warning: this harness is a debug build; run `cargo build --release` and target/release/edge-session bench");
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let warmup = Duration::from_secs_f64(args.warmup);
    let per_round = Duration::from_secs_f64(args.duration / args.rounds as f64);
    let dir = tempfile::Builder::new()
        .prefix("edge-session-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let command: Vec<String> = std::env::args().collect();
    println!(
        "edge-session bench: {} on {}, {} rounds × {:.1} s per scenario (+{:.1} s warm-up each), load generator: {} threads, peers: {workers} workers",
        today(),
        machine(),
        args.rounds,
        per_round.as_secs_f64(),
        args.warmup,
        args.client_threads
    );
    println!("command: {}", command.join(" "));

    // The node under test, signed in once.
    let mut targets = Vec::new();
    let password = {
        let mut raw = [0u8; 18];
        getrandom::fill(&mut raw).context("OS random")?;
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw)
    };
    let node = if wants("edge") || wants("login") {
        let bin = match &args.server_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe().context("locating this executable")?,
        };
        let hash = edge_session::hash_password(&password)
            .map_err(|e| anyhow::anyhow!("hashing the bench user's password: {e}"))?;
        let wrapper: Vec<String> = args
            .server_wrapper
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let node_dir = dir.path().join("node");
        std::fs::create_dir_all(&node_dir)?;
        let node = process::Node::start(&bin, &wrapper, &node_dir, peers::USER_ID, &hash)?;
        println!(
            "edge-session node: {} (binary {})",
            node.addr,
            bin.display()
        );
        Some(node)
    } else {
        None
    };
    let form = Bytes::from(format!("username={}&password={password}", peers::USER_ID));
    if let (Some(node), true) = (&node, wants("edge")) {
        targets.push(edge_target(&load, node, form.clone(), EDGE).await?);
    }

    let candidate = match (&args.candidate_bin, wants("edge")) {
        (Some(bin), true) => {
            let hash = edge_session::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("hashing the bench user's password: {e}"))?;
            let node_dir = dir.path().join("candidate");
            std::fs::create_dir_all(&node_dir)?;
            let node = process::Node::start(bin, &[], &node_dir, peers::USER_ID, &hash)?;
            targets.push(edge_target(&load, &node, form.clone(), CANDIDATE).await?);
            println!("candidate node: {} (binary {})", node.addr, bin.display());
            Some(node)
        }
        _ => None,
    };

    // The ceiling runs in a child process, as the node does: a server in
    // the load generator's own process is woken more cheaply (measured as
    // `hello-inprocess`, not in the default set).
    let hello = if wants("hello") {
        let harness = std::env::current_exe().context("locating this executable")?;
        let node = process::Node::hello(&harness, workers)?;
        targets.push(Target {
            name: HELLO,
            addr: node.addr,
            path: "/",
            cookie: same_cookie(&targets),
        });
        Some(node)
    } else {
        None
    };
    let hello_in_process = if wants("hello-inprocess") {
        let server = peers::hello(workers)?;
        targets.push(Target {
            name: HELLO_IN_PROCESS,
            addr: server.addr,
            path: "/",
            cookie: same_cookie(&targets),
        });
        Some(server)
    } else {
        None
    };

    let mut redis_note = None;
    let redis = if wants("redis") {
        match process::which(&args.redis_server) {
            None => {
                let note = format!(
                    "actix-session+redis: skipped: `{}` is not installed (Debian/Ubuntu: `sudo apt-get install redis-server`, or pass --redis-server PATH)",
                    args.redis_server
                );
                println!("{note}");
                redis_note = Some(note);
                None
            }
            Some(program) => {
                let redis = process::Redis::start(&program)?;
                let server = peers::actix_session_redis(&redis.url(), workers).await?;
                let cookie = sign_in(
                    &load,
                    server.addr,
                    Bytes::new(),
                    "id",
                    StatusCode::OK,
                    "/whoami",
                )
                .await?;
                targets.push(Target {
                    name: REDIS,
                    addr: server.addr,
                    path: "/whoami",
                    cookie,
                });
                println!(
                    "actix-session+redis: {} over redis-server {}",
                    server.addr, redis.addr
                );
                Some((redis, server))
            }
        }
    } else {
        None
    };

    // GET /whoami: every target at every concurrency, once per round.
    let mut whoami: Vec<Measured> = Vec::new();
    for c in &args.concurrency {
        for t in &targets {
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
                let sample = slice(&load, t, *c, warmup, per_round).await?;
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

    // Login: the store's regenerate beside the raw transaction, and the
    // node's whole POST /login (argon2 included).
    let mut logins: Vec<Measured> = Vec::new();
    let mut parts = Vec::new();
    if wants("login") {
        let login_dir = dir.path().join("login");
        std::fs::create_dir_all(&login_dir)?;
        let bench = {
            let login_dir = login_dir.clone();
            load.spawn(async move { login::LoginBench::start(&login_dir).await })
                .await??
        };
        let bench = std::sync::Arc::new(bench);
        for c in &args.login_concurrency {
            logins.push(Measured::new(RAW, *c));
            logins.push(Measured::new(REGENERATE, *c));
        }
        let per_login_round = Duration::from_secs_f64(args.duration / args.login_rounds as f64);
        for round in 0..args.login_rounds {
            for c in args.login_concurrency.clone() {
                let mut order = [RAW, REGENERATE];
                if round % 2 == 1 {
                    order.reverse();
                }
                for which in order {
                    let b = std::sync::Arc::clone(&bench);
                    let sample = load
                        .spawn(async move {
                            if which == RAW {
                                b.raw_transaction(c, per_login_round).await
                            } else {
                                b.regenerate(c, per_login_round).await
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
        let b = std::sync::Arc::clone(&bench);
        let (epoch, tomb) = load
            .spawn(async move { (b.epoch_read(300).await, b.durable_tombstone(300).await) })
            .await?;
        parts.push(("consistent GetItem of the user's epoch", epoch));
        parts.push(("sled tombstone + outbox, flushed", tomb));
        if let Ok(bench) = std::sync::Arc::try_unwrap(bench) {
            load.spawn(bench.stop()).await??;
        }
        if let Some(node) = &node {
            // The whole POST /login on the node: argon2id + load + regenerate.
            let addr = node.addr;
            let mut m = Measured::new("POST /login (node, argon2id)", 1);
            let first = sign_in(
                &load,
                addr,
                form.clone(),
                "__Host-sid",
                StatusCode::SEE_OTHER,
                "/whoami",
            )
            .await?;
            let sample = load
                .spawn(async move {
                    let mut req = RequestTemplate::new(
                        addr,
                        Method::POST,
                        "/login",
                        &[(
                            "content-type",
                            "application/x-www-form-urlencoded".to_owned(),
                        )],
                        form.clone(),
                    )?;
                    req.set_header("cookie", HeaderValue::from_str(&first)?);
                    let op = Relogin {
                        conn: Connection::open(addr).await?,
                        req,
                    };
                    anyhow::Ok(drive(vec![op], warmup, per_round * args.rounds as u32).await)
                })
                .await??;
            m.add(&sample);
            parts.push((
                "POST /login on the node (argon2id + regenerate), c=1",
                m.sample,
            ));
        }
    }

    // Report.
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    println!();
    println!("## GET /whoami (hot cache), {} , {}", today(), machine());
    println!();
    print!("{}", report::table("req", &whoami, HELLO));
    if let Some(note) = &redis_note {
        println!("\n{note}");
    }
    if !whoami.is_empty() {
        let csv = args.out.join("whoami.csv");
        report::write_csv(&csv, "GET /whoami", &whoami, HELLO)?;
        let svg = args.out.join("whoami-latency.svg");
        report::plot(
            &svg,
            &format!(
                "GET /whoami latency by percentile ({}, {} cores, one run)",
                today(),
                workers
            ),
            &whoami,
        )?;
        println!("\nwrote {} and {}", csv.display(), svg.display());
    }
    if !logins.is_empty() {
        println!();
        println!("## Login: regenerate vs the raw TransactWriteItems");
        println!();
        print!("{}", report::table("ops", &logins, RAW));
        println!();
        println!("| part of a login, c=1 | ops | p50 µs | p99 µs | mean µs |");
        println!("|---|---:|---:|---:|---:|");
        for (name, s) in &parts {
            println!(
                "| {name} | {} | {:.1} | {:.1} | {:.1} |",
                s.ok(),
                s.micros(0.5),
                s.micros(0.99),
                s.mean_micros()
            );
        }
        let csv = args.out.join("login.csv");
        report::write_csv(&csv, "login", &logins, RAW)?;
        println!("\nwrote {}", csv.display());
    }

    // The targets of issue 6.
    println!();
    println!("## Targets");
    let find = |rows: &[Measured], t: &str, c: usize| {
        rows.iter()
            .find(|m| m.target == t && m.concurrency == c)
            .cloned()
    };
    let top = args.concurrency.iter().copied().max().unwrap_or(64);
    if let (Some(e), Some(h)) = (find(&whoami, EDGE, top), find(&whoami, HELLO, top)) {
        let r = rate_ratio(&e, &h);
        println!(
            "- GET /whoami c={top}: edge-session {r:.2}× the hello-world ceiling's req/s (target ≥ 0.85): {}",
            verdict(r >= 0.85)
        );
        if let Some(p) = find(&whoami, REDIS, top) {
            println!(
                "- GET /whoami c={top}: edge-session {:.2}× actix-session+redis's req/s; actix-session+redis {:.2}× the ceiling",
                rate_ratio(&e, &p),
                rate_ratio(&p, &h)
            );
        }
    }
    for c in &args.concurrency {
        if let (Some(e), Some(k), Some(h)) = (
            find(&whoami, EDGE, *c),
            find(&whoami, CANDIDATE, *c),
            find(&whoami, HELLO, *c),
        ) {
            println!(
                "- GET /whoami c={c}: candidate {:.2}× edge-session's req/s, p50 {:.2}×; candidate {:.2}× the ceiling's req/s, p50 {:.2}× the ceiling's",
                rate_ratio(&k, &e),
                p50_ratio(&k, &e),
                rate_ratio(&k, &h),
                p50_ratio(&k, &h)
            );
        }
    }
    let low = args.concurrency.iter().copied().min().unwrap_or(1);
    if let (Some(e), Some(h)) = (find(&whoami, EDGE, low), find(&whoami, HELLO, low)) {
        let r = p50_ratio(&e, &h);
        println!(
            "- GET /whoami c={low}: edge-session p50 {r:.2}× the ceiling's p50 (target ≤ 1.15): {}",
            verdict(r <= 1.15)
        );
        if let Some(p) = find(&whoami, REDIS, low) {
            println!(
                "- GET /whoami c={low}: edge-session p50 {:.2}× actix-session+redis's p50",
                p50_ratio(&e, &p)
            );
        }
    }
    for c in &args.login_concurrency {
        if let (Some(g), Some(r)) = (find(&logins, REGENERATE, *c), find(&logins, RAW, *c)) {
            // Time per login over time per raw transaction: the inverse of
            // the throughput ratio, median over rounds.
            let per_op = 1.0 / rate_ratio(&g, &r);
            println!(
                "- login c={c}: regenerate takes {per_op:.2}× the raw transaction's time per op (median of {} round ratios; p50 {:.2}×) (target ≤ 1.10): {}",
                g.round_rates.len(),
                p50_ratio(&g, &r),
                verdict(per_op <= 1.10)
            );
        }
    }

    // Shut everything down (the node and redis-server stop on drop).
    drop(hello);
    if let Some(server) = hello_in_process {
        server.stop().await;
    }
    if let Some((redis, server)) = redis {
        server.stop().await;
        drop(redis);
    }
    drop(candidate);
    drop(node);
    Ok(())
}
