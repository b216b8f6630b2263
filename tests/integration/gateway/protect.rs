//! `gateway.protect` in front of the Express example's `/admin`, and the
//! node's login page under `/.edge` with its `next`.

use reqwest::header::{ACCEPT, COOKIE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{express_gateway, raw_request, RawResponse};
use crate::harness::{browser, cookie, session_cookie, TestNode, ALICE_PASSWORD};

const PROTECT: &str = "protect = [\"/admin\"]";

const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

/// `POST /.edge/login` as a form with `next`: the answer.
async fn edge_login(node: &TestNode, next: &str) -> reqwest::Response {
    node.client
        .post(node.at("/.edge/login"))
        .form(&[
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
            ("next", next),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn protected_paths_send_browsers_to_login_and_others_get_401() {
    let (_express, node) = express_gateway(PROTECT, "").await;

    // A browser is sent to the node's login page, which carries `next`.
    let res = node
        .client
        .get(node.at("/admin/users?tab=1"))
        .header(ACCEPT, HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(location, "/.edge/login?next=%2Fadmin%2Fusers%3Ftab%3D1");
    let page = node.client.get(node.at(&location)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("action=\"/.edge/login\""), "{page}");
    assert!(
        page.contains("name=\"next\" value=\"/admin/users?tab=1\""),
        "{page}"
    );

    // Anything else gets 401, and nothing reaches the app.
    for (method, accept) in [
        (Method::GET, "application/json"),
        (Method::POST, HTML),
        (Method::DELETE, "*/*"),
    ] {
        let res = node
            .client
            .request(method.clone(), node.at("/admin"))
            .header(ACCEPT, accept)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"],
            "unauthenticated"
        );
    }
    // Unprotected neighbours go through.
    let res = node
        .client
        .get(node.at("/administrator"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "Express's 404, not the node's 401"
    );

    // Sign in on the node's page: back to `next`, which now opens.
    let res = edge_login(&node, "/admin/users?tab=1").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/admin/users?tab=1");
    let alice = session_cookie(&res);
    let res = node
        .client
        .get(node.at("/admin"))
        .header(ACCEPT, HTML)
        .header(COOKIE, cookie(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("Welcome, alice"));

    // The node's own signed-in page links under /.edge.
    let res = browser(&node, Method::GET, "/.edge/", Some(&alice))
        .send()
        .await
        .unwrap();
    let page = res.text().await.unwrap();
    assert!(page.contains("action=\"/.edge/logout\""), "{page}");
    assert!(!page.contains("action=\"/logout\""), "{page}");
}

/// Other spellings of `/admin`: case, percent-encoding (once and twice),
/// dot segments, doubled and encoded slashes, path parameters.
const ADMIN_SPELLINGS: &[&str] = &[
    "/admin",
    "/admin/",
    "/ADMIN",
    "/Admin/users",
    "/%61dmin",
    "/%41DMIN",
    "/%2561dmin",
    "//admin",
    "/x/../admin",
    "/x/%2e%2e/admin",
    "/./admin",
    "/%2Fadmin",
    "/admin;x=1",
    "/admin%2F",
    "/admin/..%2F..%2Fadmin",
];

/// Each of `paths`, fetched as [`raw_get`] does, gets the node's 401 (a
/// JSON `unauthenticated` error) and never reaches the app.
async fn assert_all_refused(node: &TestNode, paths: &[&str]) {
    for path in paths {
        let res = raw_get(node, path).await;
        assert_eq!(res.status, 401, "{path} reached the app: {}", res.head);
        let body: Value = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(body["error"], "unauthenticated", "{path}");
    }
}

#[tokio::test]
async fn protected_path_bypass_by_encoding_is_refused() {
    let (_express, node) = express_gateway(PROTECT, "").await;
    // Sent on a raw socket: an HTTP client library would normalize some of
    // these before they left.
    assert_all_refused(&node, ADMIN_SPELLINGS).await;
}

#[tokio::test]
async fn open_redirect_via_next_is_refused() {
    let (_express, node) = express_gateway(PROTECT, "").await;
    for next in [
        "//evil.example/x",
        "///evil.example",
        "/\\evil.example",
        "/%2F%2Fevil.example",
        "/%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "%2F%2Fevil.example",
        "https://evil.example/",
        "http:evil.example",
        "javascript:alert(1)",
        " //evil.example",
        "/\t/evil.example",
        "/%09/evil.example",
        "/\r\nSet-Cookie: x=1",
        "evil.example",
        "",
    ] {
        let res = edge_login(&node, next).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(res.headers()[LOCATION], "/", "{next:?} was followed");
        assert!(
            res.headers().get("set-cookie").is_some(),
            "the login itself worked"
        );

        let page = node
            .client
            .get(node.at("/.edge/login"))
            .query(&[("next", next)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !page.contains("name=\"next\""),
            "{next:?} carried by the page"
        );
    }
    // A path on this origin is followed.
    let res = edge_login(&node, "/admin?x=%2F%2F").await;
    assert_eq!(res.headers()[LOCATION], "/admin?x=%2F%2F");
}

/// `GET {path}` on a raw socket (an HTTP client would normalize the path),
/// asking for JSON: the answer.
async fn raw_get(node: &TestNode, path: &str) -> RawResponse {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: app.example\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    raw_request(&node.url, request.as_bytes()).await
}

/// `/admin` with a suffix a framework strips, or behind a front controller.
const SUFFIXED_ADMIN: &[&str] = &[
    "/admin.html",
    "/admin.json",
    "/admin.",
    "/admin%20",
    "/admin.%20.",
    "/Admin.HTML",
    "/admin;.html",
    "/index.php/admin",
    "/public/index.php/admin/users",
    "/index.php/admin.json",
];

#[tokio::test]
async fn suffixed_and_front_controller_paths_are_protected() {
    let (_express, node) = express_gateway(PROTECT, "").await;
    // Rails serves `/admin.html` from `/admin`, older Spring `/admin.x`;
    // Laravel and Symfony route `/index.php/admin` to `/admin`.
    assert_all_refused(&node, SUFFIXED_ADMIN).await;
    let res = raw_get(&node, "/administrator.html").await;
    assert_eq!(res.status, 404, "a neighbour is the app's (Express's 404)");
}

#[tokio::test]
async fn deny_by_default_protects_unlisted_paths() {
    let (_express, node) = express_gateway(
        "protect = [\"/*\"]\npublic = [\"/login\", \"/headers\"]",
        "",
    )
    .await;
    for path in ["/headers", "/headers/", "/HEADERS", "/login"] {
        let res = raw_get(&node, path).await;
        assert_eq!(res.status, 200, "{path} is public: {}", res.head);
    }
    // Anything not listed, and any reading that leaves a public prefix.
    let unlisted = [
        "/",
        "/admin",
        "/anything-else",
        "/headers/../admin",
        "/headers/%2e%2e/admin",
        "/headers%2F..%2Fadmin",
        "/login.php",
        "/login.json",
        "/index.php/login",
        "/loginx",
    ];
    assert_all_refused(&node, &unlisted).await;
    // Signed in, unlisted paths open.
    let res = edge_login(&node, "/").await;
    let alice = session_cookie(&res);
    let res = browser(&node, Method::GET, "/admin", Some(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
