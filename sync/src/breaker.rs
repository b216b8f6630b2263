//! A circuit breaker in front of DynamoDB, so a dead endpoint does not pile
//! up waiting requests: after `failures_to_open` calls in a row that got no
//! answer (timeouts, refused or cut connections, 5xx), calls fail at once
//! with `Unavailable` for `cooldown`.
//! Then one probe call is let through: an answer closes the breaker, another
//! failure opens it for another `cooldown`. A probe that never reports (its
//! caller gave up on it, as `/readyz` does after 2 s) keeps the breaker open
//! for one more `cooldown` only; then the next call probes.
//!
//! An answer of any kind, including a refusal such as a failed condition,
//! counts as success: the breaker measures reachability, not outcomes. A
//! throttled call (`ThrottlingException`, ... after the SDK's retries) is
//! such an answer: DynamoDB is there and asks for less traffic, and failing
//! calls fast would only turn a slowdown into an outage. Throttled calls
//! reach DynamoDB at the SDK's backoff, and the first one it accepts again
//! succeeds at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{DynamoError, ErrorKind};

/// Breaker tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive unanswered calls that open the breaker (0: never open).
    pub failures_to_open: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures_to_open: 5,
            cooldown: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

/// The breaker. Shared by every clone of a tier.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            state: Mutex::new(State::default()),
        }
    }

    /// Let a call through, or fail it fast while open.
    pub fn admit(&self, op: &'static str) -> Result<(), DynamoError> {
        self.admit_at(op, Instant::now())
    }

    fn admit_at(&self, op: &'static str, now: Instant) -> Result<(), DynamoError> {
        let mut state = self
            .state
            .lock()
            .expect("breaker state poisoned by a panic");
        match state.open_until {
            None => Ok(()),
            Some(until) if now < until => {
                metrics::counter!("edge_session_dynamodb_breaker_rejections_total", "op" => op)
                    .increment(1);
                Err(DynamoError::uncounted(
                    op,
                    ErrorKind::Unavailable,
                    format!(
                        "circuit open: DynamoDB did not answer {} calls in a row; next attempt in {} ms",
                        state.consecutive_failures,
                        until.saturating_duration_since(now).as_millis()
                    ),
                ))
            }
            Some(_) => {
                // Cool-down over: this call is the probe. Other calls wait
                // one more cool-down, whether or not the probe ever reports:
                // a dropped future never calls `record`.
                state.open_until = Some(now + self.settings.cooldown);
                Ok(())
            }
        }
    }

    /// Record whether an admitted call got an answer.
    pub fn record(&self, answered: bool) {
        self.record_at(answered, Instant::now());
    }

    fn record_at(&self, answered: bool, now: Instant) {
        let mut state = self
            .state
            .lock()
            .expect("breaker state poisoned by a panic");
        if answered {
            if state.open_until.take().is_some() {
                tracing::info!("DynamoDB answers again: circuit closed");
                metrics::gauge!("edge_session_dynamodb_breaker_open").set(0.0);
            }
            state.consecutive_failures = 0;
            return;
        }
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        let threshold = self.settings.failures_to_open;
        if threshold > 0 && state.consecutive_failures >= threshold {
            if state.open_until.is_none() {
                tracing::warn!(
                    failures = state.consecutive_failures,
                    "DynamoDB unreachable: circuit open"
                );
                metrics::gauge!("edge_session_dynamodb_breaker_open").set(1.0);
            }
            state.open_until = Some(now + self.settings.cooldown);
        }
    }

    /// Whether calls are being failed fast right now.
    pub fn is_open(&self) -> bool {
        let state = self
            .state
            .lock()
            .expect("breaker state poisoned by a panic");
        state.open_until.is_some_and(|until| Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failures_to_open: 3,
            cooldown: Duration::from_secs(2),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_fails_fast() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..2 {
            b.admit_at("get", t0).unwrap();
            b.record_at(false, t0);
        }
        b.admit_at("get", t0).unwrap();
        b.record_at(false, t0);
        let err = b
            .admit_at("get", t0 + Duration::from_millis(100))
            .unwrap_err();
        assert!(
            err.is_unavailable() && err.message.contains("circuit open"),
            "{err}"
        );
    }

    #[test]
    fn an_answer_resets_the_count() {
        let b = breaker();
        let t0 = Instant::now();
        for answered in [false, false, true, false, false] {
            b.admit_at("get", t0).unwrap();
            b.record_at(answered, t0);
        }
        assert!(
            b.admit_at("get", t0).is_ok(),
            "two failures after a success do not open it"
        );
    }

    #[test]
    fn one_probe_after_the_cooldown_closes_or_reopens() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.admit_at("get", t0).unwrap();
            b.record_at(false, t0);
        }
        let later = t0 + Duration::from_secs(3);
        b.admit_at("get", later).unwrap();
        assert!(
            b.admit_at("get", later).is_err(),
            "only one probe at a time"
        );
        b.record_at(false, later);
        assert!(
            b.admit_at("get", later + Duration::from_secs(1)).is_err(),
            "probe failed: open again"
        );
        let much_later = later + Duration::from_secs(3);
        b.admit_at("get", much_later).unwrap();
        b.record_at(true, much_later);
        assert!(
            b.admit_at("get", much_later).is_ok(),
            "probe answered: closed"
        );
        assert!(b.admit_at("get", much_later).is_ok());
    }

    #[test]
    fn a_probe_that_never_reports_does_not_wedge_the_breaker() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.admit_at("get", t0).unwrap();
            b.record_at(false, t0);
        }
        let later = t0 + Duration::from_secs(3);
        b.admit_at("ping", later).unwrap();
        // Its caller gave up: no `record` ever comes.
        assert!(b.admit_at("get", later + Duration::from_secs(1)).is_err());
        let next = later + Duration::from_secs(2);
        b.admit_at("get", next).unwrap();
        b.record_at(true, next);
        assert!(b.admit_at("get", next).is_ok(), "the next probe closed it");
    }

    #[test]
    fn zero_threshold_never_opens() {
        let b = Breaker::new(BreakerSettings {
            failures_to_open: 0,
            cooldown: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        for _ in 0..100 {
            b.admit_at("get", t0).unwrap();
            b.record_at(false, t0);
        }
    }
}
