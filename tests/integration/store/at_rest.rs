//! What the two tiers hold: a planted token writes nothing, no token is
//! stored raw in either tier, an expired session is refused by both while
//! its item waits for DynamoDB's lazy TTL, and tombstones outlive a restart.

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use edge_session::{
    Destroyed, NewSession, Policy, SessionChange, SessionToken, StoreSettings, TieredStore,
};

use super::{alice, anonymous, data, in_dynamodb, straggler, MIN};
use crate::harness::{now, Cluster};

#[tokio::test]
async fn planted_token_is_not_adopted() {
    let cluster = Cluster::new().await;
    let node = cluster.node(StoreSettings::default());
    let planted = SessionToken::generate();
    let t = now();

    assert_eq!(node.load(&planted, t).await.unwrap(), None);
    // A logout carrying it writes nothing either.
    assert_eq!(
        node.destroy(&planted, t).await.unwrap(),
        Destroyed::NotFound
    );
    assert_eq!(node.load(&planted, t).await.unwrap(), None);

    assert!(
        node.cache().dump().unwrap().is_empty(),
        "nothing written to sled"
    );
    assert!(
        cluster.scan().await.is_empty(),
        "nothing written to DynamoDB"
    );
}

/// `token`'s session is expired at `at` in both tiers: `node` refuses it
/// from its cache, a node with a cold cache refuses it from DynamoDB, and
/// DynamoDB still holds the item (its TTL sweep is lazy).
async fn assert_expired_in_both_tiers(
    cluster: &Cluster,
    node: &TieredStore,
    settings: StoreSettings,
    token: &SessionToken,
    at: u64,
) {
    assert_eq!(
        node.load(token, at).await.unwrap(),
        None,
        "sled tier rejects"
    );
    assert_eq!(
        cluster.node(settings).load(token, at).await.unwrap(),
        None,
        "DynamoDB tier rejects"
    );
    assert!(
        in_dynamodb(cluster, &token.storage_key()).await,
        "TTL is lazy"
    );
}

#[tokio::test]
async fn expired_session_is_rejected_in_both_tiers() {
    let policy = Policy {
        idle_timeout_ms: 10 * MIN,
        absolute_timeout_ms: 60 * MIN,
        touch_interval_ms: MIN,
    };
    let settings = StoreSettings {
        policy,
        ..StoreSettings::default()
    };
    let cluster = Cluster::new().await;
    let node = cluster.node(settings);
    let t0 = now();

    // Idle: unused for the idle timeout.
    let (idle, _) = anonymous(&node, t0).await;
    assert!(node.load(&idle, t0 + 10 * MIN - 1).await.unwrap().is_some());
    // That load touched it: the idle clock restarted.
    assert!(node.load(&idle, t0 + 19 * MIN).await.unwrap().is_some());
    assert_expired_in_both_tiers(&cluster, &node, settings, &idle, t0 + 29 * MIN).await;

    // Absolute: used every 5 minutes, still over at 60 minutes.
    let (busy, _) = anonymous(&node, t0).await;
    for m in (5..60).step_by(5) {
        assert!(
            node.load(&busy, t0 + m * MIN).await.unwrap().is_some(),
            "alive at {m} min"
        );
    }
    assert_expired_in_both_tiers(&cluster, &node, settings, &busy, t0 + 60 * MIN).await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The bytes of a DynamoDB attribute that could hold a token.
fn attribute_bytes(value: &AttributeValue) -> Vec<u8> {
    match value {
        AttributeValue::B(b) => b.as_ref().to_vec(),
        AttributeValue::S(s) | AttributeValue::N(s) => s.as_bytes().to_vec(),
        other => format!("{other:?}").into_bytes(),
    }
}

#[tokio::test]
async fn raw_tokens_are_never_stored() {
    let cluster = Cluster::new().await;
    let node = cluster.node(StoreSettings::default());
    let t = now();
    let mut tokens = Vec::new();
    for i in 0..5 {
        let (token, s) = node
            .create(NewSession::anonymous(data(&[("i", &i.to_string())])), t)
            .await
            .unwrap();
        let s = node
            .update(&s, SessionChange::data(data(&[("i", "updated")])), t)
            .await
            .unwrap()
            .unwrap();
        let (new, _) = node
            .regenerate(&s, alice(), true, t)
            .await
            .unwrap()
            .unwrap();
        tokens.push(token);
        tokens.push(new);
    }
    node.destroy(&tokens[1], t).await.unwrap();

    let dump = node.cache().dump().unwrap();
    assert!(!dump.is_empty());
    let items = cluster.scan().await;
    assert!(!items.is_empty());
    for token in &tokens {
        let raw = token.expose_bytes();
        let text = token.expose();
        let b64std = base64::engine::general_purpose::STANDARD.encode(raw);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let needles: [&[u8]; 4] = [raw, text.as_bytes(), b64std.as_bytes(), hex.as_bytes()];
        for (tree, k, v) in &dump {
            for needle in needles {
                assert!(
                    !contains(k, needle) && !contains(v, needle),
                    "token found in sled tree {tree}"
                );
            }
        }
        for (name, value) in items.iter().flatten() {
            let bytes = attribute_bytes(value);
            for needle in needles {
                assert!(
                    !contains(&bytes, needle),
                    "token found in DynamoDB attribute {name}"
                );
            }
        }
    }
}

#[tokio::test]
async fn tombstones_survive_restart() {
    let cluster = Cluster::new().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    let node = cluster.node_at(dir.path(), StoreSettings::default());
    let (logged_out, _) = anonymous(&node, t).await;
    let (pre_login, s) = anonymous(&node, t).await;
    let (logged_in, _) = node
        .regenerate(&s, alice(), false, t)
        .await
        .unwrap()
        .unwrap();
    node.destroy(&logged_out, t).await.unwrap();
    // Keep copies of the revoked items, to put back behind the node's back.
    let revoked: Vec<_> = [&logged_out, &pre_login]
        .iter()
        .map(|t| t.storage_key())
        .collect();
    node.close().await.unwrap();

    let node = cluster.node_at(dir.path(), StoreSettings::default());
    assert_eq!(node.load(&logged_out, t).await.unwrap(), None);
    assert_eq!(node.load(&pre_login, t).await.unwrap(), None);
    assert!(
        node.load(&logged_in, t).await.unwrap().is_some(),
        "live session survives restart"
    );
    // Even if a stale replica wrote the items back, this node refuses them:
    // the tombstones themselves survived, not just DynamoDB's deletes.
    for key in &revoked {
        assert!(node.cache().is_tombstoned(key).unwrap());
        let (item, _) = straggler(key, "alice", t);
        cluster.tier.create(&item).await.unwrap().unwrap();
    }
    assert_eq!(node.load(&logged_out, t).await.unwrap(), None);
    assert_eq!(node.load(&pre_login, t).await.unwrap(), None);
}
