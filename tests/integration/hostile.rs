//! Hostile input against a live node: proptest over cookie values,
//! `X-Session-Token` values and JSON bodies, one node per test, a bounded
//! number of cases. Every answer is a documented status (success, or 400 /
//! 401 / 404 / 409 / 413 / 415 with a JSON error body), never a 5xx or a
//! dropped connection; no error body echoes the live token; the node keeps
//! serving, and the live session survives all of it.
//!
//! The hand-picked cases are in `http::bad_input`
//! (`hostile_input_gets_documented_statuses_and_the_node_keeps_serving`).
//! The parsers underneath have their own properties: `SessionToken::parse`
//! (`token::tests::parse_never_panics`) and the record codec on random bytes
//! (`codec::tests::random_bytes_never_panic`,
//! `codec::tests::random_payload_behind_a_valid_header_never_panics`), and
//! the cargo-fuzz targets in `fuzz/` (see `docs/security.md`).
//!
//! `PROPTEST_CASES` changes the number of cases, `PROPTEST_RNG_SEED` replays
//! a run.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::header::{HeaderValue, CONTENT_TYPE, COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{
    browser_login, session_status, sled_entries, table_items, token_with_data, v1_session, whoami,
    TestNode, ALICE_PASSWORD,
};

/// Cases per test unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 96;

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A node, its live token, and a runtime to drive both from proptest's
/// synchronous runner.
struct Target {
    rt: tokio::runtime::Runtime,
    node: TestNode,
    live: String,
}

impl Target {
    fn start() -> Target {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let node = rt.block_on(TestNode::spawn());
        let live = rt.block_on(async { token_with_data(&node, json!({"cart": "3"})).await });
        Target { rt, node, live }
    }

    fn runner() -> TestRunner {
        let defaults = Config::default();
        TestRunner::new(Config {
            cases: if std::env::var_os("PROPTEST_CASES").is_some() {
                defaults.cases
            } else {
                CASES
            },
            failure_persistence: None,
            ..defaults
        })
    }

    /// Send `req`; the answer must be one of `allowed`, shaped as documented.
    async fn check(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
        allowed: &[StatusCode],
    ) -> Result<StatusCode, String> {
        let res = req
            .send()
            .await
            .map_err(|e| format!("{what}: no answer (did the node panic?): {e}"))?;
        let status = res.status();
        let content_type = res
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = res.text().await.map_err(|e| format!("{what}: {e}"))?;
        if !allowed.contains(&status) {
            return Err(format!(
                "{what}: answered {status} (allowed {allowed:?}): {body}"
            ));
        }
        if status.is_client_error() && !content_type.starts_with("text/html") {
            let json: Value = serde_json::from_str(&body).map_err(|e| {
                format!("{what}: {status} with a body that is not JSON ({e}): {body}")
            })?;
            if !(json["error"].is_string() && json["message"].is_string()) {
                return Err(format!("{what}: {status} without the error shape: {body}"));
            }
        }
        if body.contains(&self.live) {
            return Err(format!("{what}: the live token appears in a response body"));
        }
        Ok(status)
    }

    /// The node still answers, and the live session is intact.
    async fn still_serving(&self) -> Result<(), String> {
        let health = self
            .node
            .client
            .get(self.node.at("/healthz"))
            .send()
            .await
            .map_err(|e| format!("the node stopped answering: {e}"))?;
        if health.status() != StatusCode::OK {
            return Err(format!("/healthz answered {}", health.status()));
        }
        Ok(())
    }

    fn finish(self) {
        let Target { rt, node, live } = self;
        rt.block_on(async {
            assert_eq!(
                session_status(&node, &live).await.unwrap(),
                StatusCode::OK,
                "the live session survived"
            );
            node.stop().await;
        });
    }
}

/// Bytes a client can put in a header value (visible ASCII, space, tab and
/// obs-text), weighted towards the characters that structure cookies.
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => 0x20u8..=0x7e,
            1 => Just(b'\t'),
            1 => 0x80u8..=0xff,
            2 => proptest::sample::select(b";=,\" %_-".to_vec()),
        ],
        0..max,
    )
}

/// 43 characters of the token alphabet: usually well-formed, sometimes
/// with non-canonical trailing bits.
fn token_shaped() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(B64URL.to_vec()), 43)
        .prop_map(|b| String::from_utf8(b).expect("ASCII"))
}

/// The live token with one character replaced, or cut, or lengthened.
fn mutated(live: String) -> impl Strategy<Value = String> {
    (
        0..43usize,
        proptest::sample::select(B64URL.to_vec()),
        0..3u8,
    )
        .prop_filter_map("a mutation that changes the token", move |(at, c, how)| {
            let mut s = live.clone().into_bytes();
            match how {
                0 => s[at] = c,
                1 => s.truncate(at),
                _ => s.insert(at, c),
            }
            let s = String::from_utf8(s).expect("ASCII");
            (s != live).then_some(s)
        })
}

fn header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("the strategy only makes valid header bytes")
}

/// Cookie header values: junk, junk behind the cookie name, token-shaped
/// values, the live token mutated, and several cookies at once.
fn cookie_headers(live: String) -> impl Strategy<Value = Vec<u8>> {
    let named = |v: Vec<u8>| [b"__Host-sid=".to_vec(), v].concat();
    prop_oneof![
        header_bytes(120),
        header_bytes(120).prop_map(named),
        token_shaped().prop_map(move |t| named(t.into_bytes())),
        mutated(live).prop_map(move |t| named(t.into_bytes())),
        (token_shaped(), header_bytes(40)).prop_map(|(t, junk)| {
            [
                b"a=b; __Host-sid=".to_vec(),
                t.into_bytes(),
                b"; __Host-sid=".to_vec(),
                junk,
            ]
            .concat()
        }),
        Just(format!("__Host-sid={}", "A".repeat(6000)).into_bytes()),
    ]
}

#[test]
fn hostile_cookie_values_get_documented_statuses() {
    let target = Target::start();
    let strategy = cookie_headers(target.live.clone());
    let ok = |s: &[StatusCode]| s.to_vec();
    let result = Target::runner().run(&strategy, |bytes| {
        let t = &target;
        t.rt.block_on(async {
            let value = header_value(&bytes);
            let c = &t.node.client;
            let bad = StatusCode::BAD_REQUEST;
            let calls = [
                (
                    "GET /whoami",
                    c.get(t.node.at("/whoami")),
                    ok(&[StatusCode::UNAUTHORIZED, bad]),
                ),
                (
                    "GET /me/sessions",
                    c.get(t.node.at("/me/sessions")),
                    ok(&[StatusCode::UNAUTHORIZED, bad]),
                ),
                // The login page: no session issued, nothing written.
                ("GET /", c.get(t.node.at("/")), ok(&[StatusCode::OK, bad])),
                (
                    "POST /logout",
                    c.post(t.node.at("/logout")),
                    ok(&[StatusCode::SEE_OTHER, bad]),
                ),
                (
                    "POST /login (wrong password)",
                    c.post(t.node.at("/login"))
                        .form(&[("username", "alice"), ("password", "nope")]),
                    ok(&[StatusCode::UNAUTHORIZED, bad]),
                ),
            ];
            for (what, req, allowed) in calls {
                t.check(what, req.header(COOKIE, value.clone()), &allowed)
                    .await?;
            }
            t.still_serving().await
        })
        .map_err(TestCaseError::fail)
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    let items = target.rt.block_on(table_items(&target.node));
    assert_eq!(items, 1, "hostile cookies wrote nothing to DynamoDB");
    target.finish();
}

/// `X-Session-Token` values: junk, token-shaped, the live token mutated,
/// oversized.
fn token_headers(live: String) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        header_bytes(80),
        token_shaped().prop_map(String::into_bytes),
        mutated(live).prop_map(String::into_bytes),
        (token_shaped(), header_bytes(8)).prop_map(|(t, junk)| [t.into_bytes(), junk].concat()),
        Just("A".repeat(5000).into_bytes()),
    ]
}

#[test]
fn hostile_session_token_headers_get_documented_statuses() {
    let target = Target::start();
    let strategy = token_headers(target.live.clone());
    let result = Target::runner().run(&strategy, |bytes| {
        let t = &target;
        t.rt.block_on(async {
            let value = header_value(&bytes);
            let n = &t.node;
            // 400 for what is not a token, 404 for a token with no session.
            let allowed = [StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND];
            let calls = [
                ("GET /v1/session", n.v1(Method::GET, "/v1/session")),
                (
                    "PATCH /v1/session",
                    n.v1(Method::PATCH, "/v1/session")
                        .json(&json!({"data": {"k": "v"}})),
                ),
                (
                    "POST /v1/session/regenerate",
                    n.v1(Method::POST, "/v1/session/regenerate")
                        .json(&json!({"user_id": "mallory"})),
                ),
                ("DELETE /v1/session", n.v1(Method::DELETE, "/v1/session")),
            ];
            for (what, req) in calls {
                t.check(what, req.header("x-session-token", value.clone()), &allowed)
                    .await?;
            }
            t.still_serving().await
        })
        .map_err(TestCaseError::fail)
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    target.finish();
}

/// JSON values with the API's field names in play.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => proptest::sample::select(vec![
            "data", "version", "user_id", "role", "keep_data", "username", "password", "k", "",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Request bodies sent as `application/json`: JSON values, JSON objects in
/// the shape of the API's bodies, random bytes, and oversized ones.
fn json_bodies() -> impl Strategy<Value = Vec<u8>> {
    let shaped = (
        proptest::collection::btree_map("\\PC{0,8}", proptest::option::of("\\PC{0,16}"), 0..5),
        proptest::option::of(json_value()),
        proptest::option::of("\\PC{0,8}"),
    )
        .prop_map(|(data, version, user_id)| {
            let mut body = serde_json::Map::new();
            body.insert("data".into(), json!(data));
            if let Some(v) = version {
                body.insert("version".into(), v);
            }
            if let Some(u) = user_id {
                body.insert("user_id".into(), json!(u));
            }
            serde_json::to_vec(&Value::Object(body)).expect("a Value serializes")
        });
    prop_oneof![
        4 => json_value().prop_map(|v| serde_json::to_vec(&v).expect("a Value serializes")),
        3 => shaped,
        2 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => (1usize..4).prop_map(|k| format!("{{\"data\":{{\"a\":\"{}\"}}}}", "x".repeat(k * 12_000)).into_bytes()),
    ]
}

/// Content types: mostly JSON (in its spellings), sometimes not.
fn content_types() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => Just("application/json"),
        1 => Just("application/json; charset=utf-8"),
        1 => Just("APPLICATION/JSON"),
        1 => Just("text/plain"),
        1 => Just("application/x-www-form-urlencoded"),
        1 => Just("application/jsonx"),
    ]
}

#[test]
fn hostile_json_bodies_get_documented_statuses() {
    let target = Target::start();
    let unknown = edge_session::SessionToken::generate().expose();
    let strategy = (json_bodies(), content_types());
    let result = Target::runner().run(&strategy, |(body, content_type)| {
        let t = &target;
        t.rt.block_on(async {
            let n = &t.node;
            let json = |req: reqwest::RequestBuilder| {
                req.header(CONTENT_TYPE, content_type).body(body.clone())
            };
            use StatusCode as S;
            let calls = [
                (
                    "POST /v1/sessions",
                    json(n.v1(Method::POST, "/v1/sessions")),
                    vec![
                        S::CREATED,
                        S::BAD_REQUEST,
                        S::PAYLOAD_TOO_LARGE,
                        S::UNSUPPORTED_MEDIA_TYPE,
                    ],
                ),
                (
                    // The live session: a valid body is a real change.
                    "PATCH /v1/session",
                    json(v1_session(n, Method::PATCH, "/v1/session", &t.live)),
                    vec![
                        S::OK,
                        S::BAD_REQUEST,
                        S::CONFLICT,
                        S::PAYLOAD_TOO_LARGE,
                        S::UNSUPPORTED_MEDIA_TYPE,
                    ],
                ),
                (
                    "POST /v1/session/regenerate",
                    json(v1_session(
                        n,
                        Method::POST,
                        "/v1/session/regenerate",
                        &unknown,
                    )),
                    vec![
                        S::BAD_REQUEST,
                        S::NOT_FOUND,
                        S::PAYLOAD_TOO_LARGE,
                        S::UNSUPPORTED_MEDIA_TYPE,
                    ],
                ),
                (
                    "POST /login",
                    json(n.client.post(n.at("/login"))),
                    vec![
                        S::BAD_REQUEST,
                        S::UNAUTHORIZED,
                        S::PAYLOAD_TOO_LARGE,
                        S::UNSUPPORTED_MEDIA_TYPE,
                    ],
                ),
            ];
            for (what, req, allowed) in calls {
                t.check(what, req, &allowed).await?;
            }
            t.still_serving().await
        })
        .map_err(TestCaseError::fail)
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    target.finish();
}

/// Tier rule 8: a visitor without a session, or with a token the node never
/// issued, writes nothing in either tier, however many requests it sends,
/// and gets no session cookie. Logging in from there creates exactly one
/// session.
#[tokio::test]
async fn cookieless_visitors_write_nothing() {
    const N: usize = 25;
    let node = TestNode::spawn().await;
    let c = &node.client;
    let sled_before = sled_entries(&node);
    assert_eq!(table_items(&node).await, 0);

    for _ in 0..N {
        let res = c.get(node.at("/")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers().get(reqwest::header::SET_COOKIE).is_none(),
            "GET / sets no cookie"
        );
        assert!(res.text().await.unwrap().contains("Sign in"));
    }
    for i in 0..N {
        let unknown = edge_session::SessionToken::generate().expose();
        let cookie = format!("__Host-sid={unknown}");
        let res = c
            .get(node.at("/"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers().get(reqwest::header::SET_COOKIE).is_none(),
            "an unknown cookie gets no session"
        );
        for (path, expected) in [
            ("/whoami", StatusCode::UNAUTHORIZED),
            ("/me/sessions", StatusCode::UNAUTHORIZED),
        ] {
            let res = c.get(node.at(path)).header(COOKIE, &cookie).send().await;
            assert_eq!(res.unwrap().status(), expected, "{path}");
        }
        assert_eq!(
            session_status(&node, &unknown).await.unwrap(),
            StatusCode::NOT_FOUND
        );
        // The same unknown token again (the negative cache answers).
        if i % 5 == 0 {
            assert_eq!(
                whoami(&node, &unknown).await.unwrap(),
                StatusCode::UNAUTHORIZED
            );
        }
    }
    assert_eq!(table_items(&node).await, 0, "nothing written to DynamoDB");
    assert_eq!(sled_entries(&node), sled_before, "nothing written to sled");

    // Logging in without a cookie still works, and stores one session.
    let signed_in = browser_login(&node, "alice", ALICE_PASSWORD).await;
    assert_eq!(whoami(&node, &signed_in).await.unwrap(), StatusCode::OK);
    let sessions = node
        .store
        .list_user_sessions("alice", None, 100, edge_session::now())
        .await
        .unwrap()
        .sessions;
    assert_eq!(sessions.len(), 1, "exactly one session for the user");
    assert_eq!(
        table_items(&node).await,
        2,
        "two items: that session, and its user's epoch item counting it"
    );
    node.stop().await;
}
