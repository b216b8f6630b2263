//! The embedded DynamoDB-compatible server (dynoxide, SQLite-backed) for
//! `dynamodb.endpoint = "embedded"`. It runs on its own thread and Tokio
//! runtime, bound to 127.0.0.1:0, and the node talks to it over the real
//! DynamoDB wire protocol through the official SDK: the production code path.
//! A timer runs its TTL sweep, as DynamoDB's own TTL would, and trims stream
//! records older than 24 hours, as DynamoDB Streams does.
//!
//! dynoxide keeps every table's stream in one SQLite table with no index, so
//! each write (which looks up the table's highest sequence number) and each
//! `GetRecords` would scan every stream record ever written, of every table:
//! a node slows with every write, and a follower polling the stream makes it
//! worse. Before serving, [`StreamLog`] adds an index on (table, sequence
//! number) through a second SQLite connection to the same file; the trim keeps
//! the log bounded. Both need a file, so the temporary server for tests and
//! benchmarks is a file in a temporary directory, not an in-memory database.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use dynoxide::Database;
use tokio::sync::oneshot;

/// How long stream records are kept: DynamoDB Streams' retention.
pub const STREAM_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

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
    /// Its SQLite file.
    path: std::path::PathBuf,
    /// The directory of a temporary server, removed after it stops.
    scratch: Option<tempfile::TempDir>,
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
        let log = StreamLog::open(path)?;
        Self::start(db, log, path.to_owned(), ttl_sweep_every)
    }

    /// Start on a file in a fresh temporary directory, removed when the
    /// server is dropped (tests, benchmarks).
    pub fn start_temporary(ttl_sweep_every: Duration) -> Result<Self, EmbeddedError> {
        let dir = tempfile::Builder::new()
            .prefix("edge-session-dynamodb-")
            .tempdir()
            .map_err(|e| EmbeddedError(format!("temporary directory: {e}")))?;
        let mut server = Self::start_file(&dir.path().join("dynamodb.sqlite3"), ttl_sweep_every)?;
        server.scratch = Some(dir);
        Ok(server)
    }

    fn start(
        db: Database,
        log: StreamLog,
        path: std::path::PathBuf,
        ttl_sweep_every: Duration,
    ) -> Result<Self, EmbeddedError> {
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
                    let sweeper = tokio::spawn(sweep(db.clone(), log, ttl_sweep_every));
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
            path,
            scratch: None,
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

    /// Another connection to its stream log (tests, diagnostics).
    pub fn stream_log(&self) -> Result<StreamLog, EmbeddedError> {
        StreamLog::open(&self.path)
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

/// Every `every`: dynoxide's TTL sweep, then the stream trim.
async fn sweep(db: Database, log: StreamLog, every: Duration) {
    let log = std::sync::Arc::new(std::sync::Mutex::new(log));
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
        let log = log.clone();
        let trimmed = tokio::task::spawn_blocking(move || {
            let log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            log.trim(std::time::SystemTime::now(), STREAM_RETENTION)
        });
        match trimmed.await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(trimmed = n, "embedded stream trim"),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(%err, "embedded stream trim failed"),
            Err(err) => tracing::warn!(%err, "embedded stream trim task failed"),
        }
    }
}

/// A second SQLite connection to the embedded server's file, for what
/// dynoxide does not do itself: index its stream log and trim it.
pub struct StreamLog {
    conn: rusqlite::Connection,
}

/// The index every stream query of dynoxide can use: its per-write
/// `MAX(CAST(sequence_number AS INTEGER)) WHERE table_name = ?` and its
/// `GetRecords` range (`table_name = ? AND CAST(...) > ? ORDER BY CAST(...)`).
const STREAM_INDEX: &str = "CREATE INDEX IF NOT EXISTS edge_session_stream_seq \
     ON _stream_records (table_name, CAST(sequence_number AS INTEGER))";

impl StreamLog {
    /// Open `path` (dynoxide has created its schema there) and add the index.
    pub fn open(path: &Path) -> Result<Self, EmbeddedError> {
        let fail = |e: rusqlite::Error| EmbeddedError(format!("{}: {e}", path.display()));
        let conn = rusqlite::Connection::open(path).map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
        conn.execute_batch(STREAM_INDEX).map_err(fail)?;
        Ok(StreamLog { conn })
    }

    /// Delete stream records written more than `retention` before `now`;
    /// how many.
    pub fn trim(
        &self,
        now: std::time::SystemTime,
        retention: Duration,
    ) -> Result<usize, rusqlite::Error> {
        let cutoff = now
            .checked_sub(retention)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        self.conn.execute(
            "DELETE FROM _stream_records WHERE created_at < ?1",
            [cutoff],
        )
    }

    /// SQLite's plan for `sql`, one line per step (for tests).
    pub fn plan(&self, sql: &str) -> Result<Vec<String>, rusqlite::Error> {
        let mut stmt = self.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(3))?;
        rows.collect()
    }

    /// How many stream records the log holds.
    pub fn records(&self) -> Result<u64, rusqlite::Error> {
        self.conn
            .query_row("SELECT COUNT(*) FROM _stream_records", [], |row| row.get(0))
    }
}
