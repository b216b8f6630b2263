//! `edge-session-sync`: everything edge-session says to DynamoDB.
//!
//! # Layout
//!
//! - [`item`]: the table's item shape ([`Item`]) and its pure mapping to and
//!   from DynamoDB attribute maps.
//! - [`error`]: [`DynamoError`] (the call did not complete) and the expected
//!   outcomes that are values, not errors ([`Conflict`], [`RotateConflict`]).
//! - [`client`]: building an SDK client for a real endpoint or the embedded one,
//!   with the SDK's own timeouts and retry policy.
//! - [`breaker`]: the circuit breaker that fails calls fast while DynamoDB
//!   does not answer.
//! - [`tier`]: [`DynamoTier`], the typed operations (`create`, `get`, `update`,
//!   `rotate`, `delete`, `list_by_user`, `list_by_user_page`) and `provision`.
//! - [`stream`]: [`StreamFollower`], which follows the table's stream (every
//!   shard, checkpointed through the [`Checkpoints`] seam) and yields
//!   [`Invalidation`]s for the node to apply.
//! - [`relay`]: the relay slots (a lease item per slot, with a fencing
//!   epoch) and [`TableCheckpoints`], the stream positions a relay keeps in
//!   the table so that its successor resumes them.
//! - `change`: [`Change`], a stream record about a session or a user's
//!   epoch item, as the session events read it.
//! - `events`: the session-event log in the table ([`EventLog`]), its head
//!   and webhook cursors, and [`DynamoTier::stamp_end`].
//! - [`journal`]: the change journal's entries, written (with
//!   [`JournalSettings::write`]) in each invalidating write's own
//!   transaction while nodes of an older build still read them.
//!
//! This crate knows nothing of actix or sled: it stores opaque bytes (`body`)
//! plus the few indexed attributes (`sid`, `uid`, `ver`, `exp`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod breaker;
mod change;
mod client;
mod error;
mod events;
mod invalidation;
mod item;
mod journal;
mod relay;
mod stream;
mod table;
mod tier;

pub use breaker::BreakerSettings;
pub use change::{Change, ChangeKind, Image};
pub use client::{ClientSettings, Endpoint};
pub use error::{Conflict, DynamoError, ErrorKind, RotateConflict};
pub use events::{Appended, EventLog, LoggedEvent};
pub use invalidation::{Invalidation, InvalidationKind};
pub use item::{Item, ItemError, SID_LEN};
pub use journal::{
    entry as journal_entry, parse as journal_entry_of, Change as JournalChange, JournalSettings,
    JOURNAL_INDEX, MAX_PARTITIONS,
};
pub use relay::{RelaySlot, SlotId, TableCheckpoints, MAX_RELAY_SLOTS};
pub use stream::{
    CheckpointError, Checkpoints, ColdStart, FollowerSettings, FollowerStatus, MemoryCheckpoints,
    StreamFollower,
};
pub use tier::{DynamoTier, EpochGuard, ProvisionReport, UserPage};
