//! Crash safety and restarts: the `edge-session` binary as a child process
//! (`child::Node`, started by `process::start`), killed with SIGKILL or
//! stopped with SIGTERM, restarted on the same `data_dir`.
//!
//! DynamoDB is the harness's server, reached through a [`FaultProxy`], not
//! the node's own embedded store: it must outlive the node (a killed node
//! would take an embedded store down with it, and the test could not tell
//! "DynamoDB lost it" from "the node lost it"), and the proxy lets a restart
//! happen while DynamoDB is still down. The node's own durable state is its
//! sled cache under `data_dir`: tombstones and the outbox.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_session::StoreSettings;
use edge_session_sync::DynamoTier;
use reqwest::StatusCode;

use crate::child::Node;
use crate::faultproxy::{Fault, FaultProxy};
use crate::faults::proxied_node;
use crate::harness::{
    client, eventually, fault_proxy, login_form, logout, now, outbox_pending, proxied_node_toml,
    readyz, session_cookie, token, whoami, Cluster, ALICE_PASSWORD, BOB_PASSWORD,
};
use crate::process;

/// A config file for a node process under `dir`, reaching DynamoDB through
/// `proxy`.
fn write_config(dir: &Path, table: &str, proxy: &FaultProxy) -> PathBuf {
    let toml = proxied_node_toml(
        &dir.join("data"),
        table,
        &proxy.url(),
        "breaker_failures = 3\nbreaker_cooldown_ms = 300",
        // Every acknowledged login stays live in the ledger: no login may
        // evict a user's oldest sessions past the cap (two users log in
        // hundreds of times).
        "[session]\nmax_per_user = 1000\n",
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Start the binary (off the async threads: it blocks until the node prints
/// its address).
async fn start(config: &Path) -> Node {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || process::start(&config, "info"))
        .await
        .unwrap()
}

/// SIGKILL and reap (what dropping a `Node` does).
async fn kill_9(node: Node) {
    tokio::task::spawn_blocking(move || drop(node))
        .await
        .unwrap();
}

/// Logout while DynamoDB is down; the node restarted while it is still down;
/// DynamoDB back: the session is gone in DynamoDB and refused by every node,
/// including one that had it cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_during_outage_is_not_lost() {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let cluster = Cluster::new().await;
    let table = cluster.tier.table().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &table, &proxy);
    let c = client();

    let a = start(&config).await;
    // A second node, in this process, behind the same DynamoDB.
    let b = proxied_node(&proxy, &table, "reject").await;
    let res = c
        .post(a.at("/login"))
        .form(&[("username", "alice"), ("password", ALICE_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let t = session_cookie(&res);
    assert_eq!(whoami((&c, &b.url), &t).await.unwrap(), StatusCode::OK);
    assert!(
        b.store
            .cache()
            .get(&token(&t).storage_key())
            .unwrap()
            .is_some(),
        "the second node has it cached"
    );

    proxy.set(Fault::Refuse);
    assert_eq!(
        logout(&(&c, &a.url), &t).await.unwrap(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        whoami((&c, &a.url), &t).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    assert!(outbox_pending((&c, &a.url)).await.unwrap() >= 1.0);

    // Restart while DynamoDB is still down.
    let (status, output) = tokio::task::spawn_blocking(move || a.terminate().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "SIGTERM exit {status:?}:\n{output}");
    let a = start(&config).await;
    assert_eq!(
        whoami((&c, &a.url), &t).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "the tombstone survived the restart"
    );
    assert!(
        outbox_pending((&c, &a.url)).await.unwrap() >= 1.0,
        "the revocation survived the restart in the outbox"
    );
    assert!(
        in_dynamodb(&cluster.tier, &t).await,
        "DynamoDB has not seen the logout yet"
    );

    // DynamoDB is back.
    proxy.set(Fault::Pass);
    let drained = eventually("the restarted node drains its outbox", || async {
        outbox_pending((&c, &a.url)).await == Some(0.0)
    })
    .await;
    assert!(!in_dynamodb(&cluster.tier, &t).await, "gone in DynamoDB");
    let learned = eventually("the node that had it cached refuses it", || async {
        whoami((&c, &b.url), &t).await.ok() == Some(StatusCode::UNAUTHORIZED)
    })
    .await;
    assert_eq!(
        cluster
            .node(StoreSettings::default())
            .load(&token(&t), now())
            .await
            .unwrap(),
        None,
        "a fresh node refuses it"
    );
    assert_eq!(
        whoami((&c, &a.url), &t).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    println!("outbox drained {drained:?} after DynamoDB came back; the other node refused the token {learned:?} after that");
    b.stop().await;
    let (status, _) = tokio::task::spawn_blocking(move || a.terminate().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}

/// SplitMix64: a seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// What the client knows, from the answers it got.
#[derive(Default)]
struct Ledger {
    /// Logins acknowledged (303 with a cookie) and not logged out since.
    live: Vec<String>,
    /// Logouts acknowledged (their 303 arrived).
    dead: Vec<String>,
    /// Sessions whose fate is unknown: a logout (or a login carrying them)
    /// whose answer never came, or a login carrying them that was refused.
    unsure: Vec<String>,
    /// Violations seen while the node ran.
    violations: Vec<String>,
    logins: u64,
    /// Logins that carried a live session (regenerate).
    regenerated: u64,
    refused_logins: u64,
    reads: u64,
}

/// One client: logins, reads and logouts until the node dies or `stop`.
async fn client_loop(
    url: String,
    ledger: Arc<Mutex<Ledger>>,
    seed: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let c = client();
    let mut rng = Rng(seed);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let roll = rng.range(0, 100);
        if roll < 45 {
            let (user, password) = if rng.chance(50) {
                ("alice", ALICE_PASSWORD)
            } else {
                ("bob", BOB_PASSWORD)
            };
            // A quarter of the logins carry a live session: a regenerate, after
            // which the carried token is dead. Its fate is unsure until the
            // answer arrives.
            let carried = {
                let mut ledger = ledger.lock().unwrap();
                if ledger.live.len() > 2 && rng.chance(25) {
                    let i = rng.range(0, ledger.live.len() as u64) as usize;
                    let value = ledger.live.swap_remove(i);
                    ledger.unsure.push(value.clone());
                    Some(value)
                } else {
                    None
                }
            };
            let Ok(res) = login_form((&c, &url), carried.as_deref(), user, password).await else {
                return;
            };
            let mut ledger = ledger.lock().unwrap();
            match res.status() {
                StatusCode::SEE_OTHER => {
                    ledger.live.push(session_cookie(&res));
                    ledger.logins += 1;
                    if let Some(value) = carried {
                        // Acknowledged: the pre-login token is dead.
                        ledger.unsure.retain(|v| v != &value);
                        ledger.dead.push(value);
                        ledger.regenerated += 1;
                    }
                }
                // Refused: the carried token may or may not have been
                // revoked (fail closed); it stays unsure.
                StatusCode::SERVICE_UNAVAILABLE => ledger.refused_logins += 1,
                other => ledger.violations.push(format!("login answered {other}")),
            }
        } else if roll < 90 {
            // Read a live token (200, or 503 past its lease while DynamoDB is
            // down) or a logged-out one (401, always).
            let (value, logged_out) = {
                let ledger = ledger.lock().unwrap();
                let pick_dead =
                    !ledger.dead.is_empty() && (ledger.live.is_empty() || rng.chance(40));
                if pick_dead {
                    let i = rng.range(0, ledger.dead.len() as u64) as usize;
                    (ledger.dead[i].clone(), true)
                } else if !ledger.live.is_empty() {
                    let i = rng.range(0, ledger.live.len() as u64) as usize;
                    (ledger.live[i].clone(), false)
                } else {
                    continue;
                }
            };
            let Ok(status) = whoami((&c, &url), &value).await else {
                return;
            };
            let mut ledger = ledger.lock().unwrap();
            ledger.reads += 1;
            let ok = if logged_out {
                status == StatusCode::UNAUTHORIZED
            } else {
                // Another client may have logged it out meanwhile.
                status == StatusCode::OK
                    || status == StatusCode::SERVICE_UNAVAILABLE
                    || !ledger.live.contains(&value)
            };
            if !ok {
                ledger.violations.push(format!(
                    "read of a {} token answered {status}",
                    if logged_out { "logged-out" } else { "live" }
                ));
            }
        } else {
            let value = {
                let mut ledger = ledger.lock().unwrap();
                if ledger.live.is_empty() {
                    continue;
                }
                let i = rng.range(0, ledger.live.len() as u64) as usize;
                let value = ledger.live.swap_remove(i);
                // Unsure until the answer arrives.
                ledger.unsure.push(value.clone());
                value
            };
            let Ok(status) = logout((&c, &url), &value).await else {
                return;
            };
            let mut ledger = ledger.lock().unwrap();
            ledger.unsure.retain(|v| v != &value);
            if status == StatusCode::SEE_OTHER {
                ledger.dead.push(value);
            } else {
                ledger.violations.push(format!("logout answered {status}"));
            }
        }
    }
}

/// Run `check` over `items` with a few requests in flight; returns the items
/// for which it returned false.
async fn failing<F, Fut>(items: &[String], check: F) -> Vec<String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let mut bad = Vec::new();
    for chunk in items.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for item in chunk {
            let item = item.clone();
            let fut = check(item.clone());
            set.spawn(async move { (item, fut.await) });
        }
        while let Some(joined) = set.join_next().await {
            let (item, ok) = joined.unwrap();
            if !ok {
                bad.push(item);
            }
        }
    }
    bad
}

const KILLS: usize = 24;

/// A fault for one run between kills: some runs with DynamoDB slow or
/// unreachable, so logouts queue up.
fn random_fault(rng: &mut Rng) -> Fault {
    match rng.range(0, 100) {
        0..=49 => Fault::Pass,
        50..=69 => Fault::Latency(Duration::from_millis(rng.range(20, 300))),
        70..=84 => Fault::Refuse,
        _ => Fault::BlackHole,
    }
}

/// Four client loops against `node` for a random while, then kill -9 in
/// their midst; the node's outbox, last read before the kill, if read.
async fn clients_then_kill_9(
    node: Node,
    c: &reqwest::Client,
    ledger: &Arc<Mutex<Ledger>>,
    rng: &mut Rng,
) -> Option<f64> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (ledger, stop) = (Arc::clone(ledger), Arc::clone(&stop));
            tokio::spawn(client_loop(node.url.clone(), ledger, rng.next(), stop))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(rng.range(50, 700))).await;
    let pending = outbox_pending((c, &node.url)).await;
    kill_9(node).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in clients {
        task.await.unwrap();
    }
    pending
}

/// Those of the cookie values `values` whose `/whoami` on the node at `url`
/// is not `expected`.
async fn whoami_not(
    c: &reqwest::Client,
    url: &str,
    values: &[String],
    expected: StatusCode,
) -> Vec<String> {
    let (c, url) = (c.clone(), url.to_owned());
    failing(values, move |v| {
        let (c, url) = (c.clone(), url.clone());
        async move { whoami((&c, &url), &v).await.ok() == Some(expected) }
    })
    .await
}

/// Whether DynamoDB holds the item of the session token `value`.
async fn in_dynamodb(tier: &DynamoTier, value: &str) -> bool {
    let item = tier.get(token(value).storage_key().as_bytes()).await;
    item.unwrap().is_some()
}

/// Those of the session tokens `values` whose item DynamoDB holds
/// (`stored`) or lacks (not `stored`) against that.
async fn stored_not(cluster: &Cluster, values: &[String], stored: bool) -> Vec<String> {
    let tier = cluster.tier.clone();
    failing(values, move |v| {
        let tier = tier.clone();
        async move { in_dynamodb(&tier, &v).await == stored }
    })
    .await
}

/// Logouts (and logins carrying a session) whose answer never came, or was
/// a refusal: log those sessions out again on the node at `url`; now they
/// count as logged out. Returns how many were sent again.
async fn log_out_the_unsure(c: &reqwest::Client, url: &str, ledger: &Mutex<Ledger>) -> usize {
    let unsure = std::mem::take(&mut ledger.lock().unwrap().unsure);
    for value in &unsure {
        assert_eq!(
            logout((c, url), value).await.unwrap(),
            StatusCode::SEE_OTHER
        );
        ledger.lock().unwrap().dead.push(value.clone());
    }
    unsure.len()
}

/// After the restart that followed kill `kill`, with DynamoDB answering and
/// the outbox drained: the client saw no violation, every acknowledged
/// login works on the node at `url`, and DynamoDB holds every live session
/// and no logged-out one. Returns how many live and logged-out tokens
/// were checked.
async fn assert_agreement(
    kill: usize,
    c: &reqwest::Client,
    url: &str,
    cluster: &Cluster,
    ledger: &Mutex<Ledger>,
) -> (usize, usize) {
    let (live, dead, violations) = {
        let ledger = ledger.lock().unwrap();
        (
            ledger.live.clone(),
            ledger.dead.clone(),
            ledger.violations.clone(),
        )
    };
    assert!(violations.is_empty(), "kill {kill}: {violations:?}");
    let lost = whoami_not(c, url, &live, StatusCode::OK).await;
    assert!(
        lost.is_empty(),
        "kill {kill}: {} acknowledged login(s) unusable after restart",
        lost.len()
    );
    assert!(
        stored_not(cluster, &live, true).await.is_empty(),
        "kill {kill}: live sessions missing in DynamoDB"
    );
    let kept = stored_not(cluster, &dead, false).await;
    assert!(
        kept.is_empty(),
        "kill {kill}: {} logged-out session(s) still in DynamoDB after the outbox drained",
        kept.len()
    );
    (live.len(), dead.len())
}

/// kill -9 at random moments of a client loop of logins, reads and logouts,
/// DynamoDB sometimes slow or down. After every restart: no token whose
/// logout was acknowledged is accepted (checked before DynamoDB is back),
/// every acknowledged login still works, and the outbox drains once
/// DynamoDB answers, leaving DynamoDB in agreement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_logout_and_no_login() {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let seed = std::env::var("EDGE_SESSION_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_u64);
    println!("crash test seed {seed:#x} (EDGE_SESSION_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let cluster = Cluster::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), cluster.tier.table(), &proxy);
    let c = client();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let (mut down_at_restart, mut most_pending, mut resent) = (0, 0.0f64, 0);
    let (mut live_checked, mut dead_checked) = (0, 0);

    let mut node = start(&config).await;
    for kill in 0..KILLS {
        let fault = random_fault(&mut rng);
        proxy.set(fault);
        if let Some(pending) = clients_then_kill_9(node, &c, &ledger, &mut rng).await {
            most_pending = most_pending.max(pending);
        }

        // Restart, half the time with DynamoDB still down if it was.
        let outage = matches!(fault, Fault::Refuse | Fault::BlackHole);
        if outage && rng.chance(50) {
            down_at_restart += 1;
        } else {
            proxy.set(Fault::Pass);
        }
        node = start(&config).await;
        let url = node.url.clone();

        // Tombstones are local and durable: no logged-out token comes back,
        // whatever DynamoDB says.
        let dead = ledger.lock().unwrap().dead.clone();
        let resurrected = whoami_not(&c, &url, &dead, StatusCode::UNAUTHORIZED).await;
        assert!(
            resurrected.is_empty(),
            "kill {kill}: {} logged-out token(s) accepted after restart",
            resurrected.len()
        );

        // DynamoDB answers again.
        proxy.set(Fault::Pass);
        eventually("the node is ready", || async {
            readyz((&c, &url)).await.ok() == Some(StatusCode::OK)
        })
        .await;
        resent += log_out_the_unsure(&c, &url, &ledger).await;
        eventually("the outbox drains once DynamoDB answers", || async {
            outbox_pending((&c, &url)).await == Some(0.0)
        })
        .await;
        let (live, dead) = assert_agreement(kill, &c, &url, &cluster, &ledger).await;
        live_checked += live;
        dead_checked += dead;
    }
    kill_9(node).await;
    let ledger = ledger.lock().unwrap();
    let live: BTreeSet<_> = ledger.live.iter().collect();
    assert!(ledger.dead.iter().all(|d| !live.contains(d)));
    assert!(
        ledger.logins >= KILLS as u64 && !ledger.dead.is_empty(),
        "the client loop did work: {} logins, {} logouts",
        ledger.logins,
        ledger.dead.len()
    );
    println!(
        "{KILLS} kills in {:?}: {} logins acknowledged ({} of them regenerating a live session; {} refused while DynamoDB was down), {} logouts acknowledged ({resent} re-sent after their node died), {} sessions still live, {} reads; {down_at_restart} restarts with DynamoDB down; outbox peaked at {most_pending}; after the restarts {live_checked} live and {dead_checked} logged-out tokens checked",
        started.elapsed(),
        ledger.logins,
        ledger.regenerated,
        ledger.refused_logins,
        ledger.dead.len(),
        ledger.live.len(),
        ledger.reads,
    );
}
