//! Signing in and out through the adapter: `renew()` kills the pre-login
//! key and `purge()` the session in both tiers, a planted key is never
//! adopted or bound, a session revoked mid-request is not written back,
//! and a bound session is the user's like any login.

use std::collections::HashMap;

use actix_session::storage::{SessionKey, SessionStore};
use actix_web::cookie::{time, Key};
use edge_session::{SessionToken, StoreSettings, USER_ID_KEY};

use super::{
    anonymous, assert_dead_in_both_tiers, every_cached, ferris, fresh_app, spawn_app, stored,
    user_sessions,
};
use crate::harness::{now, Cluster};

#[tokio::test]
async fn session_renew_kills_the_pre_login_key() {
    let cluster = Cluster::new().await;
    let key = Key::generate();
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(store.clone(), key.clone(), None);

    let (pre_login, old) = app.new_session().await;

    let logged_in = app.login("ferris", Some(&pre_login)).await;
    assert_eq!(logged_in.status, 200);
    assert_eq!(logged_in.visit(), ferris(1));
    let post_login = logged_in.cookie();
    let new = app.token_of(&post_login);
    assert_ne!(new, old, "login issues a new key");

    // The pre-login key is dead in both tiers, and on a cold node.
    assert_dead_in_both_tiers(&cluster, &store, &old).await;

    // Whoever holds the old cookie (a planted one, say) is anonymous and
    // empty; the user's new cookie carries the login and the state.
    let replay = app.get("/", Some(&pre_login)).await;
    assert_eq!(replay.visit(), anonymous(0));
    assert!(replay.cookie.is_none());
    assert_eq!(app.get("/", Some(&post_login)).await.visit(), ferris(1));
    let other = spawn_app(cluster.node(StoreSettings::default()), key, None);
    assert_eq!(other.get("/", Some(&post_login)).await.visit(), ferris(1));
    assert_eq!(
        cluster.scan().await.len(),
        1,
        "only the new session is stored"
    );
}

#[tokio::test]
async fn session_purge_kills_the_key_in_both_tiers() {
    let cluster = Cluster::new().await;
    let (store, app) = fresh_app(&cluster, None);

    let (cookie, token) = app.signed_in("ferris").await;
    assert_eq!(app.get("/", Some(&cookie)).await.visit(), ferris(0));

    let out = app.post("/logout", Some(&cookie)).await;
    assert_eq!(out.status, 200);
    let removal = out.cookie();
    assert_eq!(removal.value(), "");
    assert_eq!(removal.max_age(), Some(time::Duration::ZERO));

    assert_dead_in_both_tiers(&cluster, &store, &token).await;
    assert!(
        store
            .cache()
            .tombstone_of(&token.storage_key())
            .expect("sled")
            .is_some(),
        "tombstoned in sled"
    );

    // A client that kept the cookie is logged out all the same.
    let replay = app.get("/", Some(&cookie)).await;
    assert_eq!(replay.visit(), anonymous(0));
    assert!(replay.cookie.is_none());
}

#[tokio::test]
async fn planted_session_key_is_not_adopted() {
    let cluster = Cluster::new().await;
    let (store, app) = fresh_app(&cluster, None);

    let planted = SessionToken::generate();
    let garbage = "../../admin'; DROP TABLE sessions; --";
    for value in [planted.expose(), garbage.to_owned(), "A".repeat(4000)] {
        let cookie = app.sealed(&value);
        let read = app.get("/", Some(&cookie)).await;
        assert_eq!(read.status, 200);
        assert_eq!(read.visit(), anonymous(0));
        assert!(read.cookie.is_none());
        // Writing state issues a key of the server's own making.
        let written = app.post("/bump", Some(&cookie)).await;
        assert_eq!(written.visit(), anonymous(1));
        let issued = app.token_of(&written.cookie());
        assert_ne!(issued.expose(), value);
        assert!(stored(&cluster, &issued).await.is_some());
    }
    assert!(stored(&cluster, &planted).await.is_none());
    assert_eq!(cluster.scan().await.len(), 3, "only the issued sessions");

    // Called directly, no operation writes anything under a planted key.
    let ttl = time::Duration::seconds(60);
    let state = HashMap::from([("user_id".to_owned(), "\"admin\"".to_owned())]);
    for value in [planted.expose(), garbage.to_owned()] {
        let key = || SessionKey::try_from(value.clone()).expect("fits a cookie");
        assert_eq!(
            SessionStore::load(&store, &key()).await.expect("load"),
            None
        );
        assert!(SessionStore::update(&store, key(), state.clone(), &ttl)
            .await
            .is_err());
        SessionStore::update_ttl(&store, &key(), &ttl)
            .await
            .expect("nothing to extend");
        SessionStore::delete(&store, &key())
            .await
            .expect("nothing to delete");
    }
    assert!(stored(&cluster, &planted).await.is_none());
    assert_eq!(cluster.scan().await.len(), 3, "nothing written to DynamoDB");
    let planted_key = planted.storage_key();
    let holds_planted = |k: &[u8]| k.windows(32).any(|w| w == planted_key.as_bytes());
    assert!(
        every_cached(&store, |(_, k, _)| !holds_planted(k)),
        "nothing written to sled"
    );
}

#[tokio::test]
async fn revoked_mid_request_session_is_not_resurrected() {
    let cluster = Cluster::new().await;
    let (_, app) = fresh_app(&cluster, None);

    let (cookie, token) = app.signed_in("ferris").await;

    let req = app
        .http
        .post(format!("{}/revoked_mid_request", app.base))
        .header("x-revoke", token.expose());
    let late = app.send(req, Some(&cookie)).await;
    // The request fails; no key is issued that would carry the login on.
    assert_eq!(late.status, 500);
    assert!(late.cookie.is_none());
    assert!(cluster.scan().await.is_empty(), "nothing in DynamoDB");
    let replay = app.get("/", Some(&cookie)).await;
    assert_eq!(replay.visit(), anonymous(0), "still logged out");
}

/// A session bound through `USER_ID_KEY` is the user's like any login: it
/// is listed, and "log out everywhere" ends it.
#[tokio::test]
async fn bound_adapter_session_is_listed_and_killed_by_revoke_user() {
    let cluster = Cluster::new().await;
    let (store, app) = fresh_app(&cluster, None);

    let pre_login = app.post("/bump", None).await.cookie();
    let signed_in = app.login_at("/bind", "ferris", Some(&pre_login)).await;
    assert_eq!(signed_in.status, 200);
    let cookie = signed_in.cookie();
    let token = app.token_of(&cookie);
    assert_ne!(token, app.token_of(&pre_login), "binding renews the key");
    assert_eq!(app.get("/who", Some(&cookie)).await.body, "\"ferris\"");
    assert_eq!(app.get("/", Some(&cookie)).await.visit(), anonymous(1));
    let record = stored(&cluster, &token).await.expect("stored");
    assert_eq!(record.user_id.as_deref(), Some("ferris"));
    assert!(
        !record.data.contains_key(USER_ID_KEY),
        "the binding, not data"
    );

    let listed = user_sessions(&store, "ferris").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, token.storage_key());

    store.revoke_user("ferris", now()).await.expect("revoke");
    assert_eq!(app.get("/who", Some(&cookie)).await.body, "null");
    assert_eq!(app.get("/", Some(&cookie)).await.visit(), anonymous(0));
    assert!(user_sessions(&store, "ferris").await.is_empty());
    assert!(stored(&cluster, &token).await.is_none());
}

/// Session fixation through the adapter: binding a user to the key the
/// browser already carries (perhaps planted) is refused; only `renew()`
/// binds, under a new key.
#[tokio::test]
async fn binding_a_planted_key_without_renew_is_refused() {
    let cluster = Cluster::new().await;
    let (store, app) = fresh_app(&cluster, None);

    let (planted, token) = app.new_session().await;
    let before = stored(&cluster, &token).await.expect("stored");
    let res = app
        .login_at("/bind_in_place", "ferris", Some(&planted))
        .await;
    assert_eq!(res.status, 500);
    assert!(res.cookie.is_none());
    assert_eq!(
        stored(&cluster, &token).await,
        Some(before),
        "nothing written"
    );
    assert_eq!(app.get("/who", Some(&planted)).await.body, "null");
    assert!(user_sessions(&store, "ferris").await.is_empty());
}
