//! The stream follower against the embedded server (the node's own,
//! file-backed, one per test, on 127.0.0.1:0) through the official SDKs, with a small HTTP proxy in front of it where a
//! test needs a fault the emulator cannot produce (an expired iterator,
//! trimmed data, throttling).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_session_sync::{
    DynamoTier, ErrorKind, FollowerSettings, Invalidation, InvalidationKind, MemoryCheckpoints,
    StreamFollower, SID_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use edge_session_test_support::dynamo::{
    self, create_and_delete, delete_with_clock_behind, item, table,
};
use edge_session_test_support::follower::{Running, WAIT};

/// A fault the proxy answers instead of forwarding.
#[derive(Debug)]
struct Fault {
    /// `X-Amz-Target` operation, e.g. `GetRecords`.
    operation: &'static str,
    /// Error code, e.g. `ExpiredIteratorException`.
    code: &'static str,
    times: usize,
}

/// An HTTP/1.1 proxy to the embedded server, one request per connection, that answers
/// queued faults instead of forwarding and logs every request body.
struct Proxy {
    url: String,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    log: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let faults: Arc<Mutex<VecDeque<Fault>>> = Arc::default();
        let log: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (f, l) = (faults.clone(), log.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, faults, log) = (upstream.clone(), f.clone(), l.clone());
                tokio::spawn(async move {
                    let _ = serve_one(socket, &upstream, &faults, &log).await;
                });
            }
        });
        Proxy {
            url,
            faults,
            log,
            task,
        }
    }

    fn inject(&self, operation: &'static str, code: &'static str, times: usize) {
        self.faults.lock().unwrap().push_back(Fault {
            operation,
            code,
            times,
        });
    }

    fn faults_left(&self) -> usize {
        self.faults.lock().unwrap().iter().map(|f| f.times).sum()
    }

    /// Bodies of the requests for `operation` so far.
    fn requests(&self, operation: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(op, _)| op == operation)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    mut socket: tokio::net::TcpStream,
    upstream: &str,
    faults: &Mutex<VecDeque<Fault>>,
    log: &Mutex<Vec<(String, String)>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let operation = header("x-amz-target")
        .and_then(|t| t.rsplit('.').next().map(str::to_owned))
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    log.lock().unwrap().push((operation.clone(), body));

    let fault = {
        let mut faults = faults.lock().unwrap();
        let hit = faults
            .iter_mut()
            .find(|f| f.operation == operation && f.times > 0);
        let code = hit.map(|f| {
            f.times -= 1;
            f.code
        });
        faults.retain(|f| f.times > 0);
        code
    };
    if let Some(code) = fault {
        let body = format!(
            "{{\"__type\":\"com.amazonaws.dynamodb.v20120810#{code}\",\"message\":\"injected by the test proxy\"}}"
        );
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await?;
        return socket.shutdown().await;
    }

    // Forward with `connection: close`, relay the response likewise.
    let mut request: Vec<u8> = Vec::new();
    for line in head[..head_end - 4].split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            request.extend_from_slice(line.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
    }
    request.extend_from_slice(b"connection: close\r\n\r\n");
    request.extend_from_slice(&buf[head_end..]);
    let mut up = tokio::net::TcpStream::connect(upstream).await?;
    up.write_all(&request).await?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let response_head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut out: Vec<u8> = Vec::new();
    for line in response_head.trim_end().split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&response[split..]);
    socket.write_all(&out).await?;
    socket.shutdown().await
}

fn fast() -> FollowerSettings {
    FollowerSettings {
        poll_interval: Duration::from_millis(50),
        discover_every: Duration::from_secs(1),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..FollowerSettings::default()
    }
}

async fn follow(
    url: &str,
    table: &str,
    checkpoints: Arc<MemoryCheckpoints>,
    settings_: FollowerSettings,
) -> Running {
    let client_settings = dynamo::settings(url);
    let follower = StreamFollower::new(
        client_settings.build().await,
        client_settings.build_streams().await,
        table,
        checkpoints,
        settings_,
    );
    let status = follower.status();
    Running::spawn(status, |sink, shutdown| follower.run(sink, shutdown))
}

fn sids(invalidations: &[Invalidation]) -> Vec<u8> {
    invalidations.iter().map(|i| i.sid[0]).collect()
}

fn shard_checkpoint(checkpoints: &MemoryCheckpoints) -> Option<String> {
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
async fn wait_for_checkpoint(checkpoints: &MemoryCheckpoints, sequence: &str) {
    tokio::time::timeout(WAIT, async {
        while !at_or_past(shard_checkpoint(checkpoints).as_deref(), sequence) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the checkpoint reaches the last accepted record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_version_raises_are_invalidations_and_inserts_are_not() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    let mut follower = follow(
        &server.url(),
        tier.table(),
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    follower.ready().await;

    let before = SystemTime::now() - Duration::from_secs(2);
    tier.create(&item(1, 1)).await.unwrap().unwrap();
    tier.create(&item(2, 1)).await.unwrap().unwrap();
    tier.update(&item(1, 2), 1).await.unwrap().unwrap();
    tier.delete(&[2; SID_LEN]).await.unwrap();
    // A marker: once it arrives, everything before it was processed.
    create_and_delete(&tier, 3).await;

    let got = follower.take(3).await;
    assert_eq!(sids(&got), vec![1, 2, 3], "{got:?}");
    assert_eq!(
        got[0].kind,
        InvalidationKind::VersionRaised { new_ver: Some(2) }
    );
    assert_eq!(got[1].kind, InvalidationKind::Removed);
    assert_eq!(got[2].kind, InvalidationKind::Removed);
    assert!(got[0].sequence_number < got[1].sequence_number);
    for invalidation in &got {
        let created = invalidation
            .approximate_creation
            .expect("dynoxide reports ApproximateCreationDateTime");
        assert!(created >= before && created <= SystemTime::now() + Duration::from_secs(2));
    }
    let lag = follower.status.lag(SystemTime::now()).expect("lag known");
    assert!(lag < Duration::from_secs(10), "{lag:?}");
    assert_eq!(follower.status.gaps(), 0);
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_resumes_after_its_checkpoint_missing_and_repeating_nothing() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    let checkpoints = Arc::new(MemoryCheckpoints::new());

    let mut a = follow(&server.url(), tier.table(), checkpoints.clone(), fast()).await;
    a.ready().await;
    for byte in 1..=3 {
        create_and_delete(&tier, byte).await;
    }
    let first = a.take(3).await;
    assert_eq!(sids(&first), vec![1, 2, 3]);
    wait_for_checkpoint(&checkpoints, &first[2].sequence_number).await;
    a.stop().await;

    // Written while no follower runs.
    for byte in 4..=6 {
        create_and_delete(&tier, byte).await;
    }
    let mut b = follow(&server.url(), tier.table(), checkpoints.clone(), fast()).await;
    let resumed = b.take(3).await;
    assert_eq!(sids(&resumed), vec![4, 5, 6], "{resumed:?}");
    b.ready().await;
    assert_eq!(
        b.status.covered_since(),
        Some(UNIX_EPOCH),
        "resumed from checkpoints: everything the stream holds is covered"
    );
    create_and_delete(&tier, 7).await;
    let marker = b.take(1).await;
    assert_eq!(
        sids(&marker),
        vec![7],
        "nothing before the checkpoint again"
    );
    wait_for_checkpoint(&checkpoints, &marker[0].sequence_number).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_consumer_failed_is_redelivered_and_not_checkpointed() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    let client_settings = dynamo::settings(&server.url());
    let follower = StreamFollower::new(
        client_settings.build().await,
        client_settings.build_streams().await,
        tier.table(),
        checkpoints.clone(),
        fast(),
    );
    let status = follower.status();

    // Call 1 fails; call 2 checks that nothing moved, then accepts.
    let calls = Arc::new(AtomicUsize::new(0));
    // Each delivery: the batch, and the checkpoint when it was handed over.
    type Deliveries = Mutex<Vec<(Vec<Invalidation>, Option<String>)>>;
    let seen: Arc<Deliveries> = Arc::default();
    let (tx, mut accepted) = mpsc::unbounded_channel::<Vec<Invalidation>>();
    let sink = {
        let (calls, seen, checkpoints) = (calls.clone(), seen.clone(), checkpoints.clone());
        move |batch: Vec<Invalidation>| {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            seen.lock()
                .unwrap()
                .push((batch.clone(), shard_checkpoint(&checkpoints)));
            let tx = tx.clone();
            async move {
                if call == 1 {
                    return Err("consumer unavailable");
                }
                tx.send(batch).map_err(|_| "test receiver gone")
            }
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(follower.run(sink, async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(WAIT, async {
        while status.last_poll_ok_at().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();

    create_and_delete(&tier, 1).await;
    let batch = tokio::time::timeout(WAIT, accepted.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sids(&batch), vec![1]);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "one failed delivery, one redelivery");
        assert_eq!(seen[0].0, seen[1].0, "the same batch again");
        assert_eq!(
            seen[0].1, seen[1].1,
            "the failed batch did not move the checkpoint"
        );
        assert_ne!(
            seen[1].1.as_deref(),
            Some(batch[0].sequence_number.as_str())
        );
    }
    wait_for_checkpoint(&checkpoints, &batch[0].sequence_number).await;

    // Accepted once: it never comes back.
    create_and_delete(&tier, 2).await;
    let next = tokio::time::timeout(WAIT, accepted.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sids(&next), vec![2]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_begins_at_latest() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    create_and_delete(&tier, 1).await;

    let started = SystemTime::now();
    let mut follower = follow(
        &server.url(),
        tier.table(),
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    follower.ready().await;
    // What was written before the LATEST position is in no record it reads:
    // its coverage begins after that position was taken.
    let covered = follower.status.covered_since().expect("positioned");
    assert!(covered >= started, "{covered:?} before {started:?}");
    create_and_delete(&tier, 2).await;
    // Had the history been replayed, session 1 would come first.
    assert_eq!(sids(&follower.take(1).await), vec![2]);
    assert_eq!(follower.status.covered_since(), Some(covered), "unchanged");
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_follower_reads_an_unknown_shard_from_the_trim_horizon_and_drops_stale_checkpoints(
) {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    create_and_delete(&tier, 1).await;

    // The store holds a checkpoint of a shard that has since expired: this
    // node is resuming, so the live shard (no checkpoint) is read from its
    // start.
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    edge_session_sync::Checkpoints::put(
        checkpoints.as_ref(),
        "shardId-expired",
        "100000000000000000001",
    )
    .unwrap();
    let mut follower = follow(&server.url(), tier.table(), checkpoints.clone(), fast()).await;
    let got = follower.take(1).await;
    assert_eq!(sids(&got), vec![1]);
    wait_for_checkpoint(&checkpoints, &got[0].sequence_number).await;
    let snapshot = checkpoints.snapshot();
    assert!(
        !snapshot.contains_key("shardId-expired"),
        "stale checkpoint pruned: {snapshot:?}"
    );
    assert_eq!(snapshot.len(), 1);
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_iterator_is_reacquired_after_the_checkpoint_without_loss_or_repeat() {
    let server = dynamo::temporary();
    let proxy = Proxy::start(&server.url()).await;
    let tier = table(&server.url()).await;
    let mut follower = follow(
        &proxy.url,
        tier.table(),
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    follower.ready().await;
    create_and_delete(&tier, 1).await;
    let first = follower.take(1).await;
    assert_eq!(sids(&first), vec![1]);

    proxy.inject("GetRecords", "ExpiredIteratorException", 1);
    create_and_delete(&tier, 2).await;
    create_and_delete(&tier, 3).await;
    let rest = follower.take(2).await;
    assert_eq!(sids(&rest), vec![2, 3], "{rest:?}");
    assert_eq!(proxy.faults_left(), 0, "the fault was hit");
    let after = proxy
        .requests("GetShardIterator")
        .into_iter()
        .filter(|body| body.contains("AFTER_SEQUENCE_NUMBER"))
        .count();
    assert!(
        after >= 1,
        "re-acquired AFTER_SEQUENCE_NUMBER of the last accepted record"
    );
    assert_eq!(follower.status.gaps(), 0);
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_data_is_reported_as_a_gap_and_reading_goes_on_from_the_trim_horizon() {
    let server = dynamo::temporary();
    let proxy = Proxy::start(&server.url()).await;
    let tier = table(&server.url()).await;
    let mut follower = follow(
        &proxy.url,
        tier.table(),
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    follower.ready().await;
    create_and_delete(&tier, 1).await;
    assert_eq!(sids(&follower.take(1).await), vec![1]);
    let covered = follower.status.covered_since().expect("positioned");

    let lost_at = SystemTime::now();
    proxy.inject("GetRecords", "TrimmedDataAccessException", 1);
    create_and_delete(&tier, 2).await;
    // The embedded server trims only records a day old, so its trim horizon
    // is the shard's first record: session 1 comes again (at-least-once),
    // then 2.
    let got = follower.take(2).await;
    assert_eq!(sids(&got), vec![1, 2], "{got:?}");
    assert_eq!(follower.status.gaps(), 1);
    let now_covered = follower.status.covered_since().expect("positioned");
    assert!(
        now_covered >= lost_at && now_covered > covered,
        "a gap moves the coverage past the loss: {now_covered:?}, lost at {lost_at:?}"
    );
    assert!(proxy
        .requests("GetShardIterator")
        .iter()
        .any(|body| body.contains("TRIM_HORIZON")));
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_backs_off_and_loses_nothing() {
    let server = dynamo::temporary();
    let proxy = Proxy::start(&server.url()).await;
    let tier = table(&server.url()).await;
    let mut follower = follow(
        &proxy.url,
        tier.table(),
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    follower.ready().await;
    // More than the SDK's attempts per call (3): the follower's own backoff
    // takes over, keeping its iterator.
    proxy.inject("GetRecords", "LimitExceededException", 5);
    create_and_delete(&tier, 1).await;
    create_and_delete(&tier, 2).await;
    let got = follower.take(2).await;
    assert_eq!(sids(&got), vec![1, 2], "{got:?}");
    assert_eq!(proxy.faults_left(), 0);
    assert_eq!(
        proxy.requests("GetShardIterator").len(),
        1,
        "the iterator survived the throttling"
    );
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_retried_until_shutdown() {
    // A port that was just free: connections are refused.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let follower = follow(&url, "nowhere", Arc::new(MemoryCheckpoints::new()), fast()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!follower.task.is_finished(), "still retrying");
    assert_eq!(follower.status.last_poll_ok_at(), None);
    assert_eq!(follower.status.lag(SystemTime::now()), None);
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_stream_is_an_error_at_start_up() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let server = dynamo::temporary();
    let client = dynamo::settings(&server.url()).build().await;
    client
        .create_table()
        .table_name("no-stream")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sid")
                .attribute_type(ScalarAttributeType::B)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sid")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let follower = follow(
        &server.url(),
        "no-stream",
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    let err = tokio::time::timeout(WAIT, follower.task)
        .await
        .unwrap()
        .unwrap()
        .expect_err("no stream to follow");
    assert_eq!(err.kind, ErrorKind::Rejected);
    assert!(err.message.contains("no stream"), "{err}");
    drop(follower.stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_rotated_away_in_a_transaction_is_invalidated_everywhere() {
    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    let mut follower = follow(
        &server.url(),
        tier.table(),
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    follower.ready().await;

    // Regenerate as one TransactWriteItems: delete the old key, put the new.
    tier.create(&item(1, 1)).await.unwrap().unwrap();
    let delete = Delete::builder()
        .table_name(tier.table())
        .key("sid", AttributeValue::B(Blob::new(vec![1; SID_LEN])))
        .build()
        .unwrap();
    let put = Put::builder()
        .table_name(tier.table())
        .set_item(Some(item(2, 1).to_attributes()))
        .build()
        .unwrap();
    tier.client()
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().delete(delete).build())
        .transact_items(TransactWriteItem::builder().put(put).build())
        .send()
        .await
        .unwrap();
    create_and_delete(&tier, 3).await;

    let got = follower.take(2).await;
    assert_eq!(
        sids(&got),
        vec![1, 3],
        "the new session is an insert: {got:?}"
    );
    assert_eq!(got[0].kind, InvalidationKind::Removed);
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_only_stream_invalidates_every_modify_and_remove() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        StreamSpecification, StreamViewType,
    };
    let server = dynamo::temporary();
    let client = dynamo::settings(&server.url()).build().await;
    client
        .create_table()
        .table_name("keys-only")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sid")
                .attribute_type(ScalarAttributeType::B)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sid")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::KeysOnly)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let tier = DynamoTier::new(client, "keys-only");
    let mut follower = follow(
        &server.url(),
        "keys-only",
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    follower.ready().await;
    tier.create(&item(1, 1)).await.unwrap().unwrap();
    tier.update(&item(1, 2), 1).await.unwrap().unwrap();
    tier.delete(&[1; SID_LEN]).await.unwrap();
    let got = follower.take(2).await;
    assert_eq!(sids(&got), vec![1, 1]);
    assert_eq!(
        got[0].kind,
        InvalidationKind::VersionRaised { new_ver: None }
    );
    assert_eq!(got[1].kind, InvalidationKind::Removed);
    follower.stop().await;
}

/// A touch (only `last_seen_at` moved) is one conditional put that no
/// follower hands over; the version raise after it is handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touches_are_not_broadcast() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    let mut follower = follow(
        &server.url(),
        tier.table(),
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    follower.ready().await;

    tier.create(&item(1, 1)).await.unwrap().unwrap();
    for ver in 2..=4 {
        tier.touch(&item(1, ver), ver - 1).await.unwrap().unwrap();
    }
    assert!(
        tier.touch(&item(1, 9), 1).await.unwrap().is_err(),
        "a touch of a copy that moved on is a conflict"
    );
    // A real rewrite after the touches, then a marker.
    tier.update(&item(1, 5), 4).await.unwrap().unwrap();
    create_and_delete(&tier, 2).await;

    let got = follower.take(2).await;
    assert_eq!(
        sids(&got),
        vec![1, 2],
        "only the rewrite and the marker: {got:?}"
    );
    assert_eq!(
        got[0].kind,
        InvalidationKind::VersionRaised { new_ver: Some(5) }
    );
    follower.stop().await;
}

/// A writer whose clock runs five seconds behind stamps its journal entry
/// with that clock; the stream places the delete by its commit, so the
/// follower hands it over all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_with_a_skewed_clock_loses_no_revocation() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    let mut follower = follow(
        &server.url(),
        tier.table(),
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    follower.ready().await;

    tier.create(&item(1, 1)).await.unwrap().unwrap();
    delete_with_clock_behind(&tier, 1, Duration::from_secs(5)).await;
    create_and_delete(&tier, 2).await;

    let got = follower.until(&[1, 2]).await;
    let first = got.iter().find(|i| i.sid[0] == 1).unwrap();
    assert_eq!(first.kind, InvalidationKind::Removed);
    follower.stop().await;
}
