//! The retry policy of the settlement outbox: exponential back-off with a cap and jitter, forever. A transient
//! failure (chain down, node overloaded, wallet out of gas money) is never turned into a permanent one by counting:
//! the settlement keeps being retried at most `max_delay` apart, and rows open for too long are reported instead
//! (see [`crate::worker::WorkerConfig::overdue_after`]). Permanent errors stop at once; that is the outbox's call.
//!
//! Pure: the random jitter sample is an argument, so every delay is reproducible in tests.

use std::time::Duration;

/// Exponential back-off with a cap and jitter.
///
/// The delay after the `n`-th consecutive failed attempt (n ≥ 1) is `min(initial × multiplier^(n-1), max_delay)`,
/// reduced by up to `jitter` of itself: with jitter 0.2 it lies in `[0.8 × d, d]`. Jitter spreads the retries of
/// many settlements that failed together (one RPC outage) so they do not hit the recovered node at once.
///
/// Tests shorten the whole schedule by setting `initial` and `max_delay` to milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of any delay (before jitter is taken off): the longest a settlement waits between two
    /// attempts once the chain is back.
    pub max_delay: Duration,
    /// Growth factor between consecutive delays (≥ 1).
    pub multiplier: u32,
    /// Fraction of each delay that is randomised away, in `[0, 1]`.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 2 s, 4 s, 8 s … capped at 5 min, 20 % jitter; no limit on the number of attempts.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
            multiplier: 2,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay after the `failures`-th consecutive failure (1-based), before jitter.
    pub fn base_delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1);
        let factor = u64::from(self.multiplier.max(1))
            .checked_pow(exponent)
            .unwrap_or(u64::MAX);
        let initial_ms = u64::try_from(self.initial.as_millis()).unwrap_or(u64::MAX);
        let delay = Duration::from_millis(initial_ms.saturating_mul(factor));
        delay.min(self.max_delay)
    }

    /// The wait after the `failures`-th consecutive failed attempt (1-based), given a uniform random `sample`
    /// in `[0, 1)` for the jitter (values outside are clamped). Always a delay: there is no last attempt.
    pub fn delay(&self, failures: u32, sample: f64) -> Duration {
        let base = self.base_delay(failures);
        let jitter = self.jitter.clamp(0.0, 1.0) * sample.clamp(0.0, 1.0);
        base.mul_f64(1.0 - jitter)
    }

    /// [`delay`](Self::delay) with a sample from the thread's random generator.
    pub fn delay_random(&self, failures: u32) -> Duration {
        self.delay(failures, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            multiplier: 2,
            jitter: 0.5,
        }
    }

    #[test]
    fn delays_double_until_the_cap() {
        let p = policy();
        let delays: Vec<u64> = (1..=6).map(|n| p.base_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn without_a_random_sample_the_delay_is_the_base_delay() {
        assert_eq!(policy().delay(3, 0.0), Duration::from_secs(4));
    }

    #[test]
    fn jitter_takes_off_at_most_its_fraction() {
        let p = policy();
        for n in 1..8 {
            let base = p.base_delay(n);
            for sample in [0.0, 0.25, 0.5, 0.999_999, 1.0, 7.0, -3.0] {
                let d = p.delay(n, sample);
                assert!(
                    d <= base && d >= base.mul_f64(0.5),
                    "{d:?} outside [{:?}, {base:?}]",
                    base.mul_f64(0.5)
                );
            }
        }
        assert_eq!(p.delay(5, 1.0), Duration::from_secs(5));
    }

    #[test]
    fn there_is_no_last_attempt_and_huge_attempt_numbers_do_not_overflow() {
        let p = policy();
        assert_eq!(p.base_delay(u32::MAX - 1), Duration::from_secs(10));
        assert_eq!(p.delay(u32::MAX, 0.0), Duration::from_secs(10));
        assert!(p.delay_random(1000) <= Duration::from_secs(10));
    }

    #[test]
    fn the_default_policy_retries_at_most_five_minutes_apart() {
        let p = Backoff::default();
        assert_eq!(p.base_delay(1), Duration::from_secs(2));
        assert_eq!(p.base_delay(9), Duration::from_secs(300));
        assert_eq!(p.base_delay(500), Duration::from_secs(300));
    }
}
