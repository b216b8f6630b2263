//! What the sync crate's integration tests share: dynoxide in-process, a
//! client for it, a fresh table, an item.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_session_sync::{ClientSettings, DynamoTier, Endpoint, Item, SID_LEN};
use tokio::sync::oneshot;

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
