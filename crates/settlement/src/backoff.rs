//! The retry policy of the settlement outbox: exponential back-off with a cap and jitter, and a bounded number of
//! attempts after which a transient failure becomes permanent (visible, never retried forever).
//!
//! Pure: the random jitter sample is an argument, so every decision is reproducible in tests.

use std::time::Duration;

/// Exponential back-off with a cap, jitter and a maximum number of attempts.
///
/// The delay after the `n`-th failed attempt (n ≥ 1) is `min(initial × multiplier^(n-1), max_delay)`, reduced by
/// up to `jitter` of itself: with jitter 0.2 it lies in `[0.8 × d, d]`. Jitter spreads the retries of many
/// settlements that failed together (one RPC outage) so they do not hit the recovered node at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of any delay (before jitter is taken off).
    pub max_delay: Duration,
    /// Growth factor between consecutive delays (≥ 1).
    pub multiplier: u32,
    /// Fraction of each delay that is randomised away, in `[0, 1]`.
    pub jitter: f64,
    /// Attempts in total, the first included; the failure of the last one is final.
    pub max_attempts: u32,
}

impl Default for Backoff {
    /// 2 s, 4 s, 8 s … capped at 5 min, 20 % jitter, 20 attempts: about an hour of chain outage before a
    /// settlement is marked failed for an operator to look at.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
            multiplier: 2,
            jitter: 0.2,
            max_attempts: 20,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// The attempts are used up: record the failure as permanent.
    GiveUp,
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

    /// Decide what follows the `failures`-th consecutive failed attempt (1-based), given a uniform random
    /// `sample` in `[0, 1)` for the jitter (values outside are clamped).
    pub fn decide(&self, failures: u32, sample: f64) -> RetryDecision {
        if failures >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let base = self.base_delay(failures);
        let jitter = self.jitter.clamp(0.0, 1.0) * sample.clamp(0.0, 1.0);
        RetryDecision::RetryAfter(base.mul_f64(1.0 - jitter))
    }

    /// [`decide`](Self::decide) with a sample from the thread's random generator.
    pub fn decide_random(&self, failures: u32) -> RetryDecision {
        self.decide(failures, rand::random::<f64>())
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
            max_attempts: 6,
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
        assert_eq!(
            policy().decide(3, 0.0),
            RetryDecision::RetryAfter(Duration::from_secs(4))
        );
    }

    #[test]
    fn jitter_takes_off_at_most_its_fraction() {
        let p = policy();
        for n in 1..p.max_attempts {
            let base = p.base_delay(n);
            for sample in [0.0, 0.25, 0.5, 0.999_999, 1.0, 7.0, -3.0] {
                let RetryDecision::RetryAfter(d) = p.decide(n, sample) else {
                    panic!("gave up early")
                };
                assert!(
                    d <= base && d >= base.mul_f64(0.5),
                    "{d:?} outside [{:?}, {base:?}]",
                    base.mul_f64(0.5)
                );
            }
        }
        let RetryDecision::RetryAfter(d) = p.decide(5, 1.0) else {
            panic!()
        };
        assert_eq!(d, Duration::from_secs(5));
    }

    #[test]
    fn the_last_attempt_gives_up() {
        let p = policy();
        assert!(matches!(p.decide(5, 0.3), RetryDecision::RetryAfter(_)));
        assert_eq!(p.decide(6, 0.3), RetryDecision::GiveUp);
        assert_eq!(p.decide(60, 0.3), RetryDecision::GiveUp);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = Backoff {
            max_attempts: u32::MAX,
            ..policy()
        };
        assert_eq!(p.base_delay(u32::MAX - 1), Duration::from_secs(10));
        assert!(
            matches!(p.decide_random(1000), RetryDecision::RetryAfter(d) if d <= Duration::from_secs(10))
        );
    }

    #[test]
    fn the_default_policy_spans_about_an_hour() {
        let p = Backoff::default();
        let total: Duration = (1..p.max_attempts).map(|n| p.base_delay(n)).sum();
        assert!(
            total > Duration::from_secs(45 * 60) && total < Duration::from_secs(90 * 60),
            "{total:?}"
        );
    }
}
