//! The streams limits proxy in front of the embedded server, driven by the
//! AWS SDK's DynamoDB and DynamoDB Streams clients, one access key id per
//! reader. The clients make one attempt per call, so a throttled call shows
//! as the SDK's error code instead of being retried away.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata as _;
use aws_sdk_dynamodbstreams::operation::describe_stream::DescribeStreamOutput;
use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsOutput;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_sdk_dynamodbstreams::Client as StreamsClient;
use edge_session::EmbeddedDynamo;
use edge_session_sync::{ClientSettings, DynamoTier, Endpoint};
use edge_session_test_support::streams_limits::{OpCounts, StreamsLimitProxy, StreamsLimits};

const TABLE: &str = "sessions";
const THROTTLED: &str = "LimitExceededException";

/// One attempt per call, `access_key_id` as the reader.
fn settings(url: &str, access_key_id: &str) -> ClientSettings {
    ClientSettings {
        endpoint: Endpoint::Static {
            url: url.to_owned(),
            access_key_id: access_key_id.to_owned(),
            secret_access_key: "secret".to_owned(),
        },
        max_attempts: 1,
        ..ClientSettings::default()
    }
}

/// The embedded server with a streamed table of a few items, and its shard.
struct Fixture {
    server: EmbeddedDynamo,
    stream_arn: String,
    shard_id: String,
}

impl Fixture {
    async fn start() -> Fixture {
        let server = EmbeddedDynamo::start_temporary(Duration::from_secs(3600)).unwrap();
        let direct = settings(&server.url(), "setup");
        let tier = DynamoTier::new(direct.build().await, TABLE);
        tier.provision().await.unwrap();
        for n in 0..3u8 {
            tier.client()
                .put_item()
                .table_name(TABLE)
                .item("sid", AttributeValue::B(vec![n; 32].into()))
                .item("note", AttributeValue::S(format!("item {n}")))
                .send()
                .await
                .unwrap();
        }
        let streams = direct.build_streams().await;
        let listed = streams
            .list_streams()
            .table_name(TABLE)
            .send()
            .await
            .unwrap();
        let stream_arn = listed.streams()[0].stream_arn().unwrap().to_owned();
        let described = describe(&streams, &stream_arn).await;
        let shards = described.stream_description().unwrap().shards();
        let shard_id = shards[0].shard_id().unwrap().to_owned();
        Fixture {
            server,
            stream_arn,
            shard_id,
        }
    }

    /// A reader through `proxy` with its own iterator at the shard's start.
    async fn reader(&self, proxy: &StreamsLimitProxy, access_key_id: &str) -> Reader {
        let client = settings(&proxy.url(), access_key_id).build_streams().await;
        let iterator = client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(&self.shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .unwrap()
            .to_owned();
        Reader { client, iterator }
    }
}

struct Reader {
    client: StreamsClient,
    iterator: String,
}

impl Reader {
    /// `GetRecords` from the shard's start: the number of records, or the
    /// SDK's error code.
    async fn get_records(&self) -> Result<usize, String> {
        match self
            .client
            .get_records()
            .shard_iterator(&self.iterator)
            .send()
            .await
        {
            Ok(out) => Ok(out.records().len()),
            Err(err) => Err(err
                .as_service_error()
                .and_then(|e| e.code())
                .map_or_else(|| format!("{err:?}"), str::to_owned)),
        }
    }
}

/// `DescribeStream` of `stream_arn` with `client`.
async fn describe(client: &StreamsClient, stream_arn: &str) -> DescribeStreamOutput {
    let req = client.describe_stream().stream_arn(stream_arn);
    req.send().await.unwrap()
}

/// `GetRecords` at `iterator` with `client`.
async fn records_at(client: &StreamsClient, iterator: &str) -> GetRecordsOutput {
    let req = client.get_records().shard_iterator(iterator);
    req.send().await.unwrap()
}

/// A strongly consistent `GetItem` of the item `sid` with `client`.
async fn consistent_get(client: &aws_sdk_dynamodb::Client, sid: AttributeValue) -> GetItemOutput {
    let req = client.get_item().table_name(TABLE).key("sid", sid);
    req.consistent_read(true).send().await.unwrap()
}

fn counts(forwarded: u64, throttled: u64) -> OpCounts {
    OpCounts {
        forwarded,
        throttled,
    }
}

fn key(reader: &str, op: &str) -> (String, String) {
    (reader.to_owned(), op.to_owned())
}

#[tokio::test]
async fn a_third_reader_of_a_shard_is_throttled() {
    let fx = Fixture::start().await;
    let proxy = StreamsLimitProxy::start(fx.server.addr(), StreamsLimits::default()).unwrap();
    let (a, b, c) = (
        fx.reader(&proxy, "reader-a").await,
        fx.reader(&proxy, "reader-b").await,
        fx.reader(&proxy, "reader-c").await,
    );
    // A and B poll twice a second each: within every limit.
    for round in 0..3 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(a.get_records().await, Ok(3), "round {round}");
        assert_eq!(b.get_records().await, Ok(3), "round {round}");
    }
    assert_eq!(c.get_records().await, Err(THROTTLED.to_owned()));
    assert_eq!(a.get_records().await, Ok(3), "the active readers go on");
    let seen = proxy.counts();
    assert_eq!(seen[&key("reader-a", "GetRecords")], counts(4, 0));
    assert_eq!(seen[&key("reader-b", "GetRecords")], counts(3, 0));
    assert_eq!(seen[&key("reader-c", "GetRecords")], counts(0, 1));
    // Once B has been quiet for the reader window, C takes its place.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(a.get_records().await, Ok(3));
    assert_eq!(c.get_records().await, Ok(3));
    assert_eq!(b.get_records().await, Err(THROTTLED.to_owned()));
}

#[tokio::test]
async fn more_than_five_get_records_a_second_on_a_shard_are_throttled() {
    let fx = Fixture::start().await;
    let limits = StreamsLimits::default();
    let proxy = StreamsLimitProxy::start(fx.server.addr(), limits).unwrap();
    let a = fx.reader(&proxy, "reader-a").await;
    let (mut passed, mut throttled) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        match a.get_records().await {
            Ok(_) => passed += 1,
            Err(code) if code == THROTTLED => throttled += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // The bucket starts full (burst = rate) and refills at the rate.
    let rate = limits.get_records_per_shard_per_sec;
    let allowed = rate + rate * elapsed;
    assert!(throttled > 0, "{passed} passed, none throttled");
    assert!(
        passed as f64 <= allowed + 1.0 && passed as f64 >= allowed - 3.0,
        "{passed} passed in {elapsed:.2} s, about {allowed:.1} allowed"
    );
    assert_eq!(
        proxy.counts()[&key("reader-a", "GetRecords")],
        counts(passed, throttled)
    );
}

#[tokio::test]
async fn without_limits_the_proxy_passes_everything() {
    let fx = Fixture::start().await;
    let proxy = StreamsLimitProxy::start(fx.server.addr(), StreamsLimits::none()).unwrap();
    let readers = ["reader-a", "reader-b", "reader-c", "reader-d"];
    let mut clients = Vec::new();
    for id in readers {
        clients.push(fx.reader(&proxy, id).await);
    }
    for reader in &clients {
        for _ in 0..20 {
            assert_eq!(reader.get_records().await, Ok(3));
        }
    }
    for _ in 0..25 {
        describe(&clients[0].client, &fx.stream_arn).await;
    }
    let mut expected = BTreeMap::new();
    for id in readers {
        expected.insert(key(id, "GetShardIterator"), counts(1, 0));
        expected.insert(key(id, "GetRecords"), counts(20, 0));
    }
    expected.insert(key("reader-a", "DescribeStream"), counts(25, 0));
    assert_eq!(proxy.counts(), expected);
    proxy.reset_counts();
    assert_eq!(proxy.counts(), BTreeMap::new());
}

#[tokio::test]
async fn the_proxy_does_not_change_a_forwarded_answer() {
    let fx = Fixture::start().await;
    let proxy = StreamsLimitProxy::start(fx.server.addr(), StreamsLimits::default()).unwrap();
    let direct = settings(&fx.server.url(), "direct").build().await;
    let proxied = settings(&proxy.url(), "proxied").build().await;
    let sid = AttributeValue::B(vec![1u8; 32].into());
    let via_server = consistent_get(&direct, sid.clone()).await;
    let via_proxy = consistent_get(&proxied, sid).await;
    assert!(via_server.item().is_some());
    assert_eq!(via_proxy.item(), via_server.item());
    // A stream read as well: the same records, byte for byte in the images.
    let direct_reader = settings(&fx.server.url(), "direct").build_streams().await;
    let reader = fx.reader(&proxy, "proxied").await;
    let via_server = records_at(&direct_reader, &reader.iterator).await;
    let via_proxy = records_at(&reader.client, &reader.iterator).await;
    assert_eq!(via_proxy.records().len(), 3);
    assert_eq!(via_proxy.records(), via_server.records());
    assert_eq!(
        via_proxy.next_shard_iterator(),
        via_server.next_shard_iterator()
    );
}
