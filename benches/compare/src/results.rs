//! What a run measured: plain data that the measuring steps fill and the
//! report reads.

use std::time::Duration;

use crate::load::Sample;

/// How long each slice warms up and records.
#[derive(Clone, Copy)]
pub struct Timing {
    /// Unrecorded warm-up before each slice.
    pub warmup: Duration,
    /// Recorded time of one `GET /whoami` slice (one round's share).
    pub per_round: Duration,
}

/// What the login comparison measured.
pub struct Logins {
    /// `RAW` and `REGENERATE` at every login concurrency.
    pub rows: Vec<Measured>,
    /// Parts of a login timed alone (c=1).
    pub parts: Vec<(&'static str, Sample)>,
}

/// One scenario (target × concurrency) over all rounds.
#[derive(Clone)]
pub struct Measured {
    /// What was measured (`edge-session`, `hello (ceiling)`, ...).
    pub target: String,
    /// Connections (or workers) in flight.
    pub concurrency: usize,
    /// All rounds merged.
    pub sample: Sample,
    /// Operations per second of each round, in order.
    pub round_rates: Vec<f64>,
}

impl Measured {
    /// Nothing measured yet.
    pub fn new(target: &str, concurrency: usize) -> Self {
        Measured {
            target: target.to_owned(),
            concurrency,
            sample: Sample::empty(),
            round_rates: Vec::new(),
        }
    }

    /// Add one round.
    pub fn add(&mut self, round: &Sample) {
        self.round_rates.push(round.rate());
        self.sample.merge(round);
    }
}
