//! Shard bookkeeping: the shards the follower knows ([`Shards`]), merged from
//! each complete listing; which of them are readable (a child only once its
//! parent is drained or no longer known); and where a shard without an
//! iterator begins ([`initial_position`], see the stream module's docs).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use super::checkpoints::CheckpointError;
use super::record::Pending;
use super::settings::ColdStart;

/// One shard as `DescribeStream` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    pub(super) id: String,
    pub(super) parent: Option<String>,
}

/// Where to acquire a shard iterator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Position {
    TrimHorizon,
    Latest,
    After(String),
}

/// The inputs of the start-position choice that are the same for a whole
/// listing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Start {
    /// This is the follower's first successful listing.
    pub(super) first: bool,
    /// The checkpoint store was empty at start-up.
    pub(super) cold: bool,
    pub(super) cold_start: ColdStart,
}

/// Where a shard with no iterator yet begins (see the stream module's docs).
pub(super) fn initial_position(
    checkpoint: Option<String>,
    parent_listed: bool,
    start: Start,
) -> Position {
    match checkpoint {
        Some(sequence) => Position::After(sequence),
        None if start.first && start.cold && !parent_listed => match start.cold_start {
            ColdStart::Latest => Position::Latest,
            ColdStart::TrimHorizon => Position::TrimHorizon,
        },
        None => Position::TrimHorizon,
    }
}

/// What the follower knows of one shard.
#[derive(Debug)]
pub(super) struct ShardState {
    parent: Option<String>,
    pub(super) stream_arn: String,
    /// Where the next iterator is acquired from.
    pub(super) resume: Position,
    pub(super) iterator: Option<String>,
    /// The next iterator acquired starts this follower's coverage anew (its
    /// position is `LATEST`, or records were lost before it).
    pub(super) uncovered: bool,
    pub(super) pending: Option<Pending>,
    /// The last batch filled `records_per_call`: poll again at once.
    pub(super) full: bool,
    /// The pending batch is the shard's last.
    pub(super) closed_after_pending: bool,
    /// Closed and drained.
    pub(super) done: bool,
    /// In the latest listing.
    listed: bool,
    pub(super) failures: u32,
    pub(super) next_poll_at: Instant,
    /// When the shard was last known applied up to date.
    pub(super) ok_at: Option<SystemTime>,
    pub(super) record_age: Duration,
}

/// Every shard the follower knows, by id.
#[derive(Debug, Default)]
pub(super) struct Shards {
    map: BTreeMap<String, ShardState>,
}

impl Shards {
    pub(super) fn contains(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> &mut ShardState {
        // Ids come from `due`, over this same map, in the same round: the
        // map only changes in `merge`, between rounds.
        self.map
            .get_mut(id)
            .expect("a due shard id names a known shard")
    }

    /// Not done, and its parent (if any) is done or unknown.
    fn readable(&self, id: &str) -> bool {
        let Some(shard) = self.map.get(id) else {
            return false;
        };
        !shard.done
            && shard
                .parent
                .as_deref()
                .and_then(|parent| self.map.get(parent))
                .is_none_or(|parent| parent.done)
    }

    pub(super) fn has_child_of(&self, parent: &str) -> bool {
        self.map
            .values()
            .any(|shard| shard.parent.as_deref() == Some(parent))
    }

    /// Readable shards whose poll time has come, in id order.
    pub(super) fn due(&self, now: Instant) -> Vec<String> {
        self.map
            .iter()
            .filter(|(id, shard)| shard.next_poll_at <= now && self.readable(id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The earliest poll time of a readable shard.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.map
            .iter()
            .filter(|(id, _)| self.readable(id))
            .map(|(_, shard)| shard.next_poll_at)
            .min()
    }

    /// Whether a shard still has its `LATEST` iterator to acquire: until
    /// then the follower's position covers nothing.
    pub(super) fn awaiting_position(&self) -> bool {
        self.map
            .values()
            .any(|shard| !shard.done && shard.resume == Position::Latest)
    }

    /// Whether `listed` names a shard not known yet whose parent is neither
    /// known nor listed: a shard this follower never read ended before it
    /// was seen (only a later listing can show this; at start-up such a
    /// shard is the stream's past).
    pub(super) fn unread_parent(&self, listed: &[Listed]) -> bool {
        let ids: HashSet<&str> = listed.iter().map(|l| l.id.as_str()).collect();
        listed.iter().any(|shard| {
            !self.map.contains_key(&shard.id)
                && shard
                    .parent
                    .as_deref()
                    .is_some_and(|parent| !self.map.contains_key(parent) && !ids.contains(parent))
        })
    }

    /// The oldest `ok_at` and the largest record age over readable shards;
    /// `None` when no shard is readable.
    pub(super) fn health(&self) -> Option<(SystemTime, Duration)> {
        let mut ok_at: Option<SystemTime> = None;
        let mut age = Duration::ZERO;
        let mut any = false;
        for (id, shard) in &self.map {
            if !self.readable(id) {
                continue;
            }
            any = true;
            let shard_ok = shard.ok_at?;
            ok_at = Some(ok_at.map_or(shard_ok, |o| o.min(shard_ok)));
            age = age.max(shard.record_age);
        }
        if any {
            ok_at.map(|o| (o, age))
        } else {
            None
        }
    }

    /// Add the listed shards not known yet (all or none: a failed checkpoint
    /// lookup adds nothing, so no child is read before an unregistered
    /// parent), mark which known ones are listed, and forget the done shards
    /// no longer listed. Returns the added shards and their start positions.
    pub(super) fn merge(
        &mut self,
        arn: &str,
        listed: &[Listed],
        start: Start,
        mut checkpoint: impl FnMut(&str) -> Result<Option<String>, CheckpointError>,
        now: Instant,
        wall_now: SystemTime,
    ) -> Result<Vec<(String, Position)>, CheckpointError> {
        let ids: HashSet<&str> = listed.iter().map(|l| l.id.as_str()).collect();
        let mut added = Vec::new();
        for shard in listed {
            if self.map.contains_key(&shard.id) {
                continue;
            }
            let parent_listed = shard
                .parent
                .as_deref()
                .is_some_and(|parent| ids.contains(parent));
            let position = initial_position(checkpoint(&shard.id)?, parent_listed, start);
            added.push((shard, position));
        }
        // Shards of an earlier stream (the table's stream was replaced) are
        // not listed either: read until they end, then forgotten.
        for shard in self.map.values_mut() {
            shard.listed = false;
        }
        for id in &ids {
            if let Some(shard) = self.map.get_mut(*id) {
                shard.listed = true;
            }
        }
        self.map.retain(|_, shard| !shard.done || shard.listed);
        let mut report = Vec::with_capacity(added.len());
        for (shard, position) in added {
            report.push((shard.id.clone(), position.clone()));
            self.map.insert(
                shard.id.clone(),
                ShardState {
                    parent: shard.parent.clone(),
                    stream_arn: arn.to_owned(),
                    uncovered: position == Position::Latest,
                    resume: position,
                    iterator: None,
                    pending: None,
                    full: false,
                    closed_after_pending: false,
                    done: false,
                    listed: true,
                    failures: 0,
                    next_poll_at: now,
                    // A shard found later starts as healthy as of now, so the
                    // lag does not jump while its first poll is under way.
                    ok_at: (!start.first).then_some(wall_now),
                    record_age: Duration::ZERO,
                },
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WARM: Start = Start {
        first: true,
        cold: false,
        cold_start: ColdStart::Latest,
    };
    const COLD: Start = Start {
        first: true,
        cold: true,
        cold_start: ColdStart::Latest,
    };
    const LATER: Start = Start {
        first: false,
        cold: true,
        cold_start: ColdStart::Latest,
    };

    fn listed(id: &str, parent: Option<&str>) -> Listed {
        Listed {
            id: id.into(),
            parent: parent.map(Into::into),
        }
    }

    fn no_checkpoints(_: &str) -> Result<Option<String>, CheckpointError> {
        Ok(None)
    }

    fn merged(listing: &[Listed], start: Start) -> (Shards, Vec<(String, Position)>) {
        let mut shards = Shards::default();
        let added = shards
            .merge(
                "arn",
                listing,
                start,
                no_checkpoints,
                Instant::now(),
                SystemTime::now(),
            )
            .unwrap();
        (shards, added)
    }

    #[test]
    fn a_checkpoint_always_wins() {
        for start in [WARM, COLD, LATER] {
            assert_eq!(
                initial_position(Some("123".into()), false, start),
                Position::After("123".into())
            );
        }
    }

    #[test]
    fn only_root_shards_of_a_cold_start_begin_at_the_cold_start_position() {
        assert_eq!(initial_position(None, false, COLD), Position::Latest);
        let trim = Start {
            cold_start: ColdStart::TrimHorizon,
            ..COLD
        };
        assert_eq!(initial_position(None, false, trim), Position::TrimHorizon);
        // A child listed at start-up: its parent is read from LATEST, so the
        // child must not skip anything written after that.
        assert_eq!(initial_position(None, true, COLD), Position::TrimHorizon);
        // Resuming (the store has checkpoints): never skip.
        assert_eq!(initial_position(None, false, WARM), Position::TrimHorizon);
        // Shards found after start-up (splits, rollovers): never skip.
        assert_eq!(initial_position(None, false, LATER), Position::TrimHorizon);
    }

    #[test]
    fn a_child_is_read_only_after_its_parent_is_drained() {
        let listing = [
            listed("a", None),
            listed("b", Some("a")),
            listed("c", Some("b")),
            listed("orphan", Some("expired")),
        ];
        let (mut shards, added) = merged(&listing, COLD);
        assert_eq!(
            added,
            vec![
                ("a".into(), Position::Latest),
                ("b".into(), Position::TrimHorizon),
                ("c".into(), Position::TrimHorizon),
                ("orphan".into(), Position::Latest),
            ]
        );
        let now = Instant::now();
        assert_eq!(shards.due(now), vec!["a".to_owned(), "orphan".to_owned()]);
        shards.get_mut("a").done = true;
        assert_eq!(shards.due(now), vec!["b".to_owned(), "orphan".to_owned()]);
        shards.get_mut("b").done = true;
        assert_eq!(shards.due(now), vec!["c".to_owned(), "orphan".to_owned()]);
    }

    #[test]
    fn a_cold_start_awaits_its_latest_positions() {
        let (mut shards, _) = merged(&[listed("a", None), listed("b", Some("a"))], COLD);
        assert!(shards.awaiting_position());
        assert!(shards.get_mut("a").uncovered && !shards.get_mut("b").uncovered);
        shards.get_mut("a").resume = Position::TrimHorizon;
        assert!(!shards.awaiting_position(), "acquired");
        let (warm, _) = merged(&[listed("a", None)], WARM);
        assert!(!warm.awaiting_position(), "nothing at LATEST");
    }

    #[test]
    fn a_new_shard_whose_parent_was_never_read_is_noticed() {
        let (shards, _) = merged(&[listed("a", None)], COLD);
        assert!(!shards.unread_parent(&[listed("a", None), listed("b", Some("a"))]));
        assert!(!shards.unread_parent(&[
            listed("a", None),
            listed("x", Some("a")),
            listed("y", Some("x"))
        ]));
        assert!(shards.unread_parent(&[listed("a", None), listed("z", Some("gone"))]));
        assert!(!shards.unread_parent(&[listed("a", None)]), "known shards");
    }

    #[test]
    fn a_child_whose_parent_expired_from_the_listing_is_readable() {
        let (mut shards, _) = merged(&[listed("a", None), listed("b", Some("a"))], COLD);
        assert!(!shards.readable("b"));
        // `a` not done but no longer listed: still read until it ends.
        shards
            .merge(
                "arn",
                &[listed("b", Some("a"))],
                LATER,
                no_checkpoints,
                Instant::now(),
                SystemTime::now(),
            )
            .unwrap();
        assert!(shards.contains("a"));
        assert!(!shards.readable("b"));
        // Done and unlisted: forgotten, so the child goes on.
        shards.get_mut("a").done = true;
        shards
            .merge(
                "arn",
                &[listed("b", Some("a"))],
                LATER,
                no_checkpoints,
                Instant::now(),
                SystemTime::now(),
            )
            .unwrap();
        assert!(!shards.contains("a"));
        assert!(shards.readable("b"));
    }

    #[test]
    fn a_failed_checkpoint_lookup_adds_no_shard() {
        let mut shards = Shards::default();
        let mut calls = 0;
        let result = shards.merge(
            "arn",
            &[listed("a", None), listed("b", Some("a"))],
            WARM,
            |id| {
                calls += 1;
                if id == "a" {
                    Err(CheckpointError("disk".into()))
                } else {
                    Ok(None)
                }
            },
            Instant::now(),
            SystemTime::now(),
        );
        assert!(result.is_err());
        assert!(!shards.contains("a") && !shards.contains("b"));
        assert!(calls >= 1);
    }
}
