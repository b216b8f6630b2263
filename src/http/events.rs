//! `GET /v1/events`: the region's session events, from the log in the table
//! (`crate::events`), resumable from a cursor for `events.retention_secs`.
//!
//! - JSON (the default): `?after=<cursor>&limit=<1-100>&wait=<0-30>`
//!   answers `{"events": [...], "cursor": "<n>"}` at once when events
//!   follow the cursor, else after at most `wait` seconds (a long poll:
//!   one consistent batch read every 250 ms meanwhile). Without `after`,
//!   the feed starts at the log's head (events from now on).
//! - `Accept: text/event-stream`: the same events as Server-Sent Events,
//!   each with `id: <cursor>` (so `Last-Event-ID` resumes), `event: <type>`
//!   and `data: <json>`, a comment every 15 s to keep the stream open.
//!
//! A cursor whose next event the log no longer holds answers 410
//! `cursor_expired` (start again without `after`). Behind the API key, and
//! bounded: a waiting client costs one consistent read of one key every
//! 250 ms (the entry after its cursor); at most [`MAX_FOLLOWERS`] wait or
//! stream at once per node (more get 429 `too_many_requests`); a stream
//! ends after [`STREAM_LIFETIME`] (the client resumes with `Last-Event-ID`),
//! so none outlives a node's graceful shutdown by long.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use edge_session_sync::{DynamoTier, EventLog, LoggedEvent};

/// How often a waiting feed reads the log.
const POLL: Duration = Duration::from_millis(250);
/// The longest long poll.
const MAX_WAIT_SECS: u64 = 30;
/// An idle event stream gets a comment this often.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Long polls and streams at once, per node.
pub const MAX_FOLLOWERS: usize = 256;
/// A stream ends after this long; the client resumes from its last id.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(300);

static FOLLOWERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One of the [`MAX_FOLLOWERS`] places, given back when dropped.
struct Following;

impl Following {
    fn take() -> Result<Following, ApiError> {
        use std::sync::atomic::Ordering;
        if FOLLOWERS.fetch_add(1, Ordering::SeqCst) >= MAX_FOLLOWERS {
            FOLLOWERS.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                "too many event feeds open on this node; retry shortly",
            )
            .retry_after(1));
        }
        Ok(Following)
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        FOLLOWERS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    after: Option<String>,
    limit: Option<String>,
    wait: Option<String>,
}

fn dynamo(err: edge_session_sync::DynamoError) -> ApiError {
    crate::store::Error::Dynamo(err).into()
}

fn malformed(message: &'static str) -> ApiError {
    ApiError::bad_request(ErrorCode::MalformedInput, message)
}

fn number(text: Option<&str>, max: u64, what: &'static str) -> Result<Option<u64>, ApiError> {
    text.map(|t| {
        t.parse::<u64>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| malformed(what))
    })
    .transpose()
}

/// The entries right after `after`, in order and without a gap.
fn following(after: u64, found: Vec<LoggedEvent>) -> Vec<LoggedEvent> {
    let mut next = after + 1;
    found
        .into_iter()
        .take_while(|e| {
            let ok = e.number == next;
            next += 1;
            ok
        })
        .collect()
}

/// Whether entry `after + 1` was written but is gone (past retention): the
/// flushed head is past it, and every entry below the head was written.
async fn expired(tier: &DynamoTier, log: EventLog, after: u64) -> Result<bool, ApiError> {
    Ok(tier.event_head(log).await.map_err(dynamo)? > after + 1)
}

/// `GET /v1/events`.
pub async fn feed(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let Some(log) = state.events else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            ErrorCode::EventsDisabled,
            "session events are off on this node (events.enabled)",
        ));
    };
    let query: FeedQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|_| malformed("query string: expected after, limit and wait"))?;
    let last_id = match req.headers().get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| malformed("Last-Event-ID: expected a cursor"))?,
        ),
    };
    // A `Last-Event-ID` is checked even beside `after`, which wins.
    let resumed = number(last_id, u64::MAX - 1, "Last-Event-ID: expected a cursor")?;
    let after = number(
        query.after.as_deref(),
        u64::MAX - 1,
        "after: expected a cursor from this feed",
    )?
    .or(resumed);
    let limit = number(query.limit.as_deref(), 100, "limit: expected 1-100")?.unwrap_or(100);
    if limit == 0 {
        return Err(malformed("limit: expected 1-100"));
    }
    let wait = number(
        query.wait.as_deref(),
        MAX_WAIT_SECS,
        "wait: expected 0-30 seconds",
    )?
    .unwrap_or(0);
    let tier = state.store.dynamo().clone();
    let after = match after {
        Some(after) => after,
        None => tier
            .event_head(log)
            .await
            .map_err(dynamo)?
            .saturating_sub(1),
    };
    let streaming = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let place = Following::take()?;
    if streaming {
        // A cursor past the log's retention is a 410, not a stream.
        let next = tier.read_events(log, after + 1, 1).await.map_err(dynamo)?;
        if next.is_empty() && expired(&tier, log, after).await? {
            return Err(gone());
        }
        return Ok(stream(tier, log, after, place));
    }
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut window = limit;
    loop {
        let found = following(
            after,
            tier.read_events(log, after + 1, window)
                .await
                .map_err(dynamo)?,
        );
        if let Some(last) = found.last().map(|e| e.number) {
            if window < limit {
                // The next entry is there: read the whole page.
                window = limit;
                continue;
            }
            let events: Vec<&serde_json::value::RawValue> = found
                .iter()
                .filter_map(|e| serde_json::from_str(&e.json).ok())
                .collect();
            return Ok(HttpResponse::Ok()
                .json(serde_json::json!({ "events": events, "cursor": last.to_string() })));
        }
        if window == limit && expired(&tier, log, after).await? {
            return Err(gone());
        }
        if Instant::now() >= deadline {
            return Ok(HttpResponse::Ok()
                .json(serde_json::json!({ "events": [], "cursor": after.to_string() })));
        }
        // While nothing follows the cursor, only the next entry is read.
        window = 1;
        tokio::time::sleep(POLL).await;
    }
}

fn gone() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::GONE,
        ErrorCode::CursorExpired,
        "the log no longer holds the events after this cursor; start again without `after`",
    )
}

/// The event stream from `after`: a task reads the log and writes lines
/// into a channel the response drains; it ends when the client goes, or
/// after [`STREAM_LIFETIME`].
fn stream(tier: DynamoTier, log: EventLog, mut after: u64, place: Following) -> HttpResponse {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    actix_web::rt::spawn(async move {
        let _place = place;
        let opened = Instant::now();
        let mut quiet_since = Instant::now();
        let mut window = 100;
        while opened.elapsed() < STREAM_LIFETIME {
            let found = match tier.read_events(log, after + 1, window).await {
                Ok(found) => following(after, found),
                Err(err) => {
                    tracing::debug!(%err, "event stream: the log was not read");
                    Vec::new()
                }
            };
            if found.is_empty() {
                if window > 1 && matches!(expired(&tier, log, after).await, Ok(true)) {
                    let line = "event: error\ndata: {\"error\":\"cursor_expired\"}\n\n";
                    let _ = tx.send(Bytes::from_static(line.as_bytes())).await;
                    return;
                }
                if quiet_since.elapsed() >= KEEPALIVE {
                    if tx
                        .send(Bytes::from_static(b": keepalive\n\n"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    quiet_since = Instant::now();
                }
                if tx.is_closed() {
                    return;
                }
                window = 1;
                tokio::time::sleep(POLL).await;
                continue;
            }
            if window == 1 {
                window = 100;
                continue;
            }
            for event in found {
                let kind = crate::events::type_of(&event.json).unwrap_or_default();
                let frame = format!(
                    "id: {}\nevent: {kind}\ndata: {}\n\n",
                    event.number, event.json
                );
                if tx.send(Bytes::from(frame)).await.is_err() {
                    return;
                }
                after = event.number;
            }
            quiet_since = Instant::now();
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(Lines(rx))
}

/// The event stream's body: what the task sends.
struct Lines(tokio::sync::mpsc::Receiver<Bytes>);

impl futures_core::Stream for Lines {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|line| line.map(Ok))
    }
}
