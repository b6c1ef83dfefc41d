//! KeyPackage fetches per requester: FetchKeyPackage pops a single-use KeyPackage of
//! another user, so each requester may take only so many a minute (`--key-package-fetches-per-minute`),
//! and nobody can drain another user's supply.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use qpq_runtime::limits::{Clock, KeyedBuckets, Rate};

use crate::store::IdentityKey;

/// Most requesters tracked; past it, buckets that have refilled (and so carry no
/// information) are dropped, and a requester that still finds no room is not limited here.
const MAX_TRACKED: usize = 100_000;

/// Token buckets per requester: `per_minute` FetchKeyPackage calls per minute, in a burst
/// or spread out.
pub(crate) struct FetchLimiter {
    buckets: Mutex<KeyedBuckets<IdentityKey>>,
    clock: Clock,
}

impl FetchLimiter {
    pub(crate) fn new(per_minute: u32, clock: Clock) -> Self {
        let rate = Rate::per(per_minute, Duration::from_secs(60));
        Self {
            buckets: Mutex::new(KeyedBuckets::new(rate, MAX_TRACKED)),
            clock,
        }
    }

    /// Takes a token for `requester`, or says how long until one is there.
    pub(crate) fn check(&self, requester: &IdentityKey) -> Result<(), Duration> {
        let now = self.clock.now();
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_take(requester, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_burst_then_refuses_with_a_wait() {
        let limiter = FetchLimiter::new(3, Clock::system());
        let me = [1; 32];
        for _ in 0..3 {
            limiter.check(&me).unwrap();
        }
        let wait = limiter.check(&me).unwrap_err();
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another requester has its own bucket.
        limiter.check(&[2; 32]).unwrap();
    }
}
