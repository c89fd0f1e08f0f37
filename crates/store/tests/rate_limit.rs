//! The chat rate limiter as the server uses it: one bucket per participant, time passed in.

use std::time::{Duration, Instant};

use confab_store::{RateLimit, RateLimiter};

#[test]
fn each_participant_has_an_own_bucket_of_ten_per_ten_seconds() {
    let t0 = Instant::now();
    let mut alice = RateLimiter::new(RateLimit::CHAT, t0);
    let mut bob = RateLimiter::new(RateLimit::CHAT, t0);

    // Alice floods: the burst of 10 passes, the 11th is refused with a hint when to retry.
    for _ in 0..10 {
        alice.try_acquire(t0).unwrap();
    }
    let refused = alice
        .try_acquire(t0 + Duration::from_millis(300))
        .unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_millis(700));

    // Bob is unaffected.
    bob.try_acquire(t0 + Duration::from_millis(300)).unwrap();

    // After waiting as told, Alice may send one more, not two.
    let later = t0 + Duration::from_secs(1);
    alice.try_acquire(later).unwrap();
    assert!(alice.try_acquire(later).is_err());

    // Ten quiet seconds restore the full burst.
    assert_eq!(alice.available(later + Duration::from_secs(10)), 10);
}

#[test]
fn a_custom_limit_of_one_per_second_without_burst_spaces_messages() {
    let t0 = Instant::now();
    let mut rl = RateLimiter::new(
        RateLimit {
            messages: 1,
            per: Duration::from_secs(1),
            burst: 1,
        },
        t0,
    );
    let accepted: Vec<u64> = (0..30u64)
        .filter(|ms100| {
            rl.try_acquire(t0 + Duration::from_millis(ms100 * 100))
                .is_ok()
        })
        .collect();
    assert_eq!(accepted, [0, 10, 20]);
}
