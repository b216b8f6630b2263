//! Model test: random sequences of create / load / update / regenerate /
//! destroy against the real two-tier store (two nodes over one table), and
//! against a plain reference model. Every observable result must agree.

use std::collections::BTreeMap;

use edge_session::{
    Destroyed, NewSession, Session, SessionChange, SessionToken, StoreSettings, TieredStore,
    UserBinding,
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

/// Session data.
type Data = BTreeMap<String, String>;

fn value(v: u8) -> Data {
    BTreeMap::from([("v".to_owned(), v.to_string())])
}

/// Two nodes over one table, the tokens issued so far, and the model of
/// each. Every write runs on A, so A's cache is never stale and A must agree
/// with the model. B is a second node with no lease (it revalidates every
/// hit against DynamoDB), so it must agree at once too. (A node with a lease
/// may serve another node's revocation late, within the lease: that bound
/// is tested in `store::logout::stale_cache_is_revalidated_after_the_lease`.)
struct World {
    a: TieredStore,
    b: TieredStore,
    t: u64,
    slots: Vec<Slot>,
    model: Vec<Model>,
}

impl World {
    async fn new() -> Self {
        let cluster = Cluster::new().await;
        let a = cluster.node(StoreSettings::default());
        let b = cluster.node(StoreSettings {
            revalidate_after_ms: 0,
            ..StoreSettings::default()
        });
        World {
            a,
            b,
            t: now(),
            slots: Vec::new(),
            model: Vec::new(),
        }
    }

    /// A newly issued live session, at version 1.
    fn issued(&mut self, token: SessionToken, s: Session, user: Option<String>, data: Data) {
        let live = Model {
            alive: true,
            version: 1,
            user,
            data,
        };
        self.model.push(live);
        self.slots.push(Slot {
            token,
            current: s.clone(),
            stale: s,
        });
    }

    async fn apply(&mut self, step: usize, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Create(v) => {
                let new = NewSession::anonymous(value(v));
                let (token, s) = self.a.create(new, self.t).await.unwrap();
                self.issued(token, s, None, value(v));
                Ok(())
            }
            Op::Load { slot, on_b } => self.load(step, slot, on_b).await,
            Op::LoadPlanted => {
                let planted = self.a.load(&SessionToken::generate(), self.t).await;
                prop_assert!(planted.unwrap().is_none());
                Ok(())
            }
            Op::Update {
                slot,
                stale,
                value: v,
            } => self.update(step, slot, stale, v).await,
            Op::Regenerate {
                slot,
                user,
                keep_data,
            } => self.regenerate(step, slot, user, keep_data).await,
            Op::Destroy(slot) => self.destroy(step, slot).await,
        }
    }

    async fn load(&mut self, step: usize, slot: usize, on_b: bool) -> Result<(), TestCaseError> {
        let Some(s) = self.slots.get_mut(slot) else {
            return Ok(());
        };
        let node = if on_b { &self.b } else { &self.a };
        let got = node.load(&s.token, self.t).await.unwrap();
        let m = &self.model[slot];
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
        Ok(())
    }

    async fn update(
        &mut self,
        step: usize,
        slot: usize,
        stale: bool,
        v: u8,
    ) -> Result<(), TestCaseError> {
        let Some(s) = self.slots.get_mut(slot) else {
            return Ok(());
        };
        let handle = if stale {
            s.stale.clone()
        } else {
            s.current.clone()
        };
        let m = &mut self.model[slot];
        let expect_ok = m.alive && handle.record.version == m.version;
        let change = SessionChange::data(value(v));
        let got = self.a.update(&handle, change, self.t).await.unwrap();
        prop_assert_eq!(got.is_ok(), expect_ok, "step {}: update outcome", step);
        if let Ok(new) = got {
            m.version += 1;
            m.data = value(v);
            s.stale = std::mem::replace(&mut s.current, new);
        }
        Ok(())
    }

    async fn regenerate(
        &mut self,
        step: usize,
        slot: usize,
        user: Option<u8>,
        keep_data: bool,
    ) -> Result<(), TestCaseError> {
        let Some(s) = self.slots.get(slot) else {
            return Ok(());
        };
        let handle = s.current.clone();
        let m = self.model[slot].clone();
        let expect_ok = m.alive && handle.record.version == m.version;
        let binding = user.map(|u| UserBinding {
            user_id: format!("user-{u}"),
            role: None,
            client: None,
        });
        let got = self
            .a
            .regenerate(&handle, binding.clone(), keep_data, self.t)
            .await
            .unwrap();
        prop_assert_eq!(got.is_ok(), expect_ok, "step {}: regenerate outcome", step);
        if let Ok((token, new)) = got {
            self.model[slot].alive = false;
            let user = binding.map(|b| b.user_id).or(m.user.clone());
            let data = if keep_data { m.data } else { BTreeMap::new() };
            prop_assert_eq!(new.record.user_id.as_deref(), user.as_deref());
            prop_assert_eq!(&new.record.data, &data);
            self.issued(token, new, user, data);
        }
        Ok(())
    }

    async fn destroy(&mut self, step: usize, slot: usize) -> Result<(), TestCaseError> {
        let Some(s) = self.slots.get(slot) else {
            return Ok(());
        };
        let got = self.a.destroy(&s.token, self.t).await.unwrap();
        let m = &mut self.model[slot];
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
        Ok(())
    }

    /// Every slot agrees with the model on both nodes.
    async fn final_sweep(&self) -> Result<(), TestCaseError> {
        for (i, s) in self.slots.iter().enumerate() {
            for node in [&self.a, &self.b] {
                let got = node.load(&s.token, self.t).await.unwrap();
                prop_assert_eq!(got.is_some(), self.model[i].alive, "final: slot {}", i);
            }
        }
        Ok(())
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut world = World::new().await;
    for (step, op) in ops.into_iter().enumerate() {
        world.apply(step, op).await?;
    }
    world.final_sweep().await
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
