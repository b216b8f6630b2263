//! A fleet of five nodes each reading the table's stream, under DynamoDB
//! Streams' read limits enforced by the proxy: they are throttled, which is
//! why a region of more than two nodes runs on relays (whose fleet test is
//! the integration suite's `relays::a_fleet_on_relays_gets_every_revocation`).

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
