//! The gateway's reverse proxy, against a real upstream: the Express example
//! (`examples/express-gateway/app.js`, run by Node.js) behind a node whose
//! `gateway.upstream` points at it. Where a test needs an upstream that
//! misbehaves in a way the example cannot (echo a body, send hop-by-hop
//! response headers, never answer), it runs a small one on a socket of its
//! own ([`upstreams`]).
//!
//! - [`proxy`]: what reaches the upstream and what comes back (headers,
//!   bodies, 502/504).
//! - [`actions`]: the upstream's signed login/logout actions.
//! - [`protect`]: protected paths and the login redirect.
//! - [`websocket`]: WebSocket pass-through and its closing on revocation.

mod actions;
mod protect;
mod proxy;
mod upstreams;
mod websocket;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use reqwest::header::COOKIE;
use serde_json::Value;

use crate::faultproxy::FaultProxy;
use crate::harness::{fault_proxy, node_toml, table_name, Cluster, TestNode};

/// The action secret shared by the test nodes and the Express example.
pub const SECRET: &str = "gateway-test-secret-0123456789abcdef";

/// Passwords of the Express example's users (its env `EXAMPLE_USERS`).
pub const ALICE: &str = "alice-upstream-password";
pub const BOB: &str = "bob-upstream-password";

/// The Express example, running as a child process on 127.0.0.1.
pub struct Express {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Express {
    /// Start the example with its test routes on a free port.
    pub fn start() -> Express {
        let users = format!("alice:admin:{ALICE},bob:member:{BOB}");
        let (child, url) = start_example(
            "app.js",
            "express",
            &[
                ("EDGE_ACTION_SECRET", SECRET),
                ("EXAMPLE_USERS", users.as_str()),
            ],
        );
        Express { child, url }
    }
}

/// `script` of the Express example (`examples/express-gateway`), with its
/// test routes, on a free port, with `env`: the child and its
/// `http://127.0.0.1:<port>` (the first line it prints). `needs` is a
/// package it must find installed.
pub fn start_example(script: &str, needs: &str, env: &[(&str, &str)]) -> (Child, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/express-gateway");
    assert!(
        dir.join("node_modules").join(needs).exists(),
        "examples/express-gateway/node_modules is missing: run scripts/install-test-deps.sh"
    );
    let mut child = Command::new("node")
        .arg(script)
        .current_dir(&dir)
        .env("PORT", "0")
        .env("EXAMPLE_TEST_ROUTES", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (scripts/install-test-deps.sh installs it)");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the example prints its address");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from {script}: {line:?}"))
        .to_owned();
    (child, url)
}

impl Drop for Express {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node on a fresh table in front of `upstream`; `gateway` is appended to
/// its `[gateway]` table, `server` to its `[server]` table.
pub async fn gateway_node(upstream: &str, gateway: &str, server: &str) -> TestNode {
    gateway_node_on(&table_name(), upstream, gateway, server).await
}

/// The Express example and a node on a fresh table in front of it (as
/// [`gateway_node`] makes it); the example stops when its half is dropped.
pub async fn express_gateway(gateway: &str, server: &str) -> (Express, TestNode) {
    let express = Express::start();
    let node = gateway_node(&express.url, gateway, server).await;
    (express, node)
}

/// As [`gateway_node`], over `table` (nodes may share one).
pub async fn gateway_node_on(table: &str, upstream: &str, gateway: &str, server: &str) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let section =
        format!("[gateway]\nupstream = \"{upstream}\"\naction_secret = \"{SECRET}\"\n{gateway}\n");
    let toml = node_toml(dir.path(), table, &section)
        .replace("[server]\n", &format!("[server]\n{server}\n"));
    TestNode::spawn_toml(dir, &toml).await
}

/// The Express example and a node on a fresh table in front of it,
/// reaching DynamoDB through a fault proxy (returned, to inject faults);
/// the table is provisioned first, as the node does not provision through
/// a proxy. `None` when [`fault_proxy`] is (the test is then skipped).
pub async fn express_gateway_through_faults() -> Option<(FaultProxy, Express, TestNode)> {
    let proxy = fault_proxy().await?;
    let express = Express::start();
    let cluster = Cluster::new().await;
    let upstream = &express.url;
    let gateway = format!("[gateway]\nupstream = \"{upstream}\"\naction_secret = \"{SECRET}\"\n");
    let node = TestNode::spawn_proxied(cluster.tier.table(), &proxy.url(), "", &gateway).await;
    Some((proxy, express, node))
}

/// `GET /headers` through `node` with the session cookie `cookie` (if any)
/// and the extra `headers`: what the upstream received.
pub async fn upstream_saw(
    node: &TestNode,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
) -> Value {
    let mut req = node.client.get(node.at("/headers"));
    if let Some(c) = cookie {
        req = req.header(COOKIE, crate::harness::cookie(c));
    }
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200, "GET /headers through the node");
    res.json().await.unwrap()
}

/// `method /_test/sign?action={action}` through `node` with the extra
/// `headers`: the Express example answers with `action` signed, for the
/// node to carry out (or refuse).
pub async fn sign_request(
    node: &TestNode,
    method: reqwest::Method,
    action: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = node
        .client
        .request(method, node.at("/_test/sign"))
        .query(&[("action", action)]);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// A response read off a raw socket.
pub struct RawResponse {
    pub status: u16,
    /// The head, lower-cased.
    pub head: String,
    pub body: Vec<u8>,
}

/// Send `request` (a whole HTTP/1.1 request, `Connection: close`) to the
/// node at `url` on a raw socket, so header names go out exactly as
/// written; the response, its body de-chunked.
pub async fn raw_request(url: &str, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let body = bytes[split + 4..].to_vec();
    let body = if head.contains("\r\ntransfer-encoding: chunked") {
        dechunk(&body)
    } else {
        body
    };
    RawResponse { status, head, body }
}

/// The data of a chunked body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&body[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
}
