//! Unit tests of the sled tier.

use super::*;

#[tokio::test]
async fn a_closed_cache_opens_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..50u8 {
        let cache = SledCache::open(dir.path()).unwrap();
        if round > 0 {
            assert!(
                cache.get(&key(round - 1)).unwrap().is_some(),
                "round {round}"
            );
        }
        cache.fill(&key(round), 1, 1, b"record").unwrap();
        cache.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_close_with_another_handle_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = SledCache::open(dir.path()).unwrap();
    let other = cache.clone();
    let err = cache.close().await.unwrap_err();
    assert!(err.to_string().contains("1 other handles"), "{err}");
    assert!(
        SledCache::open(dir.path()).is_err(),
        "still open through the other handle"
    );
    other.close().await.unwrap();
    SledCache::open(dir.path()).unwrap();
}

fn key(b: u8) -> StorageKey {
    StorageKey([b; 32])
}

/// sled 0.34's `flush_async` can lose the wake-up of concurrent callers
/// (spacejam/sled#1308, #1241): logins and logouts racing on one node
/// then hang for ever. Every one of many concurrent flushes must finish.
#[test]
fn concurrent_flushes_all_complete() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let cache = SledCache::temporary().unwrap();
    runtime.block_on(async {
        for round in 0..50u8 {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..32u8 {
                let cache = cache.clone();
                tasks.spawn(async move {
                    cache.fill(&key(i), 1, u64::from(round) + 1, b"v").unwrap();
                    cache.flush().await.unwrap();
                });
            }
            let all = async {
                while let Some(done) = tasks.join_next().await {
                    done.unwrap();
                }
            };
            // A liveness bound, not a speed target: 32 flushes of a few
            // bytes take milliseconds; a lost wake-up never ends.
            tokio::time::timeout(std::time::Duration::from_secs(60), all)
                .await
                .unwrap_or_else(|_| panic!("round {round}: a flush never completed"));
        }
    });
}

#[test]
fn fill_respects_tombstones_and_newer_versions() {
    let cache = SledCache::temporary().unwrap();
    assert_eq!(
        cache.fill(&key(1), 10, 2, b"v2").unwrap(),
        FillOutcome::Filled
    );
    assert_eq!(
        cache.fill(&key(1), 11, 1, b"v1").unwrap(),
        FillOutcome::Superseded
    );
    assert_eq!(cache.get(&key(1)).unwrap().unwrap().bytes(), b"v2");
    cache
        .revoke_and_queue(
            &key(1),
            Tombstone {
                keep_until: 100,
                nonce: 7,
            },
            10,
        )
        .unwrap();
    assert!(cache.get(&key(1)).unwrap().is_none());
    assert_eq!(
        cache.fill(&key(1), 12, 3, b"v3").unwrap(),
        FillOutcome::Tombstoned
    );
    assert!(cache.get(&key(1)).unwrap().is_none());
    assert_eq!(cache.outbox_len(), 1);
}

#[test]
fn lift_only_removes_its_own_revocation() {
    let cache = SledCache::temporary().unwrap();
    assert!(cache
        .revoke_provisionally(
            &key(2),
            Tombstone {
                keep_until: 100,
                nonce: 1,
            },
            0,
        )
        .unwrap());
    assert!(cache
        .revoke_provisionally(
            &key(2),
            Tombstone {
                keep_until: 50,
                nonce: 2,
            },
            0,
        )
        .unwrap());
    assert!(!cache.lift(&key(2), 1).unwrap());
    assert!(cache.is_tombstoned(&key(2)).unwrap());
    assert_eq!(
        cache.tombstone_of(&key(2)).unwrap().unwrap().keep_until,
        100
    );
    assert!(cache.lift(&key(2), 2).unwrap());
    assert!(!cache.is_tombstoned(&key(2)).unwrap());
    assert_eq!(cache.outbox_len(), 0);
}

#[test]
fn ack_keeps_a_newer_revocation() {
    let cache = SledCache::temporary().unwrap();
    cache
        .revoke_and_queue(
            &key(3),
            Tombstone {
                keep_until: 100,
                nonce: 1,
            },
            0,
        )
        .unwrap();
    cache
        .revoke_and_queue(
            &key(3),
            Tombstone {
                keep_until: 100,
                nonce: 2,
            },
            0,
        )
        .unwrap();
    cache.ack(&key(3), 1).unwrap();
    assert_eq!(
        cache.pending(10).unwrap(),
        vec![(
            key(3),
            OutboxEntry {
                enqueued_at: 0,
                nonce: 2
            }
        )]
    );
    cache.ack(&key(3), 2).unwrap();
    assert_eq!(cache.outbox_len(), 0);
}

#[test]
fn sweep_expired_sessions_removes_what_the_predicate_calls_expired() {
    let cache = SledCache::temporary().unwrap();
    cache.fill(&key(6), 0, 1, b"old").unwrap();
    cache.fill(&key(7), 0, 1, b"new").unwrap();
    assert_eq!(
        cache
            .sweep_expired_sessions(|bytes| bytes == b"old")
            .unwrap(),
        (1, 1)
    );
    assert!(cache.get(&key(6)).unwrap().is_none());
    assert_eq!(cache.get(&key(7)).unwrap().unwrap().bytes(), b"new");
}

#[test]
fn sweep_tombstones_removes_only_expired_ones() {
    let cache = SledCache::temporary().unwrap();
    cache
        .revoke_locally(
            &key(4),
            Tombstone {
                keep_until: 100,
                nonce: 1,
            },
        )
        .unwrap();
    cache
        .revoke_locally(
            &key(5),
            Tombstone {
                keep_until: 300,
                nonce: 1,
            },
        )
        .unwrap();
    assert_eq!(cache.sweep_tombstones(200).unwrap().tombstones, 1);
    assert!(!cache.is_tombstoned(&key(4)).unwrap());
    assert!(cache.is_tombstoned(&key(5)).unwrap());
}

fn tomb(keep_until: u64, nonce: u64) -> Tombstone {
    Tombstone { keep_until, nonce }
}

#[test]
fn a_final_tombstone_is_never_lifted_nor_downgraded() {
    let cache = SledCache::temporary().unwrap();
    // A regenerate's provisional revocation, then a logout's final one.
    assert!(cache
        .revoke_provisionally(&key(8), tomb(100, 1), 0)
        .unwrap());
    cache.revoke_and_queue(&key(8), tomb(100, 2), 0).unwrap();
    assert!(!cache.lift(&key(8), 1).unwrap(), "the regenerate's lift");
    assert_eq!(
        cache.revocation_of(&key(8)).unwrap(),
        Some((tomb(100, 2), TombstoneKind::Final))
    );
    assert_eq!(cache.outbox_len(), 1, "the logout's delete stays queued");
    // A regenerate cannot write over a final (or unverified) tombstone.
    assert!(!cache
        .revoke_provisionally(&key(8), tomb(200, 3), 0)
        .unwrap());
    assert_eq!(
        cache.queue_unverified(&key(9), 100, 0, 10).unwrap(),
        QueuedUnverified::Queued
    );
    assert!(!cache
        .revoke_provisionally(&key(9), tomb(200, 3), 0)
        .unwrap());
    assert!(!cache.lift(&key(9), 0).unwrap());
    // An ack of a provisional revocation makes it final.
    assert!(cache
        .revoke_provisionally(&key(10), tomb(100, 4), 0)
        .unwrap());
    cache.ack(&key(10), 4).unwrap();
    assert!(!cache.lift(&key(10), 4).unwrap());
    assert!(cache.is_tombstoned(&key(10)).unwrap());
}

#[test]
fn the_unverified_queue_is_capped() {
    let cache = SledCache::temporary().unwrap();
    for b in 0..5 {
        assert_eq!(
            cache.queue_unverified(&key(b), 100, 0, 3).unwrap(),
            if b < 3 {
                QueuedUnverified::Queued
            } else {
                QueuedUnverified::Full
            }
        );
    }
    assert_eq!(cache.unverified_len(), 3);
    // Queuing a queued key again takes no slot.
    assert_eq!(
        cache.queue_unverified(&key(0), 100, 0, 3).unwrap(),
        QueuedUnverified::Full
    );
    assert_eq!(
        cache.queue_unverified(&key(0), 100, 0, 4).unwrap(),
        QueuedUnverified::Tombstoned(TombstoneKind::Unverified)
    );
    assert_eq!(cache.unverified_len(), 3);
    assert!(cache.is_tombstoned(&key(1)).unwrap());
    assert_eq!(
        cache.fill(&key(1), 0, 1, b"v").unwrap(),
        FillOutcome::Tombstoned
    );
    // Dropped (never existed), confirmed (a final revocation replaces it),
    // swept (expired): each leaves the queue.
    assert!(cache.drop_unverified(&key(0)).unwrap());
    assert!(!cache.is_tombstoned(&key(0)).unwrap());
    cache.revoke_locally(&key(1), tomb(100, 5)).unwrap();
    assert_eq!(
        cache.revocation_of(&key(1)).unwrap().unwrap().1,
        TombstoneKind::Final
    );
    assert_eq!(cache.unverified_len(), 1);
    assert_eq!(cache.sweep_tombstones(101).unwrap().tombstones, 2);
    assert_eq!(cache.unverified_len(), 0);
    assert!(cache.unverified(10).unwrap().is_empty());
}

#[tokio::test]
async fn the_sweep_reads_the_expiry_index_across_restarts_and_old_data() {
    let dir = tempfile::tempdir().unwrap();
    // A data directory from before the index: 16-byte tombstones, no index.
    {
        let db = sled::open(dir.path()).unwrap();
        let tombstones = db.open_tree("tombstones").unwrap();
        tombstones
            .insert(key(1).as_bytes(), &pair(100, 1)[..])
            .unwrap();
        tombstones
            .insert(key(2).as_bytes(), &pair(300, 1)[..])
            .unwrap();
        db.flush().unwrap();
    }
    // sled lets go of the directory once its last I/O thread is done.
    wait_for_release(dir.path()).unwrap();
    {
        let cache = SledCache::open(dir.path()).unwrap();
        assert_eq!(cache.expiry_index_len(), 2, "indexed once at open");
        assert_eq!(
            cache.revocation_of(&key(1)).unwrap().unwrap().1,
            TombstoneKind::Final
        );
        cache.revoke_locally(&key(3), tomb(150, 2)).unwrap();
        // A later revocation moves the key's index entry.
        cache.revoke_locally(&key(2), tomb(400, 3)).unwrap();
        assert_eq!(cache.expiry_index_len(), 3);
        assert_eq!(cache.sweep_tombstones(120).unwrap().tombstones, 1);
        assert!(!cache.is_tombstoned(&key(1)).unwrap());
        assert_eq!(cache.expiry_index_len(), 2);
        cache.close().await.unwrap();
    }
    // After a restart the index is still there, and not rebuilt.
    let cache = SledCache::open(dir.path()).unwrap();
    assert_eq!(cache.expiry_index_len(), 2);
    assert_eq!(
        cache.sweep_tombstones(350).unwrap().tombstones,
        1,
        "key 3 only"
    );
    assert!(cache.is_tombstoned(&key(2)).unwrap(), "moved to 400");
    assert_eq!(cache.sweep_tombstones(401).unwrap().tombstones, 1);
    assert_eq!(cache.expiry_index_len(), 0);
    assert!(cache
        .dump()
        .unwrap()
        .iter()
        .all(|(tree, _, _)| tree != "tombstones"));
}

#[tokio::test]
async fn the_outbox_count_follows_the_outbox_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let tomb = |nonce| Tombstone {
        keep_until: 100,
        nonce,
    };
    {
        let cache = SledCache::open(dir.path()).unwrap();
        for k in 1..=3 {
            cache.revoke_and_queue(&key(k), tomb(k as u64), 10).unwrap();
        }
        // The same key again replaces its entry: still three.
        cache.revoke_and_queue(&key(1), tomb(9), 11).unwrap();
        assert_eq!(cache.outbox_len(), 3);
        cache.ack(&key(1), 1).unwrap();
        assert_eq!(
            cache.outbox_len(),
            3,
            "an ack of a replaced revocation keeps the newer"
        );
        cache.ack(&key(1), 9).unwrap();
        cache.ack(&key(2), 2).unwrap();
        cache.ack(&key(2), 2).unwrap();
        assert_eq!(cache.outbox_len(), 1, "acked twice, counted once");
        assert!(cache.revoke_provisionally(&key(4), tomb(4), 12).unwrap());
        assert_eq!(cache.outbox_len(), 2);
        assert!(cache.lift(&key(4), 4).unwrap());
        assert_eq!(cache.outbox_len(), 1);
        cache.close().await.unwrap();
    }
    let reopened = SledCache::open(dir.path()).unwrap();
    assert_eq!(reopened.outbox_len(), 1, "counted from the tree at open");
}
