//! Signing in and out in a browser: a login rotates the session and a
//! logout ends it, a cookie an attacker planted is never elevated, a failed
//! login changes nothing, the cookie's attributes are exact, and a
//! cross-origin state change is refused.

use reqwest::header::{LOCATION, ORIGIN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::anonymous;
use crate::harness::{
    browser, browser_login, login_form, read_session, session_cookie, session_set_cookie, whoami,
    whoami_body, TestNode, ALICE_PASSWORD,
};

/// The attributes every session cookie carries, sorted.
const COOKIE_ATTRIBUTES: [&str; 4] = ["HttpOnly", "Path=/", "SameSite=Strict", "Secure"];

#[tokio::test]
async fn browser_flow_regenerates_on_login_and_destroys_on_logout() {
    let node = TestNode::spawn().await;
    let anon = anonymous(&node).await;
    assert_eq!(anon.len(), 43);

    let res = login_form(&node, Some(&anon), "alice", ALICE_PASSWORD)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/");
    let signed_in = session_cookie(&res);
    assert_ne!(signed_in, anon, "login issues a new token");

    let (status, body) = whoami_body(&node, &anon).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the pre-login cookie is dead"
    );
    assert_eq!(body["error"], "unauthenticated");
    let (status, body) = whoami_body(&node, &signed_in).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user_id"], "alice");
    assert_eq!(body["role"], "admin");
    assert!(body["expires_at"].as_u64().unwrap() > body["created_at"].as_u64().unwrap());

    let page = browser(&node, Method::GET, "/", Some(&signed_in))
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("Signed in") && html.contains("alice"));

    let res = browser(&node, Method::POST, "/logout", Some(&signed_in))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let removal = session_set_cookie(&res).expect("logout expires the cookie");
    assert!(removal.contains("Max-Age=0"), "{removal}");
    assert_eq!(
        whoami(&node, &signed_in).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "logged-out cookie is dead"
    );
    node.stop().await;
}

#[tokio::test]
async fn attacker_planted_cookie_is_never_elevated() {
    let node = TestNode::spawn().await;
    // The attacker gets a valid anonymous cookie and plants it in the victim's browser.
    let planted = anonymous(&node).await;
    // The victim logs in carrying it (JSON this time).
    let res = browser(&node, Method::POST, "/login", Some(&planted))
        .json(&json!({"username": "alice", "password": ALICE_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let victim = session_cookie(&res);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"user_id": "alice"})
    );
    assert_ne!(victim, planted);

    // The attacker's value is still unauthenticated, everywhere it could be
    // used.
    let mine = browser(&node, Method::GET, "/me/sessions", Some(&planted))
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), StatusCode::UNAUTHORIZED);
    let page = browser(&node, Method::GET, "/", Some(&planted))
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign in") && !html.contains("alice"));
    // And through the service API too: the planted token is unknown.
    let (status, _) = read_session(&node, &planted).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        whoami(&node, &planted).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(whoami(&node, &victim).await.unwrap(), StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn failed_login_leaves_the_session_exactly_as_it_was() {
    let node = TestNode::spawn().await;
    let anon = anonymous(&node).await;
    for (user, password) in [("alice", "wrong"), ("mallory", ALICE_PASSWORD), ("", "")] {
        let res = login_form(&node, Some(&anon), user, password)
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(
            session_set_cookie(&res).is_none(),
            "no new cookie on a failed login"
        );
        assert!(res
            .text()
            .await
            .unwrap()
            .contains("Wrong username or password"));
    }
    // Not rotated: the same anonymous session still loads (as anonymous).
    let (status, body) = read_session(&node, &anon).await;
    assert_eq!(status, StatusCode::OK, "the old session is still live");
    assert_eq!(body["user_id"], Value::Null);
    assert_eq!(
        whoami(&node, &anon).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    node.stop().await;
}

/// The attributes of the `Set-Cookie` header `header` after its name and
/// value, sorted.
fn sorted_attributes(header: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = header.split("; ").skip(1).collect();
    parts.sort_unstable();
    parts
}

#[tokio::test]
async fn cookie_attributes_are_exact() {
    let node = TestNode::spawn().await;
    let res = browser(&node, Method::GET, "/", None).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(session_set_cookie(&res).is_none(), "no cookie before login");

    let mut signed_in = String::new();
    for carried in [None, Some(anonymous(&node).await)] {
        let res = login_form(&node, carried.as_deref(), "alice", ALICE_PASSWORD)
            .await
            .unwrap();
        let header = session_set_cookie(&res).unwrap();
        let name_value = header.split("; ").next().unwrap();
        assert!(
            name_value.starts_with("__Host-sid=") && name_value.len() == "__Host-sid=".len() + 43
        );
        assert_eq!(sorted_attributes(&header), COOKIE_ATTRIBUTES, "{header}");
        assert!(!header.to_ascii_lowercase().contains("domain"));
        signed_in = session_cookie(&res);
    }

    let res = browser(&node, Method::POST, "/logout", Some(&signed_in))
        .send()
        .await
        .unwrap();
    let header = session_set_cookie(&res).unwrap();
    assert!(header.starts_with("__Host-sid=;"), "{header}");
    for attr in COOKIE_ATTRIBUTES.iter().chain(&["Max-Age=0"]) {
        assert!(
            header.split("; ").any(|p| p == *attr),
            "{attr} missing from {header}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn cross_origin_state_changes_are_refused() {
    let node = TestNode::spawn().await;
    let signed_in = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let anon = anonymous(&node).await;
    let res = browser(&node, Method::POST, "/login", Some(&anon))
        .header(ORIGIN, "https://evil.example")
        .form(&[("username", "alice"), ("password", ALICE_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(session_set_cookie(&res).is_none());
    let res = browser(&node, Method::POST, "/logout", Some(&signed_in))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        whoami(&node, &signed_in).await.unwrap(),
        StatusCode::OK,
        "the cross-site logout did nothing"
    );
    // Same origin is fine.
    let res = browser(&node, Method::POST, "/logout", Some(&signed_in))
        .header(ORIGIN, node.url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    node.stop().await;
}
