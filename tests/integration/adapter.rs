//! The actix-session adapter through a real actix-web `HttpServer` on
//! 127.0.0.1:0, driven by a real HTTP client, over a real DynamoDB-wire
//! server. The session cookie is handled by hand: the tests read `Set-Cookie`
//! and send `Cookie`, and open the (private, encrypted) cookie with the
//! middleware's key to learn the session token and inspect both tiers.
//!
//! This file holds the app the tests serve and what they share:
//!
//! - [`state`]: state kept across requests and nodes, and its TTL.
//! - [`sign_in`]: renew, purge and binding, and keys an attacker planted.

mod sign_in;
mod state;

use std::collections::BTreeMap;
use std::net::TcpListener;

use actix_session::config::{PersistentSession, TtlExtensionPolicy};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{time, Cookie, CookieJar, Key};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use edge_session::{
    codec, NewSession, SessionRecord, SessionToken, StoreSettings, TieredStore, USER_ID_KEY,
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

    /// A new session with state (`POST /bump` with no cookie): its cookie
    /// and the session token inside.
    async fn new_session(&self) -> (Cookie<'static>, SessionToken) {
        let cookie = self.post("/bump", None).await.cookie();
        let token = self.token_of(&cookie);
        (cookie, token)
    }

    /// `user` signed in with no cookie before (`POST /login`): the new
    /// cookie and the session token inside.
    async fn signed_in(&self, user: &str) -> (Cookie<'static>, SessionToken) {
        let cookie = self.login(user, None).await.cookie();
        let token = self.token_of(&cookie);
        (cookie, token)
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

/// A fresh node's store over `cluster` and an app served over it with a new
/// key; `lifecycle` as for [`spawn_app`].
fn fresh_app(cluster: &Cluster, lifecycle: Option<PersistentSession>) -> (TieredStore, TestApp) {
    let store = cluster.node(StoreSettings::default());
    let app = spawn_app(store.clone(), Key::generate(), lifecycle);
    (store, app)
}

/// A session made on `store` directly, with an idle timeout (five minutes)
/// other than any middleware's, and `data`.
async fn with_other_idle_timeout(
    store: &TieredStore,
    data: BTreeMap<String, String>,
) -> SessionToken {
    let new = NewSession {
        data,
        idle_timeout_ms: Some(300_000),
        binding: None,
    };
    store.create(new, now()).await.expect("create").0
}

/// The sessions `store` lists for `user`.
async fn user_sessions(store: &TieredStore, user: &str) -> Vec<edge_session::Session> {
    store
        .list_user_sessions(user, None, 100, now())
        .await
        .expect("list")
        .sessions
}

/// `token`'s session is dead in both tiers: `store` loads nothing for it,
/// DynamoDB holds no record, and a node with a cold cache loads nothing.
async fn assert_dead_in_both_tiers(cluster: &Cluster, store: &TieredStore, token: &SessionToken) {
    assert_eq!(store.load(token, now()).await.expect("load"), None);
    assert!(
        stored(cluster, token).await.is_none(),
        "deleted in DynamoDB"
    );
    let cold = cluster.node(StoreSettings::default());
    assert_eq!(cold.load(token, now()).await.expect("load"), None);
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

/// Whether every entry of `store`'s sled cache, as (tree, key, value),
/// passes `check`.
fn every_cached(store: &TieredStore, check: impl Fn(&(String, Vec<u8>, Vec<u8>)) -> bool) -> bool {
    store.cache().dump().expect("sled").iter().all(check)
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
