//! Recovery: what a failed `GetShardIterator` or `GetRecords` means
//! ([`Failure`], by its error code) and what the follower does about it
//! ([`recover`]): an expired iterator is acquired again without skipping,
//! trimmed data is a gap read on from the trim horizon, a shard no longer
//! found is a gap and done, throttling keeps the iterator and backs off.

use super::shards::Position;
use crate::error::is_throttling;

/// A failed `GetShardIterator` or `GetRecords`, by what the follower does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    Expired,
    Trimmed,
    Gone,
    Throttled,
    Unavailable,
    Rejected,
}

impl Failure {
    pub(super) fn name(self) -> &'static str {
        match self {
            Failure::Expired => "expired_iterator",
            Failure::Trimmed => "trimmed",
            Failure::Gone => "shard_gone",
            Failure::Throttled => "throttled",
            Failure::Unavailable => "unavailable",
            Failure::Rejected => "rejected",
        }
    }
}

/// Classify a service error code (`server_error`: the status was 5xx).
pub(super) fn failure_of_code(code: &str, server_error: bool) -> Failure {
    match code {
        "ExpiredIteratorException" => Failure::Expired,
        "TrimmedDataAccessException" => Failure::Trimmed,
        "ResourceNotFoundException" => Failure::Gone,
        _ if is_throttling(code) => Failure::Throttled,
        "InternalServerError" | "ServiceUnavailable" => Failure::Unavailable,
        _ if server_error => Failure::Unavailable,
        _ => Failure::Rejected,
    }
}

/// Which call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    GetShardIterator,
    GetRecords,
}

impl Op {
    pub(super) fn name(self) -> &'static str {
        match self {
            Op::GetShardIterator => "get_shard_iterator",
            Op::GetRecords => "get_records",
        }
    }
}

/// What to do about a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recovery {
    /// The iterator is still good: use it again.
    pub(super) keep_iterator: bool,
    /// Acquire the next iterator from here instead.
    pub(super) resume: Option<Position>,
    /// Records were lost to retention.
    pub(super) gap: bool,
    /// The shard cannot be read any further.
    pub(super) done: bool,
    /// Wait before trying again (otherwise: at once).
    pub(super) backoff: bool,
}

pub(super) fn recover(failure: Failure, op: Op, resume: &Position) -> Recovery {
    let base = Recovery {
        keep_iterator: false,
        resume: None,
        gap: false,
        done: false,
        backoff: false,
    };
    match failure {
        // Acquire again from the last accepted record; `LATEST` would skip
        // what was written since the first iterator.
        Failure::Expired => Recovery {
            resume: (*resume == Position::Latest).then_some(Position::TrimHorizon),
            ..base
        },
        Failure::Trimmed if op == Op::GetShardIterator && *resume == Position::TrimHorizon => {
            Recovery {
                gap: true,
                done: true,
                ..base
            }
        }
        Failure::Trimmed => Recovery {
            resume: Some(Position::TrimHorizon),
            gap: true,
            ..base
        },
        Failure::Gone => Recovery {
            gap: true,
            done: true,
            ..base
        },
        Failure::Throttled | Failure::Unavailable => Recovery {
            keep_iterator: true,
            backoff: true,
            ..base
        },
        Failure::Rejected => Recovery {
            backoff: true,
            ..base
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_iterators_resume_without_skipping() {
        let after = Position::After("7".into());
        let r = recover(Failure::Expired, Op::GetRecords, &after);
        assert!(!r.keep_iterator && !r.gap && !r.done && !r.backoff);
        assert_eq!(r.resume, None, "re-acquired after the last accepted record");
        let r = recover(Failure::Expired, Op::GetRecords, &Position::Latest);
        assert_eq!(r.resume, Some(Position::TrimHorizon));
    }

    #[test]
    fn trimmed_data_is_a_gap_and_resumes_at_the_trim_horizon() {
        let after = Position::After("7".into());
        for op in [Op::GetShardIterator, Op::GetRecords] {
            let r = recover(Failure::Trimmed, op, &after);
            assert_eq!(r.resume, Some(Position::TrimHorizon));
            assert!(r.gap && !r.done && !r.keep_iterator);
        }
        // Nothing left at all: the shard is done rather than retried forever.
        let r = recover(
            Failure::Trimmed,
            Op::GetShardIterator,
            &Position::TrimHorizon,
        );
        assert!(r.gap && r.done);
    }

    #[test]
    fn throttling_keeps_the_iterator_and_backs_off() {
        for failure in [Failure::Throttled, Failure::Unavailable] {
            let r = recover(failure, Op::GetRecords, &Position::TrimHorizon);
            assert!(r.keep_iterator && r.backoff && !r.gap && !r.done);
        }
        let r = recover(Failure::Rejected, Op::GetRecords, &Position::TrimHorizon);
        assert!(!r.keep_iterator && r.backoff);
        let r = recover(Failure::Gone, Op::GetRecords, &Position::TrimHorizon);
        assert!(r.done && r.gap);
    }

    #[test]
    fn error_codes_are_classified() {
        assert_eq!(
            failure_of_code("ExpiredIteratorException", false),
            Failure::Expired
        );
        assert_eq!(
            failure_of_code("TrimmedDataAccessException", false),
            Failure::Trimmed
        );
        assert_eq!(
            failure_of_code("ResourceNotFoundException", false),
            Failure::Gone
        );
        assert_eq!(
            failure_of_code("LimitExceededException", false),
            Failure::Throttled
        );
        assert_eq!(failure_of_code("Whatever", true), Failure::Unavailable);
        assert_eq!(
            failure_of_code("ValidationException", false),
            Failure::Rejected
        );
    }
}
