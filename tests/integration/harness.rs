//! Test harness: a DynamoDB-wire endpoint and nodes (a sled cache each) over
//! one fresh table per test.
//!
//! By default the harness starts one embedded dynoxide server per test binary,
//! on a temporary file, on 127.0.0.1:0. Set `EDGE_SESSION_TEST_DYNAMODB_ENDPOINT` to a URL
//! (DynamoDB Local, another emulator, or `aws` for real DynamoDB in
//! `EDGE_SESSION_TEST_DYNAMODB_REGION`, default us-east-1) to run the same
//! suite there; credentials then come from the standard AWS chain.
//!
//! The request helpers (in [`requests`], re-exported here) talk to a node
//! as a browser or a service would.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edge_session::{SledCache, StoreSettings, TieredStore};
use edge_session_sync::{ClientSettings, DynamoTier, Endpoint};

mod requests;
pub use requests::*;

/// The endpoint every test in this binary uses: the test support crate's,
/// shared with the fault proxy.
pub use edge_session_test_support::dynamo::endpoint;

/// Client settings for `endpoint`, with short timeouts so a fault shows fast.
pub fn client_settings(endpoint: Endpoint) -> ClientSettings {
    ClientSettings {
        endpoint,
        region: std::env::var("EDGE_SESSION_TEST_DYNAMODB_REGION")
            .unwrap_or_else(|_| "us-east-1".into()),
        ..ClientSettings::default()
    }
}

/// Wall-clock now in milliseconds. Tests offset from it (not from 0) so
/// the emulator's TTL sweep, which uses the real clock, leaves items alone.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A fresh table, provisioned, and a way to start nodes over it.
pub struct Cluster {
    pub tier: DynamoTier,
}

impl Cluster {
    pub async fn new() -> Self {
        let table = format!("edge-session-test-{:016x}", getrandom::u64().unwrap());
        let client = client_settings(endpoint()).build().await;
        let tier = DynamoTier::new(client, table);
        tier.provision().await.expect("provision the test table");
        Cluster { tier }
    }

    /// A node: its own temporary sled cache over the shared table.
    pub fn node(&self, settings: StoreSettings) -> TieredStore {
        TieredStore::new(
            SledCache::temporary().expect("temporary sled"),
            self.tier.clone(),
            settings,
        )
    }

    /// A node whose cache lives in `dir` (restart tests: the node before it
    /// on `dir` is closed first, `TieredStore::close`).
    pub fn node_at(&self, dir: &std::path::Path, settings: StoreSettings) -> TieredStore {
        let cache = SledCache::open(dir).expect("open sled");
        TieredStore::new(cache, self.tier.clone(), settings)
    }

    /// Every session and epoch item in the table, as raw attribute maps
    /// (coherence items left out: see `is_coherence_item`).
    pub async fn scan(&self) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .tier
                .client()
                .scan()
                .table_name(self.tier.table())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            out.extend(
                page.items()
                    .iter()
                    .filter(|item| !is_coherence_item(item))
                    .cloned(),
            );
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return out,
            }
        }
    }
}

/// The API key every test node accepts.
pub const API_KEY: &str = "test-api-key-0123456789abcdef";

/// Passwords of the test users (alice is an admin, bob a user).
pub const ALICE_PASSWORD: &str = "alice-password-for-tests";
pub const BOB_PASSWORD: &str = "bob-password-for-tests";

fn user_hashes() -> &'static (String, String) {
    static HASHES: OnceLock<(String, String)> = OnceLock::new();
    HASHES.get_or_init(|| {
        use edge_session::hash_password;
        (
            hash_password(ALICE_PASSWORD).unwrap(),
            hash_password(BOB_PASSWORD).unwrap(),
        )
    })
}

/// The `[dynamodb]` lines pointing a node at the harness endpoint and `table`.
pub fn dynamodb_toml(table: &str) -> String {
    let endpoint = match endpoint() {
        Endpoint::Embedded(url) => {
            format!("endpoint = \"{url}\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"")
        }
        Endpoint::Url(url) => format!("endpoint = \"{url}\""),
        _ => "endpoint = \"aws\"".to_owned(),
    };
    format!("[dynamodb]\n{endpoint}\ntable = \"{table}\"\nprovision_on_start = true\nmax_attempts = 2\n")
}

/// The login budgets of test nodes: out of the way of tests that sign in
/// many times from one address (the throttling tests set their own).
pub const TEST_BUDGETS: &str = "per_ip_per_minute = 1000000\nper_ip_burst = 1000000\n\
     per_account_per_minute = 1000000\nper_account_burst = 1000000";

/// A node's whole config over `table`, with test users and key; `extra` is
/// appended (TOML).
pub fn node_toml(data_dir: &std::path::Path, table: &str, extra: &str) -> String {
    let (alice, bob) = user_hashes();
    format!(
        "data_dir = \"{}\"\n{extra}\n[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nshutdown_timeout_secs = 5\n\
         {}\n[api]\nkeys = [\"{API_KEY}\"]\n\
         [auth]\n{TEST_BUDGETS}\n\
         [[auth.users]]\nuser_id = \"alice\"\npassword_hash = \"{alice}\"\nrole = \"admin\"\n\
         [[auth.users]]\nuser_id = \"bob\"\npassword_hash = \"{bob}\"\nrole = \"user\"\n",
        data_dir.display(),
        dynamodb_toml(table)
    )
}

/// Run `openssl` with `args`: what it wrote to stdout. The test fails, with
/// openssl's stderr, if it cannot run or does not succeed.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (installed by .ci/run)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh table name.
pub fn table_name() -> String {
    format!("edge-session-test-{:016x}", getrandom::u64().unwrap())
}

/// A fault proxy in front of the harness's DynamoDB; `None`, said on
/// stderr, when the endpoint is not plain http (the test is then skipped).
pub async fn fault_proxy() -> Option<crate::faultproxy::FaultProxy> {
    let proxy = crate::faultproxy::FaultProxy::to_harness().await;
    if proxy.is_none() {
        eprintln!("skipped: the DynamoDB endpoint is not plain http");
    }
    proxy
}

/// A node running in this process on 127.0.0.1:0.
pub struct TestNode {
    pub url: String,
    pub store: TieredStore,
    pub client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestNode {
    /// A node over a fresh table.
    pub async fn spawn() -> Self {
        Self::spawn_on(&table_name(), "").await
    }

    /// A node over `table` (several nodes may share one), `extra` TOML
    /// prepended to its config's top level.
    pub async fn spawn_on(table: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let toml = node_toml(dir.path(), table, extra);
        Self::spawn_toml(dir, &toml).await
    }

    /// A node over a fresh table whose `[server]` section also gets the
    /// lines `server`, and whose `[auth]` login budgets are `budgets` (the
    /// tests' defaults, [`TEST_BUDGETS`], when `None`).
    pub async fn spawn_with(server: &str, budgets: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = node_toml(dir.path(), &table_name(), "");
        if let Some(budgets) = budgets {
            toml = toml.replace(TEST_BUDGETS, budgets);
        }
        let toml = toml.replace("[server]\n", &format!("[server]\n{server}\n"));
        Self::spawn_toml(dir, &toml).await
    }

    /// A node over `table` reaching DynamoDB through the proxy at
    /// `proxy_url`, its config as [`proxied_node_toml`] writes it.
    pub async fn spawn_proxied(table: &str, proxy_url: &str, dynamodb: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let toml = proxied_node_toml(dir.path(), table, proxy_url, dynamodb, extra);
        Self::spawn_toml(dir, &toml).await
    }

    /// Stop gracefully and wait.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// The node's `host:port`, for a raw TCP connection.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A `/v1` request with the API key.
    pub fn v1(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        v1(self, method, path)
    }
}

/// An HTTP client that follows no redirects and keeps no cookies: tests
/// handle `Set-Cookie` and `Cookie` themselves. A request the node never
/// answers fails after a minute (a hung node fails its test, not the whole
/// run's time budget); idle connections are dropped before the server's
/// 5 s keep-alive closes them, so a request never races that close.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// The `Set-Cookie` header for the session cookie, if any.
pub fn session_set_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-sid="))
        .map(str::to_owned)
}

/// The session cookie's value from a response (panics if none was set).
pub fn session_cookie(res: &reqwest::Response) -> String {
    let header = session_set_cookie(res).expect("response sets the session cookie");
    header["__Host-sid=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// A node's whole config (as [`node_toml`]) reaching the harness's DynamoDB
/// through `url` (a fault proxy), with short timeouts (connect 200 ms, attempt
/// 500 ms, operation 1500 ms, 2 attempts) and no provisioning at start (the
/// test provisions the table first, and a node must start while DynamoDB is
/// down). `dynamodb` is appended to the `[dynamodb]` table; `extra` goes to
/// the top level (whole tables such as `[cache]` or `[stream]`).
pub fn proxied_node_toml(
    data_dir: &std::path::Path,
    table: &str,
    url: &str,
    dynamodb: &str,
    extra: &str,
) -> String {
    let credentials = match endpoint() {
        // The embedded server checks no credentials; another emulator gets
        // the same chain the harness uses.
        Endpoint::Embedded(_) => "access_key_id = \"test\"\nsecret_access_key = \"test\"\n",
        _ => "",
    };
    let section = format!(
        "[dynamodb]\nendpoint = \"{url}\"\n{credentials}table = \"{table}\"\nprovision_on_start = false\n\
         connect_timeout_ms = 200\nattempt_timeout_ms = 500\noperation_timeout_ms = 1500\nmax_attempts = 2\n{dynamodb}\n"
    );
    node_toml(data_dir, table, extra).replace(&dynamodb_toml(table), &section)
}

impl TestNode {
    /// A node in this process from a whole config `toml` whose `data_dir`
    /// is `dir` (kept until the node is dropped).
    pub async fn spawn_toml(dir: tempfile::TempDir, toml: &str) -> Self {
        let config = edge_session::config::Config::from_toml(toml).expect("test config");
        let app = edge_session::Application::build(config)
            .await
            .expect("node builds");
        let url = app.url();
        let store = app.store().clone();
        let handle = app.handle();
        let task = tokio::spawn(app.run_until_stopped());
        TestNode {
            url,
            store,
            client: client(),
            handle,
            task: Some(task),
            _dir: Some(dir),
        }
    }
}

/// How many items the node's table holds (sessions and users' epochs, not
/// the change journal's entries).
pub async fn table_items(node: &TestNode) -> usize {
    let dynamo = node.store.dynamo();
    let out = dynamo
        .client()
        .scan()
        .table_name(dynamo.table())
        .send()
        .await
        .expect("scan");
    out.items()
        .iter()
        .filter(|item| !is_coherence_item(item))
        .count()
}

/// A coherence item, never a session: a change-journal entry (it has the
/// journal index's key `jb`), written beside each revocation and version
/// raise, the table's record of the journal's partition count (`jp`), or a
/// stream follower's heartbeat (`hb`).
pub fn is_coherence_item(item: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> bool {
    item.contains_key("jb") || item.contains_key("jp") || item.contains_key("hb")
}

/// Entries in the node's sled trees that a request could write (sessions,
/// tombstones, outbox), by tree.
pub fn sled_entries(node: &TestNode) -> Vec<(String, usize)> {
    let dump = node.store.cache().dump().expect("sled dump");
    ["sessions", "tombstones", "outbox"]
        .into_iter()
        .map(|tree| {
            let n = dump.iter().filter(|(t, _, _)| t == tree).count();
            (tree.to_owned(), n)
        })
        .collect()
}

/// Bound on every [`eventually`].
pub const PATIENCE: Duration = Duration::from_secs(45);

/// Wait until `check` holds, at most [`PATIENCE`]; panics with `what`.
/// Returns how long it took.
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "not within {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A URL on 127.0.0.1 where nothing listens: a port that was free a
/// moment ago.
pub fn unreachable_url() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", closed.local_addr().unwrap())
}

/// A tier over `table` whose endpoint refuses every connection.
pub async fn dead_tier(table: &str, breaker: edge_session_sync::BreakerSettings) -> DynamoTier {
    let url = unreachable_url();
    let client = ClientSettings {
        endpoint: Endpoint::Embedded(url),
        connect_timeout: Duration::from_millis(200),
        max_attempts: 1,
        ..ClientSettings::default()
    }
    .build()
    .await;
    DynamoTier::with_breaker(client, table, breaker)
}
