//! Session events: from the table's stream, once per region, to the
//! `/v1/events` feed and to signed webhooks (the Express example's receiver,
//! which verifies each delivery with the Standard Webhooks reference
//! library from npm).

use std::collections::BTreeMap;
use std::process::Child;
use std::time::Duration;

use reqwest::header::COOKIE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{
    anonymous_token, browser_login, client, cookie, end_session, eventually, logout, metric,
    my_sessions, node_toml, service_login, table_name, v1_call, v1_session, TestNode,
    ALICE_PASSWORD, BOB_PASSWORD,
};

/// The secret node and receiver share.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The example's webhook receiver (`examples/express-gateway/webhooks.js`).
struct Receiver {
    child: Child,
    url: String,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(secret: &str) -> Receiver {
        let (child, url) = crate::gateway::start_example(
            "webhooks.js",
            "standardwebhooks",
            &[("WEBHOOK_SECRET", secret)],
        );
        Receiver { child, url }
    }

    fn endpoint(&self) -> String {
        format!("{}/webhooks/edge-session", self.url)
    }

    /// A metric of the node's deliveries to this receiver (labelled by the
    /// webhook's default name, its URL's host and path: unique per test).
    fn metric(&self, name: &str) -> String {
        let label = self.endpoint().replace("http://", "");
        format!("edge_session_webhook_{name}{{webhook=\"{label}\"}}")
    }

    /// What it received: the events (once each, in arrival order), how
    /// many deliveries it refused, how many repeated an id.
    async fn received(&self) -> (Vec<Value>, u64, u64) {
        let body: Value = client()
            .get(format!("{}/webhooks/received", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            body["events"].as_array().unwrap().clone(),
            body["rejected"].as_u64().unwrap(),
            body["duplicates"].as_u64().unwrap(),
        )
    }

    async fn set_down(&self, down: bool) {
        let path = if down { "down" } else { "up" };
        let res = client()
            .post(format!("{}/webhooks/{path}", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
}

/// `[events]` on, with the webhooks `hooks` (url, secret).
fn events_toml(hooks: &[(String, &str)]) -> String {
    let mut toml =
        "[events]\nenabled = true\nbeat_ms = 200\nlease_ms = 1000\npoll_interval_ms = 100\n"
            .to_owned();
    for (url, secret) in hooks {
        toml += &format!("[[events.webhooks]]\nurl = \"{url}\"\nsecret = \"{secret}\"\n");
    }
    toml
}

/// A node over `table` with the config `extra` (events on, as a test's
/// [`events_toml`] writes them).
async fn events_node(table: &str, extra: &str) -> TestNode {
    TestNode::spawn_on(table, extra).await
}

/// A node over a fresh table with events on and no webhook.
async fn events_node_without_hooks() -> TestNode {
    events_node(&table_name(), &events_toml(&[])).await
}

/// One page of the feed after `after` (JSON, long poll of `wait` s).
async fn feed(node: &TestNode, after: Option<&str>, wait: u64) -> (Vec<Value>, String) {
    let mut path = format!("/v1/events?wait={wait}");
    if let Some(after) = after {
        path += &format!("&after={after}");
    }
    let res = node.v1(Method::GET, &path).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    (
        body["events"].as_array().unwrap().clone(),
        body["cursor"].as_str().unwrap().to_owned(),
    )
}

/// Every event from `cursor` on until `done` holds of what came (at most
/// the harness's patience); the events and the cursor after them.
async fn collect_until(
    node: &TestNode,
    mut cursor: String,
    done: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, String) {
    let mut all = Vec::new();
    let started = std::time::Instant::now();
    while !done(&all) {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "events so far: {all:#?}"
        );
        let (events, next) = feed(node, Some(&cursor), 2).await;
        all.extend(events);
        cursor = next;
    }
    (all, cursor)
}

/// Once the emitter runs (a probe sign-in's event comes back through the
/// feed; an emitter starting from the stream's end misses what came before
/// it, so probes are repeated): the feed's cursor after it.
async fn emitting(node: &TestNode) -> String {
    let (_, mut cursor) = feed(node, None, 0).await;
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(45), "no emitter");
        service_login(node, "probe").await;
        let (events, next) = feed(node, Some(&cursor), 2).await;
        cursor = next;
        if events.iter().any(|e| e["user"] == "probe") {
            // What else the probe wrote comes within the same wait.
            let (_, next) = feed(node, Some(&cursor), 1).await;
            return next;
        }
    }
}

fn kinds(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_kind_of_session_end_emits_one_event() {
    let table = table_name();
    let extra = format!("{}[session]\nmax_per_user = 2\n", events_toml(&[]));
    let node = events_node(&table, &extra).await;
    let cursor = emitting(&node).await;

    // created, then signed in (its previous session named), signed out.
    let anon = anonymous_token(&node).await;
    let res = v1_session(&node, Method::POST, "/v1/session/regenerate", &anon)
        .json(&json!({"user_id": "dora"}))
        .send()
        .await
        .unwrap();
    let dora: Value = res.json().await.unwrap();
    assert_eq!(
        end_session(&node, dora["token"].as_str().unwrap()).await,
        StatusCode::NO_CONTENT
    );

    // Revoked by the user from another session, and by an admin.
    let first = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let second = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let listed = my_sessions(&node, &second).await;
    let other = listed.iter().find(|s| s["current"] == false).unwrap();
    let res = node
        .client
        .post(node.at(&format!(
            "/me/sessions/{}/revoke",
            other["handle"].as_str().unwrap()
        )))
        .header(COOKIE, cookie(&second))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success() || res.status().is_redirection());
    let handle = |token: &str| {
        edge_session::SessionToken::parse(token)
            .unwrap()
            .storage_key()
            .handle()
    };
    let res = node
        .v1(
            Method::DELETE,
            &format!("/v1/users/alice/sessions/{}", handle(&second)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // Evicted: a third sign-in of bob past max_per_user = 2.
    let b1 = browser_login(&node, "bob", BOB_PASSWORD).await;
    let _b2 = browser_login(&node, "bob", BOB_PASSWORD).await;
    let _b3 = browser_login(&node, "bob", BOB_PASSWORD).await;
    // Signed out everywhere: bob's two left are revoked with it.
    eventually("bob's oldest evicted", || async {
        crate::harness::whoami(&node, &b1).await.unwrap() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(
        v1_call(&node, Method::DELETE, "/v1/users/bob/sessions")
            .await
            .0,
        StatusCode::OK
    );

    let expected: BTreeMap<(&str, &str), usize> = BTreeMap::from([
        (("session.created", ""), 1),
        (("session.signed_in", ""), 6),
        (("session.signed_out", "user"), 1),
        (("session.revoked", "user"), 1),
        (("session.revoked", "admin"), 1),
        (("session.evicted", "max_per_user"), 1),
        (("session.revoked", "signed_out_everywhere"), 2),
        (("user.signed_out_everywhere", ""), 1),
    ]);
    let total: usize = expected.values().sum();
    let (events, _) = collect_until(&node, cursor, |e| e.len() >= total).await;
    // Nothing more trickles in.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut counted: BTreeMap<(String, String), usize> = BTreeMap::new();
    for k in kinds(&events) {
        *counted.entry(k).or_default() += 1;
    }
    let expected: BTreeMap<(String, String), usize> = expected
        .into_iter()
        .map(|((t, r), n)| ((t.to_owned(), r.to_owned()), n))
        .collect();
    assert_eq!(counted, expected, "{events:#?}");
    // Ids are unique, no event carries a token, the sign-in names the
    // session it replaced.
    let ids: std::collections::BTreeSet<_> = events.iter().map(|e| e["id"].to_string()).collect();
    assert_eq!(ids.len(), events.len());
    let text = serde_json::to_string(&events).unwrap();
    for secret in [&anon, &first, &second, &b1] {
        assert!(!text.contains(secret.as_str()), "a token in an event");
    }
    let dora_in = events
        .iter()
        .find(|e| e["type"] == "session.signed_in" && e["user"] == "dora")
        .unwrap();
    assert_eq!(dora_in["previous_handle"], json!(handle(&anon)));
}

#[tokio::test]
async fn ttl_expiry_emits_session_expired() {
    let extra = format!(
        "{}[session]\nidle_timeout_secs = 2\ntouch_interval_secs = 1\n",
        events_toml(&[])
    );
    let node = events_node(&table_name(), &extra).await;
    let cursor = emitting(&node).await;
    let token = service_login(&node, "erin").await;
    let key = edge_session::SessionToken::parse(&token)
        .unwrap()
        .storage_key();
    // Nobody reads it again: only DynamoDB's TTL (the emulator's sweep,
    // every second) deletes it, once `exp` has passed.
    let erins = |e: &&Value| e["type"] == "session.expired" && e["user"] == "erin";
    let (events, _) = collect_until(&node, cursor, |e| e.iter().any(|e| erins(&e))).await;
    let expired = events.iter().find(erins).unwrap();
    assert_eq!(expired["user"], "erin");
    assert_eq!(expired["reason"], "idle");
    assert_eq!(expired["handle"], json!(key.handle()));
    assert!(node
        .store
        .dynamo()
        .get(key.as_bytes())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn webhook_signature_verifies_with_the_reference_library() {
    let good = Receiver::start(SECRET);
    // A second receiver that knows another secret refuses every delivery.
    let other = Receiver::start("whsec_c2VjcmV0LW9mLWFub3RoZXItbm9kZS1zZWNyZXQ=");
    let extra = events_toml(&[(good.endpoint(), SECRET), (other.endpoint(), SECRET)]);
    let node = events_node(&table_name(), &extra).await;
    emitting(&node).await;
    let cookie = browser_login(&node, "alice", ALICE_PASSWORD).await;
    assert_eq!(logout(&node, &cookie).await.unwrap(), StatusCode::SEE_OTHER);
    eventually("alice's sign-out verified and received", || async {
        let (events, _, _) = good.received().await;
        events
            .iter()
            .any(|e| e["type"] == "session.signed_out" && e["user"] == "alice")
    })
    .await;
    let (events, rejected, _) = good.received().await;
    assert_eq!(rejected, 0);
    assert!(events
        .iter()
        .all(|e| e["id"].as_str().unwrap().starts_with("evt_")));
    eventually("the other receiver refused deliveries", || async {
        other.received().await.1 > 0
    })
    .await;
    assert!(other.received().await.0.is_empty());
    assert!(metric(&node, &other.metric("failed_total")).await > Some(0.0));
}

/// Sign alice in and out `n` times; the handles signed out.
async fn sign_ins_and_outs(node: &TestNode, n: usize) {
    for _ in 0..n {
        let c = browser_login(node, "alice", ALICE_PASSWORD).await;
        assert_eq!(logout(node, &c).await.unwrap(), StatusCode::SEE_OTHER);
    }
}

/// The receiver got `n` sign-outs of alice, each once, and saw no forgery.
async fn received_sign_outs(receiver: &Receiver, n: usize) -> Vec<Value> {
    eventually(&format!("{n} sign-outs received"), || async {
        let (events, _, _) = receiver.received().await;
        events
            .iter()
            .filter(|e| e["type"] == "session.signed_out")
            .count()
            >= n
    })
    .await;
    let (events, rejected, _) = receiver.received().await;
    assert_eq!(rejected, 0);
    let outs: Vec<Value> = events
        .into_iter()
        .filter(|e| e["type"] == "session.signed_out")
        .collect();
    assert_eq!(outs.len(), n, "{outs:#?}");
    outs
}

#[tokio::test]
async fn a_webhook_receiver_down_for_a_while_loses_no_event() {
    let receiver = Receiver::start(SECRET);
    let node = events_node(
        &table_name(),
        &events_toml(&[(receiver.endpoint(), SECRET)]),
    )
    .await;
    emitting(&node).await;
    receiver.set_down(true).await;
    sign_ins_and_outs(&node, 5).await;
    eventually("deliveries failing while it is down", || async {
        metric(&node, &receiver.metric("failed_total")).await >= Some(3.0)
    })
    .await;
    assert!(metric(&node, &receiver.metric("pending")).await >= Some(1.0));
    receiver.set_down(false).await;
    let outs = received_sign_outs(&receiver, 5).await;
    // In the order they happened: each sign-out after its own sign-in.
    let (events, _, _) = receiver.received().await;
    for out in &outs {
        let at = |kind: &str| {
            events
                .iter()
                .position(|e| e["type"] == kind && e["handle"] == out["handle"])
        };
        assert!(at("session.signed_in") < at("session.signed_out"));
    }
    assert_eq!(
        metric(&node, &receiver.metric("dropped_total"))
            .await
            .unwrap_or(0.0),
        0.0
    );
}

#[tokio::test]
async fn events_survive_a_node_restart() {
    let receiver = Receiver::start(SECRET);
    receiver.set_down(true).await;
    let table = table_name();
    let extra = events_toml(&[(receiver.endpoint(), SECRET)]);
    // The data directory outlives the first process.
    let dir = tempfile::tempdir().unwrap();
    let toml = node_toml(dir.path(), &table, &extra);
    let node = TestNode::spawn_toml(tempfile::tempdir().unwrap(), &toml).await;
    let cursor = emitting(&node).await;
    sign_ins_and_outs(&node, 3).await;
    // Logged (the feed has them), not delivered (the receiver is down).
    let (logged, _) = collect_until(&node, cursor.clone(), |e| {
        e.iter()
            .filter(|e| e["type"] == "session.signed_out")
            .count()
            >= 3
    })
    .await;
    node.stop().await;
    receiver.set_down(false).await;
    // The node again, on the same data: it takes the emitter's slot back
    // and delivers what the log holds from the webhook's cursor.
    let again = TestNode::spawn_toml(dir, &toml).await;
    let outs = received_sign_outs(&receiver, 3).await;
    let logged_ids: Vec<_> = logged
        .iter()
        .filter(|e| e["type"] == "session.signed_out")
        .map(|e| e["id"].clone())
        .collect();
    let delivered_ids: Vec<_> = outs.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(delivered_ids, logged_ids);
    // The feed still resumes from the cursor taken before the restart.
    let (events, _) = feed(&again, Some(&cursor), 0).await;
    assert_eq!(events[0]["id"], logged[0]["id"]);
}

#[tokio::test]
async fn two_nodes_emit_each_event_once() {
    let receiver = Receiver::start(SECRET);
    let table = table_name();
    let extra = events_toml(&[(receiver.endpoint(), SECRET)]);
    let a = events_node(&table, &extra).await;
    let b = events_node(&table, &extra).await;
    emitting(&a).await;
    sign_ins_and_outs(&a, 3).await;
    sign_ins_and_outs(&b, 3).await;
    received_sign_outs(&receiver, 6).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (events, rejected, duplicates) = receiver.received().await;
    assert_eq!((rejected, duplicates), (0, 0));
    let signed_in = events
        .iter()
        .filter(|e| e["type"] == "session.signed_in" && e["user"] == "alice")
        .count();
    assert_eq!(signed_in, 6, "{events:#?}");
    // Either node serves the same log.
    let (from_a, _) = feed(&a, Some("0"), 0).await;
    let (from_b, _) = feed(&b, Some("0"), 0).await;
    assert_eq!(from_a, from_b);
    let ids: std::collections::BTreeSet<_> = from_a.iter().map(|e| e["id"].to_string()).collect();
    assert_eq!(ids.len(), from_a.len(), "an event logged twice");
}

#[tokio::test]
async fn the_feed_streams_server_sent_events_and_refuses_bad_cursors() {
    let node = events_node_without_hooks().await;
    let cursor = emitting(&node).await;
    let mut res = node
        .v1(Method::GET, &format!("/v1/events?after={cursor}"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    sign_ins_and_outs(&node, 1).await;
    let mut text = String::new();
    while !text.contains("event: session.signed_out") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), res.chunk())
            .await
            .expect("an event within 30 s")
            .unwrap()
            .expect("the stream stays open");
        text += std::str::from_utf8(&chunk).unwrap();
    }
    assert!(text.contains("event: session.signed_in\ndata: {"), "{text}");
    assert!(text.starts_with("id: "), "{text}");
    for bad in ["after=x", "limit=0", "limit=101", "wait=31", "nope=1"] {
        assert_eq!(
            v1_call(&node, Method::GET, &format!("/v1/events?{bad}"))
                .await
                .0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    // A node without events says so.
    let off = TestNode::spawn().await;
    let res = off.v1(Method::GET, "/v1/events").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "events_disabled");
}

/// Figures for docs/design.md (`-- --nocapture`): how long after a logout
/// was answered its `session.signed_out` reached the receiver, with the
/// emitter's default polling (500 ms per shard). Asserts delivery, not time.
#[tokio::test]
async fn delivery_latency_from_a_logout_to_the_webhook() {
    let receiver = Receiver::start(SECRET);
    let hooks = events_toml(&[(receiver.endpoint(), SECRET)]);
    let defaults = hooks.replace(
        "beat_ms = 200\nlease_ms = 1000\npoll_interval_ms = 100\n",
        "",
    );
    let node = events_node(&table_name(), &defaults).await;
    emitting(&node).await;
    let mut took = Vec::new();
    for _ in 0..30 {
        let c = browser_login(&node, "alice", ALICE_PASSWORD).await;
        let handle = edge_session::SessionToken::parse(&c)
            .unwrap()
            .storage_key()
            .handle();
        assert_eq!(logout(&node, &c).await.unwrap(), StatusCode::SEE_OTHER);
        let answered = std::time::Instant::now();
        loop {
            let (events, _, _) = receiver.received().await;
            if events
                .iter()
                .any(|e| e["type"] == "session.signed_out" && e["handle"] == handle.as_str())
            {
                break;
            }
            assert!(
                answered.elapsed() < Duration::from_secs(30),
                "not delivered"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.push(answered.elapsed());
    }
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "logout answered -> session.signed_out at the webhook, {} logouts: p50 {:?}, p90 {:?}, max {:?}",
        took.len(),
        at(0.5),
        at(0.9),
        took[took.len() - 1]
    );
}

/// A burst of new sessions: every one is logged once, in batches (figures
/// with `-- --nocapture`: how long the log took to hold them all).
#[tokio::test]
async fn a_burst_of_sessions_is_logged_once_each() {
    let node = events_node_without_hooks().await;
    let cursor = emitting(&node).await;
    let started = std::time::Instant::now();
    let burst = 400;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, url) = (node.client.clone(), node.url.clone());
        workers.spawn(async move {
            for _ in 0..burst / 8 {
                anonymous_token((&client, url.as_str())).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let written = started.elapsed();
    let (events, _) = collect_until(&node, cursor, |e| {
        e.iter().filter(|e| e["type"] == "session.created").count() >= burst
    })
    .await;
    let ids: std::collections::BTreeSet<_> = events.iter().map(|e| e["id"].to_string()).collect();
    assert_eq!(ids.len(), events.len(), "an event logged twice");
    eprintln!(
        "{burst} sessions created in {written:?}; all {} events logged {:?} after the first",
        events.len(),
        started.elapsed()
    );
}
