//! Exponential backoff with full jitter: attempt n waits a uniformly random
//! time in [0, min(cap, base * 2^(n-1))], which spreads retries of many
//! tenants that failed together (the AWS "full jitter" result).

use std::time::Duration;

use rand::Rng;

/// The retry policy of failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's delay.
    pub base: Duration,
    /// No delay exceeds this.
    pub cap: Duration,
}

impl Backoff {
    /// This backoff with a step's own settings (from its plan) in place of
    /// the server's where it has them.
    pub fn for_step(self, step: &crate::db::models::StepRow) -> Backoff {
        let ms = |ms: i32| Duration::from_millis(ms.unsigned_abs().into());
        Backoff {
            base: step.retry_base_ms.map_or(self.base, ms),
            cap: step.retry_cap_ms.map_or(self.cap, ms),
        }
    }

    /// The largest delay after failed attempt `attempt` (from 1).
    pub fn ceiling(&self, attempt: i32) -> Duration {
        let exponent = attempt.saturating_sub(1).clamp(0, 30) as u32;
        self.base.saturating_mul(1 << exponent).min(self.cap)
    }

    /// A random delay after failed attempt `attempt`.
    pub fn delay(&self, attempt: i32) -> Duration {
        let ceiling = self.ceiling(attempt);
        Duration::from_micros(rand::rng().random_range(0..=ceiling.as_micros() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_delays_stay_under_them() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(400));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(1000), Duration::from_secs(1));
        for attempt in 1..10 {
            assert!(b.delay(attempt) <= b.ceiling(attempt));
        }
    }
}
