//! Failed-login limiter: token buckets per username and per source address.
//!
//! Each key has a bucket of `failures` tokens that refills at `failures` per `per` (so the
//! default "5 per minute" allows a burst of 5, then one more every 12 s). A login attempt is
//! allowed while both the username's and the address's buckets hold a token.
//!
//! Accounting (see the flow in `crate::auth`): [`LoginLimiter::record_failure`] takes a token
//! when a login *starts* — with OPAQUE a client that typed a wrong password finds out itself
//! and may never send LoginFinish — and [`LoginLimiter::record_success`] gives it back when
//! the login succeeds. So failed and abandoned logins count, successful ones cost nothing.
//! A success refunds one token only; it does not clear the username's bucket, which would
//! let a guesser reset their count whenever the real user logs in.
//!
//! IPv6 addresses are keyed by their /64 (one host usually owns a whole /64); IPv4-mapped
//! IPv6 addresses count as their IPv4 address.
//!
//! Memory is bounded: each map holds at most `max_entries` keys. A full bucket carries no
//! information, so when a map is full, buckets that have refilled are evicted (at most one
//! sweep per second). If the map is still full, the new key is not tracked (logged): under
//! such a flood the other key's limit (address or username) still applies.

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use qpq_runtime::limits::{Clock, KeyedBuckets, Rate, Take, address_key};

/// Limits of a [`LoginLimiter`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimiterConfig {
    /// Per username (default 5 per minute).
    pub per_username: Rate,
    /// Per source address, IPv6 by /64 (default 20 per minute).
    pub per_ip: Rate,
    /// Most keys tracked per map (default 100 000; about 100 bytes each).
    pub max_entries: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            per_username: Rate::per(5, Duration::from_secs(60)),
            per_ip: Rate::per(20, Duration::from_secs(60)),
            max_entries: 100_000,
        }
    }
}

/// A refused attempt: retry after this long (the wire's `retry_after_ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many failed logins; retry after {} ms", .0.as_millis())]
pub struct RetryAfter(pub Duration);

/// The failed-login limiter. Shared by reference (`&self` methods, an internal mutex that is
/// never held across an `.await`).
#[derive(Debug)]
pub struct LoginLimiter {
    clock: Clock,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    users: KeyedBuckets<String>,
    ips: KeyedBuckets<IpAddr>,
}

/// Charges `key`; a key the full map cannot track is logged (the other key still limits).
fn charge<K, Q>(buckets: &mut KeyedBuckets<K>, key: &Q, now: Instant)
where
    K: Hash + Eq + Borrow<Q>,
    Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
{
    if buckets.take(key, now) == Take::Untracked {
        tracing::warn!(
            max_entries = buckets.len(),
            "login limiter full; not tracking a new key"
        );
    }
}

impl LoginLimiter {
    /// A limiter on the system clock.
    pub fn new(config: LimiterConfig) -> Self {
        Self::with_clock(config, Clock::system())
    }

    /// A limiter on the given clock (tests pass [`Clock::manual`]).
    pub fn with_clock(config: LimiterConfig, clock: Clock) -> Self {
        LoginLimiter {
            clock,
            state: Mutex::new(State {
                users: KeyedBuckets::new(config.per_username, config.max_entries),
                ips: KeyedBuckets::new(config.per_ip, config.max_entries),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // No code path panics while holding the lock; if one ever did, the buckets are
        // still plain numbers, so keep going rather than failing every login.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a login attempt for `username` from `ip` may go ahead now.
    pub fn check(&self, username: &str, ip: IpAddr) -> Result<(), RetryAfter> {
        let now = self.clock.now();
        let state = self.state();
        let wait = state
            .users
            .wait(username, now)
            .max(state.ips.wait(&address_key(ip), now));
        if wait.is_zero() {
            Ok(())
        } else {
            // Round up to whole milliseconds so a client retrying on time is not refused.
            Err(RetryAfter(Duration::from_millis(
                u64::try_from(wait.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_add(1),
            )))
        }
    }

    /// Counts a failed (or started, not yet successful) attempt against both keys.
    pub fn record_failure(&self, username: &str, ip: IpAddr) {
        let now = self.clock.now();
        let mut state = self.state();
        charge(&mut state.users, username, now);
        charge(&mut state.ips, &address_key(ip), now);
    }

    /// Refunds the token taken for an attempt that succeeded.
    pub fn record_success(&self, username: &str, ip: IpAddr) {
        let now = self.clock.now();
        let mut state = self.state();
        state.users.refund(username, now);
        state.ips.refund(&address_key(ip), now);
    }

    /// Keys currently tracked (usernames, addresses), for metrics and tests.
    pub fn tracked(&self) -> (usize, usize) {
        let state = self.state();
        (state.users.len(), state.ips.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qpq_runtime::limits::ManualClock;

    fn limiter(config: LimiterConfig) -> (LoginLimiter, ManualClock) {
        let (clock, hand) = Clock::manual(1_700_000_000_000);
        (LoginLimiter::with_clock(config, clock), hand)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn five_failures_per_minute_per_username() {
        let (l, clock) = limiter(LimiterConfig::default());
        for _ in 0..5 {
            l.check("alice", ip("192.0.2.1")).unwrap();
            l.record_failure("alice", ip("192.0.2.1"));
        }
        let RetryAfter(wait) = l.check("alice", ip("192.0.2.99")).unwrap_err();
        // One token refills in 60 s / 5 = 12 s.
        assert!(
            wait > Duration::from_secs(11) && wait <= Duration::from_secs(13),
            "{wait:?}"
        );
        // Other usernames from the same address are still fine (the address has 15 left).
        l.check("bob", ip("192.0.2.1")).unwrap();
        clock.advance(Duration::from_secs(12));
        l.check("alice", ip("192.0.2.1")).unwrap();
        l.record_failure("alice", ip("192.0.2.1"));
        assert!(l.check("alice", ip("192.0.2.1")).is_err());
    }

    #[test]
    fn twenty_failures_per_minute_per_address() {
        let (l, clock) = limiter(LimiterConfig::default());
        for i in 0..20 {
            let user = format!("user{i}");
            l.check(&user, ip("198.51.100.7")).unwrap();
            l.record_failure(&user, ip("198.51.100.7"));
        }
        assert!(l.check("fresh", ip("198.51.100.7")).is_err());
        assert!(l.check("fresh", ip("198.51.100.8")).is_ok());
        clock.advance(Duration::from_secs(3));
        assert!(
            l.check("fresh", ip("198.51.100.7")).is_ok(),
            "one token per 3 s"
        );
    }

    #[test]
    fn success_refunds_the_attempt_but_does_not_reset() {
        let (l, _clock) = limiter(LimiterConfig::default());
        // Successful logins cost nothing.
        for _ in 0..50 {
            l.check("alice", ip("192.0.2.1")).unwrap();
            l.record_failure("alice", ip("192.0.2.1"));
            l.record_success("alice", ip("192.0.2.1"));
        }
        for _ in 0..5 {
            l.record_failure("alice", ip("192.0.2.1"));
        }
        assert!(l.check("alice", ip("192.0.2.1")).is_err());
        // One success gives one attempt back, not five.
        l.record_success("alice", ip("192.0.2.1"));
        l.check("alice", ip("192.0.2.1")).unwrap();
        l.record_failure("alice", ip("192.0.2.1"));
        assert!(l.check("alice", ip("192.0.2.1")).is_err());
    }

    #[test]
    fn ipv6_is_keyed_by_slash_64_and_mapped_v4_by_v4() {
        let (l, _clock) = limiter(LimiterConfig::default());
        for i in 0..20 {
            l.record_failure(&format!("u{i}"), ip(&format!("2001:db8:1:2::{i:x}")));
        }
        assert!(
            l.check("x", ip("2001:db8:1:2:ffff::1")).is_err(),
            "same /64"
        );
        assert!(l.check("x", ip("2001:db8:1:3::1")).is_ok(), "other /64");
        for i in 0..20 {
            l.record_failure(&format!("v{i}"), ip("::ffff:203.0.113.5"));
        }
        assert!(l.check("y", ip("203.0.113.5")).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let config = LimiterConfig {
            max_entries: 10,
            ..LimiterConfig::default()
        };
        let (l, clock) = limiter(config);
        for i in 0..100 {
            l.record_failure(&format!("u{i}"), ip(&format!("10.0.0.{i}")));
        }
        assert_eq!(l.tracked(), (10, 10));
        // Once buckets have refilled they are evicted to make room.
        clock.advance(Duration::from_secs(61));
        l.record_failure("late", ip("10.0.1.1"));
        assert_eq!(l.tracked(), (1, 1));
        assert!(l.check("late", ip("10.0.1.1")).is_ok());
    }

    #[test]
    fn retry_after_message_is_clear() {
        let e = RetryAfter(Duration::from_millis(1500));
        assert_eq!(e.to_string(), "too many failed logins; retry after 1500 ms");
    }
}
