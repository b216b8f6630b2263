//! The servers edge-session is measured against, served by the harness
//! itself on their own loopback ports with as many actix workers as an
//! edge-session node uses (one per core):
//!
//! - `hello`: an actix-web route answering a fixed body: the HTTP ceiling
//!   of this machine.
//! - `actix-session + redis`: actix-session 0.11's `SessionMiddleware` over
//!   its `RedisSessionStore` (default settings: private cookie, browser
//!   session), `GET /whoami` reading the user id from the session.

use std::net::{SocketAddr, TcpListener};

use actix_session::storage::RedisSessionStore;
use actix_session::{Session, SessionExt as _, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context as _;
use edge_session_test_support::child::LISTENING;

/// One in-process server.
pub struct InProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    handle: ServerHandle,
    task: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
}

impl InProcess {
    /// Stop accepting and let in-flight requests finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }

    /// Wait until the server stops (SIGTERM or SIGINT: actix handles them).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

fn bind() -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// The actix-web hello world, `GET /`. Call inside an actix `System`.
/// With an `action_secret`, it is also the app behind the gateway in the
/// login-through-an-action benchmark: `POST /login-action` answers 303 with
/// a signed `login` action for the bench user ([`signed_login`]).
pub fn hello(workers: usize, action_secret: Option<String>) -> anyhow::Result<InProcess> {
    let (listener, addr) = bind()?;
    let secret = web::Data::new(action_secret);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(secret.clone())
            .route(
                "/",
                web::get().to(|| async { HttpResponse::Ok().body("Hello world!") }),
            )
            .route("/login-action", web::post().to(login_action))
    })
    .workers(workers)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let task = actix_web::rt::spawn(server);
    Ok(InProcess { addr, handle, task })
}

/// The action an app behind the gateway answers a good login with.
pub const LOGIN_ACTION: &str = "login; user=bench; role=member";

/// `X-Edge-Action-Signature` of `action` for the request nonce `nonce`:
/// lower-case hex HMAC-SHA256 over `nonce + "\n" + action`.
pub fn signed_login(secret: &str, nonce: &str, action: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(nonce.as_bytes());
    mac.update(b"\n");
    mac.update(action.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn login_action(req: HttpRequest, secret: web::Data<Option<String>>) -> HttpResponse {
    let nonce = req
        .headers()
        .get("x-edge-nonce")
        .and_then(|v| v.to_str().ok());
    match (secret.as_deref(), nonce) {
        (Some(secret), Some(nonce)) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/"))
            .insert_header(("x-edge-action", LOGIN_ACTION))
            .insert_header((
                "x-edge-action-signature",
                signed_login(secret, nonce, LOGIN_ACTION),
            ))
            .finish(),
        _ => HttpResponse::NotFound().finish(),
    }
}

/// The environment variable `serve-hello` reads its action secret from.
pub const ACTION_SECRET_ENV: &str = "EDGE_SESSION_BENCH_ACTION_SECRET";

/// `edge-session-bench serve-hello`: the ceiling alone, until SIGTERM, with
/// `workers` actix workers (0: one per core). Prints the listening line a
/// node prints, so the harness starts it as it starts a node.
pub fn serve_hello(workers: usize) -> anyhow::Result<()> {
    let workers = if workers == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        workers
    };
    actix_web::rt::System::new().block_on(async {
        let server = hello(workers, std::env::var(ACTION_SECRET_ENV).ok())?;
        println!("{LISTENING}http://{}", server.addr);
        std::io::Write::flush(&mut std::io::stdout())?;
        server.stopped().await;
        Ok(())
    })
}

/// The user every peer signs in.
pub const USER_ID: &str = "bench";

async fn session_login(session: Session) -> actix_web::Result<HttpResponse> {
    session.renew();
    session.insert("user_id", USER_ID)?;
    Ok(HttpResponse::Ok().finish())
}

async fn session_whoami(req: HttpRequest) -> actix_web::Result<HttpResponse> {
    match req.get_session().get::<String>("user_id")? {
        Some(user_id) => Ok(HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({ "user_id": user_id }))),
        None => Ok(HttpResponse::Unauthorized().finish()),
    }
}

/// actix-session over Redis at `redis_url`: `POST /login` stores the user id
/// in a renewed session, `GET /whoami` reads it. Call inside an actix
/// `System`.
pub async fn actix_session_redis(redis_url: &str, workers: usize) -> anyhow::Result<InProcess> {
    let store = RedisSessionStore::new(redis_url)
        .await
        .with_context(|| format!("connecting actix-session's RedisSessionStore to {redis_url}"))?;
    let key = Key::generate();
    let (listener, addr) = bind()?;
    let server = HttpServer::new(move || {
        App::new()
            .wrap(SessionMiddleware::new(store.clone(), key.clone()))
            .route("/login", web::post().to(session_login))
            .route("/whoami", web::get().to(session_whoami))
    })
    .workers(workers)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let task = actix_web::rt::spawn(server);
    Ok(InProcess { addr, handle, task })
}
