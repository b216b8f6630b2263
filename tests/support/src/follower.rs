//! Followers under test: a follower (of the stream or the journal) run on a
//! task of its own whose sink forwards every batch to the test, and the
//! waits a test of the stream follower needs (its first read, its
//! invalidations, its checkpoint).
//!
//! Every wait gives up after [`WAIT`] with a panic that says what it was
//! waiting for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use edge_session::EmbeddedDynamo;
use edge_session_sync::{
    DynamoError, DynamoTier, FollowerSettings, FollowerStatus, Invalidation, MemoryCheckpoints,
    StreamFollower,
};
use tokio::sync::{mpsc, oneshot};

use crate::dynamo;

/// How long any wait here waits.
pub const WAIT: Duration = Duration::from_secs(15);

/// What a test follower hands its batches to.
pub type Sink = Box<
    dyn FnMut(Vec<Invalidation>) -> Pin<Box<dyn Future<Output = Result<(), &'static str>> + Send>>
        + Send,
>;

/// The future a test follower runs until.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running follower (of the stream or the journal) whose sink forwards
/// every batch to `batches`.
pub struct Running {
    /// Stops the follower (its shutdown future completes).
    pub stop: oneshot::Sender<()>,
    /// The follower's `run`.
    pub task: tokio::task::JoinHandle<Result<(), DynamoError>>,
    /// The follower's status.
    pub status: FollowerStatus,
    /// Every batch the follower handed over, in order.
    pub batches: mpsc::UnboundedReceiver<Vec<Invalidation>>,
}

impl Running {
    /// Start `run` (a follower's `run`, given the sink and the shutdown).
    pub fn spawn<F, Fut>(status: FollowerStatus, run: F) -> Running
    where
        F: FnOnce(Sink, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), DynamoError>> + Send + 'static,
    {
        let (tx, batches) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let sink: Sink = Box::new(move |batch: Vec<Invalidation>| {
            let tx = tx.clone();
            Box::pin(async move { tx.send(batch).map_err(|_| "test receiver gone") })
        });
        let shutdown: Shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(run(sink, shutdown));
        Running {
            stop,
            task,
            status,
            batches,
        }
    }

    /// Wait until the follower's first read succeeded (see [`polled`]).
    pub async fn ready(&self) {
        polled(&self.status).await;
    }

    /// The next `n` invalidations, across batches.
    pub async fn take(&mut self, n: usize) -> Vec<Invalidation> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = tokio::time::timeout(WAIT, self.batches.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} invalidations arrived", out.len()))
                .expect("follower running");
            out.extend(batch);
        }
        out
    }

    /// Invalidations until every key whose first byte is in `want` has
    /// arrived (others, such as repeats after a restart, are kept too).
    pub async fn until(&mut self, want: &[u8]) -> Vec<Invalidation> {
        let mut out: Vec<Invalidation> = Vec::new();
        while !want.iter().all(|w| out.iter().any(|i| i.sid[0] == *w)) {
            let batch = tokio::time::timeout(WAIT, self.batches.recv())
                .await
                .unwrap_or_else(|_| panic!("waiting for {want:?}, got {out:?}"))
                .expect("follower running");
            out.extend(batch);
        }
        out
    }

    /// Stop the follower; it must return `Ok` promptly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the follower stops promptly")
            .expect("the follower task did not panic");
        result.expect("run returns Ok on shutdown");
    }
}

/// Wait until a follower's first read succeeded (so a stream's LATEST
/// iterator, or the journal's window, is in place before the test writes).
pub async fn polled(status: &FollowerStatus) {
    tokio::time::timeout(WAIT, async {
        while status.last_poll_ok_at().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the follower polls within the deadline");
}

/// Follower settings for tests: a short poll interval and backoff.
pub fn fast() -> FollowerSettings {
    FollowerSettings {
        poll_interval: Duration::from_millis(50),
        discover_every: Duration::from_secs(1),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..FollowerSettings::default()
    }
}

/// A stream follower of `table`, reading from the embedded server at `url`
/// (or a proxy in front of it) with its own clients, not yet running.
pub async fn stream_follower(
    url: &str,
    table: &str,
    checkpoints: Arc<MemoryCheckpoints>,
    settings: FollowerSettings,
) -> StreamFollower {
    let client_settings = dynamo::settings(url);
    StreamFollower::new(
        client_settings.build().await,
        client_settings.build_streams().await,
        table,
        checkpoints,
        settings,
    )
}

/// [`stream_follower`] run with a forwarding sink.
pub async fn follow(
    url: &str,
    table: &str,
    checkpoints: Arc<MemoryCheckpoints>,
    settings: FollowerSettings,
) -> Running {
    let follower = stream_follower(url, table, checkpoints, settings).await;
    let status = follower.status();
    Running::spawn(status, |sink, shutdown| follower.run(sink, shutdown))
}

/// A fresh table on `server`, and a follower of its stream with checkpoints
/// of its own and [`fast`] settings, past its first read: it begins at
/// LATEST, so it sees every write the test makes from here on.
pub async fn followed_table(server: &EmbeddedDynamo) -> (DynamoTier, Running) {
    followed_through(server, &server.url()).await
}

/// As [`followed_table`], the follower reading through `via` (a proxy in
/// front of `server`).
pub async fn followed_through(server: &EmbeddedDynamo, via: &str) -> (DynamoTier, Running) {
    let tier = dynamo::table(&server.url()).await;
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    let follower = follow(via, tier.table(), checkpoints, fast()).await;
    follower.ready().await;
    (tier, follower)
}

/// The first byte of each invalidation's key, in order.
pub fn sids(invalidations: &[Invalidation]) -> Vec<u8> {
    invalidations.iter().map(|i| i.sid[0]).collect()
}

/// The checkpoint of the one shard a test table's stream has, if any.
pub fn shard_checkpoint(checkpoints: &MemoryCheckpoints) -> Option<String> {
    checkpoints.snapshot().into_values().next()
}

/// Sequence numbers are decimal strings that only grow within a shard.
fn at_or_past(checkpoint: Option<&str>, sequence: &str) -> bool {
    let number = |s: &str| s.parse::<u128>().expect("a decimal sequence number");
    checkpoint.is_some_and(|c| number(c) >= number(sequence))
}

/// Wait until the checkpoint is at `sequence` or past it (each revocation
/// is followed in the stream by its journal entry's INSERT, which the
/// follower checkpoints without handing it over).
pub async fn wait_for_checkpoint(checkpoints: &MemoryCheckpoints, sequence: &str) {
    tokio::time::timeout(WAIT, async {
        while !at_or_past(shard_checkpoint(checkpoints).as_deref(), sequence) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the checkpoint reaches the last accepted record");
}
