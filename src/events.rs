//! Session events: every session's start and end, as the table's change feed
//! shows them, logged once per region and delivered to webhooks and the
//! `/v1/events` feed (docs/design.md, "Session events").
//!
//! - [`Event::of`] (here): what a stream [`Change`] means, pure. An insert
//!   is `session.created` (anonymous) or `session.signed_in` (bound; with
//!   the session it replaced, from the new item's `prv`); a delete carrying
//!   a reason (`why`, written by [`End`] just before it) is
//!   `session.signed_out`, `.revoked`, `.evicted` or `.expired`; a delete by
//!   DynamoDB's TTL is `session.expired`; a raise of a user's epoch is
//!   `user.signed_out_everywhere`. A delete without a reason is a
//!   rotation's (the old half of a sign-in): no event of its own.
//! - `emitter`: the region's one emitter, holding a slot like a relay's:
//!   it follows the stream from positions kept in the table and appends
//!   each event to the log in the table, numbered densely.
//! - `webhooks`: deliveries from the log, signed (Standard Webhooks), in
//!   log order, retried, each webhook's position kept in the table.
//!
//! An event's id is derived from its stream record, so a record handed
//! over twice (a restart, a new emitter) is the same event: receivers
//! de-duplicate on it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::codec;
use crate::record::{rfc3339, SessionRecord};
use crate::store::End;
use crate::token::StorageKey;
use edge_session_sync::{Change, ChangeKind};

mod emitter;
mod webhooks;

pub use emitter::{run, EmitterSettings};
pub use webhooks::Hook;

/// A session event, as the log, the feed and webhooks carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `evt_` and 32 hex digits, derived from the stream record.
    pub id: String,
    /// `session.signed_out`, ... ([`crate::config::EVENT_TYPES`]).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the change was written (RFC 3339, to the second).
    pub time: String,
    /// The session's user, or the user signed out everywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The session's handle (as in the listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// A sign-in's previous session (the one it replaced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_handle: Option<String>,
    /// Why it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// What the sign-in recorded about the session's client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<serde_json::Value>,
}

/// The `type` of an event as logged (its JSON).
pub(crate) fn type_of(json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_str::<Kind>(json).ok().map(|k| k.kind)
}

/// The event's id for the stream record `sequence` about `sid`.
fn event_id(sid: &[u8; 32], sequence: &str) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("edge-session 2026-12 session event id");
    hasher.update(sid);
    hasher.update(sequence.as_bytes());
    let hash = hasher.finalize();
    let hex: String = hash.as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("evt_{hex}")
}

/// "idle" or "absolute": which of its timeouts ended `record`.
fn expiry_reason(record: &SessionRecord) -> &'static str {
    let idle_end = record.last_seen_at.saturating_add(record.idle_timeout_ms);
    if record.absolute_expiry <= idle_end {
        "absolute"
    } else {
        "idle"
    }
}

impl Event {
    /// The event `change` is, if any.
    pub fn of(change: &Change) -> Option<Event> {
        let time = change
            .written_at
            .unwrap_or_else(SystemTime::now)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut event = Event {
            id: event_id(&change.sid, &change.sequence_number),
            kind: "",
            time: rfc3339(time),
            user: None,
            handle: None,
            previous_handle: None,
            reason: None,
            client: None,
        };
        match change.kind {
            ChangeKind::Modified => {
                // A raise of a user's epoch: signed out everywhere.
                let (old, new) = (change.old.as_ref()?, change.new.as_ref()?);
                let user = new.epoch_user.clone()?;
                if new.ver? <= old.ver.unwrap_or(0) {
                    return None;
                }
                event.kind = "user.signed_out_everywhere";
                event.user = Some(user);
                return Some(event);
            }
            // A user's first epoch raise may create the item.
            ChangeKind::Inserted
                if change
                    .new
                    .as_ref()
                    .is_some_and(|n| n.epoch_user.is_some() && n.ver.unwrap_or(0) >= 1) =>
            {
                event.kind = "user.signed_out_everywhere";
                event.user = change.new.as_ref().and_then(|n| n.epoch_user.clone());
                return Some(event);
            }
            ChangeKind::Inserted => {
                let new = change.new.as_ref()?;
                let record = codec::decode(new.body.as_deref()?).ok()?;
                event.previous_handle = new.previous.map(|p| StorageKey(p).handle());
                event.kind = if record.user_id.is_some() {
                    "session.signed_in"
                } else {
                    "session.created"
                };
                event.fill(&change.sid, &record);
            }
            ChangeKind::Removed => {
                let old = change.old.as_ref()?;
                let record = codec::decode(old.body.as_deref()?).ok()?;
                let (kind, reason) = if change.by_ttl {
                    ("session.expired", expiry_reason(&record))
                } else {
                    match End::parse(old.why.as_deref()?)? {
                        End::SignedOut => ("session.signed_out", "user"),
                        End::ByUser => ("session.revoked", "user"),
                        End::ByAdmin => ("session.revoked", "admin"),
                        End::Everywhere => ("session.revoked", "signed_out_everywhere"),
                        End::Deferred => ("session.revoked", "deferred"),
                        End::Evicted => ("session.evicted", "max_per_user"),
                        End::Expired => ("session.expired", expiry_reason(&record)),
                    }
                };
                event.kind = kind;
                event.reason = Some(reason);
                event.fill(&change.sid, &record);
            }
        }
        Some(event)
    }

    fn fill(&mut self, sid: &[u8; 32], record: &SessionRecord) {
        self.user = record.user_id.as_deref().map(str::to_owned);
        self.handle = Some(StorageKey(*sid).handle());
        self.client = record
            .client
            .as_ref()
            .and_then(|c| serde_json::to_value(c.fields()).ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientFields, ClientInfo};
    use crate::record::Policy;
    use edge_session_sync::Image;

    fn body(user: Option<&str>) -> Vec<u8> {
        let mut record = SessionRecord::new(&Policy::default(), 1_795_000_000_000);
        record.user_id = user.map(Into::into);
        record.client = ClientInfo::new(&ClientFields {
            browser: Some("Firefox 133"),
            ..ClientFields::default()
        });
        codec::encode(&record)
    }

    fn change(kind: ChangeKind, old: Option<Image>, new: Option<Image>) -> Change {
        Change {
            sid: [3; 32],
            kind,
            sequence_number: "77".into(),
            written_at: Some(UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000)),
            by_ttl: false,
            old,
            new,
        }
    }

    #[test]
    fn each_kind_of_change_is_its_event() {
        let bound = Image {
            body: Some(body(Some("alice"))),
            previous: Some([9; 32]),
            ..Image::default()
        };
        let signed_in =
            Event::of(&change(ChangeKind::Inserted, None, Some(bound.clone()))).expect("an event");
        assert_eq!(signed_in.kind, "session.signed_in");
        assert_eq!(signed_in.user.as_deref(), Some("alice"));
        assert_eq!(
            signed_in.previous_handle,
            Some(StorageKey([9; 32]).handle())
        );
        assert_eq!(signed_in.time, "2026-11-18T11:06:40Z");
        assert_eq!(
            signed_in.client,
            Some(serde_json::json!({ "browser": "Firefox 133" }))
        );
        let ended = |why: Option<&str>, by_ttl: bool| {
            let old = Image {
                why: why.map(Into::into),
                ..bound.clone()
            };
            let mut c = change(ChangeKind::Removed, Some(old), None);
            c.by_ttl = by_ttl;
            Event::of(&c).map(|e| (e.kind, e.reason))
        };
        assert_eq!(
            ended(Some("signed_out"), false),
            Some(("session.signed_out", Some("user")))
        );
        assert_eq!(
            ended(Some("admin"), false),
            Some(("session.revoked", Some("admin")))
        );
        assert_eq!(
            ended(Some("evicted"), false),
            Some(("session.evicted", Some("max_per_user")))
        );
        assert_eq!(ended(None, true), Some(("session.expired", Some("idle"))));
        // A rotation's delete: the new session's sign-in tells it.
        assert_eq!(ended(None, false), None);
        let epoch = |ver: u64| Image {
            ver: Some(ver),
            epoch_user: Some("alice".into()),
            ..Image::default()
        };
        let everywhere = Event::of(&change(
            ChangeKind::Modified,
            Some(epoch(1)),
            Some(epoch(2)),
        ))
        .expect("an event");
        assert_eq!(everywhere.kind, "user.signed_out_everywhere");
        // A login's count moving the epoch item: no raise, no event.
        assert_eq!(
            Event::of(&change(
                ChangeKind::Modified,
                Some(epoch(2)),
                Some(epoch(2))
            )),
            None
        );
    }

    #[test]
    fn an_event_id_is_the_records_and_never_a_token() {
        let a = event_id(&[1; 32], "100");
        assert_eq!(a, event_id(&[1; 32], "100"));
        assert_ne!(a, event_id(&[1; 32], "101"));
        assert_eq!(a.len(), 4 + 32);
    }
}
