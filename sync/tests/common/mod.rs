//! What the sync crate's integration tests share: dynoxide in-process, a
//! client for it, a fresh table, an item.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::future::Future;
use std::pin::Pin;

use edge_session_sync::{
    ClientSettings, DynamoError, DynamoTier, Endpoint, FollowerStatus, Invalidation, Item, SID_LEN,
};
use tokio::sync::{mpsc, oneshot};

pub const WAIT: Duration = Duration::from_secs(15);

/// dynoxide on its own thread and runtime, in memory, as the node embeds it.
pub struct Dynoxide {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dynoxide {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let db = dynoxide::Database::memory().unwrap();
                let shutdown = async move {
                    let _ = stopped.await;
                };
                dynoxide::server::serve_with_shutdown(listener, db, shutdown)
                    .await
                    .unwrap();
            });
        });
        Dynoxide {
            url,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Dynoxide {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn settings(url: &str) -> ClientSettings {
    ClientSettings {
        endpoint: Endpoint::Embedded(url.to_owned()),
        ..ClientSettings::default()
    }
}

/// A fresh provisioned table on `url`.
pub async fn table(url: &str) -> DynamoTier {
    let table = format!(
        "stream-test-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let tier = DynamoTier::new(settings(url).build().await, table);
    tier.provision().await.expect("provision");
    tier
}

pub fn item(byte: u8, ver: u64) -> Item {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Item {
        sid: [byte; SID_LEN],
        uid: None,
        ver,
        exp,
        body: vec![byte],
    }
}

/// Create then delete session `byte`: one INSERT, one REMOVE.
pub async fn create_and_delete(tier: &DynamoTier, byte: u8) {
    tier.create(&item(byte, 1)).await.unwrap().unwrap();
    tier.delete(&[byte; SID_LEN]).await.unwrap();
}

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
    pub stop: oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), DynamoError>>,
    pub status: FollowerStatus,
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

    /// Wait until the follower's first read succeeded (so a stream's LATEST
    /// iterator, or the journal's window, is in place before the test writes).
    pub async fn ready(&self) {
        tokio::time::timeout(WAIT, async {
            while self.status.last_poll_ok_at().is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the follower polls within the deadline");
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

/// Delete session `byte` as a writer whose clock is `skew` behind true
/// time does: the delete and its journal entry in one transaction, the
/// entry stamped with that writer's clock.
pub async fn delete_with_clock_behind(tier: &DynamoTier, byte: u8, skew: Duration) {
    use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
    let sid = [byte; SID_LEN];
    let stamp = std::time::SystemTime::now() - skew;
    let entry = edge_session_sync::journal_entry(
        &sid,
        edge_session_sync::JournalChange::Removed,
        stamp,
        tier.journal(),
    );
    let key = std::collections::HashMap::from([(
        "sid".to_owned(),
        aws_sdk_dynamodb::types::AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(
            sid.to_vec(),
        )),
    )]);
    tier.client()
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(tier.table())
                        .set_key(Some(key))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(tier.table())
                        .set_item(Some(entry))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .expect("the skewed writer's delete commits");
}
