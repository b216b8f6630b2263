//! Integration tests: one binary. Every test talks to a real DynamoDB-wire
//! server through the official AWS SDK: the embedded dynoxide server started
//! by the harness on 127.0.0.1:0, or the endpoint named by
//! `EDGE_SESSION_TEST_DYNAMODB_ENDPOINT` (see `harness`).

mod adapter;
mod coherence;
mod crash;
mod embedded;
mod events;
mod faultproxy;
mod faults;
mod formats;
mod forward_auth;
mod gateway;
mod hardening;
mod harness;
mod hostile;
mod http;
mod limits;
mod login_throttle;
mod mmdb;
mod model;
// The child-process helper the bench harness uses too; the tests use part
// of it.
#[allow(dead_code)]
#[path = "../../benches/compare/src/child.rs"]
mod child;
mod openapi;
mod process;
mod recognise;
mod regions;
mod relays;
mod sessions;
mod store;
mod throttle;
