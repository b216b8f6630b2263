//! The `edge-session` binary as a child process: the default embedded mode,
//! SIGTERM draining and restart on the same `data_dir`, captured logs, and
//! start-up errors.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::child::{Node, OnDrop, Options};
use crate::coherence::terminate_cleanly;
use crate::harness::{
    anonymous_token, browser, browser_login, client, logout, metric, openssl, regenerate,
    session_cookie, session_status, token_with_data, v1_session, whoami, ALICE_PASSWORD,
};

const BIN: &str = env!("CARGO_BIN_EXE_edge-session");

/// Config for a node in embedded mode (the default) under `dir`, with the
/// test users; `server.listen` comes from the environment override.
fn write_config(dir: &Path) -> std::path::PathBuf {
    write_config_with(dir, "")
}

/// [`write_config`] with `extra` TOML tables (before `[server]`).
fn write_config_with(dir: &Path, extra: &str) -> std::path::PathBuf {
    let toml = crate::harness::node_toml(&dir.join("data"), "edge-sessions", extra);
    // Embedded mode: drop the harness endpoint; keep users and key.
    let toml: String = toml
        .lines()
        .filter(|l| {
            !(l.starts_with("endpoint")
                || l.starts_with("access_key_id")
                || l.starts_with("secret_access_key")
                || l.starts_with("listen"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Start the binary: `serve --config config` on 127.0.0.1:0 (the environment
/// override), logging at `log_filter`. Dropping the node kills it (SIGKILL,
/// a crash); the tail of its output is printed if the test panics, or always
/// with `EDGE_SESSION_TEST_SHOW_NODE_LOGS` set. `terminate` sends SIGTERM and
/// allows 30 s. `EDGE_SESSION_TEST_NODE_BIN` names another binary.
pub(crate) fn start(config: &Path, log_filter: &str) -> Node {
    // A measurement may run release nodes beside the debug test process
    // (`EDGE_SESSION_TEST_NODE_BIN=target/release/edge-session`).
    let bin = std::env::var("EDGE_SESSION_TEST_NODE_BIN").unwrap_or_else(|_| BIN.to_owned());
    let mut command = Command::new(bin);
    command
        .args(["serve", "--config"])
        .arg(config)
        .env("EDGE_SESSION__SERVER__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", log_filter);
    let options = Options {
        ready_within: Duration::from_secs(60),
        exit_within: Duration::from_secs(30),
        on_drop: OnDrop::Kill,
        keep_output: None,
        show_output: std::env::var_os("EDGE_SESSION_TEST_SHOW_NODE_LOGS").is_some(),
    };
    Node::spawn(command, options).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A fresh directory with a config in it ([`write_config_with`], `extra`
/// added) and a node started on it as [`start`] does, logging at
/// `log_filter`: the directory (to keep while the node runs), the config's
/// path (to start it again) and the node.
fn start_fresh(extra: &str, log_filter: &str) -> (tempfile::TempDir, std::path::PathBuf, Node) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), extra);
    let node = start(&config, log_filter);
    (dir, config, node)
}

#[tokio::test]
async fn sigterm_drains_and_restart_keeps_sessions_and_revocations() {
    let (_dir, config, node) = start_fresh("", "info");
    let c = client();
    let logged_in = browser_login((&c, &node.url), "alice", ALICE_PASSWORD).await;
    let logged_out = browser_login((&c, &node.url), "alice", ALICE_PASSWORD).await;
    let status = logout((&c, &node.url), &logged_out).await.unwrap();
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        whoami((&c, &node.url), &logged_out).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );

    // Requests in flight when SIGTERM arrives still get their answers.
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let req = c
                .post(node.at("/login"))
                .form(&[("username", "alice"), ("password", ALICE_PASSWORD)]);
            tokio::spawn(req.send())
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    terminate_cleanly(node).await;
    let mut drained = 0;
    for req in in_flight {
        if let Ok(res) = req.await.unwrap() {
            assert_eq!(
                res.status(),
                StatusCode::SEE_OTHER,
                "an accepted request was answered in full"
            );
            drained += 1;
        }
    }
    println!("in-flight logins answered across SIGTERM: {drained}/4");

    let node = start(&config, "info");
    assert_eq!(
        whoami((&c, &node.url), &logged_in).await.unwrap(),
        StatusCode::OK,
        "logged-in session survives restart"
    );
    assert_eq!(
        whoami((&c, &node.url), &logged_out).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "logged-out session stays dead"
    );
    terminate_cleanly(node).await;
}

#[tokio::test]
async fn tokens_never_appear_in_logs_or_locations() {
    // Everything at debug, every crate: actix, hyper, the AWS SDK, dynoxide.
    let (_dir, _, node) = start_fresh("", "debug");
    let c = client();
    let mut tokens = Vec::new();

    let res = c.get(node.at("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // A pre-login session (GET / issues none).
    let anon = anonymous_token((&c, &node.url)).await;
    tokens.push(anon.clone());
    let res = browser(&(&c, &node.url), Method::POST, "/login", Some(&anon))
        .form(&[("username", "alice"), ("password", ALICE_PASSWORD)])
        .send()
        .await
        .unwrap();
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let signed_in = session_cookie(&res);
    tokens.push(signed_in.clone());
    assert_eq!(location, "/");
    let _ = whoami((&c, &node.url), &signed_in).await.unwrap();
    let _ = whoami((&c, &node.url), &anon).await.unwrap();
    let _ = browser(
        &(&c, &node.url),
        Method::GET,
        "/me/sessions",
        Some(&signed_in),
    )
    .send()
    .await
    .unwrap();

    let v1 = |m: Method, p: &str, token: &str| v1_session((&c, &node.url), m, p, token);
    let t1 = token_with_data((&c, &node.url), json!({"k": "v"})).await;
    tokens.push(t1.clone());
    let (_, regenerated) = regenerate((&c, &node.url), &t1, json!({"user_id": "zed"})).await;
    let t2 = regenerated["token"].as_str().unwrap().to_owned();
    tokens.push(t2.clone());
    let res = v1(Method::GET, "/v1/session", &t1).send().await.unwrap();
    let body = res.text().await.unwrap();
    assert!(!body.contains(&t1), "error body echoes the token");
    let _ = v1(Method::PATCH, "/v1/session", &t2)
        .json(&json!({"data": {"a": "b"}, "version": 99}))
        .send()
        .await
        .unwrap();
    let _ = v1(Method::DELETE, "/v1/session", &t2).send().await.unwrap();
    let _ = browser(&(&c, &node.url), Method::POST, "/logout", Some(&signed_in))
        .send()
        .await
        .unwrap();

    let output = terminate_cleanly(node).await;
    assert!(
        output.lines().count() > 20,
        "debug logging produced output to search:\n{output}"
    );
    for token in &tokens {
        assert!(
            !output.contains(token.as_str()),
            "a session token appeared in the logs"
        );
    }
}

/// `serve --config config` with `env` set, which must fail: its stderr.
fn serve_fails(config: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{} was served", config.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_config_exits_nonzero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let stderr = serve_fails(
        &config,
        &[("EDGE_SESSION__SERVER__LISTEN", "not-an-address")],
    );
    assert!(stderr.contains("server.listen"), "{stderr}");

    std::fs::write(
        dir.path().join("bad.toml"),
        "[session]\nidle_timeout_secs = \"soon\"\n",
    )
    .unwrap();
    let stderr = serve_fails(&dir.path().join("bad.toml"), &[]);
    assert!(stderr.contains("idle_timeout_secs"), "{stderr}");

    let stderr = serve_fails(&dir.path().join("missing.toml"), &[]);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn hash_password_prints_an_argon2id_phc_string() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret pass\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    use argon2::PasswordVerifier;
    let parsed = argon2::PasswordHash::new(phc.trim()).unwrap();
    assert!(argon2::Argon2::default()
        .verify_password(b"s3cret pass", &parsed)
        .is_ok());
    assert!(argon2::Argon2::default()
        .verify_password(b"s3cret pass\n", &parsed)
        .is_err());
}

#[test]
fn tls_serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let config = write_config(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "[server]\n",
        &format!(
            "[server]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            cert.display(),
            key.display()
        ),
    );
    std::fs::write(&config, text).unwrap();

    let node = start(&config, "info");
    assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&cert)
        .args(["-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
        .arg(format!(
            "localhost:{}:127.0.0.1",
            node.url.rsplit(':').next().unwrap()
        ))
        .arg(node.url.replace("127.0.0.1", "localhost") + "/healthz")
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP on the TLS port is refused, not served.
    let plain = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg(node.url.replace("https://", "http://") + "/healthz")
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    let (status, _) = node.terminate().unwrap();
    assert!(status.success());
}

/// How long the negative-cache tests' nodes remember a token is unknown.
const NEGATIVE_TTL_MS: u128 = 60_000;

/// A child node whose negative cache keeps an unknown token for
/// [`NEGATIVE_TTL_MS`] (and its directory, to keep while it runs), and a
/// client for it.
fn node_with_negative_ttl() -> (tempfile::TempDir, Node, reqwest::Client) {
    let cache = format!("[cache]\nnegative_ttl_ms = {NEGATIVE_TTL_MS}\n");
    let (dir, _, node) = start_fresh(&cache, "warn");
    (dir, node, client())
}

/// How many DynamoDB calls of `op` (`get`, `delete`, ...) the node at `url`
/// has made, from its `/metrics`.
async fn dynamodb_calls(c: &reqwest::Client, url: &str, op: &str) -> f64 {
    let name = format!("edge_session_dynamodb_call_duration_seconds_count{{op=\"{op}\"}}");
    metric((c, url), &name).await.unwrap_or(0.0)
}

/// One unknown token, presented again and again (a client replaying a dead
/// or forged cookie, on every read route): DynamoDB is asked at most once
/// per `cache.negative_ttl_ms`, not once per request. A child process, so
/// `/metrics` counts this node's calls alone.
#[tokio::test]
async fn unknown_token_costs_one_read_per_negative_ttl() {
    const N: usize = 40;
    let (_dir, node, c) = node_with_negative_ttl();
    let gets = || dynamodb_calls(&c, &node.url, "get");

    let unknown = edge_session::SessionToken::generate().expose();
    let before = gets().await;
    let started = std::time::Instant::now();
    for _ in 0..N {
        assert_eq!(
            whoami((&c, &node.url), &unknown).await.unwrap(),
            StatusCode::UNAUTHORIZED
        );
        let res = browser(&(&c, &node.url), Method::GET, "/", Some(&unknown))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            session_status((&c, &node.url), &unknown).await.unwrap(),
            StatusCode::NOT_FOUND
        );
    }
    let windows = 1 + started.elapsed().as_millis() / NEGATIVE_TTL_MS;
    let reads = gets().await - before;
    assert!(reads >= 1.0, "the first lookup asks DynamoDB");
    assert!(
        reads <= windows as f64,
        "{reads} DynamoDB reads for {} lookups of one unknown token in {windows} negative TTL(s)",
        3 * N
    );
}

/// Logging out with an unknown cookie, again and again: the negative cache
/// answers as it does for reads, so DynamoDB is asked at most once per
/// `cache.negative_ttl_ms`, and nothing is written.
#[tokio::test]
async fn unknown_cookie_logouts_cost_no_read_within_the_negative_ttl() {
    const N: usize = 40;
    let (_dir, node, c) = node_with_negative_ttl();
    let calls = |op: &'static str| dynamodb_calls(&c, &node.url, op);
    let unknown = edge_session::SessionToken::generate().expose();
    let (gets, deletes) = (calls("get").await, calls("delete").await);
    let started = std::time::Instant::now();
    for _ in 0..N {
        let status = logout((&c, &node.url), &unknown).await.unwrap();
        assert_eq!(status, StatusCode::SEE_OTHER);
    }
    let windows = 1 + started.elapsed().as_millis() / NEGATIVE_TTL_MS;
    let reads = calls("get").await - gets;
    assert!(
        reads <= windows as f64,
        "{reads} DynamoDB reads for {N} logouts of one unknown cookie in {windows} negative TTL(s)"
    );
    let deleted = calls("delete").await - deletes;
    assert_eq!(deleted, 0.0, "nothing deleted for a cookie nobody holds");
    terminate_cleanly(node).await;
}

#[tokio::test]
async fn a_node_with_another_journal_partition_count_than_the_table_will_not_start() {
    // The first node records the table's count (the default, 1).
    let (dir, config, node) = start_fresh("", "warn");
    let c = client();
    crate::harness::eventually("the first node is ready", || async {
        crate::harness::readyz((&c, &node.url)).await.ok() == Some(reqwest::StatusCode::OK)
    })
    .await;
    terminate_cleanly(node).await;

    let log = dir.path().join("second.log");
    let mut second = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("EDGE_SESSION__SERVER__LISTEN", "127.0.0.1:0")
        .env("EDGE_SESSION__STREAM__JOURNAL_PARTITIONS", "2")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("it started with another count (still running after 30 s)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        stderr.contains("stream.journal_partitions") && stderr.contains("records 1"),
        "{stderr}"
    );
}
