//! The actix-session adapter through a real actix-web `HttpServer` on
//! 127.0.0.1:0, driven by a real HTTP client, over a real DynamoDB-wire
//! server. The session cookie is handled by hand: the tests read `Set-Cookie`
//! and send `Cookie`, and open the (private, encrypted) cookie with the
//! middleware's key to learn the session token and inspect both tiers.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::time::Duration;

use actix_session::config::{PersistentSession, TtlExtensionPolicy};
use actix_session::storage::{SessionKey, SessionStore};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{time, Cookie, CookieJar, Key};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use edge_session::{
    codec, NewSession, Policy, SessionRecord, SessionToken, StoreSettings, TieredStore, USER_ID_KEY,
};
use serde::{Deserialize, Serialize};

use crate::harness::{now, Cluster};

const COOKIE: &str = "id";

// ---------------------------------------------------------------- the app

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Visit {
    user_id: Option<String>,
    counter: i32,
}

fn visit(session: &Session) -> actix_web::Result<Visit> {
    Ok(Visit {
        user_id: session.get::<String>("user_id")?,
        counter: session.get::<i32>("counter")?.unwrap_or(0),
    })
}

async fn index(session: Session) -> actix_web::Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(visit(&session)?))
}

async fn bump(session: Session) -> actix_web::Result<HttpResponse> {
    let mut v = visit(&session)?;
    v.counter += 1;
    session.insert("counter", v.counter)?;
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Deserialize)]
struct Login {
    user_id: String,
}

async fn login(body: web::Json<Login>, session: Session) -> actix_web::Result<HttpResponse> {
    session.insert("user_id", &body.user_id)?;
    session.renew();
    Ok(HttpResponse::Ok().json(visit(&session)?))
}

async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().finish()
}

/// Sign in the adapter's way: a new key, bound to the user.
async fn bind(body: web::Json<Login>, session: Session) -> actix_web::Result<HttpResponse> {
    session.renew();
    session.insert(USER_ID_KEY, &body.user_id)?;
    Ok(HttpResponse::Ok().finish())
}

/// Bind a user to the key the browser already carries (no renew): what an
/// app must not do, since that key may have been planted.
async fn bind_in_place(
    body: web::Json<Login>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    session.insert(USER_ID_KEY, &body.user_id)?;
    Ok(HttpResponse::Ok().finish())
}

/// The bound user, as the adapter reports it.
async fn who(session: Session) -> actix_web::Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(session.get::<String>(USER_ID_KEY)?))
}

/// Forget everything and take a new key: a renew with empty state.
async fn reset(session: Session) -> HttpResponse {
    session.clear();
    session.renew();
    HttpResponse::Ok().finish()
}

/// Another tab logs out (or an admin revokes the session) while this request
/// runs: the session is destroyed after the middleware loaded it and before
/// the handler's change is written.
async fn revoked_mid_request(
    req: HttpRequest,
    store: web::Data<TieredStore>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let token = req
        .headers()
        .get("x-revoke")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| SessionToken::parse(v).ok())
        .ok_or_else(|| actix_web::error::ErrorBadRequest("x-revoke"))?;
    store
        .destroy(&token, now())
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    bump(session).await
}

struct TestApp {
    base: String,
    key: Key,
    http: reqwest::Client,
}

/// Serve the handlers over `store` on 127.0.0.1:0. `lifecycle: None` is the
/// middleware's default (a browser session).
fn spawn_app(store: TieredStore, key: Key, lifecycle: Option<PersistentSession>) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));
    let cookie_key = key.clone();
    let server = HttpServer::new(move || {
        let mut middleware = SessionMiddleware::builder(store.clone(), cookie_key.clone())
            .cookie_name(COOKIE.into())
            .cookie_secure(false);
        if let Some(lifecycle) = lifecycle.clone() {
            middleware = middleware.session_lifecycle(lifecycle);
        }
        App::new()
            .wrap(middleware.build())
            .app_data(web::Data::new(store.clone()))
            .route("/", web::get().to(index))
            .route("/bump", web::post().to(bump))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/revoked_mid_request", web::post().to(revoked_mid_request))
            .route("/bind", web::post().to(bind))
            .route("/bind_in_place", web::post().to(bind_in_place))
            .route("/who", web::get().to(who))
            .route("/reset", web::post().to(reset))
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    TestApp {
        base,
        key,
        http: reqwest::Client::new(),
    }
}

fn persistent(ttl_secs: i64, policy: TtlExtensionPolicy) -> Option<PersistentSession> {
    Some(
        PersistentSession::default()
            .session_ttl(time::Duration::seconds(ttl_secs))
            .session_ttl_extension_policy(policy),
    )
}

struct Reply {
    status: u16,
    /// The session cookie the response sets, if any.
    cookie: Option<Cookie<'static>>,
    body: String,
}

impl Reply {
    fn visit(&self) -> Visit {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    fn cookie(&self) -> Cookie<'static> {
        self.cookie
            .clone()
            .expect("the response sets the session cookie")
    }
}

impl TestApp {
    async fn send(&self, req: reqwest::RequestBuilder, cookie: Option<&Cookie<'_>>) -> Reply {
        let req = match cookie {
            Some(c) => req.header("cookie", c.stripped().encoded().to_string()),
            None => req,
        };
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let cookie = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| Cookie::parse_encoded(v.to_str().ok()?.to_owned()).ok())
            .find(|c| c.name() == COOKIE);
        let body = resp.text().await.expect("body");
        Reply {
            status,
            cookie,
            body,
        }
    }

    async fn get(&self, path: &str, cookie: Option<&Cookie<'_>>) -> Reply {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req, cookie).await
    }

    async fn post(&self, path: &str, cookie: Option<&Cookie<'_>>) -> Reply {
        let req = self.http.post(format!("{}{path}", self.base));
        self.send(req, cookie).await
    }

    async fn login(&self, user: &str, cookie: Option<&Cookie<'_>>) -> Reply {
        self.login_at("/login", user, cookie).await
    }

    async fn login_at(&self, path: &str, user: &str, cookie: Option<&Cookie<'_>>) -> Reply {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&serde_json::json!({ "user_id": user }));
        self.send(req, cookie).await
    }

    /// The session token inside a cookie this app set.
    fn token_of(&self, cookie: &Cookie<'_>) -> SessionToken {
        let mut jar = CookieJar::new();
        jar.add_original(cookie.clone().into_owned());
        let opened = jar
            .private(&self.key)
            .get(COOKIE)
            .expect("the cookie opens with the app's key");
        SessionToken::parse(opened.value()).expect("the cookie carries a session token")
    }

    /// A cookie that passes the middleware's crypto and carries `value`:
    /// what an attacker who could forge cookies would plant.
    fn sealed(&self, value: &str) -> Cookie<'static> {
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key)
            .add(Cookie::new(COOKIE, value.to_owned()));
        jar.get(COOKIE).expect("just added").clone()
    }
}

/// The record DynamoDB holds for `token`, if any.
async fn stored(cluster: &Cluster, token: &SessionToken) -> Option<SessionRecord> {
    let item = cluster
        .tier
        .get(token.storage_key().as_bytes())
        .await
        .expect("DynamoDB get")?;
    Some(codec::decode(&item.body).expect("decodable record"))
}

fn counter_of(record: &SessionRecord) -> Option<&str> {
    record.data.get("counter").map(String::as_str)
}

fn anonymous(counter: i32) -> Visit {
    Visit {
        user_id: None,
        counter,
    }
}

fn ferris(counter: i32) -> Visit {
    Visit {
        user_id: Some("ferris".into()),
        counter,
    }
}

// ---------------------------------------------------------------- tests

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
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(
        store.clone(),
        Key::generate(),
        persistent(60, TtlExtensionPolicy::OnStateChanges),
    );

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
    let (other, _) = store
        .create(
            NewSession {
                data: BTreeMap::from([("counter".to_owned(), "7".to_owned())]),
                idle_timeout_ms: Some(300_000),
                binding: None,
            },
            now(),
        )
        .await
        .expect("create");
    let r = app.post("/bump", Some(&app.sealed(&other.expose()))).await;
    assert_eq!(r.visit(), anonymous(8));
    let record = stored(&cluster, &other).await.expect("stored");
    assert_eq!(record.idle_timeout_ms, 60_000);
}

#[tokio::test]
async fn ttl_is_extended_on_every_request() {
    let cluster = Cluster::new().await;
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(
        store.clone(),
        Key::generate(),
        persistent(60, TtlExtensionPolicy::OnEveryRequest),
    );

    let cookie = app.post("/bump", None).await.cookie();
    let token = app.token_of(&cookie);
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
    let (other, _) = store
        .create(
            NewSession {
                idle_timeout_ms: Some(300_000),
                ..NewSession::default()
            },
            now(),
        )
        .await
        .expect("create");
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
async fn session_renew_kills_the_pre_login_key() {
    let cluster = Cluster::new().await;
    let key = Key::generate();
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(store.clone(), key.clone(), None);

    let pre_login = app.post("/bump", None).await.cookie();
    let old = app.token_of(&pre_login);

    let logged_in = app.login("ferris", Some(&pre_login)).await;
    assert_eq!(logged_in.status, 200);
    assert_eq!(logged_in.visit(), ferris(1));
    let post_login = logged_in.cookie();
    let new = app.token_of(&post_login);
    assert_ne!(new, old, "login issues a new key");

    // The pre-login key is dead in both tiers, and on a cold node.
    assert_eq!(store.load(&old, now()).await.expect("load"), None);
    assert!(cluster
        .tier
        .get(old.storage_key().as_bytes())
        .await
        .expect("DynamoDB get")
        .is_none());
    let cold = cluster.node(StoreSettings::default());
    assert_eq!(cold.load(&old, now()).await.expect("load"), None);

    // Whoever holds the old cookie (a planted one, say) is anonymous and
    // empty; the user's new cookie carries the login and the state.
    let replay = app.get("/", Some(&pre_login)).await;
    assert_eq!(replay.visit(), anonymous(0));
    assert!(replay.cookie.is_none());
    assert_eq!(app.get("/", Some(&post_login)).await.visit(), ferris(1));
    let other = spawn_app(cold, key, None);
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
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(store.clone(), Key::generate(), None);

    let cookie = app.login("ferris", None).await.cookie();
    let token = app.token_of(&cookie);
    assert_eq!(app.get("/", Some(&cookie)).await.visit(), ferris(0));

    let out = app.post("/logout", Some(&cookie)).await;
    assert_eq!(out.status, 200);
    let removal = out.cookie();
    assert_eq!(removal.value(), "");
    assert_eq!(removal.max_age(), Some(time::Duration::ZERO));

    assert_eq!(store.load(&token, now()).await.expect("load"), None);
    assert!(
        stored(&cluster, &token).await.is_none(),
        "deleted in DynamoDB"
    );
    assert!(
        store
            .cache()
            .tombstone_of(&token.storage_key())
            .expect("sled")
            .is_some(),
        "tombstoned in sled"
    );
    let cold = cluster.node(StoreSettings::default());
    assert_eq!(cold.load(&token, now()).await.expect("load"), None);

    // A client that kept the cookie is logged out all the same.
    let replay = app.get("/", Some(&cookie)).await;
    assert_eq!(replay.visit(), anonymous(0));
    assert!(replay.cookie.is_none());
}

#[tokio::test]
async fn expired_session_is_not_loaded() {
    let cluster = Cluster::new().await;
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(
        store.clone(),
        Key::generate(),
        persistent(1, TtlExtensionPolicy::OnStateChanges),
    );

    let cookie = app.post("/bump", None).await.cookie();
    let old = app.token_of(&cookie);
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

#[tokio::test]
async fn planted_session_key_is_not_adopted() {
    let cluster = Cluster::new().await;
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(store.clone(), Key::generate(), None);

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
    assert!(
        store
            .cache()
            .dump()
            .expect("sled")
            .iter()
            .all(|(_, k, _)| !k.windows(32).any(|w| w == planted_key.as_bytes())),
        "nothing written to sled"
    );
}

#[tokio::test]
async fn revoked_mid_request_session_is_not_resurrected() {
    let cluster = Cluster::new().await;
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(store.clone(), Key::generate(), None);

    let cookie = app.login("ferris", None).await.cookie();
    let token = app.token_of(&cookie);

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

    let cookie = app.post("/bump", None).await.cookie();
    let token = app.token_of(&cookie);
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

/// `renew()` on a session whose state is empty: the old key dies, and the
/// key the middleware is handed back names nothing stored in either tier.
#[tokio::test]
async fn an_empty_session_is_never_stored() {
    let cluster = Cluster::new().await;
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(store.clone(), Key::generate(), None);

    let cookie = app.post("/bump", None).await.cookie();
    let old = app.token_of(&cookie);
    let reset = app.post("/reset", Some(&cookie)).await;
    assert_eq!(reset.status, 200);
    let handed = app.token_of(&reset.cookie());
    assert_ne!(handed, old);
    assert!(cluster.scan().await.is_empty(), "nothing in DynamoDB");
    assert!(
        store
            .cache()
            .dump()
            .expect("sled")
            .iter()
            .all(|(tree, _, _)| tree != "sessions"),
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

/// A session bound through `USER_ID_KEY` is the user's like any login: it
/// is listed, and "log out everywhere" ends it.
#[tokio::test]
async fn bound_adapter_session_is_listed_and_killed_by_revoke_user() {
    let cluster = Cluster::new().await;
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(store.clone(), Key::generate(), None);

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

    let listed = store
        .list_user_sessions("ferris", None, 100, now())
        .await
        .expect("list")
        .sessions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, token.storage_key());

    store.revoke_user("ferris", now()).await.expect("revoke");
    assert_eq!(app.get("/who", Some(&cookie)).await.body, "null");
    assert_eq!(app.get("/", Some(&cookie)).await.visit(), anonymous(0));
    assert!(store
        .list_user_sessions("ferris", None, 100, now())
        .await
        .expect("list")
        .sessions
        .is_empty());
    assert!(stored(&cluster, &token).await.is_none());
}

/// Session fixation through the adapter: binding a user to the key the
/// browser already carries (perhaps planted) is refused; only `renew()`
/// binds, under a new key.
#[tokio::test]
async fn binding_a_planted_key_without_renew_is_refused() {
    let cluster = Cluster::new().await;
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(store.clone(), Key::generate(), None);

    let planted = app.post("/bump", None).await.cookie();
    let token = app.token_of(&planted);
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
    assert!(store
        .list_user_sessions("ferris", None, 100, now())
        .await
        .expect("list")
        .sessions
        .is_empty());
}
