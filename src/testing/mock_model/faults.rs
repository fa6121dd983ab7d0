//! Fault knobs of the mock model server, changeable while it runs.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

/// Faults injected into every answer of one mock replica.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Error statuses and their probabilities (`[(503, 0.3)]`); the rest succeed.
    pub status_mix: Vec<(u16, f64)>,
    /// Delay before answering.
    pub latency: Latency,
    /// Probability of never answering (the client's timeout fires).
    pub hang_probability: f64,
    /// Probability of a 200 with a body that is not JSON.
    pub malformed_probability: f64,
    /// Probability of answering one row fewer than asked.
    pub wrong_row_count_probability: f64,
    /// `Retry-After` seconds sent with 429 and 503 answers.
    pub retry_after_secs: Option<u32>,
    /// Answer this status (400: the model rejects it; 500: it crashes on it) to any request
    /// holding a row whose first input value is negative: a poison row.
    pub poison_status: Option<u16>,
    /// Answer this status to every request (metadata reads included) with a body quoting the
    /// request's headers, credentials included: a backend that repeats the key it was given
    /// in its error message.
    pub echo_headers_status: Option<u16>,
}

/// Answer delay distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Latency {
    /// Answer at once.
    #[default]
    None,
    /// Always this long.
    Fixed(Duration),
    /// Uniform between the bounds.
    Uniform(Duration, Duration),
    /// Log-normal-ish: usually `typical`, one answer in `tail_every` takes `tail`.
    Tail {
        /// Usual delay.
        typical: Duration,
        /// Slow delay.
        tail: Duration,
        /// One in this many answers is slow.
        tail_every: u32,
    },
}

/// What the fault dice decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answer normally.
    Answer,
    /// Answer with this error status.
    Status(u16),
    /// Never answer.
    Hang,
    /// Answer 200 with a broken body.
    Malformed,
    /// Answer one row short.
    WrongRowCount,
}

impl Faults {
    /// Draws the fate of one request.
    pub fn decide(&self, rng: &mut SmallRng) -> Decision {
        let mut x: f64 = rng.random();
        for (status, p) in &self.status_mix {
            if x < *p {
                return Decision::Status(*status);
            }
            x -= p;
        }
        if rng.random_bool(self.hang_probability.clamp(0.0, 1.0)) {
            return Decision::Hang;
        }
        if rng.random_bool(self.malformed_probability.clamp(0.0, 1.0)) {
            return Decision::Malformed;
        }
        if rng.random_bool(self.wrong_row_count_probability.clamp(0.0, 1.0)) {
            return Decision::WrongRowCount;
        }
        Decision::Answer
    }

    /// Draws the delay of one request.
    pub fn delay(&self, rng: &mut SmallRng) -> Duration {
        match self.latency {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Uniform(a, b) if b > a => {
                Duration::from_nanos(rng.random_range(a.as_nanos() as u64..=b.as_nanos() as u64))
            }
            Latency::Uniform(a, _) => a,
            Latency::Tail {
                typical,
                tail,
                tail_every,
            } => {
                if tail_every > 0 && rng.random_range(0..tail_every) == 0 {
                    tail
                } else {
                    typical
                }
            }
        }
    }
}
