//! The gateway's targets: forward auth (`GET /auth/check` on the node under
//! test), the built-in reverse proxy (a second node with `gateway.upstream`
//! in front of the hello-world ceiling), and what a user would build
//! otherwise: nginx `proxy_pass` to the same hello world with
//! `auth_request` to the node under test. All of them answer `GET /` (or
//! the check) for the bench user, so they sit in the `GET` table beside the
//! ceiling served directly.

use std::net::SocketAddr;
use std::path::Path;

use actix_web::web::Bytes;
use anyhow::Context as _;
use edge_session_test_support::child::Node;
use hyper::{Method, StatusCode};

use crate::names::{AUTH_CHECK, NGINX, PROXY};
use crate::servers::{self, Nginx};
use crate::targets::{once, Target};

/// The action secret the proxy node and the hello world share.
pub const ACTION_SECRET: &str = "edge-session-bench action secret, 32 bytes or more";

/// What the gateway scenarios started.
pub struct Gateway {
    /// The node in proxy mode.
    pub proxy: Node,
    /// Why nginx was skipped, if it was.
    pub note: Option<String>,
    nginx: Option<Nginx>,
}

impl Gateway {
    /// Stop nginx, then the proxy node.
    pub fn stop(self) {
        drop(self.nginx);
        drop(self.proxy);
    }
}

/// Start the gateway targets and add them to `targets`: `node` is the node
/// under test (signed in with `cookie`), `hello` the ceiling (started with
/// [`ACTION_SECRET`]), `proxy_node` starts a node with extra config.
pub async fn start(
    load: &tokio::runtime::Handle,
    dir: &Path,
    (node, cookie): (&Node, &str),
    hello: SocketAddr,
    proxy_node: impl FnOnce(&str) -> anyhow::Result<Node>,
    targets: &mut Vec<Target>,
) -> anyhow::Result<Gateway> {
    let checked = get(load, node.addr, "/auth/check", cookie).await?;
    anyhow::ensure!(
        checked.status == StatusCode::OK && checked.headers.contains_key("x-edge-user"),
        "GET /auth/check on the node answered {} without X-Edge-User",
        checked.status
    );
    targets.push(target(AUTH_CHECK, node.addr, "/auth/check", cookie));

    let extra =
        format!("[gateway]\nupstream = \"http://{hello}\"\naction_secret = \"{ACTION_SECRET}\"\n");
    let proxy = proxy_node(&extra).context("starting the node in proxy mode")?;
    let proxy_cookie = action_login(load, proxy.addr).await.with_context(|| {
        format!(
            "signing in through the proxy; its output:\n{}",
            proxy.output()
        )
    })?;
    let res = get(load, proxy.addr, "/", &proxy_cookie).await?;
    anyhow::ensure!(
        res.status == StatusCode::OK,
        "GET / through the proxy answered {}",
        res.status
    );
    targets.push(target(PROXY, proxy.addr, "/", &proxy_cookie));
    println!("edge-session proxy: {} in front of {hello}", proxy.addr);

    let (nginx, note) = match servers::which("nginx") {
        None => {
            let note = "nginx + auth_request: skipped: `nginx` is not installed (scripts/install-test-deps.sh installs it)".to_owned();
            println!("{note}");
            (None, Some(note))
        }
        Some(program) => {
            let nginx = Nginx::start(&program, &dir.join("nginx"), |port, dir| {
                nginx_conf(port, dir, hello, node.addr)
            })?;
            check_nginx(load, nginx.addr, cookie).await?;
            targets.push(target(NGINX, nginx.addr, "/", cookie));
            println!("nginx + auth_request: {} in front of {hello}", nginx.addr);
            (Some(nginx), None)
        }
    };
    Ok(Gateway { proxy, note, nginx })
}

fn target(name: &'static str, addr: SocketAddr, path: &'static str, cookie: &str) -> Target {
    Target {
        name,
        addr,
        path,
        cookie: cookie.to_owned(),
    }
}

async fn get(
    load: &tokio::runtime::Handle,
    addr: SocketAddr,
    path: &'static str,
    cookie: &str,
) -> anyhow::Result<crate::load::Response> {
    let headers = vec![("cookie", cookie.to_owned())];
    once(load, addr, Method::GET, path, headers, Bytes::new()).await
}

/// Sign the bench user in through the proxy: `POST /login-action`, which
/// the hello world answers with a signed `login` action.
pub async fn action_login(
    load: &tokio::runtime::Handle,
    proxy: SocketAddr,
) -> anyhow::Result<String> {
    let res = once(
        load,
        proxy,
        Method::POST,
        "/login-action",
        Vec::new(),
        Bytes::new(),
    )
    .await?;
    anyhow::ensure!(
        res.status == StatusCode::SEE_OTHER,
        "POST /login-action through the proxy answered {}",
        res.status
    );
    let cookie = res
        .cookie("__Host-sid")
        .context("the login action set no session cookie")?;
    let me = get(load, proxy, "/.edge/whoami", &cookie).await?;
    anyhow::ensure!(
        me.status == StatusCode::OK && String::from_utf8_lossy(&me.body).contains("bench"),
        "GET /.edge/whoami after the action login answered {}",
        me.status
    );
    Ok(cookie)
}

/// nginx answers for the bench user and refuses without a cookie.
async fn check_nginx(
    load: &tokio::runtime::Handle,
    addr: SocketAddr,
    cookie: &str,
) -> anyhow::Result<()> {
    let with = get(load, addr, "/", cookie).await?;
    let without = get(load, addr, "/", "").await?;
    anyhow::ensure!(
        with.status == StatusCode::OK && without.status == StatusCode::UNAUTHORIZED,
        "nginx answered {} with the cookie and {} without (expected 200 and 401)",
        with.status,
        without.status
    );
    Ok(())
}

/// The chain a user builds without the built-in proxy: the repository's
/// nginx example (`examples/forward-auth/nginx.conf`, the one its tests
/// run), `proxy_pass` to the app with `auth_request` to the node's
/// `/auth/check`, tuned as one would for a benchmark: a worker per core and
/// more kept-alive connections to both.
fn nginx_conf(port: u16, dir: &Path, app: SocketAddr, node: SocketAddr) -> String {
    const EXAMPLE: &str = include_str!("../../../examples/forward-auth/nginx.conf");
    EXAMPLE
        .replace("{{LISTEN}}", &format!("127.0.0.1:{port}"))
        .replace("{{NODE}}", &node.to_string())
        .replace("{{UPSTREAM}}", &app.to_string())
        .replace("{{DIR}}", &dir.display().to_string())
        .replace("worker_processes 1;", "worker_processes auto;")
        .replace("worker_connections 512;", "worker_connections 4096;")
        .replace("keepalive 16;", "keepalive 128;")
}
