//! State kept across requests and nodes through the adapter, and its TTL:
//! extended on a change or on every request as the middleware says, never
//! past the node's idle timeout; an expired or empty session is not
//! stored, and a write that lost a race on another node is retried.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix_session::config::TtlExtensionPolicy;
use actix_session::storage::{SessionKey, SessionStore};
use actix_web::cookie::{time, Key};
use edge_session::{Policy, SessionToken, StoreSettings};

use super::{
    anonymous, counter_of, every_cached, fresh_app, persistent, spawn_app, stored,
    with_other_idle_timeout,
};
use crate::harness::{now, Cluster};

#[tokio::test]
async fn basic_workflow_keeps_state_across_requests_and_nodes() {
    let cluster = Cluster::new().await;
    let key = Key::generate();
    let app = spawn_app(cluster.node(StoreSettings::default()), key.clone(), None);

    // A visitor who stores nothing gets no cookie and costs no write.
    let first = app.get("/", None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.visit(), anonymous(0));
    assert!(first.cookie.is_none());
    assert!(cluster.scan().await.is_empty());

    let r1 = app.post("/bump", None).await;
    assert_eq!(r1.visit(), anonymous(1));
    let cookie = r1.cookie();
    let token = app.token_of(&cookie);
    for expected in 2..=3 {
        let r = app.post("/bump", Some(&cookie)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.visit(), anonymous(expected));
        assert_eq!(app.token_of(&r.cookie()), token, "an update keeps the key");
    }
    let read = app.get("/", Some(&cookie)).await;
    assert_eq!(read.visit(), anonymous(3));
    assert!(read.cookie.is_none(), "a read sets no cookie");

    let record = stored(&cluster, &token).await.expect("stored in DynamoDB");
    assert_eq!(counter_of(&record), Some("3"));
    assert_eq!(cluster.scan().await.len(), 1, "one session, one item");

    // Another edge node (its own, cold sled cache) serves the same session.
    let other = spawn_app(cluster.node(StoreSettings::default()), key, None);
    assert_eq!(other.get("/", Some(&cookie)).await.visit(), anonymous(3));
}

#[tokio::test]
async fn ttl_is_extended_on_state_change() {
    let cluster = Cluster::new().await;
    let (store, app) = fresh_app(&cluster, persistent(60, TtlExtensionPolicy::OnStateChanges));

    let created = app.post("/bump", None).await;
    let cookie = created.cookie();
    assert_eq!(cookie.max_age(), Some(time::Duration::seconds(60)));
    let token = app.token_of(&cookie);
    let v1 = stored(&cluster, &token).await.expect("stored");
    assert_eq!(
        v1.idle_timeout_ms, 60_000,
        "the middleware's TTL is the idle timeout"
    );

    // A request that changes nothing writes nothing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let read = app.get("/", Some(&cookie)).await;
    assert_eq!(read.visit(), anonymous(1));
    assert!(read.cookie.is_none());
    assert_eq!(stored(&cluster, &token).await.expect("stored"), v1);

    // A change writes the state and extends the session.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let changed = app.post("/bump", Some(&cookie)).await;
    assert_eq!(changed.visit(), anonymous(2));
    assert_eq!(
        changed.cookie().max_age(),
        Some(time::Duration::seconds(60))
    );
    let v2 = stored(&cluster, &token).await.expect("stored");
    assert!(v2.version > v1.version);
    assert!(v2.last_seen_at >= v1.last_seen_at + 20);
    assert_eq!(v2.idle_timeout_ms, 60_000);
    assert_eq!(counter_of(&v2), Some("2"));

    // A session issued with another idle timeout takes the middleware's on
    // its next change.
    let data = BTreeMap::from([("counter".to_owned(), "7".to_owned())]);
    let other = with_other_idle_timeout(&store, data).await;
    let r = app.post("/bump", Some(&app.sealed(&other.expose()))).await;
    assert_eq!(r.visit(), anonymous(8));
    let record = stored(&cluster, &other).await.expect("stored");
    assert_eq!(record.idle_timeout_ms, 60_000);
}

#[tokio::test]
async fn ttl_is_extended_on_every_request() {
    let cluster = Cluster::new().await;
    let (store, app) = fresh_app(&cluster, persistent(60, TtlExtensionPolicy::OnEveryRequest));

    let (cookie, token) = app.new_session().await;
    let v1 = stored(&cluster, &token).await.expect("stored");

    // A read-only request extends the session too, and re-sets the cookie.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let read = app.get("/", Some(&cookie)).await;
    assert_eq!(read.visit(), anonymous(1));
    let again = read.cookie();
    assert_eq!(again.max_age(), Some(time::Duration::seconds(60)));
    assert_eq!(app.token_of(&again), token, "same session, same key");
    let v2 = stored(&cluster, &token).await.expect("stored");
    assert!(v2.version > v1.version);
    assert!(v2.last_seen_at >= v1.last_seen_at + 20);
    assert_eq!(v2.idle_timeout_ms, 60_000);
    assert_eq!(v2.data, v1.data, "the TTL extension leaves the state alone");

    // The extension writes the middleware's TTL, not just `last_seen_at`.
    let other = with_other_idle_timeout(&store, BTreeMap::new()).await;
    app.get("/", Some(&app.sealed(&other.expose()))).await;
    assert_eq!(
        stored(&cluster, &other)
            .await
            .expect("stored")
            .idle_timeout_ms,
        60_000
    );
}

#[tokio::test]
async fn expired_session_is_not_loaded() {
    let cluster = Cluster::new().await;
    let (store, app) = fresh_app(&cluster, persistent(1, TtlExtensionPolicy::OnStateChanges));

    let (cookie, old) = app.new_session().await;
    assert_eq!(app.get("/", Some(&cookie)).await.visit(), anonymous(1));

    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let read = app.get("/", Some(&cookie)).await;
    assert_eq!(read.visit(), anonymous(0), "the expired state is gone");
    assert!(read.cookie.is_none());
    // A change starts a fresh session under a new key.
    let fresh = app.post("/bump", Some(&cookie)).await;
    assert_eq!(fresh.visit(), anonymous(1));
    let new = app.token_of(&fresh.cookie());
    assert_ne!(new, old);
    assert_eq!(store.load(&old, now()).await.expect("load"), None);
}

/// The middleware's TTL (one day for a browser session) does not outlive
/// the node's idle timeout: an app cannot keep sessions alive longer than
/// the node's policy allows.
#[tokio::test]
async fn adapter_sessions_obey_the_idle_policy() {
    let cluster = Cluster::new().await;
    let policy = Policy {
        idle_timeout_ms: 1_500,
        touch_interval_ms: 500,
        ..Policy::default()
    };
    let store = cluster.node(StoreSettings {
        policy,
        ..StoreSettings::default()
    });
    // The middleware's default lifecycle: a browser session, state TTL 1 day.
    let app = spawn_app(store.clone(), Key::generate(), None);

    let (cookie, token) = app.new_session().await;
    let record = stored(&cluster, &token).await.expect("stored");
    assert_eq!(record.idle_timeout_ms, 1_500, "the node's idle timeout");
    assert_eq!(app.post("/bump", Some(&cookie)).await.visit(), anonymous(2));
    let record = stored(&cluster, &token).await.expect("stored");
    assert_eq!(record.idle_timeout_ms, 1_500, "an update keeps the bound");

    // Unused for longer than the node's idle timeout: gone.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let read = app.get("/", Some(&cookie)).await;
    assert_eq!(read.visit(), anonymous(0), "the idle session is dead");
    assert_eq!(store.load(&token, now()).await.expect("load"), None);
}

#[tokio::test]
async fn update_retries_after_a_write_on_another_node() {
    let cluster = Cluster::new().await;
    let a = cluster.node(StoreSettings::default());
    let b = cluster.node(StoreSettings::default());
    let ttl = time::Duration::seconds(60);
    let state = |n: &str| HashMap::from([("counter".to_owned(), n.to_owned())]);

    let key: String = SessionStore::save(&a, state("1"), &ttl)
        .await
        .expect("save")
        .into();
    let session_key = || SessionKey::try_from(key.clone()).expect("fits a cookie");
    // A holds version 1 in its cache; B writes version 2 behind its back.
    assert_eq!(
        SessionStore::load(&a, &session_key()).await.expect("load"),
        Some(state("1"))
    );
    SessionStore::update(&b, session_key(), state("2"), &ttl)
        .await
        .expect("update on b");

    // A's write conflicts on its stale version, reloads, and goes through.
    let kept = SessionStore::update(&a, session_key(), state("3"), &ttl)
        .await
        .expect("update on a");
    assert_eq!(String::from(kept), key, "same key");
    let token = SessionToken::parse(&key).expect("a token");
    let record = stored(&cluster, &token).await.expect("stored");
    assert_eq!(counter_of(&record), Some("3"));
    assert_eq!(record.version, 3);
    let cold = cluster.node(StoreSettings::default());
    assert_eq!(
        SessionStore::load(&cold, &session_key())
            .await
            .expect("load"),
        Some(state("3"))
    );
}

/// `renew()` on a session whose state is empty: the old key dies, and the
/// key the middleware is handed back names nothing stored in either tier.
#[tokio::test]
async fn an_empty_session_is_never_stored() {
    let cluster = Cluster::new().await;
    let (store, app) = fresh_app(&cluster, None);

    let (cookie, old) = app.new_session().await;
    let reset = app.post("/reset", Some(&cookie)).await;
    assert_eq!(reset.status, 200);
    let handed = app.token_of(&reset.cookie());
    assert_ne!(handed, old);
    assert!(cluster.scan().await.is_empty(), "nothing in DynamoDB");
    assert!(
        every_cached(&store, |(tree, _, _)| tree != "sessions"),
        "nothing cached in sled"
    );
    // The handed-out key leads nowhere; the next state gets a key of its own.
    let read = app.get("/", Some(&reset.cookie())).await;
    assert_eq!(read.visit(), anonymous(0));
    assert!(read.cookie.is_none());
    let bumped = app.post("/bump", Some(&reset.cookie())).await;
    assert_eq!(bumped.visit(), anonymous(1));
    let fresh = app.token_of(&bumped.cookie());
    assert_ne!(fresh, handed);
    assert_eq!(cluster.scan().await.len(), 1);
}
