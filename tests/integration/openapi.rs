//! `docs/openapi.json` and the router describe the same routes.
//!
//! The router is built from `edge_session::route_table()`; these tests
//! hold that table and the spec to each other, check that the running router
//! serves exactly the table (every listed method answers, every other method
//! on those paths is 405, except on a path whose operation the spec marks
//! `x-edge-any-method`), and that no route is registered outside the table.
//! The error codes the spec documents are the server's
//! (`edge_session::ErrorCode::ALL`).

use std::collections::BTreeSet;

use edge_session::{route_table, ErrorCode, OPENAPI_SPEC as SPEC};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{TestNode, API_KEY};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec() -> Value {
    serde_json::from_str(SPEC).expect("docs/openapi.json is JSON")
}

/// `(METHOD, path)` of every operation in the spec.
fn spec_operations(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_object().expect("`paths` is an object");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        for (key, _) in item.as_object().expect("a path item is an object") {
            if METHODS.contains(&key.as_str()) {
                ops.insert((key.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    ops
}

fn router_operations() -> BTreeSet<(String, String)> {
    route_table()
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect()
}

#[test]
fn spec_is_an_openapi_3_document() {
    let spec = spec();
    let version = spec["openapi"].as_str().expect("`openapi` is a string");
    assert!(version.starts_with("3."), "OpenAPI 3.x, got {version}");
    assert!(spec["info"]["title"].is_string(), "info.title");
    assert!(spec["info"]["version"].is_string(), "info.version");
    assert!(!spec["paths"].as_object().unwrap().is_empty(), "paths");

    // Every operation: a unique operationId and at least one response with a
    // description; every path parameter in the template is declared.
    let mut ids = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let id = op["operationId"].as_str().unwrap_or_else(|| {
                panic!("{method} {path}: no operationId");
            });
            assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{method} {path}: no responses");
            for (status, response) in responses {
                let response = resolve(&spec, response);
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {status}: no description"
                );
            }
            let declared: BTreeSet<String> = item["parameters"]
                .as_array()
                .into_iter()
                .chain(op["parameters"].as_array())
                .flatten()
                .map(|p| resolve(&spec, p))
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            let templated: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(str::to_owned)
                .collect();
            assert_eq!(declared, templated, "{method} {path}: path parameters");
        }
    }

    // Every `$ref` points at something.
    let mut refs = Vec::new();
    collect_refs(&spec, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        assert!(
            pointer(&spec, &r).is_some(),
            "dangling $ref {r} in docs/openapi.json"
        );
    }
}

fn pointer<'a>(spec: &'a Value, reference: &str) -> Option<&'a Value> {
    spec.pointer(reference.strip_prefix('#')?)
}

fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(r) => pointer(spec, r).unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => value,
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_route_is_in_the_spec_and_every_spec_operation_is_a_route() {
    let spec = spec_operations(&spec());
    let router = router_operations();
    let undocumented: Vec<_> = router.difference(&spec).collect();
    let unrouted: Vec<_> = spec.difference(&router).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes missing from docs/openapi.json: {undocumented:?}\n\
         operations in docs/openapi.json that the router does not serve: {unrouted:?}"
    );
    assert_eq!(
        router.len(),
        route_table().len(),
        "the route table lists a route twice"
    );
}

/// Routes are registered only from the route tables: a `web::resource`,
/// `web::scope` or attribute-macro route written anywhere else under
/// `src/http` would reach the router without reaching `route_table()`.
#[test]
fn routes_are_registered_only_from_the_route_tables() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http.rs");
    let mut files = vec![std::path::PathBuf::from(root)];
    let mut dirs = vec![std::path::PathBuf::from(root.trim_end_matches(".rs"))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut counts = [0usize; 2];
    for path in &files {
        let source = std::fs::read_to_string(path).unwrap();
        counts[0] += source.matches("web::resource(").count();
        counts[1] += source.matches("web::scope(").count();
        for forbidden in [
            ".route(\"",
            "web::service(",
            "#[get(",
            "#[post(",
            "#[patch(",
            "#[delete(",
            "#[put(",
            "#[route(",
        ] {
            assert!(
                !source.contains(forbidden),
                "{}: `{forbidden}` registers a route outside the route tables",
                path.display()
            );
        }
    }
    assert_eq!(
        counts,
        [2, 1],
        "two `web::resource(` (the table builder, and the alias of `/auth/check` \
         below) and one `web::scope(` (/v1)"
    );
    // Envoy's ext_authz asks `/auth/check<original path>`: one resource
    // outside the table, for a path no OpenAPI template can spell, served by
    // the `/auth/check` handler (tests/integration/forward_auth.rs).
    let router = std::fs::read_to_string(root).unwrap();
    assert!(router.contains("/auth/check/{{tail:.*}}"));
}

/// Codes the server can answer with that the spec leaves out: the
/// framework's fallbacks for statuses no route answers on purpose.
const UNDOCUMENTED_CODES: [&str; 5] = [
    "bad_request",
    "forbidden",
    "headers_too_large",
    "internal",
    "error",
];

/// The codes of the "Codes: ..." sentence of `info.description`: every
/// backquoted word outside parentheses.
fn documented_codes(spec: &Value) -> BTreeSet<String> {
    let description = spec["info"]["description"]
        .as_str()
        .expect("info.description");
    let sentence = description
        .split_once("Codes:")
        .expect("info.description lists the error codes after `Codes:`")
        .1;
    let sentence = sentence.split("\n\n").next().unwrap_or(sentence);
    let mut outside = String::new();
    let mut depth = 0usize;
    for c in sentence.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_documented_error_codes_are_the_servers() {
    let spec = spec();
    let server: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(server.len(), ErrorCode::ALL.len(), "a code is listed twice");
    let documented = documented_codes(&spec);
    assert!(documented.len() >= 10, "parsed codes: {documented:?}");
    let unknown: Vec<_> = documented
        .iter()
        .filter(|c| !server.contains(c.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/openapi.json documents codes the server never answers: {unknown:?}"
    );
    let undocumented: BTreeSet<&str> = server
        .iter()
        .copied()
        .filter(|c| !documented.contains(*c))
        .collect();
    assert_eq!(
        undocumented,
        BTreeSet::from(UNDOCUMENTED_CODES),
        "codes missing from docs/openapi.json (document them, or list them as undocumented)"
    );
    for example in spec["components"]["schemas"]["Error"]["properties"]["error"]["examples"]
        .as_array()
        .expect("Error.error has examples")
    {
        let example = example.as_str().expect("a code is a string");
        assert!(server.contains(example), "example code {example}");
    }
}

fn concrete(path: &str) -> String {
    path.replace("{handle}", &"A".repeat(43))
        .replace("{user_id}", "openapi-probe")
}

/// Whether the router itself answered (no route, or no such method on it),
/// as opposed to a handler.
async fn router_refusal(res: reqwest::Response) -> Option<(StatusCode, String)> {
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    match body["error"].as_str() {
        Some(code @ ("not_found" | "method_not_allowed")) => Some((status, code.to_owned())),
        _ => None,
    }
}

/// Paths whose operation the spec marks `x-edge-any-method`: the handler
/// answers every method the same way (forward auth).
fn any_method_paths(spec: &Value) -> BTreeSet<String> {
    let paths = spec["paths"].as_object().expect("`paths` is an object");
    paths
        .iter()
        .filter(|(_, item)| {
            item.as_object()
                .unwrap()
                .values()
                .any(|op| op["x-edge-any-method"] == true)
        })
        .map(|(path, _)| path.clone())
        .collect()
}

#[tokio::test]
async fn the_running_router_serves_exactly_the_route_table() {
    let node = TestNode::spawn().await;
    let table = router_operations();
    let any_method = any_method_paths(&spec());
    assert!(any_method.contains("/auth/check"), "{any_method:?}");
    let paths: BTreeSet<&String> = table.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let listed =
                any_method.contains(path) || table.contains(&(method.to_owned(), path.clone()));
            let res = node
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    node.at(&concrete(path)),
                )
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap();
            let status = res.status();
            let refusal = router_refusal(res).await;
            if listed {
                assert_eq!(
                    refusal, None,
                    "{method} {path} is in the table but not served"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is not in the table but answered {status}"
                );
            }
        }
    }
    node.stop().await;
}

#[tokio::test]
async fn the_spec_is_served_at_openapi_json() {
    let node = TestNode::spawn().await;
    let res = node
        .client
        .get(node.at("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(res.text().await.unwrap(), SPEC);
    node.stop().await;
}
