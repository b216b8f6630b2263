//! The stream follower against the embedded server (the node's own,
//! file-backed, one per test, on 127.0.0.1:0) through the official SDKs,
//! with a small HTTP proxy in front of it where a test needs a fault the
//! server cannot produce (`proxy`):
//!
//! - `delivery`: which writes the follower hands over, and what each
//!   invalidation carries;
//! - `resume`: where a follower starts (cold, from its checkpoints, on a
//!   shard it does not know) and what it checkpoints;
//! - `faults`: an expired iterator, trimmed data, throttling, an
//!   unreachable endpoint;
//! - `tables`: tables of other shapes (no stream, a keys-only stream).

mod delivery;
mod faults;
mod proxy;
mod resume;
mod tables;
