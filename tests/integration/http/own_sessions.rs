//! A signed-in user's own sessions (`/me/sessions`): another user's handle
//! cannot be revoked, and ending one's other sessions needs a recent
//! authentication.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{
    browser, browser_login, my_sessions, node_toml, table_name, whoami, TestNode, ALICE_PASSWORD,
    BOB_PASSWORD,
};

/// The handle of a session `GET /me/sessions` lists with the cookie `value`:
/// the current one, or (`current` false) one of the user's others.
async fn my_handle(node: &TestNode, value: &str, current: bool) -> String {
    let mine = my_sessions(node, value).await;
    mine.iter().find(|s| s["current"] == current).unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `DELETE /me/sessions/{handle}` with the session cookie `value`, and a
/// JSON `body` if any: its status and JSON body.
async fn end_mine(
    node: &TestNode,
    value: &str,
    handle: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let path = format!("/me/sessions/{handle}");
    let mut req = browser(&node, Method::DELETE, &path, Some(value));
    if let Some(body) = body {
        req = req.json(&body);
    }
    crate::harness::status_and_body(req.send().await.unwrap()).await
}

/// Ending the session `handle` with the cookie `value` works (204), and
/// the cookie `ended` of that session is refused from then on.
async fn assert_ends(node: &TestNode, value: &str, handle: &str, ended: &str) {
    let (status, _) = end_mine(node, value, handle, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(node, ended).await.unwrap(), StatusCode::UNAUTHORIZED);
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
    let (status, _) = end_mine(&node, &alice_laptop, bob_handle, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        whoami(&node, &bob).await.unwrap(),
        StatusCode::OK,
        "bob is still signed in"
    );

    // Alice can revoke her own other session.
    let mine = my_sessions(&node, &alice_laptop).await;
    assert_eq!(mine.len(), 2);
    assert_eq!(mine.iter().filter(|s| s["current"] == true).count(), 1);
    let phone = my_handle(&node, &alice_laptop, false).await;
    assert_ends(&node, &alice_laptop, &phone, &alice_phone).await;
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
    let toml = node_toml(dir.path(), &table_name(), "")
        .replace("[api]\n", "[session]\nreauth_window_secs = 1\n[api]\n");
    let node = TestNode::spawn_toml(dir, &toml).await;
    let phone = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let laptop = browser_login(&node, "alice", ALICE_PASSWORD).await;
    // The laptop signed in over a second ago: past the window.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let phone_handle = my_handle(&node, &laptop, false).await;
    let (status, body) = end_mine(&node, &laptop, &phone_handle, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "reauth_required");
    let wrong = Some(json!({"password": "not it"}));
    let (status, _) = end_mine(&node, &laptop, &phone_handle, wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        whoami(&node, &phone).await.unwrap(),
        StatusCode::OK,
        "the phone lives on"
    );
    let right = Some(json!({"password": ALICE_PASSWORD}));
    let (status, _) = end_mine(&node, &laptop, &phone_handle, right).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        whoami(&node, &phone).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );

    // Signing the laptop itself out needs nothing.
    let own = my_handle(&node, &laptop, true).await;
    assert_ends(&node, &laptop, &own, &laptop).await;

    // Within the window, no password is asked.
    let tablet = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let fresh = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let tablet_handle = my_handle(&node, &fresh, false).await;
    assert_ends(&node, &fresh, &tablet_handle, &tablet).await;
}
