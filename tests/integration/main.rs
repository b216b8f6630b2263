//! Integration tests: one binary. Every test talks to a real DynamoDB-wire
//! server through the official AWS SDK: the embedded dynoxide server started
//! on 127.0.0.1:0 once per binary, or the endpoint named by
//! `EDGE_SESSION_TEST_DYNAMODB_ENDPOINT` (see `harness`, and
//! `edge_session_test_support::dynamo`).
//!
//! The child-process node (`crate::child`) and the fault proxy
//! (`crate::faultproxy`) are the test support crate's (`tests/support`),
//! which the bench harness uses too.

use edge_session_test_support::{child, faultproxy};

mod adapter;
mod coherence;
mod crash;
mod dynamodb_throttling;
mod embedded;
mod events;
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
mod openapi;
mod process;
mod recognise;
mod regions;
mod relays;
mod sessions;
mod store;
