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
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Clock;

/// A rate: `failures` per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Failures allowed in a burst, and per window.
    pub failures: u32,
    /// The window.
    pub per: Duration,
}

impl Rate {
    fn capacity(&self) -> f64 {
        f64::from(self.failures.max(1))
    }

    /// Tokens per second.
    fn refill_per_sec(&self) -> f64 {
        self.capacity() / self.per.as_secs_f64().max(1e-3)
    }
}

/// Limits of a [`LoginLimiter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
            per_username: Rate {
                failures: 5,
                per: Duration::from_secs(60),
            },
            per_ip: Rate {
                failures: 20,
                per: Duration::from_secs(60),
            },
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
    config: LimiterConfig,
    clock: Clock,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    users: Buckets<String>,
    ips: Buckets<IpAddr>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// Tokens after refilling up to `now`.
    fn refilled(&self, rate: &Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * rate.refill_per_sec()).min(rate.capacity())
    }
}

#[derive(Debug)]
struct Buckets<K> {
    rate: Rate,
    map: HashMap<K, Bucket>,
    last_sweep: Option<Instant>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(rate: Rate) -> Self {
        Buckets {
            rate,
            map: HashMap::new(),
            last_sweep: None,
        }
    }

    /// How long until `key` has a token (zero if it has one now).
    fn wait<Q>(&self, key: &Q, now: Instant) -> Duration
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(bucket) = self.map.get(key) else {
            return Duration::ZERO;
        };
        let tokens = bucket.refilled(&self.rate, now);
        if tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - tokens) / self.rate.refill_per_sec())
    }

    /// Adds `delta` tokens (negative to take) to `key`'s bucket.
    fn adjust<Q>(&mut self, key: &Q, delta: f64, now: Instant, max_entries: usize)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let rate = self.rate;
        if let Some(bucket) = self.map.get_mut(key) {
            let tokens = bucket.refilled(&rate, now) + delta;
            *bucket = Bucket {
                tokens: tokens.clamp(0.0, rate.capacity()),
                updated: now,
            };
            return;
        }
        if delta >= 0.0 {
            // An untracked key is a full bucket already.
            return;
        }
        if self.map.len() >= max_entries {
            self.sweep(now);
            if self.map.len() >= max_entries {
                tracing::warn!(max_entries, "login limiter full; not tracking a new key");
                return;
            }
        }
        let bucket = Bucket {
            tokens: (rate.capacity() + delta).max(0.0),
            updated: now,
        };
        self.map.insert(key.to_owned(), bucket);
    }

    /// Evicts buckets that have refilled (at most once a second: a sweep is O(n)).
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_sweep = Some(now);
        let rate = self.rate;
        self.map
            .retain(|_, b| b.refilled(&rate, now) < rate.capacity());
    }
}

/// The key for an address: IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 by its /64.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
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
            config,
            clock,
            state: Mutex::new(State {
                users: Buckets::new(config.per_username),
                ips: Buckets::new(config.per_ip),
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
            .max(state.ips.wait(&ip_key(ip), now));
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
        let max = self.config.max_entries;
        let mut state = self.state();
        state.users.adjust(username, -1.0, now, max);
        state.ips.adjust(&ip_key(ip), -1.0, now, max);
    }

    /// Refunds the token taken for an attempt that succeeded.
    pub fn record_success(&self, username: &str, ip: IpAddr) {
        let now = self.clock.now();
        let max = self.config.max_entries;
        let mut state = self.state();
        state.users.adjust(username, 1.0, now, max);
        state.ips.adjust(&ip_key(ip), 1.0, now, max);
    }

    /// Keys currently tracked (usernames, addresses), for metrics and tests.
    pub fn tracked(&self) -> (usize, usize) {
        let state = self.state();
        (state.users.map.len(), state.ips.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ManualClock;

    fn limiter(config: LimiterConfig) -> (LoginLimiter, ManualClock) {
        let (clock, hand) = Clock::manual();
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
