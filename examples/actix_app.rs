//! An actix-web app whose sessions live in edge-session's two tiers: a sled
//! cache in front of DynamoDB (here the embedded DynamoDB-compatible server,
//! in a temporary directory).
//!
//! ```text
//! cargo run --example actix_app
//! curl -i -X POST 'http://127.0.0.1:8080/login?user=ferris'   # note the `id` cookie
//! curl -i -b 'id=...' http://127.0.0.1:8080/whoami
//! curl -i -b 'id=...' -X POST http://127.0.0.1:8080/logout
//! ```
//!
//! `/login` renews the session key (the pre-login key is revoked in both
//! tiers), `/logout` purges it. The cookie is `Secure`: browsers send it to
//! `http://127.0.0.1` and `localhost`, but anywhere else serve over HTTPS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::{web, App, HttpResponse, HttpServer};
use edge_session::{
    ClientSettings, DynamoTier, EmbeddedDynamo, Endpoint, SledCache, StoreSettings, TieredStore,
    UnixMillis,
};

#[derive(serde::Deserialize)]
struct Login {
    user: String,
}

async fn login(who: web::Query<Login>, session: Session) -> actix_web::Result<HttpResponse> {
    // A real app checks a password first. Renew on every privilege change:
    // a key planted before login is worthless after it.
    session.renew();
    session.insert("user", &who.user)?;
    Ok(HttpResponse::Ok().body(format!("logged in as {}\n", who.user)))
}

async fn whoami(session: Session) -> actix_web::Result<HttpResponse> {
    Ok(match session.get::<String>("user")? {
        Some(user) => HttpResponse::Ok().body(format!("{user}\n")),
        None => HttpResponse::Unauthorized().body("anonymous\n"),
    })
}

async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().body("logged out\n")
}

fn now() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as UnixMillis)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dynamo =
        EmbeddedDynamo::start_file(&dir.path().join("dynamodb.sqlite"), Duration::from_secs(60))?;
    let client = ClientSettings {
        endpoint: Endpoint::Embedded(dynamo.url()),
        ..ClientSettings::default()
    }
    .build()
    .await;
    let tier = DynamoTier::new(client, "edge-sessions");
    tier.provision().await?;
    let cache = SledCache::open(&dir.path().join("cache"))?;
    let store = TieredStore::new(cache, tier, StoreSettings::default());

    // Replays revocations whose DynamoDB delete had to wait (see `adapter`).
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let upkeep = tokio::spawn(store.clone().maintain(now, async {
        let _ = stopped.await;
    }));

    // A fresh key logs everyone out on restart; a real app loads it from its
    // secrets.
    let key = Key::generate();
    println!("listening on http://127.0.0.1:8080");
    HttpServer::new(move || {
        App::new()
            .wrap(SessionMiddleware::new(store.clone(), key.clone()))
            .route("/login", web::post().to(login))
            .route("/whoami", web::get().to(whoami))
            .route("/logout", web::post().to(logout))
    })
    .bind(("127.0.0.1", 8080))?
    .run()
    .await?;

    let _ = stop.send(());
    upkeep.await?;
    Ok(())
}
