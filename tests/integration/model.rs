//! Model test: random sequences of create / load / update / regenerate /
//! destroy against the real two-tier store (two nodes over one table), and
//! against a plain reference model. Every observable result must agree.

use std::collections::BTreeMap;

use edge_session::{
    Destroyed, NewSession, Session, SessionChange, SessionToken, StoreSettings, UserBinding,
};
use proptest::prelude::*;

use crate::harness::{now, Cluster};

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Load {
        slot: usize,
        on_b: bool,
    },
    LoadPlanted,
    Update {
        slot: usize,
        stale: bool,
        value: u8,
    },
    Regenerate {
        slot: usize,
        user: Option<u8>,
        keep_data: bool,
    },
    Destroy(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<u8>().prop_map(Op::Create),
        4 => (0..8usize, any::<bool>()).prop_map(|(slot, on_b)| Op::Load { slot, on_b }),
        1 => Just(Op::LoadPlanted),
        3 => (0..8usize, any::<bool>(), any::<u8>()).prop_map(|(slot, stale, value)| Op::Update { slot, stale, value }),
        2 => (0..8usize, proptest::option::of(0..3u8), any::<bool>())
            .prop_map(|(slot, user, keep_data)| Op::Regenerate { slot, user, keep_data }),
        1 => (0..8usize).prop_map(Op::Destroy),
    ]
}

/// The reference model of one issued token.
#[derive(Debug, Clone)]
struct Model {
    alive: bool,
    version: u64,
    user: Option<String>,
    data: BTreeMap<String, String>,
}

/// What the test holds for one issued token: its latest handle and an older one.
struct Slot {
    token: SessionToken,
    current: Session,
    stale: Session,
}

fn value(v: u8) -> BTreeMap<String, String> {
    BTreeMap::from([("v".to_owned(), v.to_string())])
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let cluster = Cluster::new().await;
    // Every write runs on A, so A's cache is never stale and A must agree
    // with the model. B is a second node with no lease (it revalidates every
    // hit against DynamoDB), so it must agree at once too. (A node with a
    // lease may serve another node's revocation late, within the lease: that
    // bound is tested in `store::stale_cache_is_revalidated_after_the_lease`.)
    let a = cluster.node(StoreSettings::default());
    let b = cluster.node(StoreSettings {
        revalidate_after_ms: 0,
        ..StoreSettings::default()
    });
    let t = now();
    let mut slots: Vec<Slot> = Vec::new();
    let mut model: Vec<Model> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Create(v) => {
                let (token, s) = a.create(NewSession::anonymous(value(v)), t).await.unwrap();
                model.push(Model {
                    alive: true,
                    version: 1,
                    user: None,
                    data: value(v),
                });
                slots.push(Slot {
                    token,
                    current: s.clone(),
                    stale: s,
                });
            }
            Op::Load { slot, on_b } => {
                let Some(s) = slots.get_mut(slot) else {
                    continue;
                };
                let node = if on_b { &b } else { &a };
                let got = node.load(&s.token, t).await.unwrap();
                let m = &model[slot];
                prop_assert_eq!(got.is_some(), m.alive, "step {}: load liveness", step);
                if let Some(got) = got {
                    prop_assert_eq!(got.record.version, m.version, "step {}: version", step);
                    prop_assert_eq!(
                        got.record.user_id.as_deref(),
                        m.user.as_deref(),
                        "step {}: user",
                        step
                    );
                    prop_assert_eq!(&got.record.data, &m.data, "step {}: data", step);
                    s.current = got;
                }
            }
            Op::LoadPlanted => {
                prop_assert!(a
                    .load(&SessionToken::generate(), t)
                    .await
                    .unwrap()
                    .is_none());
            }
            Op::Update {
                slot,
                stale,
                value: v,
            } => {
                let Some(s) = slots.get_mut(slot) else {
                    continue;
                };
                let handle = if stale {
                    s.stale.clone()
                } else {
                    s.current.clone()
                };
                let m = &mut model[slot];
                let expect_ok = m.alive && handle.record.version == m.version;
                let got = a
                    .update(&handle, SessionChange::data(value(v)), t)
                    .await
                    .unwrap();
                prop_assert_eq!(got.is_ok(), expect_ok, "step {}: update outcome", step);
                if let Ok(new) = got {
                    m.version += 1;
                    m.data = value(v);
                    s.stale = std::mem::replace(&mut s.current, new);
                }
            }
            Op::Regenerate {
                slot,
                user,
                keep_data,
            } => {
                let Some(s) = slots.get(slot) else { continue };
                let handle = s.current.clone();
                let m = model[slot].clone();
                let expect_ok = m.alive && handle.record.version == m.version;
                let binding = user.map(|u| UserBinding {
                    user_id: format!("user-{u}"),
                    role: None,
                    client: None,
                });
                let got = a
                    .regenerate(&handle, binding.clone(), keep_data, t)
                    .await
                    .unwrap();
                prop_assert_eq!(got.is_ok(), expect_ok, "step {}: regenerate outcome", step);
                if let Ok((token, new)) = got {
                    model[slot].alive = false;
                    let user = binding.map(|b| b.user_id).or(m.user.clone());
                    let data = if keep_data {
                        m.data.clone()
                    } else {
                        BTreeMap::new()
                    };
                    prop_assert_eq!(new.record.user_id.as_deref(), user.as_deref());
                    prop_assert_eq!(&new.record.data, &data);
                    model.push(Model {
                        alive: true,
                        version: 1,
                        user,
                        data,
                    });
                    slots.push(Slot {
                        token,
                        current: new.clone(),
                        stale: new,
                    });
                }
            }
            Op::Destroy(slot) => {
                let Some(s) = slots.get(slot) else { continue };
                let got = a.destroy(&s.token, t).await.unwrap();
                let m = &mut model[slot];
                if m.alive {
                    prop_assert_eq!(got, Destroyed::Confirmed, "step {}: destroy", step);
                } else {
                    prop_assert!(
                        matches!(got, Destroyed::NotFound | Destroyed::AlreadyRevoked),
                        "step {}: destroy of a dead session gave {:?}",
                        step,
                        got
                    );
                }
                m.alive = false;
            }
        }
    }
    // Final sweep: every slot agrees on both nodes.
    for (i, s) in slots.iter().enumerate() {
        for node in [&a, &b] {
            let got = node.load(&s.token, t).await.unwrap();
            prop_assert_eq!(got.is_some(), model[i].alive, "final: slot {}", i);
        }
    }
    Ok(())
}

#[test]
fn store_agrees_with_reference_model() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
        runtime.block_on(run(ops))?;
    });
}
