//! WebSocket pass-through to the Express example's `/ws` (it says
//! `hello <X-Edge-User>`, then echoes), with awc as the browser: frames both
//! ways, identity on the upgrade, a refused upgrade's status, and the socket
//! closed when its session is revoked on another node.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_ws::Item;
use awc::error::WsClientError;
use awc::ws::{CloseCode, Frame, Message};
use reqwest::{Method, StatusCode};

use super::{express_gateway, gateway_node_on, Express, ALICE};
use crate::harness::{cookie, session_cookie, table_name, v1_call, TestNode};

type Socket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// Open `/ws` through `node` with the session cookie `carried`, offering
/// `protocols`.
async fn open(
    node: &TestNode,
    carried: Option<&str>,
    path: &str,
) -> Result<(awc::ClientResponse, Socket), WsClientError> {
    let url = format!("{}{path}", node.url);
    let mut req = awc::Client::new()
        .ws(url)
        .protocols(["chat", "superchat"])
        .max_frame_size(1024 * 1024);
    if let Some(c) = carried {
        req = req.header("cookie", cookie(c));
    }
    req.connect().await
}

async fn send(socket: &mut Socket, msg: Message) {
    Pin::new(&mut *socket).write(msg).unwrap();
    poll_fn(|cx| Pin::new(&mut *socket).flush(cx))
        .await
        .unwrap();
}

/// The next frame, within 10 s.
async fn next(socket: &mut Socket) -> Frame {
    let frame = poll_fn(|cx| Pin::new(&mut *socket).next_item(cx));
    tokio::time::timeout(Duration::from_secs(10), frame)
        .await
        .expect("a frame within 10 s")
        .expect("the socket is open")
        .expect("a well-formed frame")
}

/// Sign `user` in through the app's login form on `node`: the cookie.
async fn app_login(node: &TestNode, user: &str, password: &str) -> String {
    let res = node
        .client
        .post(node.at("/login"))
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    session_cookie(&res)
}

#[actix_web::test]
async fn websocket_frames_pass_both_ways() {
    // A short watchdog allowance: a socket must outlive it.
    let server = "keep_alive_ms = 500\nclient_request_timeout_ms = 1000";
    let (_express, node) = express_gateway("", server).await;
    let alice = app_login(&node, "alice", ALICE).await;

    let (res, mut socket) = open(&node, Some(&alice), "/ws").await.unwrap();
    assert_eq!(res.status().as_u16(), 101);
    assert_eq!(
        res.headers().get("sec-websocket-protocol").unwrap(),
        "chat",
        "the app's choice"
    );
    assert_eq!(
        next(&mut socket).await,
        Frame::Text(Bytes::from("hello alice"))
    );

    send(&mut socket, Message::Text("abc".into())).await;
    assert_eq!(next(&mut socket).await, Frame::Text(Bytes::from("abc")));
    send(
        &mut socket,
        Message::Binary(Bytes::from_static(&[0, 1, 2, 255])),
    )
    .await;
    assert_eq!(
        next(&mut socket).await,
        Frame::Binary(Bytes::from_static(&[0, 1, 2, 255]))
    );
    send(&mut socket, Message::Ping(Bytes::from("are you there"))).await;
    assert_eq!(
        next(&mut socket).await,
        Frame::Pong(Bytes::from("are you there"))
    );
    // A fragmented message reaches the app whole (it echoes it in one).
    for item in [
        Item::FirstText(Bytes::from("con")),
        Item::Continue(Bytes::from("tinu")),
        Item::Last(Bytes::from("ation")),
    ] {
        send(&mut socket, Message::Continuation(item)).await;
    }
    assert_eq!(
        next(&mut socket).await,
        Frame::Text(Bytes::from("continuation"))
    );
    // Larger than the default 64 KiB frame limit.
    let big = Bytes::from(vec![7u8; 512 * 1024]);
    send(&mut socket, Message::Binary(big.clone())).await;
    assert_eq!(next(&mut socket).await, Frame::Binary(big));

    // Idle past the watchdog's allowance: still open.
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    send(&mut socket, Message::Text("still here".into())).await;
    assert_eq!(
        next(&mut socket).await,
        Frame::Text(Bytes::from("still here"))
    );

    send(&mut socket, Message::Close(Some(CloseCode::Normal.into()))).await;
    match next(&mut socket).await {
        Frame::Close(Some(reason)) => assert_eq!(reason.code, CloseCode::Normal),
        other => panic!("expected the close answered, got {other:?}"),
    }

    // No session: the app sees nobody.
    let (_, mut socket) = open(&node, None, "/ws").await.unwrap();
    assert_eq!(
        next(&mut socket).await,
        Frame::Text(Bytes::from("hello anonymous"))
    );

    // The app refuses the upgrade: its status is passed on.
    match open(&node, Some(&alice), "/not-a-socket").await {
        Err(WsClientError::InvalidResponseStatus(status)) => {
            assert!(status.is_client_error(), "{status}")
        }
        other => panic!(
            "expected the app's refusal, got {:?}",
            other.map(|r| r.0.status())
        ),
    }
}

#[actix_web::test]
async fn websocket_is_closed_when_its_session_is_revoked() {
    let express = Express::start();
    let table = table_name();
    // A long lease: only the stream follower can tell A about B's revocation.
    let cache = "[cache]\nrevalidate_after_ms = 30000\n[stream]\npoll_interval_ms = 100\n";
    let check_ms = 250;
    let gateway = format!("websocket_check_ms = {check_ms}\n{cache}");
    let a = gateway_node_on(&table, &express.url, &gateway, "").await;
    let b = gateway_node_on(&table, &express.url, &gateway, "").await;
    // Let both followers find their shards before the revocation.
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;

    let alice = app_login(&a, "alice", ALICE).await;
    let (_, mut socket) = open(&a, Some(&alice), "/ws").await.unwrap();
    assert_eq!(
        next(&mut socket).await,
        Frame::Text(Bytes::from("hello alice"))
    );

    // Revoked on the OTHER node.
    assert_eq!(
        v1_call(&b, Method::DELETE, "/v1/users/alice/sessions")
            .await
            .0,
        StatusCode::OK
    );
    let revoked = Instant::now();
    let reason = loop {
        match next(&mut socket).await {
            Frame::Close(reason) => break reason,
            Frame::Ping(_) | Frame::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    };
    let took = revoked.elapsed();
    eprintln!("websocket closed {took:?} after the revocation on another node");
    let reason = reason.expect("a close reason");
    assert_eq!(reason.code, CloseCode::Policy);
    assert_eq!(reason.description.as_deref(), Some("session revoked"));
    // README: a healthy follower delivers within about the poll interval and
    // a round trip; a stalled one within lag_threshold_ms (3 s) +
    // revalidate_after_lagging_ms (1 s) + 250 ms. Plus one check interval.
    let bound = Duration::from_millis(3_000 + 1_000 + 250 + check_ms);
    assert!(took < bound, "closed after {took:?}, over {bound:?}");

    // A new socket under the revoked cookie is anonymous.
    let (_, mut socket) = open(&a, Some(&alice), "/ws").await.unwrap();
    assert_eq!(
        next(&mut socket).await,
        Frame::Text(Bytes::from("hello anonymous"))
    );
}

/// A tab left open on a page with a WebSocket: the node re-checks the
/// session every `websocket_check_ms`, and that must not count as the
/// user's activity. Frames from the client do keep it alive; once they
/// stop, the session idles out and the socket is closed with it.
#[actix_web::test]
async fn an_open_websocket_does_not_keep_an_idle_session_alive() {
    let gateway =
        "websocket_check_ms = 250\n[session]\nidle_timeout_secs = 3\ntouch_interval_secs = 1\n";
    let (_express, node) = express_gateway(gateway, "").await;
    let alice = app_login(&node, "alice", ALICE).await;
    let (_, mut socket) = open(&node, Some(&alice), "/ws").await.unwrap();
    assert_eq!(
        next(&mut socket).await,
        Frame::Text(Bytes::from("hello alice"))
    );
    // Five seconds of frames from the user, past the 3 s idle timeout:
    // the session stays alive.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        send(&mut socket, Message::Text("still here".into())).await;
        assert_eq!(
            next(&mut socket).await,
            Frame::Text(Bytes::from("still here"))
        );
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
    // Then nothing from the user: the re-checks alone do not keep it alive.
    let reason = loop {
        match next(&mut socket).await {
            Frame::Close(reason) => break reason,
            Frame::Ping(_) | Frame::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    };
    let reason = reason.expect("a close reason");
    assert_eq!(reason.code, CloseCode::Policy);
    let res = node
        .client
        .get(node.at("/.edge/whoami"))
        .header("cookie", cookie(&alice))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the session idled out"
    );
}
