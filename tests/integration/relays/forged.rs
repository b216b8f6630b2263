//! A relay that cannot sign with the fleet secret, in a slot with a
//! heartbeat that would keep a node on the long lease: the node refuses
//! every frame and stays on the short lease.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edge_session_sync::SlotId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{lease, relay_toml, SECRET};
use crate::coherence::{start, terminate_all};
use crate::harness::{client, eventually, metric, Cluster};

/// A relay in a slot that cannot sign with the fleet secret: it accepts any
/// subscriber and sends a hello and heartbeats that would keep a node on
/// the long lease. The node refuses every frame and stays on the short
/// lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_relay_is_refused() {
    let cluster = Cluster::new().await;
    let table = cluster.tier.table().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    for slot in 0..2 {
        let epoch = cluster
            .tier
            .claim_relay_slot(SlotId::new("default", slot), None, "forger", &url)
            .await
            .unwrap()
            .expect("the slot was free");
        assert_eq!(epoch, 1);
    }
    let served = Arc::new(AtomicU64::new(0));
    let forged = tokio::spawn(forged_relay(listener, served.clone()));
    // The forger keeps its slots fresh: nobody else may claim them.
    let tier = cluster.tier.clone();
    let renew = tokio::spawn(async move {
        loop {
            for slot in 0..2 {
                let _ = tier
                    .renew_relay_slot(SlotId::new("default", slot), 1, "forger")
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &table, &relay_toml(false, SECRET));
    let c = client();
    eventually("the node subscribed to the forged relay", || async {
        served.load(Ordering::SeqCst) >= 3
    })
    .await;
    eventually("the node refused its frames", || async {
        metric((&c, &node.url), "edge_session_relay_frames_refused_total")
            .await
            .unwrap_or(0.0)
            >= 2.0
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            lease(&c, &node).await,
            Some(1.0),
            "forged heartbeats believed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    renew.abort();
    forged.abort();
    terminate_all([node]).await;
}

/// Serve every connection a chunked feed of frames signed with a key that
/// is not the fleet's: a hello, then a heartbeat every 100 ms.
async fn forged_relay(listener: tokio::net::TcpListener, served: Arc<AtomicU64>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        served.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let mut head = vec![0u8; 4096];
            let _ = stream.read(&mut head).await;
            let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            let mut line = |text: String| {
                let text = format!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA {text}\n");
                out.extend_from_slice(format!("{:x}\r\n{text}\r\n", text.len()).as_bytes());
            };
            line(r#"{"e":1,"s":0,"t":"hello","resumed":false}"#.to_owned());
            for s in 1..50 {
                line(format!(r#"{{"e":1,"s":{s},"t":"beat","age":10}}"#));
            }
            for chunk in out.chunks(64) {
                if stream.write_all(chunk).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
}
