//! Requests to a node as a browser or a service would send them. Those that
//! only send return what the node answered, or the error if it did not (a
//! test may have killed it); those that also check what it answered panic
//! when the check fails.

use reqwest::header::COOKIE;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use super::{session_cookie, TestNode, API_KEY};
use edge_session::SessionToken;

/// A node the request helpers below send to: the client to send with and
/// the node's base URL. A [`TestNode`] is one; a node known by its URL (a
/// child process, which a test may kill) is one as `(&client, url)`.
pub trait HttpNode {
    /// The client to send with.
    fn client(&self) -> &reqwest::Client;
    /// The node's base URL, `http://host:port`.
    fn url(&self) -> &str;
}

impl HttpNode for TestNode {
    fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn url(&self) -> &str {
        &self.url
    }
}

impl<N: HttpNode + ?Sized> HttpNode for &N {
    fn client(&self) -> &reqwest::Client {
        (**self).client()
    }

    fn url(&self) -> &str {
        (**self).url()
    }
}

impl<S: AsRef<str>> HttpNode for (&reqwest::Client, S) {
    fn client(&self) -> &reqwest::Client {
        self.0
    }

    fn url(&self) -> &str {
        self.1.as_ref()
    }
}

/// The `Cookie` header value carrying the session cookie `value`.
pub fn cookie(value: &str) -> String {
    format!("__Host-sid={value}")
}

/// The token a node issued as the cookie or token `value`.
pub fn token(value: &str) -> SessionToken {
    SessionToken::parse(value).expect("the node issued a well-formed token")
}

/// A `/v1` request to `node` with the API key.
pub fn v1(node: impl HttpNode, method: Method, path: &str) -> RequestBuilder {
    node.client()
        .request(method, format!("{}{path}", node.url()))
        .bearer_auth(API_KEY)
}

/// A browser request to `node`, carrying the session cookie `carried` if any.
pub fn browser(
    node: &impl HttpNode,
    method: Method,
    path: &str,
    carried: Option<&str>,
) -> RequestBuilder {
    let req = node
        .client()
        .request(method, format!("{}{path}", node.url()));
    match carried {
        Some(value) => req.header(COOKIE, cookie(value)),
        None => req,
    }
}

/// `GET /whoami` with the session cookie `value`: its status, or the error
/// if the node did not answer.
pub async fn whoami(node: impl HttpNode, value: &str) -> reqwest::Result<StatusCode> {
    let res = browser(&node, Method::GET, "/whoami", Some(value))
        .send()
        .await?;
    Ok(res.status())
}

/// `GET /whoami` with the session cookie `value`: its status and JSON body
/// (`Null` if it has none).
pub async fn whoami_body(node: impl HttpNode, value: &str) -> (StatusCode, Value) {
    let res = browser(&node, Method::GET, "/whoami", Some(value))
        .send()
        .await
        .unwrap();
    status_and_body(res).await
}

/// `POST /login` with a form for `user`, carrying the session cookie
/// `carried` if any: the answer, or the error if the node did not answer.
pub async fn login_form(
    node: impl HttpNode,
    carried: Option<&str>,
    user: &str,
    password: &str,
) -> reqwest::Result<reqwest::Response> {
    browser(&node, Method::POST, "/login", carried)
        .form(&[("username", user), ("password", password)])
        .send()
        .await
}

/// A browser login of `user` (303); its session cookie's value.
pub async fn browser_login(node: impl HttpNode, user: &str, password: &str) -> String {
    let res = login_form(node, None, user, password).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    session_cookie(&res)
}

/// An anonymous session made through the service API (201); its token.
pub async fn anonymous_token(node: impl HttpNode) -> String {
    let res = v1(&node, Method::POST, "/v1/sessions")
        .send()
        .await
        .unwrap();
    created_token(res).await
}

/// An anonymous session holding `data`, made through the service API
/// (201); its token.
pub async fn token_with_data(node: impl HttpNode, data: Value) -> String {
    let res = v1(&node, Method::POST, "/v1/sessions")
        .json(&json!({ "data": data }))
        .send()
        .await
        .unwrap();
    created_token(res).await
}

/// The token of the session a `201 Created` answer made.
async fn created_token(res: reqwest::Response) -> String {
    let (status, body) = status_and_body(res).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// A `/v1` request with no body and no session token: its status and JSON
/// body.
pub async fn v1_call(node: impl HttpNode, method: Method, path: &str) -> (StatusCode, Value) {
    status_and_body(v1(node, method, path).send().await.unwrap()).await
}

/// A session bound to `user` through the service API (create, then
/// regenerate); its token.
pub async fn service_login(node: impl HttpNode, user: &str) -> String {
    let anon = anonymous_token(&node).await;
    let (code, body) = regenerate(&node, &anon, json!({"user_id": user})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// A `/v1` request to `node` with the API key, for the session `token` (its
/// `x-session-token` header).
pub fn v1_session(node: impl HttpNode, method: Method, path: &str, token: &str) -> RequestBuilder {
    v1(node, method, path).header("x-session-token", token)
}

/// A response's status and JSON body (`Null` if it has none).
pub async fn status_and_body(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `res` answers `status` with the JSON error `code`.
pub async fn assert_error(res: reqwest::Response, status: StatusCode, code: &str) {
    let (got, body) = status_and_body(res).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"], code);
}

/// `GET /v1/session` for `token`: its status and JSON body.
pub async fn read_session(node: impl HttpNode, token: &str) -> (StatusCode, Value) {
    let res = v1_session(node, Method::GET, "/v1/session", token)
        .send()
        .await
        .unwrap();
    status_and_body(res).await
}

/// `GET /v1/session` for `token`: its status, or the error if the node did
/// not answer.
pub async fn session_status(node: impl HttpNode, token: &str) -> reqwest::Result<StatusCode> {
    let res = v1_session(node, Method::GET, "/v1/session", token)
        .send()
        .await?;
    Ok(res.status())
}

/// `DELETE /v1/session` for `token` (the service ends the session): its
/// status.
pub async fn end_session(node: impl HttpNode, token: &str) -> StatusCode {
    v1_session(node, Method::DELETE, "/v1/session", token)
        .send()
        .await
        .unwrap()
        .status()
}

/// A `/v1` request for the session `token` with the JSON `body`: its
/// status and JSON body.
async fn session_call(
    node: impl HttpNode,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let req = v1_session(node, method, path, token).json(&body);
    status_and_body(req.send().await.unwrap()).await
}

/// `POST /v1/session/regenerate` for `token` with the JSON `body`: its
/// status and JSON body.
pub async fn regenerate(node: impl HttpNode, token: &str, body: Value) -> (StatusCode, Value) {
    session_call(node, Method::POST, "/v1/session/regenerate", token, body).await
}

/// `PATCH /v1/session` for `token` with the JSON `body`: its status and
/// JSON body.
pub async fn patch_session(node: impl HttpNode, token: &str, body: Value) -> (StatusCode, Value) {
    session_call(node, Method::PATCH, "/v1/session", token, body).await
}

/// `GET /me/sessions` with the session cookie `value`: the sessions listed.
pub async fn my_sessions(node: impl HttpNode, value: &str) -> Vec<Value> {
    let res = browser(&node, Method::GET, "/me/sessions", Some(value))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// `POST /logout` with the session cookie `value`: its status, or the error
/// if the node did not answer.
pub async fn logout(node: impl HttpNode, value: &str) -> reqwest::Result<StatusCode> {
    let res = browser(&node, Method::POST, "/logout", Some(value))
        .send()
        .await?;
    Ok(res.status())
}

/// `GET /readyz`: its status, or the error if the node did not answer.
pub async fn readyz(node: impl HttpNode) -> reqwest::Result<StatusCode> {
    let res = browser(&node, Method::GET, "/readyz", None).send().await?;
    Ok(res.status())
}

/// A metric's value from the node's `/metrics` (the first sample whose line
/// starts with `name`), `None` if absent or if the node did not answer.
pub async fn metric(node: impl HttpNode, name: &str) -> Option<f64> {
    let text = metrics_text(node).await.ok()?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The node's whole `/metrics` page.
pub async fn metrics_text(node: impl HttpNode) -> reqwest::Result<String> {
    browser(&node, Method::GET, "/metrics", None)
        .send()
        .await?
        .text()
        .await
}

/// The node's `edge_session_outbox_pending` (see [`metric`]).
pub async fn outbox_pending(node: impl HttpNode) -> Option<f64> {
    metric(node, "edge_session_outbox_pending").await
}
