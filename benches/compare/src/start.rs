//! The start of a run: every target of `GET /whoami` started and, where it
//! has a login, signed in once; and the one-shot requests that do it.
//!
//! Contract: [`start`] returns only with every wanted target answering
//! `GET /whoami` (or `/`) with the cookie it will be measured with, or an
//! error naming the target (with the node's output when a node failed).
//! [`Started::shutdown`] stops everything it started; dropping it does too
//! (the child processes stop on drop).

use std::path::Path;

use actix_web::web::Bytes;
use anyhow::Context as _;
use edge_session_test_support::child::Node;
use hyper::StatusCode;

use crate::args::BenchArgs;
use crate::express::{self, Express};
use crate::gateway::{self, Gateway};
use crate::names::{CANDIDATE, EDGE, HELLO, HELLO_IN_PROCESS, REDIS};
use crate::peers::{self, InProcess};
use crate::servers::{self, Redis};
use crate::targets::{sign_in, Target};

/// Everything a run started.
pub struct Started {
    /// The targets of `GET /whoami`, in start order.
    pub targets: Vec<Target>,
    /// The node under test (for `edge` or `login`).
    pub node: Option<Node>,
    /// The login form of the bench user on the node.
    pub form: Bytes,
    /// Why the actix-session + Redis peer was skipped, if it was.
    pub redis_note: Option<String>,
    /// The gateway targets' servers (`gateway`).
    pub gateway: Option<Gateway>,
    /// The Express peers and their stores (`express`).
    pub express: Option<Express>,
    candidate: Option<Node>,
    hello: Option<Node>,
    hello_in_process: Option<InProcess>,
    redis: Option<(Redis, InProcess)>,
}

impl Started {
    /// Stop the servers in the harness and the children (the node and
    /// redis-server stop on drop).
    pub async fn shutdown(self) {
        if let Some(gateway) = self.gateway {
            gateway.stop();
        }
        if let Some(express) = self.express {
            express.stop();
        }
        drop(self.hello);
        if let Some(server) = self.hello_in_process {
            server.stop().await;
        }
        if let Some((redis, server)) = self.redis {
            server.stop().await;
            drop(redis);
        }
        drop(self.candidate);
        drop(self.node);
    }
}

/// A random password for the bench user.
fn password() -> anyhow::Result<String> {
    let mut raw = [0u8; 18];
    getrandom::fill(&mut raw).context("OS random")?;
    Ok(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        raw,
    ))
}

/// Start the targets `args` asks for, under `dir`, the peers with `workers`
/// actix workers; one-shot requests run on `load`.
pub async fn start(
    args: &BenchArgs,
    load: &tokio::runtime::Handle,
    dir: &Path,
    workers: usize,
) -> anyhow::Result<Started> {
    let wants = |what: &str| args.only.iter().any(|o| o == what);
    let password = password()?;
    let form = Bytes::from(format!("username={}&password={password}", peers::USER_ID));
    let mut started = Started {
        targets: Vec::new(),
        node: None,
        form: form.clone(),
        redis_note: None,
        gateway: None,
        express: None,
        candidate: None,
        hello: None,
        hello_in_process: None,
        redis: None,
    };

    // The node under test, signed in once.
    if wants("edge") || wants("login") {
        let bin = match &args.server_bin {
            Some(bin) => bin.clone(),
            None => servers::default_server_bin()?,
        };
        let wrapper: Vec<String> = args
            .server_wrapper
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let node = start_edge(&bin, &wrapper, &dir.join("node"), &password)?;
        println!(
            "edge-session node: {} (binary {})",
            node.addr,
            bin.display()
        );
        if wants("edge") {
            let target = edge_target(load, &node, form.clone(), EDGE).await?;
            started.targets.push(target);
        }
        started.node = Some(node);
    }
    if let (Some(bin), true) = (&args.candidate_bin, wants("edge")) {
        let node = start_edge(bin, &[], &dir.join("candidate"), &password)?;
        let target = edge_target(load, &node, form.clone(), CANDIDATE).await?;
        started.targets.push(target);
        println!("candidate node: {} (binary {})", node.addr, bin.display());
        started.candidate = Some(node);
    }

    // The ceiling runs in a child process, as the node does: a server in
    // the load generator's own process is woken more cheaply (measured as
    // `hello-inprocess`, not in the default set).
    // `gateway` puts its targets beside the ceiling, which is also the app
    // behind them (and signs the login action).
    if wants("hello") || wants("gateway") {
        let secret = wants("gateway").then_some(gateway::ACTION_SECRET);
        let node = servers::start_hello(workers, secret)?;
        let cookie = same_cookie(&started.targets);
        started.targets.push(Target {
            name: HELLO,
            addr: node.addr,
            path: "/",
            cookie,
        });
        started.hello = Some(node);
    }
    if wants("hello-inprocess") {
        let server = peers::hello(workers, None)?;
        let cookie = same_cookie(&started.targets);
        started.targets.push(Target {
            name: HELLO_IN_PROCESS,
            addr: server.addr,
            path: "/",
            cookie,
        });
        started.hello_in_process = Some(server);
    }
    if wants("redis") {
        start_redis(args, load, workers, &mut started).await?;
    }
    if wants("express") {
        let mut targets = Vec::new();
        let express = express::start(load, dir, workers, &args.redis_server, &mut targets).await?;
        for note in &express.notes {
            println!("{note}");
        }
        started.targets.extend(targets);
        started.express = Some(express);
    }
    if wants("gateway") {
        start_gateway(args, load, dir, &password, &mut started).await?;
    }
    Ok(started)
}

/// An edge-session node from `bin` (prefixed by `wrapper`) in `dir`, whose
/// bench user signs in with `password`.
fn start_edge(bin: &Path, wrapper: &[String], dir: &Path, password: &str) -> anyhow::Result<Node> {
    start_edge_with(bin, wrapper, dir, password, "")
}

/// [`start_edge`] with `extra` appended to the node's config.
fn start_edge_with(
    bin: &Path,
    wrapper: &[String],
    dir: &Path,
    password: &str,
    extra: &str,
) -> anyhow::Result<Node> {
    let hash = edge_session::hash_password(password)
        .map_err(|e| anyhow::anyhow!("hashing the bench user's password: {e}"))?;
    std::fs::create_dir_all(dir)?;
    servers::start_node(bin, wrapper, dir, (peers::USER_ID, &hash), extra)
}

/// The gateway targets, beside the node under test (which must be signed
/// in: `edge`) and the ceiling.
async fn start_gateway(
    args: &BenchArgs,
    load: &tokio::runtime::Handle,
    dir: &Path,
    password: &str,
    started: &mut Started,
) -> anyhow::Result<()> {
    let edge = started.targets.iter().find(|t| t.name == EDGE);
    let (Some(node), Some(edge), Some(hello)) = (&started.node, edge, &started.hello) else {
        anyhow::bail!("`gateway` needs `edge` in --only (the node it checks against)");
    };
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => servers::default_server_bin()?,
    };
    let proxy_dir = dir.join("proxy");
    let proxy_node = |extra: &str| start_edge_with(&bin, &[], &proxy_dir, password, extra);
    let cookie = edge.cookie.clone();
    let mut targets = Vec::new();
    let g = gateway::start(
        load,
        dir,
        (node, &cookie),
        hello.addr,
        proxy_node,
        &mut targets,
    )
    .await?;
    started.targets.extend(targets);
    started.gateway = Some(g);
    Ok(())
}

/// actix-session over a fresh `redis-server`, signed in, as a target; or a
/// note saying why it is skipped.
async fn start_redis(
    args: &BenchArgs,
    load: &tokio::runtime::Handle,
    workers: usize,
    started: &mut Started,
) -> anyhow::Result<()> {
    let Some(program) = servers::which(&args.redis_server) else {
        let note = format!(
            "actix-session+redis: skipped: `{}` is not installed (Debian/Ubuntu: `sudo apt-get install redis-server`, or pass --redis-server PATH)",
            args.redis_server
        );
        println!("{note}");
        started.redis_note = Some(note);
        return Ok(());
    };
    let redis = Redis::start(&program)?;
    let server = peers::actix_session_redis(&redis.url(), workers).await?;
    let cookie = sign_in(
        load,
        server.addr,
        Bytes::new(),
        "id",
        StatusCode::OK,
        "/whoami",
    )
    .await?;
    started.targets.push(Target {
        name: REDIS,
        addr: server.addr,
        path: "/whoami",
        cookie,
    });
    println!(
        "actix-session+redis: {} over redis-server {}",
        server.addr, redis.addr
    );
    started.redis = Some((redis, server));
    Ok(())
}

/// An edge-session node as a `GET /whoami` target named `name`: signed in
/// through its login form.
async fn edge_target(
    load: &tokio::runtime::Handle,
    node: &Node,
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
