//! Write units per operation, as DynamoDB (here the embedded server,
//! dynoxide, which follows DynamoDB's capacity rules) reports them through
//! `ReturnConsumedCapacity`: with the change journal off, each operation
//! costs only its own item changes; with it on, each invalidating write pays
//! a transaction with its entry and the entry's index write. Printed for
//! docs/performance.md (`cargo test -p edge-session-sync --test write_units -- --nocapture`).

use edge_session_sync::{DynamoTier, JournalSettings, SID_LEN};
use edge_session_test_support::dynamo::{self, item, table};

/// The units each operation consumed, in order: create, touch, update,
/// rotate (login), epoch raise, delete (logout).
async fn units(tier: &DynamoTier) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    let mut last = tier.consumed_write_units();
    let mut note = |op, tier: &DynamoTier| {
        let now = tier.consumed_write_units();
        out.push((op, now - last));
        last = now;
    };
    tier.create(&item(1, 1)).await.unwrap().unwrap();
    note("create", tier);
    tier.touch(&item(1, 2), 1).await.unwrap().unwrap();
    note("touch", tier);
    tier.update(&item(1, 3), 2).await.unwrap().unwrap();
    note("update", tier);
    tier.rotate(&[1; SID_LEN], 3, &item(2, 1), None)
        .await
        .unwrap()
        .unwrap();
    note("rotate (login)", tier);
    tier.bump_user_epoch(&[9; SID_LEN], None, u64::MAX / 2)
        .await
        .unwrap();
    note("epoch raise", tier);
    assert!(tier.delete(&[2; SID_LEN]).await.unwrap());
    note("delete (logout)", tier);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_journal_each_operation_costs_only_its_own_items() {
    let server = dynamo::temporary();
    let plain = table(&server.url()).await;
    assert!(
        !plain.journal().write,
        "the journal is off unless asked for"
    );
    let journaled =
        DynamoTier::new(plain.client().clone(), plain.table()).with_journal(JournalSettings {
            write: true,
            ..JournalSettings::default()
        });
    let without = units(&plain).await;
    // Fresh keys for the second run: the same operations on other items.
    journaled.delete(&[1; SID_LEN]).await.unwrap();
    let with = units(&journaled).await;
    eprintln!("| operation | write units, journal off | journal on |");
    for ((op, off), (_, on)) in without.iter().zip(&with) {
        eprintln!("| {op} | {off} | {on} |");
    }
    let off = |op: &str| without.iter().find(|(o, _)| *o == op).unwrap().1;
    let on = |op: &str| with.iter().find(|(o, _)| *o == op).unwrap().1;
    for op in [
        "create",
        "touch",
        "update",
        "epoch raise",
        "delete (logout)",
    ] {
        assert_eq!(off(op), 1.0, "{op}: one write of an item under 1 KB");
    }
    assert_eq!(on("touch"), 1.0, "a touch is never journaled");
    for op in ["update", "epoch raise", "delete (logout)", "rotate (login)"] {
        assert!(on(op) > off(op), "{op}: the journal adds to it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_events_cost_one_unit_for_the_reason_and_one_per_log_write() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    let log = edge_session_sync::EventLog::new("eu");
    let mut last = tier.consumed_write_units();
    let mut note = |tier: &DynamoTier| {
        let now = tier.consumed_write_units();
        let spent = now - last;
        last = now;
        spent
    };
    tier.create(&item(4, 1)).await.unwrap().unwrap();
    note(&tier);
    assert!(tier.stamp_end(&[4; SID_LEN], "signed_out").await.unwrap());
    let stamp = note(&tier);
    assert!(tier.delete(&[4; SID_LEN]).await.unwrap());
    let delete = note(&tier);
    let json = format!(
        "{{\"id\":\"evt_{}\",\"type\":\"session.signed_out\"}}",
        "0".repeat(32)
    );
    let appended = tier
        .append_event(log, 1, "evt_x", &json, u64::MAX / 2)
        .await;
    assert_eq!(appended.unwrap(), edge_session_sync::Appended::Written);
    let append = note(&tier);
    tier.set_event_head(log, 2).await.unwrap();
    let head = note(&tier);
    tier.set_webhook_cursor(log, "hook", 1).await.unwrap();
    let cursor = note(&tier);
    eprintln!("| write | write units |");
    for (op, units) in [
        ("why, before the delete", stamp),
        ("delete (logout)", delete),
        ("event log entry", append),
        ("log head (per beat)", head),
        ("webhook cursor (per batch)", cursor),
    ] {
        eprintln!("| {op} | {units} |");
        assert_eq!(units, 1.0, "{op}: one write of an item under 1 KB");
    }
    // A reason is written once: the first one stays.
    tier.create(&item(5, 1)).await.unwrap().unwrap();
    assert!(tier.stamp_end(&[5; SID_LEN], "admin").await.unwrap());
    assert!(!tier.stamp_end(&[5; SID_LEN], "deferred").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_events_is_one_transaction_at_two_units_each() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    let log = edge_session_sync::EventLog::new("eu");
    let entries: Vec<(String, String)> = (0..3)
        .map(|i| (format!("evt_{i}"), format!("{{\"n\":{i}}}")))
        .collect();
    let before = tier.consumed_write_units();
    assert!(tier
        .append_events(log, 1, &entries, u64::MAX / 2)
        .await
        .unwrap());
    let units = tier.consumed_write_units() - before;
    eprintln!("| a batch of 3 log entries (one transaction) | {units} |");
    assert_eq!(units, 6.0);
    // A number taken: nothing of the batch is written.
    let read = tier.read_events(log, 1, 10).await.unwrap();
    assert_eq!(read.len(), 3);
    assert!(!tier
        .append_events(log, 3, &entries, u64::MAX / 2)
        .await
        .unwrap());
    assert_eq!(tier.read_events(log, 1, 10).await.unwrap().len(), 3);
}
