//! Rate limits per key (client address, identity name) and overall, on `governor`'s
//! GCRA limiter: `n` per minute allows a burst of `n`, then one every `60/n` seconds.
//!
//! A keyed limiter remembers one small state per key it has seen. So that a flood of
//! distinct keys cannot grow it without bound, keys whose state is back to "fresh" are
//! dropped once the map passes [`SWEEP_ABOVE`] entries; past [`MAX_KEYS`] live keys a new
//! key is refused (fail closed) until the map shrinks.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Entries above which fully replenished keys are swept.
pub const SWEEP_ABOVE: usize = 10_000;
/// Live keys above which new keys are refused rather than remembered.
pub const MAX_KEYS: usize = 100_000;

/// `n` per minute for each key.
pub struct KeyedRate<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> KeyedRate<K> {
    /// `per_minute` events per key and minute (burst: the same number).
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        KeyedRate {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// Takes one event for `key`: `Err(wait)` when `key` is over its rate (`wait`: until
    /// the next event would be allowed).
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        if self.limiter.len() > SWEEP_ABOVE {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            if self.limiter.len() > MAX_KEYS {
                return Err(Duration::from_secs(60));
            }
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Number of keys remembered (for tests and diagnostics).
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

/// `n` per minute in total.
pub struct Rate {
    limiter: DefaultDirectRateLimiter,
}

impl Rate {
    /// `per_minute` events per minute (burst: the same number).
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Rate {
            limiter: RateLimiter::direct(Quota::per_minute(per_minute)),
        }
    }

    /// Takes one event: `Err(wait)` when over the rate.
    pub fn check(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_budget() {
        let rate = KeyedRate::per_minute(NonZeroU32::new(3).unwrap());
        for _ in 0..3 {
            assert!(rate.check(&"a").is_ok());
        }
        let wait = rate.check(&"a").unwrap_err();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(rate.check(&"b").is_ok());
        assert_eq!(rate.keys(), 2);
    }

    #[test]
    fn total_rate() {
        let rate = Rate::per_minute(NonZeroU32::new(2).unwrap());
        assert!(rate.check().is_ok());
        assert!(rate.check().is_ok());
        assert!(rate.check().is_err());
    }
}
