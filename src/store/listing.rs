//! The paginated listing of a user's sessions (one bounded GSI query a
//! page), with what this node knows removed from it: expired records,
//! sessions revoked here, sessions an epoch outlaws.

use edge_session_sync::Item;

use super::{Error, Session, SessionPage, TieredStore};
use crate::codec;
use crate::record::UnixMillis;
use crate::token::StorageKey;

impl TieredStore {
    /// One page of the live sessions bound to `user_id`: up to `limit`
    /// (1 or more) of the user's items after `after` in the GSI's order (one
    /// query, eventually consistent), minus expired records, sessions
    /// revoked on this node and sessions an epoch this node knows outlaws.
    /// Those are left out after the query, so a page can be shorter than
    /// `limit` (even empty) while `next` is set.
    pub async fn list_user_sessions(
        &self,
        user_id: &str,
        after: Option<StorageKey>,
        limit: u32,
        now: UnixMillis,
    ) -> Result<SessionPage, Error> {
        let page = self
            .inner
            .dynamo
            .list_by_user_page(user_id, after.as_ref().map(StorageKey::as_bytes), limit)
            .await?;
        let mut sessions = Vec::with_capacity(page.items.len());
        for item in page.items {
            sessions.extend(self.live_session(user_id, item, now)?);
        }
        Ok(SessionPage {
            sessions,
            next: page.next.map(StorageKey),
        })
    }

    /// `item` as a live session of `user_id`; `None` if it is revoked on
    /// this node, outlawed by an epoch this node knows, expired, not
    /// `user_id`'s, or undecodable.
    pub(super) fn live_session(
        &self,
        user_id: &str,
        item: Item,
        now: UnixMillis,
    ) -> Result<Option<Session>, Error> {
        let key = StorageKey(item.sid);
        if self.inner.cache.is_tombstoned(&key)? {
            return Ok(None);
        }
        let record = match codec::decode(&item.body) {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(%err, "skipping an undecodable item in a user listing");
                return Ok(None);
            }
        };
        let live = record.user_id.as_deref() == Some(user_id)
            && record.is_live(now)
            && !self.outlawed(&record);
        Ok(live.then_some(Session { key, record }))
    }
}
