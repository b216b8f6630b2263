//! What the targets of a run are ([`Target`]), and the one-shot requests
//! that prepare them: [`once`], and [`sign_in`] through a login form.

use std::net::SocketAddr;

use actix_web::web::Bytes;
use anyhow::Context as _;
use hyper::{Method, StatusCode};

use crate::load::{Connection, RequestTemplate, Response};
use crate::peers;

/// One HTTP target of the `GET /whoami` comparison.
pub struct Target {
    /// Its name in the tables.
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What is requested (`/whoami`, or `/` for the ceilings).
    pub path: &'static str,
    /// The `cookie` header sent.
    pub cookie: String,
}

/// Send one request on a fresh connection, on the load runtime.
pub async fn once(
    load: &tokio::runtime::Handle,
    addr: SocketAddr,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
) -> anyhow::Result<Response> {
    load.spawn(async move {
        let req = RequestTemplate::new(addr, method, path, &headers, body)?;
        Connection::open(addr).await?.send(&req).await
    })
    .await?
}

/// Sign in on `addr` (`POST /login` with `form`, answered `expect` with a
/// cookie `cookie_name`) and check that `GET whoami` then answers 200 with
/// the bench user. Returns the cookie (`name=value`).
pub async fn sign_in(
    load: &tokio::runtime::Handle,
    addr: SocketAddr,
    form: Bytes,
    cookie_name: &str,
    expect: StatusCode,
    whoami: &'static str,
) -> anyhow::Result<String> {
    let res = once(
        load,
        addr,
        Method::POST,
        "/login",
        vec![(
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        )],
        form,
    )
    .await?;
    anyhow::ensure!(
        res.status == expect,
        "POST /login on {addr} answered {} (expected {expect})",
        res.status
    );
    let cookie = res
        .cookie(cookie_name)
        .with_context(|| format!("POST /login on {addr} set no `{cookie_name}` cookie"))?;
    let check = once(
        load,
        addr,
        Method::GET,
        whoami,
        vec![("cookie", cookie.clone())],
        Bytes::new(),
    )
    .await?;
    anyhow::ensure!(
        check.status == StatusCode::OK
            && String::from_utf8_lossy(&check.body).contains(peers::USER_ID),
        "GET {whoami} on {addr} with the login cookie answered {} {:?}",
        check.status,
        check.body
    );
    Ok(cookie)
}
