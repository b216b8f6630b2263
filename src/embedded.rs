//! The embedded DynamoDB-compatible server (dynoxide, SQLite-backed) for
//! `dynamodb.endpoint = "embedded"`. It runs on its own thread and Tokio
//! runtime, bound to 127.0.0.1:0, and the node talks to it over the real
//! DynamoDB wire protocol through the official SDK: the production code path.
//! A timer runs its TTL sweep, as DynamoDB's own TTL would.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use dynoxide::Database;
use tokio::sync::oneshot;

/// Why the embedded server did not start.
#[derive(Debug, thiserror::Error)]
#[error("embedded DynamoDB: {0}")]
pub struct EmbeddedError(String);

/// A running embedded server. Dropping it stops the server and waits for its
/// thread.
pub struct EmbeddedDynamo {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedDynamo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedDynamo")
            .field("addr", &self.addr)
            .finish()
    }
}

impl EmbeddedDynamo {
    /// Start on a SQLite file at `path` (created if missing).
    pub fn start_file(path: &Path, ttl_sweep_every: Duration) -> Result<Self, EmbeddedError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| EmbeddedError(format!("creating {}: {e}", dir.display())))?;
        }
        let text = path
            .to_str()
            .ok_or_else(|| EmbeddedError(format!("{} is not UTF-8", path.display())))?;
        let db = Database::new(text).map_err(|e| EmbeddedError(format!("opening {text}: {e}")))?;
        Self::start(db, ttl_sweep_every)
    }

    /// Start on an in-memory database (tests).
    pub fn start_in_memory(ttl_sweep_every: Duration) -> Result<Self, EmbeddedError> {
        Self::start(
            Database::memory().map_err(|e| EmbeddedError(e.to_string()))?,
            ttl_sweep_every,
        )
    }

    fn start(db: Database, ttl_sweep_every: Duration) -> Result<Self, EmbeddedError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| EmbeddedError(format!("binding 127.0.0.1:0: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| EmbeddedError(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| EmbeddedError(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("embedded-dynamodb")
            .enable_all()
            .build()
            .map_err(|e| EmbeddedError(format!("runtime: {e}")))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-dynamodb".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(err) => {
                            tracing::error!(%err, "embedded DynamoDB could not take its listener");
                            return;
                        }
                    };
                    let sweeper = tokio::spawn(sweep_ttl(db.clone(), ttl_sweep_every));
                    let shutdown = async move {
                        let _ = stopped.await;
                    };
                    if let Err(err) =
                        dynoxide::server::serve_with_shutdown(listener, db, shutdown).await
                    {
                        tracing::error!(%err, "embedded DynamoDB stopped");
                    }
                    sweeper.abort();
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(|e| EmbeddedError(format!("thread: {e}")))?;
        Ok(EmbeddedDynamo {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint URL for the SDK.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving and wait for the server thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EmbeddedDynamo {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn sweep_ttl(db: Database, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let db = db.clone();
        match tokio::task::spawn_blocking(move || db.sweep_ttl()).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(deleted = n, "embedded TTL sweep"),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(%err, "embedded TTL sweep failed"),
            Err(err) => tracing::warn!(%err, "embedded TTL sweep task failed"),
        }
    }
}
