//! Login throttling against a live node: password checks run on their own
//! bounded threads, within per-address and per-account budgets, so a flood
//! of guesses gets fast 429s and never starves logouts and reads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;

use crate::harness::{
    browser_login, client, logout, whoami, TestNode, ALICE_PASSWORD, BOB_PASSWORD, TEST_BUDGETS,
};

/// Two guesses from an address, then one a minute; accounts out of the way.
const TWO_GUESSES_AN_ADDRESS: &str = "per_ip_per_minute = 1\nper_ip_burst = 2\n\
     per_account_per_minute = 1000\nper_account_burst = 1000";

/// The `[server]` line that trusts the loopback peer as a proxy.
const TRUST_LOOPBACK: &str = "trusted_proxies = [\"127.0.0.1\"]";

/// A node whose `[auth]` budgets are `auth` and whose `[server]` gets `server`.
async fn node_with(auth: &str, server: &str) -> TestNode {
    TestNode::spawn_with(server, Some(auth)).await
}

/// Budgets that leave addresses alone: an account gets `burst` guesses at
/// once, then `per_minute` a minute.
fn account_budget(per_minute: u32, burst: u32) -> String {
    format!(
        "per_ip_per_minute = 1000\nper_ip_burst = 1000\n\
         per_account_per_minute = {per_minute}\nper_account_burst = {burst}"
    )
}

/// A wrong-password form login of `user`, claiming `forwarded` as the
/// client: the status and `Retry-After`.
async fn guess(node: &TestNode, user: &str, forwarded: Option<&str>) -> (StatusCode, Option<u64>) {
    guess_with(node, user, "wrong password", forwarded).await
}

async fn guess_with(
    node: &TestNode,
    user: &str,
    password: &str,
    forwarded: Option<&str>,
) -> (StatusCode, Option<u64>) {
    let mut req = node
        .client
        .post(node.at("/login"))
        .form(&[("username", user), ("password", password)]);
    if let Some(addr) = forwarded {
        req = req.header("x-forwarded-for", addr);
    }
    let res = req.send().await.unwrap();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let status = res.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "too_many_attempts", "{body}");
    }
    (status, retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_flood_cannot_starve_logout() {
    // Budgets out of the way: this is about the hash threads and their queue.
    let node = Arc::new(
        node_with(
            &format!("hash_workers = 1\nhash_queue = 4\n{TEST_BUDGETS}"),
            "",
        )
        .await,
    );
    let signed_in = browser_login(&*node, "bob", BOB_PASSWORD).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (refused, without_retry, other) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut flood = Vec::new();
    for i in 0..128 {
        let (node, stop) = (node.clone(), stop.clone());
        let (refused, without_retry, other) =
            (refused.clone(), without_retry.clone(), other.clone());
        let c = client();
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let res = c
                    .post(node.at("/login"))
                    .form(&[("username", "alice"), ("password", &format!("guess-{i}"))])
                    .send()
                    .await
                    .unwrap();
                match res.status() {
                    StatusCode::TOO_MANY_REQUESTS => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        if res.headers().get("retry-after").is_none() {
                            without_retry.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    StatusCode::UNAUTHORIZED => {}
                    _ => {
                        other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Well into the flood (some guesses already shed), the signed-in
    // session is still served, and its logout goes through.
    crate::harness::eventually("the flood is being shed", || async {
        refused.load(Ordering::Relaxed) >= 50
    })
    .await;
    assert_eq!(whoami(&*node, &signed_in).await.unwrap(), StatusCode::OK);
    assert_eq!(
        logout(&*node, &signed_in).await.unwrap(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        whoami(&*node, &signed_in).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    assert_eq!(
        without_retry.load(Ordering::Relaxed),
        0,
        "every 429 says when to retry"
    );
    assert_eq!(
        other.load(Ordering::Relaxed),
        0,
        "guesses get 401 or 429, nothing else"
    );
    // The right password still works once the flood is over.
    browser_login(&*node, "alice", ALICE_PASSWORD).await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let node = node_with(TWO_GUESSES_AN_ADDRESS, "").await;
    // The peer (127.0.0.1) is no proxy: each claimed address is the same client.
    assert_eq!(
        guess(&node, "alice", Some("203.0.113.1")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        guess(&node, "alice", Some("203.0.113.2")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, retry) = guess(&node, "alice", Some("203.0.113.3")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
    // The right password is not even checked while over budget.
    let (status, _) = guess_with(&node, "alice", ALICE_PASSWORD, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let node = node_with(
        TWO_GUESSES_AN_ADDRESS,
        "trusted_proxies = [\"127.0.0.0/8\"]",
    )
    .await;
    let a = Some("203.0.113.1");
    assert_eq!(guess(&node, "alice", a).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(guess(&node, "alice", a).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        guess(&node, "alice", a).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A hop forged to the left of what the proxy appended changes nothing.
    let forged = Some("198.51.100.9, 203.0.113.1");
    assert_eq!(
        guess(&node, "alice", forged).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy has its own budget.
    assert_eq!(
        guess(&node, "alice", Some("203.0.113.2")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn account_budget_applies_across_addresses() {
    let node = node_with(&account_budget(1, 3), TRUST_LOOPBACK).await;
    for i in 1..=3 {
        let from = format!("203.0.113.{i}");
        assert_eq!(
            guess(&node, "alice", Some(&from)).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // A fourth address on the same account: over the account's budget,
    // even with the right password.
    let (status, retry) = guess_with(&node, "alice", ALICE_PASSWORD, Some("203.0.113.4")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some_and(|s| s >= 1), "{retry:?}");
    // Another account from that address is not affected.
    assert_eq!(
        guess(&node, "bob", Some("203.0.113.4")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // An unknown username has a budget too (and costs a hash like a known one).
    for i in 1..=3 {
        let from = format!("198.51.100.{i}");
        assert_eq!(
            guess(&node, "nobody", Some(&from)).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        guess(&node, "nobody", Some("198.51.100.4")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// An attacker fills the budget tables: distinct usernames from distinct
/// addresses, many at once, several times `auth.max_tracked` keys. Nobody
/// else is refused for it: a client the node tracked before, and one it
/// has never seen, both sign in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filling_the_budget_tables_locks_out_no_one_else() {
    let node = Arc::new(node_with("max_tracked = 64\nhash_queue = 4", TRUST_LOOPBACK).await);
    // A client known before the flood.
    let known = Some("192.0.2.1");
    assert_eq!(
        guess(&node, "alice", known).await.0,
        StatusCode::UNAUTHORIZED
    );
    let sent = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for w in 0..32usize {
        let (node, sent) = (node.clone(), sent.clone());
        flood.push(tokio::spawn(async move {
            for n in 0..16usize {
                let i = w * 16 + n;
                let from = format!("100.64.{}.{}", i / 200, i % 200);
                let (status, _) = guess(&node, &format!("filler-{i}"), Some(&from)).await;
                assert!(
                    matches!(
                        status,
                        StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS
                    ),
                    "{status}"
                );
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in flood {
        task.await.unwrap();
    }
    assert_eq!(
        sent.load(Ordering::Relaxed),
        512,
        "8 × max_tracked fresh keys"
    );
    for from in [known, Some("192.0.2.200")] {
        let (status, _) = guess_with(&node, "alice", ALICE_PASSWORD, from).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{from:?} locked out");
    }
}

/// One address guesses a named account's password as fast as it is let.
/// It can never spend all of the account's budget (one attempt less than
/// its burst, half its rate), so the owner, from another address, still
/// signs in.
#[tokio::test]
async fn one_address_cannot_lock_an_account_forever() {
    let node = node_with(&account_budget(10, 5), TRUST_LOOPBACK).await;
    let mut tried = 0;
    for _ in 0..20 {
        match guess(&node, "alice", Some("203.0.113.66")).await.0 {
            StatusCode::UNAUTHORIZED => tried += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(tried, 4, "one less than the account's burst of 5");
    let (status, _) = guess_with(&node, "alice", ALICE_PASSWORD, Some("198.51.100.5")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the owner is locked out");
}

/// A login flood's refusals cost the least the node can spend: past
/// `auth.max_logins_in_flight` logins in progress, the next gets 429 before
/// its body is read (here two logins hold their places by never sending
/// their bodies).
#[tokio::test]
async fn logins_past_the_in_flight_cap_are_refused_before_their_body_is_read() {
    use tokio::io::AsyncWriteExt;
    let node = node_with("max_logins_in_flight = 2", "").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
        stream
            .write_all(
                b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                  Content-Length: 100\r\n\r\n",
            )
            .await
            .unwrap();
        held.push(stream);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, retry) = guess_with(&node, "alice", ALICE_PASSWORD, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry, Some(1));
    drop(held);
    // Their places free, a login goes through.
    crate::harness::eventually("the held logins left", || async {
        guess_with(&node, "alice", ALICE_PASSWORD, None).await.0 == StatusCode::SEE_OTHER
    })
    .await;
}
