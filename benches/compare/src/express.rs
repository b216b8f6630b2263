//! The Express stacks people run today, as peers in the same run: Express
//! with express-session over Redis (connect-redis) and over DynamoDB
//! (connect-dynamodb, against the embedded DynamoDB-compatible server this
//! harness starts, the server edge-session's own embedded mode uses). The
//! app is `benches/peers/express-session/server.js` (its README says what
//! each request costs the store), run with Node's cluster module on as many
//! workers as the Rust servers use. Skipped, with the reason, when node or
//! the app's packages (`scripts/install-test-deps.sh`) are missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use actix_web::web::Bytes;
use anyhow::Context as _;
use edge_session::EmbeddedDynamo;
use edge_session_test_support::child::{Node, OnDrop, Options};
use hyper::StatusCode;

use crate::names::{EXPRESS_DYNAMODB, EXPRESS_REDIS};
use crate::servers::{self, Redis};
use crate::targets::{sign_in, Target};

/// The app's directory.
fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers/express-session")
}

/// What the Express peers started: each app, and the store behind it.
#[derive(Default)]
pub struct Express {
    /// Why a peer was skipped.
    pub notes: Vec<String>,
    apps: Vec<Node>,
    redis: Option<Redis>,
    dynamo: Option<EmbeddedDynamo>,
}

impl Express {
    /// Stop the apps, then their stores.
    pub fn stop(self) {
        drop(self.apps);
        drop(self.redis);
        drop(self.dynamo);
    }
}

/// Start both peers (as far as this machine can) and add them to
/// `targets`, signed in.
pub async fn start(
    load: &tokio::runtime::Handle,
    dir: &Path,
    workers: usize,
    redis_server: &str,
    targets: &mut Vec<Target>,
) -> anyhow::Result<Express> {
    let mut express = Express::default();
    let (Some(node), true) = (
        servers::which("node"),
        app_dir().join("node_modules").is_dir(),
    ) else {
        express.notes.push(
            "express-session peers: skipped: node or benches/peers/express-session/node_modules is missing (scripts/install-test-deps.sh installs both)".to_owned(),
        );
        return Ok(express);
    };
    match servers::which(redis_server) {
        None => express.notes.push(format!(
            "{EXPRESS_REDIS}: skipped: `{redis_server}` is not installed"
        )),
        Some(program) => {
            let redis = Redis::start(&program)?;
            let env = [("STORE", "redis".to_owned()), ("REDIS_URL", redis.url())];
            let app = app(&node, workers, &env).context("starting the Express + Redis peer")?;
            targets.push(target(load, EXPRESS_REDIS, &app).await?);
            express.apps.push(app);
            express.redis = Some(redis);
        }
    }
    let dynamo = EmbeddedDynamo::start_file(
        &dir.join("express-dynamodb.sqlite3"),
        Duration::from_secs(60),
    )
    .map_err(|e| anyhow::anyhow!("starting the embedded DynamoDB server for Express: {e}"))?;
    let env = [
        ("STORE", "dynamodb".to_owned()),
        ("DYNAMODB_ENDPOINT", dynamo.url()),
    ];
    let app = app(&node, workers, &env).context("starting the Express + DynamoDB peer")?;
    targets.push(target(load, EXPRESS_DYNAMODB, &app).await?);
    express.apps.push(app);
    express.dynamo = Some(dynamo);
    Ok(express)
}

/// `node server.js` with `env`, waited for until it listens.
fn app(node: &Path, workers: usize, env: &[(&str, String)]) -> anyhow::Result<Node> {
    let mut command = Command::new(node);
    command
        .arg(app_dir().join("server.js"))
        .env("PORT", "0")
        .env("WORKERS", workers.to_string())
        .env("SECRET", "edge-session-bench express secret")
        .env("AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED", "true");
    for (k, v) in env {
        command.env(k, v);
    }
    Node::spawn(
        command,
        Options {
            ready_within: Duration::from_secs(60),
            exit_within: Duration::from_secs(10),
            on_drop: OnDrop::Terminate,
            keep_output: Some(64 * 1024),
            show_output: false,
        },
    )
}

/// `app` signed in as a `GET /whoami` target.
async fn target(
    load: &tokio::runtime::Handle,
    name: &'static str,
    app: &Node,
) -> anyhow::Result<Target> {
    let cookie = sign_in(
        load,
        app.addr,
        Bytes::new(),
        "connect.sid",
        StatusCode::OK,
        "/whoami",
    )
    .await
    .with_context(|| format!("signing in on {name}; its output:\n{}", app.output()))?;
    println!("{name}: {}", app.addr);
    Ok(Target {
        name,
        addr: app.addr,
        path: "/whoami",
        cookie,
    })
}
