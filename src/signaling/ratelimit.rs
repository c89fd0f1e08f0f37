//! A token bucket (time passed in, so it is testable without sleeping).

use std::time::Instant;

/// Allows `rate` events per second on average with bursts up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_s: f64, burst: u32, now: Instant) -> Self {
        Self {
            rate: rate_per_s,
            burst: burst as f64,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes one token; `false` when the caller is over its rate.
    pub fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_allowed_then_the_rate_applies() {
        let t = Instant::now();
        let mut b = TokenBucket::new(5.0, 10, t);
        assert!((0..10).all(|_| b.allow(t)));
        assert!(!b.allow(t));
        assert!(b.allow(t + Duration::from_millis(200)));
        assert!(!b.allow(t + Duration::from_millis(200)));
    }
}
