//! The node over real sockets: a real HTTP client against `Application`
//! on 127.0.0.1:0, over a real DynamoDB-wire server.

use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, ORIGIN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{
    browser_login, client, cookie, login_form, metrics_text, service_login, session_cookie,
    session_set_cookie, table_name, whoami, whoami_body, TestNode, ALICE_PASSWORD, BOB_PASSWORD,
};

/// A real, live pre-login session (`POST /v1/sessions`): what an attacker
/// who wants to plant a known identifier can obtain. (`GET /` issues none.)
async fn anonymous(node: &TestNode) -> String {
    let res = node.v1(Method::POST, "/v1/sessions").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        whoami(node, &token).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    token
}

#[tokio::test]
async fn browser_flow_regenerates_on_login_and_destroys_on_logout() {
    let node = TestNode::spawn().await;
    let anon = anonymous(&node).await;
    assert_eq!(anon.len(), 43);
    assert_eq!(
        whoami(&node, &anon).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );

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

    let page = node
        .client
        .get(node.at("/"))
        .header(COOKIE, cookie(&signed_in))
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("Signed in") && html.contains("alice"));

    let res = node
        .client
        .post(node.at("/logout"))
        .header(COOKIE, cookie(&signed_in))
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
    let res = node
        .client
        .post(node.at("/login"))
        .header(COOKIE, cookie(&planted))
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

    // The attacker's value is still unauthenticated, everywhere it could be used.
    assert_eq!(
        whoami(&node, &planted).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    let mine = node
        .client
        .get(node.at("/me/sessions"))
        .header(COOKIE, cookie(&planted))
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), StatusCode::UNAUTHORIZED);
    let page = node
        .client
        .get(node.at("/"))
        .header(COOKIE, cookie(&planted))
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign in") && !html.contains("alice"));
    // And through the service API too: the planted token is unknown.
    let res = node
        .v1(Method::GET, "/v1/session")
        .header("x-session-token", &planted)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // A second node (cold cache, same table) agrees.
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
    let res = node
        .v1(Method::GET, "/v1/session")
        .header("x-session-token", &anon)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the old session is still live"
    );
    assert_eq!(res.json::<Value>().await.unwrap()["user_id"], Value::Null);
    assert_eq!(
        whoami(&node, &anon).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    node.stop().await;
}

#[tokio::test]
async fn cookie_attributes_are_exact() {
    let node = TestNode::spawn().await;
    let res = node.client.get(node.at("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(session_set_cookie(&res).is_none(), "no cookie before login");

    for carried in [None, Some(anonymous(&node).await)] {
        let res = login_form(&node, carried.as_deref(), "alice", ALICE_PASSWORD)
            .await
            .unwrap();
        let header = session_set_cookie(&res).unwrap();
        let mut parts: Vec<&str> = header.split("; ").collect();
        let name_value = parts.remove(0);
        assert!(
            name_value.starts_with("__Host-sid=") && name_value.len() == "__Host-sid=".len() + 43
        );
        parts.sort_unstable();
        assert_eq!(
            parts,
            ["HttpOnly", "Path=/", "SameSite=Strict", "Secure"],
            "{header}"
        );
    }
    let res = login_form(&node, None, "alice", ALICE_PASSWORD)
        .await
        .unwrap();
    let header = session_set_cookie(&res).unwrap();
    let mut parts: Vec<&str> = header.split("; ").skip(1).collect();
    parts.sort_unstable();
    assert_eq!(
        parts,
        ["HttpOnly", "Path=/", "SameSite=Strict", "Secure"],
        "{header}"
    );
    assert!(!header.to_ascii_lowercase().contains("domain"));

    let signed_in = session_cookie(&res);
    let res = node
        .client
        .post(node.at("/logout"))
        .header(COOKIE, cookie(&signed_in))
        .send()
        .await
        .unwrap();
    let header = session_set_cookie(&res).unwrap();
    assert!(header.starts_with("__Host-sid=;"), "{header}");
    for attr in [
        "HttpOnly",
        "Path=/",
        "SameSite=Strict",
        "Secure",
        "Max-Age=0",
    ] {
        assert!(
            header.split("; ").any(|p| p == attr),
            "{attr} missing from {header}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn service_regenerate_kills_old_token() {
    let table = table_name();
    let a = TestNode::spawn_on(&table, "").await;
    let b = TestNode::spawn_on(&table, "").await;
    let res = a
        .v1(Method::POST, "/v1/sessions")
        .json(&json!({"data": {"cart": "2"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let old = body["token"].as_str().unwrap().to_owned();
    // B reads it (and caches it).
    let res = b
        .v1(Method::GET, "/v1/session")
        .header("x-session-token", &old)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let res = a
        .v1(Method::POST, "/v1/session/regenerate")
        .header("x-session-token", &old)
        .json(&json!({"user_id": "u-42", "role": "member", "keep_data": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let new = body["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    let res = a
        .v1(Method::GET, "/v1/session")
        .header("x-session-token", &old)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "unknown_session"
    );
    let res = a
        .v1(Method::GET, "/v1/session")
        .header("x-session-token", &new)
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["user_id"].as_str(), body["role"].as_str()),
        (Some("u-42"), Some("member"))
    );
    assert_eq!(body["data"], json!({"cart": "2"}));
    // B cached the old token; it is dead there within the lease, and a
    // cold read of the new one works.
    b.store
        .cache()
        .evict(
            &edge_session::SessionToken::parse(&old)
                .unwrap()
                .storage_key(),
        )
        .unwrap();
    let res = b
        .v1(Method::GET, "/v1/session")
        .header("x-session-token", &old)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = b
        .v1(Method::GET, "/v1/session")
        .header("x-session-token", &new)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn service_api_crud_and_version_conflicts() {
    let node = TestNode::spawn().await;
    let res = node.v1(Method::POST, "/v1/sessions").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let get = || {
        node.v1(Method::GET, "/v1/session")
            .header("x-session-token", &token)
            .send()
    };
    let body: Value = get().await.unwrap().json().await.unwrap();
    assert_eq!(body["user_id"], Value::Null);
    assert_eq!(body["data"], json!({}));
    let v1 = body["version"].as_u64().unwrap();

    let patch = |body: Value| {
        node.v1(Method::PATCH, "/v1/session")
            .header("x-session-token", &token)
            .json(&body)
            .send()
    };
    let res = patch(json!({"data": {"a": "1", "b": "2"}, "version": v1}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"], json!({"a": "1", "b": "2"}));
    assert_eq!(body["version"].as_u64().unwrap(), v1 + 1);
    // A writer still on v1 loses.
    let res = patch(json!({"data": {"a": "stale"}, "version": v1}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "version_conflict"
    );
    // Any integer up to 2^53 - 1 is a version, also written as a float
    // (schemathesis found 2251799813685247.0 refused: serde_json's default
    // float parsing read it as ...247.25). Not this session's: 409, not 400.
    for written in [
        "2251799813685247.0",
        "9007199254740991.0",
        "4503599627370495.0",
    ] {
        let res = node
            .v1(Method::PATCH, "/v1/session")
            .header("x-session-token", &token)
            .header("content-type", "application/json")
            .body(format!(r#"{{"data": {{}}, "version": {written}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CONFLICT, "version {written}");
    }
    // Without a version: merged onto the latest; null removes a key.
    let res = patch(json!({"data": {"b": null, "c": "3"}})).await.unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["data"],
        json!({"a": "1", "c": "3"})
    );

    let res = node
        .v1(Method::DELETE, "/v1/session")
        .header("x-session-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(get().await.unwrap().status(), StatusCode::NOT_FOUND);
    let res = node
        .v1(Method::DELETE, "/v1/session")
        .header("x-session-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = patch(json!({"data": {"a": "resurrect"}})).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "a destroyed session is never written back"
    );
    node.stop().await;
}

#[tokio::test]
async fn logout_everywhere_revokes_all_user_sessions() {
    let node = TestNode::spawn().await;
    let mut carol = Vec::new();
    for _ in 0..3 {
        carol.push(service_login(&node, "carol").await);
    }
    let dave = service_login(&node, "dave").await;
    let res = node
        .v1(Method::GET, "/v1/users/carol/sessions")
        .send()
        .await
        .unwrap();
    let list: Vec<Value> = res.json().await.unwrap();
    assert_eq!(list.len(), 3);
    assert!(list
        .iter()
        .all(|s| s["handle"].as_str().unwrap().len() == 43));
    for s in &list {
        assert!(
            !carol.contains(&s["handle"].as_str().unwrap().to_owned()),
            "a handle is not a token"
        );
    }

    let res = node
        .v1(Method::DELETE, "/v1/users/carol/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"revoked": 3}));
    for t in &carol {
        let res = node
            .v1(Method::GET, "/v1/session")
            .header("x-session-token", t)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    let res = node
        .v1(Method::GET, "/v1/users/carol/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Vec<Value>>().await.unwrap().len(), 0);
    let res = node
        .v1(Method::GET, "/v1/session")
        .header("x-session-token", &dave)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "other users are untouched");
    node.stop().await;
}

async fn my_sessions(node: &TestNode, cookie_value: &str) -> Vec<Value> {
    let res = node
        .client
        .get(node.at("/me/sessions"))
        .header(COOKIE, cookie(cookie_value))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

#[tokio::test]
async fn handle_of_another_user_cannot_be_revoked() {
    let node = TestNode::spawn().await;
    let alice_laptop = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let alice_phone = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let bob = browser_login(&node, "bob", BOB_PASSWORD).await;

    let bobs = my_sessions(&node, &bob).await;
    assert_eq!(bobs.len(), 1);
    let bob_handle = bobs[0]["handle"].as_str().unwrap();
    let res = node
        .client
        .delete(node.at(&format!("/me/sessions/{bob_handle}")))
        .header(COOKIE, cookie(&alice_laptop))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        whoami(&node, &bob).await.unwrap(),
        StatusCode::OK,
        "bob is still signed in"
    );

    // Alice can revoke her own other session.
    let mine = my_sessions(&node, &alice_laptop).await;
    assert_eq!(mine.len(), 2);
    assert_eq!(mine.iter().filter(|s| s["current"] == true).count(), 1);
    let phone = mine.iter().find(|s| s["current"] == false).unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = node
        .client
        .delete(node.at(&format!("/me/sessions/{phone}")))
        .header(COOKIE, cookie(&alice_laptop))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        whoami(&node, &alice_phone).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(whoami(&node, &alice_laptop).await.unwrap(), StatusCode::OK);
    // The service API refuses a handle under the wrong user too.
    let res = node
        .v1(
            Method::DELETE,
            &format!("/v1/users/alice/sessions/{bob_handle}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(whoami(&node, &bob).await.unwrap(), StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn cross_origin_state_changes_are_refused() {
    let node = TestNode::spawn().await;
    let signed_in = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let anon = anonymous(&node).await;
    let res = node
        .client
        .post(node.at("/login"))
        .header(COOKIE, cookie(&anon))
        .header(ORIGIN, "https://evil.example")
        .form(&[("username", "alice"), ("password", ALICE_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(session_set_cookie(&res).is_none());
    let res = node
        .client
        .post(node.at("/logout"))
        .header(COOKIE, cookie(&signed_in))
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
    let res = node
        .client
        .post(node.at("/logout"))
        .header(COOKIE, cookie(&signed_in))
        .header(ORIGIN, node.url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    node.stop().await;
}

#[tokio::test]
async fn hostile_input_gets_documented_statuses_and_the_node_keeps_serving() {
    let node = TestNode::spawn().await;
    let c = client();
    let token = service_login(&node, "erin").await;
    let big = "x".repeat(64 * 1024);
    let checks: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "no api key",
            c.get(node.at("/v1/session"))
                .header("x-session-token", &token),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong api key",
            c.get(node.at("/v1/session"))
                .bearer_auth("nope-nope-nope-nope")
                .header("x-session-token", &token),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "basic auth",
            c.get(node.at("/v1/session")).basic_auth("a", Some("b")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "missing token",
            node.v1(Method::GET, "/v1/session"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "garbage token",
            node.v1(Method::GET, "/v1/session")
                .header("x-session-token", "not a token"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "oversized token header",
            node.v1(Method::GET, "/v1/session")
                .header("x-session-token", "A".repeat(4000)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown token",
            node.v1(Method::GET, "/v1/session").header(
                "x-session-token",
                edge_session::SessionToken::generate().expose(),
            ),
            StatusCode::NOT_FOUND,
        ),
        (
            "malformed json",
            node.v1(Method::PATCH, "/v1/session")
                .header("x-session-token", &token)
                .header(CONTENT_TYPE, "application/json")
                .body("{\"data\": {"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong json shape",
            node.v1(Method::PATCH, "/v1/session")
                .header("x-session-token", &token)
                .json(&json!({"data": {"a": 1}})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown field",
            node.v1(Method::POST, "/v1/session/regenerate")
                .header("x-session-token", &token)
                .json(&json!({"user_id": "x", "admin": true})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "empty user id",
            node.v1(Method::POST, "/v1/session/regenerate")
                .header("x-session-token", &token)
                .json(&json!({"user_id": ""})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "oversized body",
            node.v1(Method::PATCH, "/v1/session")
                .header("x-session-token", &token)
                .header(CONTENT_TYPE, "application/json")
                .body(format!("{{\"data\":{{\"a\":\"{big}\"}}}}")),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "oversized create body",
            node.v1(Method::POST, "/v1/sessions")
                .header(CONTENT_TYPE, "application/json")
                .body(format!("{{\"data\":{{\"a\":\"{big}\"}}}}")),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "wrong content type",
            node.v1(Method::PATCH, "/v1/session")
                .header("x-session-token", &token)
                .header(CONTENT_TYPE, "text/plain")
                .body("{\"data\":{}}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "create with form body",
            node.v1(Method::POST, "/v1/sessions").form(&[("data", "x")]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "login wrong content type",
            c.post(node.at("/login"))
                .header(CONTENT_TYPE, "text/plain")
                .body("username=alice"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "login malformed json",
            c.post(node.at("/login"))
                .header(CONTENT_TYPE, "application/json")
                .body("{"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "login missing field",
            c.post(node.at("/login")).form(&[("username", "alice")]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "login oversized",
            c.post(node.at("/login"))
                .form(&[("username", "alice"), ("password", big.as_str())]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "garbage cookie",
            c.get(node.at("/whoami"))
                .header(COOKIE, "__Host-sid=%%%; ;;=="),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "non-utf8 cookie",
            c.get(node.at("/whoami")).header(
                COOKIE,
                reqwest::header::HeaderValue::from_bytes(b"__Host-sid=\xff\xfe").unwrap(),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "oversized cookie",
            c.get(node.at("/whoami"))
                .header(COOKIE, format!("__Host-sid={}", "A".repeat(8000))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown route",
            c.get(node.at("/v2/whatever")),
            StatusCode::NOT_FOUND,
        ),
        (
            "wrong method",
            c.put(node.at("/login")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "bad handle",
            c.delete(node.at("/me/sessions/zzz"))
                .header(COOKIE, cookie(&token)),
            StatusCode::NOT_FOUND,
        ),
        (
            "bad user id",
            node.v1(
                Method::GET,
                &format!("/v1/users/{}/sessions", "u".repeat(300)),
            ),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (name, req, expected) in checks {
        let res = req.send().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(res.status(), expected, "{name}");
        let content_type = res
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = res.text().await.unwrap();
        if expected != StatusCode::UNAUTHORIZED || name.contains("key") || name.contains("auth") {
            assert_eq!(
                content_type.as_deref(),
                Some("application/json"),
                "{name}: {body}"
            );
            let json: Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}: {body}"));
            assert!(
                json["error"].is_string() && json["message"].is_string(),
                "{name}: {body}"
            );
        }
        assert!(
            !body.contains(&token),
            "{name}: the token leaked into an error body"
        );
        let health = c.get(node.at("/healthz")).send().await.unwrap();
        assert_eq!(
            health.status(),
            StatusCode::OK,
            "still serving after {name}"
        );
    }
    // The valid token survived all of it.
    let res = node
        .v1(Method::GET, "/v1/session")
        .header("x-session-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn operations_endpoints() {
    let node = TestNode::spawn().await;
    let res = node.client.get(node.at("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");
    let _ = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let text = metrics_text(&node).await.unwrap();
    for name in [
        "edge_session_http_request_duration_seconds_bucket",
        "edge_session_http_requests_total",
        "edge_session_dynamodb_call_duration_seconds_bucket",
        "edge_session_cache_lookups_total",
        "edge_session_outbox_pending",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    assert!(text.contains("route=\"/login\""));
    node.stop().await;
}

/// Each distinct label value is a new metric series kept for ever: a client
/// sending requests with made-up methods must not be able to grow the
/// node's memory (and its /metrics page) without bound.
#[tokio::test]
async fn made_up_methods_cannot_grow_the_metric_series() {
    let node = TestNode::spawn().await;
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("X{i}ATTACK").as_bytes()).unwrap();
        let res = node
            .client
            .request(method, node.at("/whoami"))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    let text = metrics_text(&node).await.unwrap();
    assert!(!text.contains("ATTACK"), "a made-up method became a label");
    assert!(
        text.contains("method=\"OTHER\""),
        "made-up methods are counted as OTHER"
    );
    node.stop().await;
}

#[tokio::test]
async fn dynamodb_unreachable_is_503_store_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let toml = crate::harness::node_toml(dir.path(), "unreachable", "")
        .replace("provision_on_start = true", "provision_on_start = false")
        .replace(&endpoint_line(), &format!("endpoint = \"{url}\"\naccess_key_id = \"x\"\nsecret_access_key = \"y\"\nconnect_timeout_ms = 200"));
    let config = edge_session::config::Config::from_toml(&toml).unwrap();
    let app = edge_session::Application::build(config).await.unwrap();
    let url = app.url();
    let handle = app.handle();
    let task = tokio::spawn(app.run_until_stopped());
    let c = client();
    let res = c
        .post(format!("{url}/v1/sessions"))
        .bearer_auth(crate::harness::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "store_unavailable"
    );
    let res = c
        .post(format!("{url}/login"))
        .form(&[("username", "alice"), ("password", ALICE_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        session_set_cookie(&res).is_none(),
        "no session issued while DynamoDB is down"
    );
    let res = c.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        c.get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    handle.stop(true).await;
    task.await.unwrap().unwrap();
}

/// The endpoint line(s) `node_toml` writes for the harness endpoint.
fn endpoint_line() -> String {
    let toml = crate::harness::dynamodb_toml("t");
    toml.lines()
        .skip(1)
        .take_while(|l| !l.starts_with("table"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Someone at a signed-in browser (a borrowed laptop, a session cookie
/// stolen hours after sign-in) tries to end the owner's other sessions, to
/// lock them out. Past `session.reauth_window_secs` since the sign-in, that
/// needs the password again: 403 `reauth_required` without it, 401 with a
/// wrong one, and the other session lives on. With the password, or within
/// the window, it is ended; ending the current session (signing out) never
/// needs it.
#[tokio::test]
async fn revoking_other_sessions_needs_a_recent_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let toml = crate::harness::node_toml(dir.path(), &table_name(), "")
        .replace("[api]\n", "[session]\nreauth_window_secs = 1\n[api]\n");
    let node = TestNode::spawn_toml(dir, &toml).await;
    let phone = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let laptop = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let other_than = |cookie_value: String| {
        let node = &node;
        async move {
            let mine = my_sessions(node, &cookie_value).await;
            mine.iter().find(|s| s["current"] == false).unwrap()["handle"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let end = |handle: String, body: Option<Value>| {
        let mut req = node
            .client
            .delete(node.at(&format!("/me/sessions/{handle}")))
            .header(COOKIE, cookie(&laptop));
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
    };
    // The laptop signed in over a second ago: past the window.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let phone_handle = other_than(laptop.clone()).await;
    let res = end(phone_handle.clone(), None).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "reauth_required"
    );
    let res = end(phone_handle.clone(), Some(json!({"password": "not it"})))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        whoami(&node, &phone).await.unwrap(),
        StatusCode::OK,
        "the phone lives on"
    );
    let res = end(phone_handle, Some(json!({"password": ALICE_PASSWORD})))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        whoami(&node, &phone).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );

    // Signing the laptop itself out needs nothing.
    let own = my_sessions(&node, &laptop).await;
    let own = own.iter().find(|s| s["current"] == true).unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = end(own, None).await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        whoami(&node, &laptop).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );

    // Within the window, no password is asked.
    let tablet = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let fresh = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let tablet_handle = other_than(fresh.clone()).await;
    let res = node
        .client
        .delete(node.at(&format!("/me/sessions/{tablet_handle}")))
        .header(COOKIE, cookie(&fresh))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        whoami(&node, &tablet).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
}
