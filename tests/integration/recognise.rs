//! Sessions people can recognise: what a sign-in records about its client
//! (`session.record_client`, `session.geoip_database`), shown in the
//! signed-in page, `GET /me/sessions` and the `/v1` listing, and refreshed
//! by the touch.

use std::time::Duration;

use edge_session::codec;
use reqwest::header::{COOKIE, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{
    anonymous_token, cookie, node_toml, session_cookie, table_name, token, v1_session, TestNode,
    ALICE_PASSWORD,
};
use crate::mmdb::write_city_db;

const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
    AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

/// A browser login of alice from `agent`, forwarded for `from`; her cookie.
async fn login_from(node: &TestNode, agent: &str, from: &str) -> String {
    let res = node
        .client
        .post(node.at("/login"))
        .header(USER_AGENT, agent)
        .header("x-forwarded-for", from)
        .form(&[("username", "alice"), ("password", ALICE_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    session_cookie(&res)
}

/// `GET path` as the browser holding `value`, forwarded for `from`.
async fn browse(node: &TestNode, path: &str, value: &str, from: &str) -> reqwest::Response {
    node.client
        .get(node.at(path))
        .header(COOKIE, cookie(value))
        .header(USER_AGENT, FIREFOX_LINUX)
        .header("x-forwarded-for", from)
        .send()
        .await
        .unwrap()
}

/// A node trusting 127.0.0.1 as its proxy, touching every second, placing
/// addresses with a database where 203.0.113.0/24 is Berlin, in `mode`.
async fn node_recording(mode: &str, dir: &std::path::Path) -> TestNode {
    let db = dir.join("city.mmdb");
    write_city_db(&db, &[("203.0.113.0/24", "DE", "Berlin")]);
    let extra = format!(
        "[session]\nrecord_client = \"{mode}\"\ngeoip_database = \"{}\"\ntouch_interval_secs = 1\n",
        db.display()
    );
    let data = tempfile::tempdir().unwrap();
    let toml = node_toml(data.path(), &table_name(), &extra).replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    TestNode::spawn_toml(data, &toml).await
}

/// A node recording clients in `mode` (and its directory, to keep while
/// it runs), and the session cookie of a laptop signed in from Berlin.
async fn laptop_signed_in(mode: &str) -> (tempfile::TempDir, TestNode, String) {
    let dir = tempfile::tempdir().unwrap();
    let node = node_recording(mode, dir.path()).await;
    let laptop = login_from(&node, FIREFOX_LINUX, "203.0.113.7").await;
    (dir, node, laptop)
}

/// `GET /me/sessions` as the laptop: the listing.
async fn my_sessions(node: &TestNode, value: &str) -> Vec<Value> {
    browse(node, "/me/sessions", value, "203.0.113.7")
        .await
        .json()
        .await
        .unwrap()
}

/// `GET /` as the laptop: the signed-in page.
async fn laptop_page(node: &TestNode, value: &str) -> String {
    let res = browse(node, "/", value, "203.0.113.7").await;
    res.text().await.unwrap()
}

/// `GET /v1/users/{user}/sessions`: the listing.
async fn user_sessions(node: &TestNode, user: &str) -> Vec<Value> {
    node.v1(Method::GET, &format!("/v1/users/{user}/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn your_sessions_shows_device_address_and_last_activity() {
    let (dir, node, laptop) = laptop_signed_in("full").await;
    let phone = login_from(&node, SAFARI_IPHONE, "198.51.100.20").await;

    let res = browse(&node, "/me/sessions", &laptop, "203.0.113.7").await;
    assert_eq!(res.status(), StatusCode::OK);
    let listed: Vec<Value> = res.json().await.unwrap();
    let of = |current: bool| {
        listed
            .iter()
            .find(|s| s["current"] == json!(current))
            .unwrap_or_else(|| panic!("no session with current = {current}: {listed:?}"))
            .clone()
    };
    let here = of(true);
    assert_eq!(
        here["client"],
        json!({
            "address": "203.0.113.7", "last_address": "203.0.113.7",
            "browser": "Firefox 133", "os": "Linux", "country": "DE", "city": "Berlin",
        })
    );
    let there = of(false);
    assert_eq!(there["client"]["browser"], "Mobile Safari 17");
    assert_eq!(there["client"]["os"], "iOS");
    assert_eq!(there["client"]["device"], "iPhone");
    assert_eq!(there["client"]["address"], "198.51.100.20");
    assert!(there["client"].get("city").is_none(), "{there}");

    // The signed-in page says it in words.
    let page = laptop_page(&node, &laptop).await;
    assert!(
        page.contains("Firefox 133 on Linux · 203.0.113.7 · Berlin, DE"),
        "{page}"
    );
    assert!(
        page.contains("Mobile Safari 17 on iOS · iPhone · 198.51.100.20"),
        "{page}"
    );

    // Last activity: the phone used from elsewhere, past the touch
    // interval, shows its new address (and the touch wrote nothing else).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = browse(&node, "/whoami", &phone, "192.0.2.55").await;
    assert_eq!(res.status(), StatusCode::OK);
    let listed = user_sessions(&node, "alice").await;
    let moved = listed
        .iter()
        .find(|s| s["client"]["device"] == "iPhone")
        .unwrap_or_else(|| panic!("the phone is listed: {listed:?}"));
    assert_eq!(moved["client"]["last_address"], "192.0.2.55");
    assert_eq!(moved["client"]["address"], "198.51.100.20");
    assert!(moved["last_seen_at"].as_u64() > there["last_seen_at"].as_u64());
    drop(dir);
}

#[tokio::test]
async fn truncated_keeps_the_network_and_the_browser_family_only() {
    let (_dir, node, laptop) = laptop_signed_in("truncated").await;
    let listed = my_sessions(&node, &laptop).await;
    assert_eq!(
        listed[0]["client"],
        json!({ "address": "203.0.113.0/24", "last_address": "203.0.113.0/24", "browser": "Firefox" })
    );
}

#[tokio::test]
async fn client_metadata_off_stores_nothing() {
    let (_dir, node, laptop) = laptop_signed_in("off").await;
    let listed = my_sessions(&node, &laptop).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("client").is_none(), "{listed:?}");
    // Nothing of the client in the stored record, in either tier: the
    // bytes are format 2, as a build before client metadata wrote them.
    let key = token(&laptop).storage_key();
    let item = node
        .store
        .dynamo()
        .get(key.as_bytes())
        .await
        .unwrap()
        .expect("the session is in DynamoDB");
    assert_eq!(item.body[2], 2, "format byte");
    assert!(codec::decode(&item.body).unwrap().client.is_none());
    for needle in ["Firefox", "203.0.113", "Berlin", "Linux"] {
        assert!(
            !item
                .body
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
            "{needle} stored"
        );
    }
    let cached = node.store.cache().get(&key).unwrap().expect("cached");
    assert_eq!(cached.bytes(), &item.body[..]);
    // The page says nothing either.
    let page = laptop_page(&node, &laptop).await;
    assert!(
        page.contains("Unknown device") && !page.contains("Firefox"),
        "{page}"
    );
}

#[tokio::test]
async fn a_v1_sign_in_records_the_client_the_app_names() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_recording("full", dir.path()).await;
    let anon = anonymous_token(&node).await;
    let res = v1_session(&node, Method::POST, "/v1/session/regenerate", &anon)
        .json(&json!({"user_id": "carol", "client": {"address": "203.0.113.9", "user_agent": SAFARI_IPHONE}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let listed = user_sessions(&node, "carol").await;
    assert_eq!(listed[0]["client"]["city"], "Berlin");
    assert_eq!(listed[0]["client"]["device"], "iPhone");
    // An address that is not one is refused, not recorded.
    let res = v1_session(&node, Method::POST, "/v1/session/regenerate", &anon)
        .json(&json!({"user_id": "carol", "client": {"address": "<script>"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}
