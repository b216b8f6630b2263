//! The upstream's signed actions, with the Express example signing them:
//! its `/login`, `/logout` and `/logout-everywhere`, and its test routes
//! that answer any action with any signature (`/_test/respond`) or a
//! correctly signed one (`/_test/sign`).

use reqwest::header::{COOKIE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{
    express_gateway, express_gateway_through_faults, sign_request, upstream_saw, ALICE, BOB,
};
use crate::faultproxy::Fault;
use crate::harness::{
    browser, cookie, metrics_text, session_cookie, session_set_cookie, session_status, TestNode,
};

/// `POST <path>` through `node` with the session cookie `carried` and a
/// form.
async fn post(
    node: &TestNode,
    path: &str,
    carried: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = node.client.post(node.at(path)).form(form);
    if let Some(c) = carried {
        req = req.header(COOKIE, cookie(c));
    }
    req.send().await.unwrap()
}

/// The app's login form through `node`, carrying `carried`: the new
/// session cookie (the app answered 303 and the node signed in).
async fn app_login(node: &TestNode, carried: Option<&str>, user: &str, password: &str) -> String {
    let res = post(
        node,
        "/login",
        carried,
        &[("username", user), ("password", password)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(res.headers().get("x-edge-action").is_none());
    assert!(res.headers().get("x-edge-action-signature").is_none());
    session_cookie(&res)
}

/// Who the upstream is told `value` belongs to (`None`: nobody).
async fn who(node: &TestNode, value: &str) -> Option<String> {
    let saw = upstream_saw(node, Some(value), &[]).await;
    saw["x-edge-user"].as_str().map(str::to_owned)
}

/// Whether `res` expires the session cookie.
fn expires_cookie(res: &reqwest::Response) -> bool {
    session_set_cookie(res)
        .is_some_and(|c| c.contains("Max-Age=0") || c.starts_with("__Host-sid=;"))
}

#[tokio::test]
async fn login_and_logout_actions_sign_in_and_out() {
    let (_express, node) = express_gateway("", "").await;

    let res = post(
        &node,
        "/login",
        None,
        &[("username", "alice"), ("password", "wrong")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(session_set_cookie(&res).is_none());

    let alice = app_login(&node, None, "alice", ALICE).await;
    let saw = upstream_saw(&node, Some(&alice), &[]).await;
    assert_eq!(saw["x-edge-user"], "alice");
    assert_eq!(saw["x-edge-role"], "admin");

    let res = post(&node, "/logout", Some(&alice), &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/");
    assert!(expires_cookie(&res), "{:?}", session_set_cookie(&res));
    assert_eq!(who(&node, &alice).await, None, "the session is dead");
}

#[tokio::test]
async fn logout_everywhere_action_ends_every_session_of_the_user() {
    let (_express, node) = express_gateway("", "").await;
    let laptop = app_login(&node, None, "alice", ALICE).await;
    let phone = app_login(&node, None, "alice", ALICE).await;
    let bob = app_login(&node, None, "bob", BOB).await;
    assert_eq!(who(&node, &phone).await.as_deref(), Some("alice"));

    let res = post(&node, "/logout-everywhere", Some(&laptop), &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(expires_cookie(&res));
    assert_eq!(who(&node, &laptop).await, None);
    assert_eq!(who(&node, &phone).await, None, "the other device too");
    assert_eq!(
        who(&node, &bob).await.as_deref(),
        Some("bob"),
        "nobody else"
    );
}

#[tokio::test]
async fn attackers_own_session_planted_in_a_victims_browser_is_dead_after_the_victims_login() {
    let (_express, node) = express_gateway("", "").await;
    // The attacker signs in as themself, and plants that cookie in the
    // victim's browser (a sibling subdomain, a shared machine).
    let planted = app_login(&node, None, "bob", BOB).await;
    assert_eq!(who(&node, &planted).await.as_deref(), Some("bob"));

    // The victim signs in with the planted cookie in their browser.
    let victim = app_login(&node, Some(&planted), "alice", ALICE).await;
    assert_ne!(victim, planted, "a new session, not the planted one");
    assert_eq!(who(&node, &victim).await.as_deref(), Some("alice"));
    // The planted session is dead: the attacker cannot see what the victim
    // does under it, and the victim is not working in the attacker's account.
    assert_eq!(
        who(&node, &planted).await,
        None,
        "the planted session lives on"
    );
    let res = browser(&node, Method::GET, "/.edge/whoami", Some(&planted))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // The same with an anonymous session the attacker made for the purpose.
    let res = node.v1(Method::POST, "/v1/sessions").send().await.unwrap();
    let anonymous = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let victim = app_login(&node, Some(&anonymous), "alice", ALICE).await;
    assert_ne!(victim, anonymous);
    assert_eq!(
        session_status(&node, &anonymous).await.unwrap(),
        StatusCode::NOT_FOUND,
        "the planted anonymous session lives on"
    );
}

/// `GET /_test/respond?action=&signature=` through `node` (the app answers
/// with exactly that action and signature), sending `nonce` as a client
/// would forge it.
async fn respond_with(
    node: &TestNode,
    action: &str,
    signature: Option<&str>,
    nonce: &str,
) -> reqwest::Response {
    let mut query = vec![("action", action)];
    query.extend(signature.map(|s| ("signature", s)));
    node.client
        .get(node.at("/_test/respond"))
        .query(&query)
        .header("x-edge-nonce", nonce)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn unsigned_or_replayed_actions_are_ignored() {
    let (_express, node) = express_gateway("", "").await;
    let action = "login; user=alice; role=admin";

    // A correctly signed action, for that request's nonce, is carried out.
    let res = sign_request(&node, Method::POST, action, &[]).await;
    assert!(
        session_set_cookie(&res).is_some(),
        "a signed action is carried out"
    );
    assert!(res.headers().get("x-edge-action-signature").is_none());
    let signed: Value = res.json().await.unwrap();
    let (old_nonce, signature) = (
        signed["nonce"].as_str().unwrap().to_owned(),
        signed["signature"].as_str().unwrap().to_owned(),
    );

    let zeros = "0".repeat(64);
    let upper = signature.to_uppercase();
    let cases: &[(&str, Option<&str>)] = &[
        ("no signature", None),
        ("a wrong signature", Some(zeros.as_str())),
        (
            "another request's signature (replay)",
            Some(signature.as_str()),
        ),
        ("the replayed signature in upper case", Some(upper.as_str())),
    ];
    for (what, sig) in cases {
        // The client also claims the old nonce: it never reaches the app.
        let res = respond_with(&node, action, *sig, &old_nonce).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "{what}: the response is passed on"
        );
        assert!(session_set_cookie(&res).is_none(), "{what}: carried out");
        assert!(res.headers().get("x-edge-action").is_none(), "{what}");
        assert!(
            res.headers().get("x-edge-action-signature").is_none(),
            "{what}"
        );
        let body: Value = res.json().await.unwrap();
        assert_ne!(
            body["nonce"],
            old_nonce.as_str(),
            "{what}: the forged nonce reached the app"
        );
    }
    // Another action under the same nonce's signature.
    let res = respond_with(&node, "logout-everywhere", Some(&signature), &old_nonce).await;
    assert!(session_set_cookie(&res).is_none());

    let metrics = metrics_text(&node).await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("edge_session_gateway_actions_total")
                && l.contains("result=\"bad_signature\"")),
        "ignored actions are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_login_action_returns_503_and_no_cookie() {
    let Some((proxy, _express, node)) = express_gateway_through_faults().await else {
        return;
    };
    let earlier = app_login(&node, None, "bob", BOB).await;

    proxy.set(Fault::Refuse);
    let form = [("username", "alice"), ("password", ALICE)];
    // No session yet (create), and a live one (regenerate).
    for carried in [None, Some(earlier.as_str())] {
        let res = post(&node, "/login", carried, &form).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{carried:?}");
        assert!(session_set_cookie(&res).is_none(), "a cookie was issued");
        assert!(
            res.headers().get(LOCATION).is_none(),
            "the app's answer was passed on"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "store_unavailable");
    }
    proxy.set(Fault::Pass);
}

/// An app whose answer to an action is cacheable (`Cache-Control: public`,
/// an `ETag`, an `Expires`): the node's answer, which carries the new
/// session cookie (or its removal), must not be, or a shared cache would
/// replay one user's session to others.
#[tokio::test]
async fn a_response_setting_the_session_cookie_is_never_cacheable() {
    let (_express, node) = express_gateway("", "").await;
    let signed = |action: &'static str, carried: Option<String>| {
        let mut req = node
            .client
            .post(node.at("/_test/sign"))
            .query(&[("action", action), ("cacheable", "1")]);
        if let Some(c) = carried {
            req = req.header(COOKIE, cookie(&c));
        }
        req.send()
    };
    let res = signed("login; user=alice", None).await.unwrap();
    let alice = session_set_cookie(&res).expect("signed in");
    assert_never_cached(&res, "a sign-in");
    let value = alice
        .split(';')
        .next()
        .and_then(|c| c.split_once('='))
        .map(|(_, v)| v.to_owned())
        .unwrap();
    let res = signed("logout", Some(value)).await.unwrap();
    assert!(expires_cookie(&res), "signed out");
    assert_never_cached(&res, "a sign-out");
}

fn assert_never_cached(res: &reqwest::Response, what: &str) {
    let headers = res.headers();
    assert_eq!(
        headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "{what}: {headers:?}"
    );
    for dropped in ["etag", "expires"] {
        assert!(headers.get(dropped).is_none(), "{what} kept {dropped}");
    }
}

/// A page on another site, or on a sibling subdomain (same-site, so the
/// `SameSite=Strict` cookie does not stop it), makes the victim's browser
/// ask the app for a sign-in as the attacker; or a link makes it GET one.
/// The app signs the action, but the node carries out none of them: 403
/// `cross_origin`, no cookie. The node's own origin, and an origin listed
/// in `gateway.action_origins`, still sign in.
#[tokio::test]
async fn cross_site_request_cannot_trigger_a_login_action() {
    let (_express, node) = express_gateway("action_origins = [\"https://app.example\"]", "").await;
    let own = node.url.clone();
    let attempt = |method: Method, headers: &'static [(&'static str, &'static str)]| {
        sign_request(&node, method, "login; user=mallory", headers)
    };
    for (method, headers) in [
        (Method::POST, &[("origin", "https://evil.example")][..]),
        (Method::POST, &[("origin", "null")][..]),
        (Method::POST, &[("sec-fetch-site", "cross-site")][..]),
        (
            Method::POST,
            &[
                ("sec-fetch-site", "same-site"),
                ("origin", "https://sub.app.example"),
            ][..],
        ),
        (Method::GET, &[][..]),
        (Method::GET, &[("sec-fetch-site", "same-origin")][..]),
    ] {
        let res = attempt(method.clone(), headers).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{method} {headers:?}");
        assert!(
            session_set_cookie(&res).is_none(),
            "{method} {headers:?} signed someone in"
        );
        let body = res.text().await.unwrap();
        assert!(
            body.contains("cross_origin"),
            "{method} {headers:?}: {body}"
        );
    }
    // The node's own origin, and a listed one, are carried out.
    let own_origin = [("origin", own.as_str()), ("sec-fetch-site", "same-origin")];
    let res = sign_request(&node, Method::POST, "login; user=mallory", &own_origin).await;
    assert!(session_set_cookie(&res).is_some(), "own origin refused");
    let res = attempt(Method::POST, &[("origin", "https://app.example")]).await;
    assert!(session_set_cookie(&res).is_some(), "listed origin refused");
}
