//! Forward auth: `/auth/check` and `/.well-known/jwks.json` asked directly
//! (this file), and through real nginx `auth_request` and Caddy
//! `forward_auth` running the configs of `examples/forward-auth/`
//! ([`proxies`] starts them, [`through`] tests through them).

mod proxies;
mod through;

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::header::{CACHE_CONTROL, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::harness::{
    anonymous_token, browser, browser_login, cookie, logout, node_toml, openssl, service_login,
    sled_entries, table_items, table_name, HttpNode, TestNode, ALICE_PASSWORD, BOB_PASSWORD,
};

/// The five identity headers, as the node names them.
pub const IDENTITY_HEADERS: [&str; 5] = [
    "x-edge-user",
    "x-edge-role",
    "x-edge-session",
    "x-edge-auth-time",
    "x-edge-assertion",
];

/// `method` on `path` (`/auth/check...`) of `node`, with the session cookie
/// `carried` if any.
pub async fn ask(
    node: impl HttpNode,
    method: Method,
    path: &str,
    carried: Option<&str>,
) -> reqwest::Response {
    let req = node
        .client()
        .request(method, format!("{}{path}", node.url()));
    let req = match carried {
        Some(value) => req.header(COOKIE, cookie(value)),
        None => req,
    };
    req.send().await.unwrap()
}

/// The JWK Set `node` publishes.
pub async fn jwks(node: impl HttpNode) -> JwkSet {
    let res = ask(&node, Method::GET, "/.well-known/jwks.json", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// The claims of an assertion.
#[derive(Debug, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub role: String,
    pub sid: String,
    pub auth_time: u64,
    pub iat: u64,
    pub exp: u64,
}

/// `assertion` verified as an app would: with the key of `set` its header's
/// `kid` names, `alg` EdDSA, the default issuer and audience.
pub fn verify(assertion: &str, set: &JwkSet) -> jsonwebtoken::errors::Result<Claims> {
    let header = jsonwebtoken::decode_header(assertion)?;
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.expect("the assertion names its key");
    let jwk = set.find(&kid).expect("the JWK Set has the assertion's key");
    verify_with(assertion, &DecodingKey::from_jwk(jwk)?)
}

fn verify_with(assertion: &str, key: &DecodingKey) -> jsonwebtoken::errors::Result<Claims> {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["edge-session"]);
    validation.set_audience(&["edge-session-upstream"]);
    Ok(jsonwebtoken::decode::<Claims>(assertion, key, &validation)?.claims)
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

/// The handle of the session `value` is the cookie of (its `current` entry
/// of `/me/sessions`).
async fn handle_of(node: &TestNode, value: &str) -> String {
    let res = ask(node, Method::GET, "/me/sessions", Some(value)).await;
    let list: Vec<Value> = res.json().await.unwrap();
    let current = list.iter().find(|s| s["current"] == true).unwrap();
    current["handle"].as_str().unwrap().to_owned()
}

/// An answer that says "not signed in": 401, no identity, no cookie.
async fn assert_refused(res: reqwest::Response, what: &str) {
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
    for name in IDENTITY_HEADERS {
        assert!(res.headers().get(name).is_none(), "{what}: {name}");
    }
    assert!(
        res.headers().get(SET_COOKIE).is_none(),
        "{what}: Set-Cookie"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated", "{what}");
}

#[tokio::test]
async fn a_check_without_a_signed_in_session_is_401_and_writes_nothing() {
    let node = TestNode::spawn().await;
    let sled_before = sled_entries(&node);
    let unknown = edge_session::SessionToken::generate().expose();
    for (carried, what) in [
        (None, "no cookie"),
        (Some("not-a-session-token"), "a malformed cookie"),
        (Some(""), "an empty cookie"),
        (Some(unknown.as_str()), "an unknown token"),
    ] {
        for _ in 0..3 {
            assert_refused(ask(&node, Method::GET, "/auth/check", carried).await, what).await;
        }
    }
    assert_eq!(table_items(&node).await, 0, "nothing written to DynamoDB");
    assert_eq!(sled_entries(&node), sled_before, "nothing written to sled");
    node.stop().await;
}

#[tokio::test]
async fn a_signed_in_check_names_the_user_with_a_verifiable_assertion() {
    let node = TestNode::spawn().await;
    let alice = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let handle = handle_of(&node, &alice).await;
    let set = jwks(&node).await;

    let res = ask(&node, Method::GET, "/auth/check", Some(&alice)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-edge-user"), Some("alice"));
    assert_eq!(header(&res, "x-edge-role"), Some("admin"));
    assert_eq!(header(&res, "x-edge-session"), Some(handle.as_str()));
    assert_eq!(header(&res, CACHE_CONTROL.as_str()), Some("no-store"));
    assert!(res.headers().get(SET_COOKIE).is_none());
    let assertion = header(&res, "x-edge-assertion").unwrap().to_owned();

    let claims = verify(&assertion, &set).expect("the assertion verifies");
    assert_eq!(
        (
            claims.sub.as_str(),
            claims.role.as_str(),
            claims.sid.as_str()
        ),
        ("alice", "admin", handle.as_str())
    );
    assert_eq!(
        (claims.iss.as_str(), claims.aud.as_str()),
        ("edge-session", "edge-session-upstream")
    );
    assert!(
        claims.exp > claims.iat && claims.exp - claims.iat <= 60,
        "{claims:?}"
    );
    // The time of the sign-in, for an app's step-up: the header and the
    // claim agree, and it is the session's creation.
    let auth_time: u64 = header(&res, "x-edge-auth-time").unwrap().parse().unwrap();
    assert_eq!(auth_time, claims.auth_time);
    assert!(
        auth_time <= claims.iat && claims.iat - auth_time < 60,
        "{claims:?}"
    );
    let (_, me) = crate::harness::whoami_body(&node, &alice).await;
    assert_eq!(me["created_at"], auth_time);
    let kid = jsonwebtoken::decode_header(&assertion).unwrap().kid;
    assert_eq!(kid, set.keys[0].common.key_id, "signed with the first key");

    // A tampered assertion (another user in the same signature) fails.
    let mut parts: Vec<String> = assertion.split('.').map(str::to_owned).collect();
    let claims_json = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    parts[1] = URL_SAFE_NO_PAD.encode(claims_json.replace("\"alice\"", "\"mallory\""));
    assert!(verify(&parts.join("."), &set).is_err());

    // A user signed in through /v1 without a role: an empty X-Edge-Role.
    let carol = service_login(&node, "carol").await;
    let res = ask(&node, Method::GET, "/auth/check", Some(&carol)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-edge-user"), Some("carol"));
    assert_eq!(header(&res, "x-edge-role"), Some(""));
    node.stop().await;
}

#[tokio::test]
async fn role_query_admits_the_role_and_refuses_another() {
    let node = TestNode::spawn().await;
    let alice = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let bob = browser_login(&node, "bob", BOB_PASSWORD).await;
    for (who, path, status) in [
        (&alice, "/auth/check?role=admin", StatusCode::OK),
        (&bob, "/auth/check?role=user", StatusCode::OK),
        (&alice, "/auth/check?role=user", StatusCode::FORBIDDEN),
        (&bob, "/auth/check?role=admin", StatusCode::FORBIDDEN),
        (&bob, "/auth/check?role=Admin", StatusCode::FORBIDDEN),
        (&bob, "/auth/check?role=", StatusCode::BAD_REQUEST),
        (
            &bob,
            "/auth/check?role=user&role=admin",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let res = ask(&node, Method::GET, path, Some(who)).await;
        assert_eq!(res.status(), status, "{path}");
        if status != StatusCode::OK {
            assert!(res.headers().get("x-edge-user").is_none(), "{path}");
            let body: Value = res.json().await.unwrap();
            let code = if status == StatusCode::FORBIDDEN {
                "wrong_role"
            } else {
                "malformed_input"
            };
            assert_eq!(body["error"], code, "{path}");
        }
    }
    node.stop().await;
}

#[tokio::test]
async fn anonymous_and_logged_out_sessions_are_401() {
    let node = TestNode::spawn().await;
    let anonymous = anonymous_token(&node).await;
    let res = ask(&node, Method::GET, "/auth/check", Some(&anonymous)).await;
    assert_refused(res, "an anonymous session").await;

    let bob = browser_login(&node, "bob", BOB_PASSWORD).await;
    let res = ask(&node, Method::GET, "/auth/check", Some(&bob)).await;
    assert_eq!(res.status(), StatusCode::OK, "signed in");
    assert_eq!(logout(&node, &bob).await.unwrap(), StatusCode::SEE_OTHER);
    let res = ask(&node, Method::GET, "/auth/check", Some(&bob)).await;
    assert_refused(res, "after logout").await;
    node.stop().await;
}

#[tokio::test]
async fn every_method_and_the_envoy_path_are_the_same_check() {
    let node = TestNode::spawn().await;
    let bob = browser_login(&node, "bob", BOB_PASSWORD).await;
    let methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let paths = [
        "/auth/check",
        "/auth/check/",
        "/auth/check/some/path",
        "/auth/check/some/path?page=2&sort=asc",
    ];
    for method in methods {
        for path in paths {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let res = ask(&node, method.clone(), path, Some(&bob)).await;
            assert_eq!(res.status(), StatusCode::OK, "{method} {path}");
            assert_eq!(header(&res, "x-edge-user"), Some("bob"), "{method} {path}");
            let res = ask(&node, method.clone(), path, None).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }
    // A body (which the check never reads) changes nothing.
    let res = browser(&node, Method::POST, "/auth/check/orders", Some(&bob))
        .json(&serde_json::json!({"order": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = ask(
        &node,
        Method::GET,
        "/auth/check/admin?role=admin",
        Some(&bob),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    node.stop().await;
}

#[tokio::test]
async fn a_restarted_node_publishes_the_same_key() {
    let kept = tempfile::tempdir().unwrap();
    let toml = node_toml(&kept.path().join("data"), &table_name(), "");
    let first = TestNode::spawn_toml(tempfile::tempdir().unwrap(), &toml).await;
    let before = jwks(&first).await;
    first.stop().await;

    let second = TestNode::spawn_toml(tempfile::tempdir().unwrap(), &toml).await;
    let after = jwks(&second).await;
    assert_eq!(after.keys.len(), 1);
    assert_eq!(after.keys[0].common.key_id, before.keys[0].common.key_id);
    // An assertion of the restarted node verifies with the keys an app
    // fetched before the restart.
    let alice = browser_login(&second, "alice", ALICE_PASSWORD).await;
    let res = ask(&second, Method::GET, "/auth/check", Some(&alice)).await;
    verify(header(&res, "x-edge-assertion").unwrap(), &before).unwrap();
    second.stop().await;
}

/// The public key of the Ed25519 key in `pem`, unpadded base64url, as
/// openssl derives it.
fn openssl_public_x(pem: &Path) -> String {
    let der = openssl(&[
        "pkey",
        "-pubout",
        "-outform",
        "DER",
        "-in",
        pem.to_str().unwrap(),
    ]);
    URL_SAFE_NO_PAD.encode(&der[der.len() - 32..])
}

#[tokio::test]
async fn published_keys_join_the_jwk_set() {
    let dir = tempfile::tempdir().unwrap();
    let previous = dir.path().join("previous.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        previous.to_str().unwrap(),
    ]);
    let extra = format!("[gateway]\npublished_keys = [\"{}\"]\n", previous.display());
    let node = TestNode::spawn_on(&table_name(), &extra).await;

    let set = jwks(&node).await;
    assert_eq!(set.keys.len(), 2, "the signing key and the published one");
    let AlgorithmParameters::OctetKeyPair(published) = &set.keys[1].algorithm else {
        panic!("not an OKP key: {:?}", set.keys[1]);
    };
    assert_eq!(published.x, openssl_public_x(&previous));
    assert_ne!(set.keys[0].common.key_id, set.keys[1].common.key_id);

    // Assertions are signed by the first key only.
    let alice = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let res = ask(&node, Method::GET, "/auth/check", Some(&alice)).await;
    let assertion = header(&res, "x-edge-assertion").unwrap().to_owned();
    verify(&assertion, &set).unwrap();
    let other = DecodingKey::from_jwk(&set.keys[1]).unwrap();
    assert!(verify_with(&assertion, &other).is_err());
    node.stop().await;
}
