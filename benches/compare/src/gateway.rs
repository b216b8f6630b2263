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
use edge_session_bench::node::Node;
use hyper::{Method, StatusCode};

use crate::names::{AUTH_CHECK, NGINX, PROXY};
use crate::process::{self, Nginx};
use crate::start::{once, Target};

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

    let (nginx, note) = match process::which("nginx") {
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

/// The chain a user builds without the built-in proxy: `proxy_pass` to the
/// app, `auth_request` to the node's `/auth/check`, the identity copied
/// into the proxied request; keep-alive to both (nginx's tuned setup).
fn nginx_conf(port: u16, dir: &Path, app: SocketAddr, node: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        r#"worker_processes auto;
error_log {dir}/logs/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream app {{ server {app}; keepalive 128; }}
    upstream edge {{ server {node}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_request /.edge-auth;
            auth_request_set $edge_user $upstream_http_x_edge_user;
            auth_request_set $edge_role $upstream_http_x_edge_role;
            auth_request_set $edge_session $upstream_http_x_edge_session;
            auth_request_set $edge_assertion $upstream_http_x_edge_assertion;
            proxy_set_header X-Edge-User $edge_user;
            proxy_set_header X-Edge-Role $edge_role;
            proxy_set_header X-Edge-Session $edge_session;
            proxy_set_header X-Edge-Assertion $edge_assertion;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }}
        location = /.edge-auth {{
            internal;
            proxy_pass http://edge/auth/check;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}
