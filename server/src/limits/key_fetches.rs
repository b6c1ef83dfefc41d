//! KeyPackage fetches per requester: FetchKeyPackage pops a single-use KeyPackage of
//! another user, so each requester may take only so many a minute (`--key-package-fetches-per-minute`),
//! and nobody can drain another user's supply.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::store::IdentityKey;

/// Token buckets per requester: `per_minute` FetchKeyPackage calls per minute, in a burst
/// or spread out. Memory is bounded: past `MAX_TRACKED` requesters, buckets that have
/// refilled (and so carry no information) are dropped.
pub(crate) struct FetchLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IdentityKey, (f64, Instant)>>,
}

/// Most requesters tracked before full buckets are evicted.
const MAX_TRACKED: usize = 100_000;

impl FetchLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `requester`, or says how long until one is there.
    pub(crate) fn check(&self, requester: &IdentityKey) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(requester) {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec < capacity
            });
        }
        let (tokens, at) = buckets.entry(*requester).or_insert((capacity, now));
        let available =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec).min(capacity);
        if available >= 1.0 {
            *tokens = available - 1.0;
            *at = now;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - available) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_burst_then_refuses_with_a_wait() {
        let limiter = FetchLimiter::new(3);
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
