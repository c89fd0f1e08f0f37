//! A token bucket for chat messages, one per participant, owned by that participant's task.
//!
//! Pure logic: the caller passes the current [`Instant`] (so tests drive time by hand). The
//! bucket holds up to `burst` tokens, gains one every `per / messages`, and each message spends
//! one. With [`RateLimit::CHAT`] a participant may send 10 messages at once, then one per second.

use std::time::{Duration, Instant};

/// The shape of a token bucket: `messages` per `per` on average, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages allowed per `per` in the long run. Must be at least 1.
    pub messages: u32,
    /// The window `messages` refers to. Must be non-zero.
    pub per: Duration,
    /// Bucket size: how many messages may be sent back to back after a quiet spell. At least 1.
    pub burst: u32,
}

impl RateLimit {
    /// Chat default: 10 messages per 10 s, bursts of up to 10.
    pub const CHAT: RateLimit = RateLimit {
        messages: 10,
        per: Duration::from_secs(10),
        burst: 10,
    };

    /// Time to earn one token.
    fn interval(&self) -> Duration {
        self.per / self.messages.max(1)
    }
}

/// A refused message: try again after [`RateLimited::retry_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many messages; retry in {} ms", retry_after.as_millis())]
pub struct RateLimited {
    /// How long until the next message will be accepted.
    pub retry_after: Duration,
}

/// One participant's token bucket. Starts full.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limit: RateLimit,
    /// Tokens available as of `last_refill`.
    tokens: u32,
    /// When tokens were last credited; advanced in whole intervals so no fraction is lost.
    last_refill: Instant,
}

impl RateLimiter {
    /// A full bucket with the given shape, as of `now`.
    pub fn new(limit: RateLimit, now: Instant) -> RateLimiter {
        let burst = limit.burst.max(1);
        RateLimiter {
            limit: RateLimit { burst, ..limit },
            tokens: burst,
            last_refill: now,
        }
    }

    /// Spends a token for one message sent at `now`, or says how long to wait.
    /// An `Instant` earlier than the last one seen is treated as no time passing.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), RateLimited> {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            Ok(())
        } else {
            let next = self.last_refill + self.limit.interval();
            Err(RateLimited {
                retry_after: next.saturating_duration_since(now),
            })
        }
    }

    /// Tokens available at `now` (without spending one).
    pub fn available(&mut self, now: Instant) -> u32 {
        self.refill(now);
        self.tokens
    }

    fn refill(&mut self, now: Instant) {
        let interval = self.limit.interval();
        if interval.is_zero() {
            self.tokens = self.limit.burst;
            self.last_refill = now;
            return;
        }
        let elapsed = now.saturating_duration_since(self.last_refill);
        let earned = elapsed.as_nanos() / interval.as_nanos();
        if earned == 0 {
            return;
        }
        let missing = u128::from(self.limit.burst - self.tokens);
        if earned >= missing {
            self.tokens = self.limit.burst;
            self.last_refill = now;
        } else {
            // earned < missing <= u32::MAX, so the casts are lossless.
            self.tokens += earned as u32;
            self.last_refill += interval * earned as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_full_bucket_allows_a_burst_then_refuses() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimit::CHAT, t0);
        for _ in 0..10 {
            rl.try_acquire(t0).unwrap();
        }
        let refused = rl.try_acquire(t0).unwrap_err();
        assert_eq!(refused.retry_after, SEC);
    }

    #[test]
    fn one_token_comes_back_per_interval() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimit::CHAT, t0);
        for _ in 0..10 {
            rl.try_acquire(t0).unwrap();
        }
        let t = t0 + Duration::from_millis(1500);
        rl.try_acquire(t).unwrap();
        // The half interval already waited counts toward the next token.
        assert_eq!(
            rl.try_acquire(t).unwrap_err().retry_after,
            Duration::from_millis(500)
        );
        rl.try_acquire(t0 + 2 * SEC).unwrap();
    }

    #[test]
    fn a_long_quiet_spell_refills_only_up_to_the_burst() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimit::CHAT, t0);
        rl.try_acquire(t0).unwrap();
        assert_eq!(rl.available(t0 + Duration::from_secs(3600)), 10);
    }

    #[test]
    fn sustained_sending_is_held_to_the_average_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimit::CHAT, t0);
        // Try 10 messages a second for a minute: burst 10 + 60 earned.
        let accepted = (0..600)
            .filter(|i| rl.try_acquire(t0 + Duration::from_millis(100 * i)).is_ok())
            .count();
        assert_eq!(accepted, 10 + 59);
    }

    #[test]
    fn time_going_backwards_earns_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut rl = RateLimiter::new(
            RateLimit {
                messages: 1,
                per: SEC,
                burst: 1,
            },
            t0,
        );
        rl.try_acquire(t0).unwrap();
        assert!(rl.try_acquire(t0 - Duration::from_secs(5)).is_err());
    }
}
