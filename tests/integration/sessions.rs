//! A user's sessions: the cap on how many one user keeps
//! (`session.max_per_user`) and the paginated listings
//! (`GET /v1/users/{user_id}/sessions`, `GET /me/sessions`).

use std::collections::BTreeSet;

use reqwest::header::{COOKIE, LINK};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::faultproxy::{Fault, IndexLag};
use crate::harness::{
    browser, browser_login, cookie, eventually, fault_proxy, metric, read_session, service_login,
    table_name, v1_call, whoami, TestNode, ALICE_PASSWORD, BOB_PASSWORD,
};

/// One page: its items and its `Link` header, if any.
async fn page(res: reqwest::Response) -> (Vec<Value>, Option<String>) {
    let status = res.status();
    let link = res
        .headers()
        .get(LINK)
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    (body.as_array().unwrap().clone(), link)
}

/// The URL a `Link: <URL>; rel="next"` header leads to.
fn next_url(link: &str) -> &str {
    link.strip_prefix('<')
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("not a next link: {link}"))
}

fn handles(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|s| s["handle"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sessions_past_max_per_user_evict_the_oldest() {
    let table = table_name();
    let extra = "[session]\nmax_per_user = 3\n";
    let node = TestNode::spawn_on(&table, extra).await;
    // Five logins of one user: three through the login form (a session
    // created bound), two through /v1/session/regenerate.
    let mut signed_in = Vec::new();
    for _ in 0..3 {
        signed_in.push(browser_login(&node, "alice", ALICE_PASSWORD).await);
    }
    let mut service = Vec::new();
    for _ in 0..2 {
        service.push(service_login(&node, "alice").await);
    }
    let bob = browser_login(&node, "bob", BOB_PASSWORD).await;

    // Each login's eviction runs after its answer: wait for the last.
    for (i, oldest) in signed_in[..2].iter().enumerate() {
        eventually(
            &format!("login {i}, among the two oldest, signed out"),
            || async { whoami(&node, oldest).await.unwrap() == StatusCode::UNAUTHORIZED },
        )
        .await;
    }
    let fresh = TestNode::spawn_on(&table, extra).await;
    for n in [&node, &fresh] {
        for (i, oldest) in signed_in[..2].iter().enumerate() {
            assert_eq!(
                whoami(n, oldest).await.unwrap(),
                StatusCode::UNAUTHORIZED,
                "login {i} is among the two oldest: signed out"
            );
        }
        assert_eq!(whoami(n, &signed_in[2]).await.unwrap(), StatusCode::OK);
        for token in &service {
            assert_eq!(read_session(n, token).await.0, StatusCode::OK);
        }
        assert_eq!(
            whoami(n, &bob).await.unwrap(),
            StatusCode::OK,
            "other users are untouched"
        );
    }
    let (listed, link) = page(
        fresh
            .v1(Method::GET, "/v1/users/alice/sessions")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed.len(), 3);
    assert_eq!(link, None);
    let res = browser(&fresh, Method::GET, "/me/sessions", Some(&signed_in[2]))
        .send()
        .await
        .unwrap();
    let (mine, _) = page(res).await;
    assert_eq!(mine.len(), 3);
    assert!(
        metric(&node, "edge_session_evictions_total")
            .await
            .is_some_and(|n| n >= 1.0),
        "evictions are counted"
    );
    fresh.stop().await;
    node.stop().await;
}

#[tokio::test]
async fn user_listing_pages_follow_the_link_header() {
    let node = TestNode::spawn().await;
    // A user id that needs escaping in a path: the link keeps it escaped.
    let user = "pat q";
    let path = "/v1/users/pat%20q/sessions";
    for _ in 0..5 {
        service_login(&node, user).await;
    }
    let (all, link) = page(node.v1(Method::GET, path).send().await.unwrap()).await;
    assert_eq!(all.len(), 5);
    assert_eq!(link, None, "one page holds them all: no link");

    let mut seen = Vec::new();
    let mut url = format!("{path}?limit=2");
    let mut pages = 0;
    loop {
        let (items, link) = page(node.v1(Method::GET, &url).send().await.unwrap()).await;
        pages += 1;
        assert!(items.len() <= 2);
        seen.extend(handles(&items));
        match link {
            Some(link) => {
                let last = seen.last().unwrap();
                assert_eq!(
                    next_url(&link),
                    format!("{path}?limit=2&after={last}"),
                    "the same path and limit, after the page's last handle"
                );
                url = next_url(&link).to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3, "2 + 2 + 1, and the last page has no link");
    assert_eq!(seen, handles(&all), "pages keep the listing's order");

    // A page that ends exactly at the last session has no link either.
    let (items, link) = page(
        node.v1(Method::GET, &format!("{path}?limit=5"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((items.len(), link), (5, None));
    // After the last handle: an empty last page.
    let after_last = format!("{path}?after={}", seen[4]);
    let (items, link) = page(node.v1(Method::GET, &after_last).send().await.unwrap()).await;
    assert_eq!((items.len(), link), (0, None));
    node.stop().await;
}

#[tokio::test]
async fn my_sessions_pages_follow_the_link_header() {
    let node = TestNode::spawn().await;
    let mut cookies = Vec::new();
    for _ in 0..3 {
        cookies.push(browser_login(&node, "bob", BOB_PASSWORD).await);
    }
    let me = |url: String| {
        node.client
            .get(node.at(&url))
            .header(COOKIE, cookie(&cookies[0]))
            .send()
    };
    let (all, link) = page(me("/me/sessions".into()).await.unwrap()).await;
    assert_eq!((all.len(), link), (3, None));

    let mut seen = BTreeSet::new();
    let mut url = "/me/sessions?limit=1".to_owned();
    let mut current = 0;
    for i in 0..3 {
        let (items, link) = page(me(url.clone()).await.unwrap()).await;
        assert_eq!(items.len(), 1);
        current += items.iter().filter(|s| s["current"] == true).count();
        seen.extend(handles(&items));
        match link {
            Some(link) => {
                assert!(i < 2, "the last page has no link");
                assert!(next_url(&link).starts_with("/me/sessions?limit=1&after="));
                url = next_url(&link).to_owned();
            }
            None => assert_eq!(i, 2, "every page but the last has a link"),
        }
    }
    assert_eq!(seen, handles(&all).into_iter().collect());
    assert_eq!(current, 1, "this browser's session is marked once");
    node.stop().await;
}

#[tokio::test]
async fn listing_parameters_out_of_range_are_400() {
    let node = TestNode::spawn().await;
    let bob = browser_login(&node, "bob", BOB_PASSWORD).await;
    let bad = [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "limit=2.5",
        "limit=",
        "limit=1&limit=2",
        "after=",
        "after=not-a-handle",
        // 43 characters, but not a 32-byte base64url value.
        "after=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB",
    ];
    for query in bad {
        for res in [
            node.v1(Method::GET, &format!("/v1/users/bob/sessions?{query}"))
                .send()
                .await
                .unwrap(),
            browser(
                &node,
                Method::GET,
                &format!("/me/sessions?{query}"),
                Some(&bob),
            )
            .send()
            .await
            .unwrap(),
        ] {
            let url = res.url().to_string();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{url}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"], "malformed_input", "{url}: {body}");
        }
    }
    // In range, and an `after` that names no session: a page, not an error.
    let handle = "A".repeat(43);
    for query in ["limit=1", "limit=1000", &format!("after={handle}")] {
        assert_eq!(
            v1_call(
                &node,
                Method::GET,
                &format!("/v1/users/bob/sessions?{query}")
            )
            .await
            .0,
            StatusCode::OK,
            "{query}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn signed_in_page_shows_one_page_and_links_to_the_rest() {
    let node = TestNode::spawn().await;
    let alice = browser_login(&node, "alice", ALICE_PASSWORD).await;
    for _ in 0..20 {
        service_login(&node, "alice").await;
    }
    let res = browser(&node, Method::GET, "/", Some(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert_eq!(html.matches("<tr><td").count(), 20, "the first 20 of 21");
    let more = html
        .split("<a href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to the rest")
        .replace("&amp;", "&");
    assert!(more.starts_with("/me/sessions?limit=20&after="), "{more}");
    let res = node
        .client
        .get(node.at(&more))
        .header(COOKIE, cookie(&alice))
        .send()
        .await
        .unwrap();
    let (rest, link) = page(res).await;
    assert_eq!((rest.len(), link), (1, None));
    node.stop().await;
}

/// The per-user cap costs a login no listing of its user's sessions until
/// the user reaches it: the count kept in the user's epoch item decides,
/// in the login's own transaction. Past it, the oldest is evicted. (The
/// node reaches DynamoDB through the fault proxy, which counts index
/// queries.)
#[tokio::test]
async fn a_login_under_the_cap_lists_no_sessions() {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    proxy.set(Fault::IndexDelay(IndexLag::None));
    let table = table_name();
    let extra = "[session]\nmax_per_user = 3\n";
    // A node straight to DynamoDB makes the table.
    TestNode::spawn_on(&table, extra).await.stop().await;
    let node = TestNode::spawn_proxied(&table, &proxy.url(), "", extra).await;
    let mut logins = Vec::new();
    for _ in 0..3 {
        logins.push(browser_login(&node, "alice", ALICE_PASSWORD).await);
    }
    assert_eq!(
        proxy.index_queries(),
        0,
        "three logins under a cap of three"
    );
    logins.push(browser_login(&node, "alice", ALICE_PASSWORD).await);
    eventually("the oldest of four logins signed out", || async {
        whoami(&node, &logins[0]).await.unwrap() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(proxy.index_queries() >= 1, "the login past the cap listed");
    for token in &logins[1..] {
        assert_eq!(whoami(&node, token).await.unwrap(), StatusCode::OK);
    }
}
