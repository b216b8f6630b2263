//! A fleet of five nodes over one table, under DynamoDB Streams' read
//! limits enforced by the proxy: on the change journal every node gets every
//! revocation and stays on the long lease; on the stream, the same fleet is
//! throttled, which is why the journal exists. (How fast is the fleet
//! bench's to say, `edge-session-bench fleet`: timings are not asserted
//! here, they are printed.)

use std::time::Duration;

use edge_session::config::StreamSource;
use edge_session_bench::fleet::{run, FleetSpec};

fn spec(source: StreamSource) -> FleetSpec {
    FleetSpec {
        idle: Duration::from_secs(3),
        load: Duration::from_secs(5),
        ..FleetSpec::new(5, source)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_on_the_journal_get_every_revocation_within_a_second_under_streams_limits() {
    let report = run(&spec(StreamSource::Journal)).await.unwrap();
    assert_eq!(report.revocations, 500);
    assert_eq!(
        report.missed, 0,
        "every node got every revocation (within 10 s of the last)"
    );
    println!(
        "propagation p50 {:?}, p99 {:?}",
        report.percentile(0.50),
        report.percentile(0.99)
    );
    assert_eq!(
        report.nodes_always_long, 5,
        "no node fell to the lagging lease"
    );
    assert_eq!(report.load.throttled, 0.0, "nothing throttled");
    assert_eq!(report.idle.streams, 0.0, "the journal reads no stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_stream_readers_of_one_shard_are_throttled() {
    let report = run(&FleetSpec {
        load: Duration::from_secs(2),
        ..spec(StreamSource::Stream)
    })
    .await
    .unwrap();
    assert!(
        report.idle.throttled > 0.0,
        "five readers of one shard meet the limits: {report:?}"
    );
}
