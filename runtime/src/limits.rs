//! Rate limits and time, pure: one token bucket, one bounded map of buckets, one address key
//! and one clock, for every limiter of the workspace.
//!
//! - [`Rate`]: a burst and a refill per second, optionally allowing debt below empty.
//! - [`TokenBucket`]: one bucket: take a token, ask how long until one, refund one.
//! - [`KeyedBuckets`]: a bucket per key (account, address, ...) in a bounded map that forgets
//!   buckets once they have refilled.
//! - [`address_key`]: which addresses share a bucket (IPv6 by /64).
//! - [`Clock`]: monotonic [`Instant`]s and wall-clock Unix milliseconds, with a manual clock
//!   for tests.
//!
//! Not here: locking (wrap a bucket or map in a `Mutex` where it is shared), logging and
//! metrics (the results say what happened; callers report it), and I/O of any kind. Nothing
//! reads the time by itself: every operation takes `now`, which callers read from a
//! [`Clock`] (or pass in tests), so limits are tested with injected time, never by sleeping.
//!
//! A bucket holds up to [`Rate::burst`] tokens and refills continuously at
//! [`Rate::per_sec`]; an action costs one token. Tokens are fractional, so a refill of 2 a
//! second yields a whole token every half second.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use qpq_runtime::limits::{Rate, TokenBucket};
//!
//! let t0 = Instant::now();
//! // 3 at once, then one every 500 ms.
//! let mut bucket = TokenBucket::full(Rate::new(3, 2.0), t0);
//! for _ in 0..3 {
//!     assert!(bucket.try_take(t0).is_ok());
//! }
//! assert_eq!(bucket.try_take(t0), Err(Duration::from_millis(500)));
//! assert!(bucket.try_take(t0 + Duration::from_millis(500)).is_ok());
//! ```

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How fast a bucket refills and how much it holds: `burst` tokens at most, `per_sec` new
/// tokens a second, and optionally a debt floor below empty (see [`Rate::with_debt`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    burst: f64,
    per_sec: f64,
    /// The lowest the tokens may fall when charged regardless: zero, or minus the debt.
    floor: f64,
}

impl Rate {
    /// At most `burst` tokens, refilled at `per_sec` a second (a negative or NaN refill is
    /// taken as 0: the bucket never refills). A burst of 0 never holds a whole token.
    pub fn new(burst: u32, per_sec: f64) -> Self {
        Self {
            burst: f64::from(burst),
            per_sec: if per_sec > 0.0 { per_sec } else { 0.0 },
            floor: 0.0,
        }
    }

    /// `count` tokens a second, and `count` at once.
    pub fn per_second(count: u32) -> Self {
        Self::new(count, f64::from(count))
    }

    /// `count` per `period`, where `count` is also the burst: `Rate::per(100, 1 min)` allows
    /// 100 at once, then one every 0.6 s. A count of 0 is taken as 1 and a period under 1 ms
    /// as 1 ms, so the rate always admits something.
    pub fn per(count: u32, period: Duration) -> Self {
        let burst = count.max(1);
        Self::new(burst, f64::from(burst) / period.as_secs_f64().max(1e-3))
    }

    /// The same rate, whose bucket may be charged down to `debt` worth of refill below empty
    /// (e.g. ten seconds' worth). Only [`TokenBucket::take`] and [`KeyedBuckets::take`], which
    /// charge whether or not a token is there, go into debt: while a flood keeps charging,
    /// the bucket stays in debt, and it admits again only once the flood has paid it back.
    pub fn with_debt(self, debt: Duration) -> Self {
        Self {
            floor: -(self.per_sec * debt.as_secs_f64()),
            ..self
        }
    }

    /// The most tokens a bucket holds (what it allows at once).
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Tokens added a second.
    pub fn per_sec(&self) -> f64 {
        self.per_sec
    }

    /// How long refilling `missing` tokens takes: [`Duration::MAX`] when it never happens.
    fn time_for(&self, missing: f64) -> Duration {
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(missing / self.per_sec).unwrap_or(Duration::MAX)
    }

    /// How long until a bucket now holding `tokens` holds `need`.
    fn wait(&self, tokens: f64, need: f64) -> Duration {
        if tokens >= need {
            Duration::ZERO
        } else if need > self.burst {
            Duration::MAX
        } else {
            self.time_for(need - tokens)
        }
    }
}

/// The state of one bucket without its rate (a [`KeyedBuckets`] map stores only this).
#[derive(Clone, Copy, Debug)]
struct Level {
    tokens: f64,
    /// When `tokens` was counted.
    at: Instant,
}

impl Level {
    /// Tokens at `now`: what was counted plus the refill since, at most the burst. A `now`
    /// before the count (time read out of order) adds nothing.
    fn tokens(&self, rate: &Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate.per_sec).min(rate.burst)
    }

    /// Charges one token, whether or not there is one, down to the rate's floor; says
    /// whether there was a whole one.
    fn take(&mut self, rate: &Rate, now: Instant) -> bool {
        let tokens = self.tokens(rate, now);
        *self = Level {
            tokens: (tokens - 1.0).max(rate.floor),
            at: now,
        };
        tokens >= 1.0
    }

    /// Takes one token only if there is a whole one; otherwise says how long until there is.
    fn try_take(&mut self, rate: &Rate, now: Instant) -> Result<(), Duration> {
        let tokens = self.tokens(rate, now);
        if tokens >= 1.0 {
            *self = Level {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            Err(rate.wait(tokens, 1.0))
        }
    }

    /// Gives one token back, up to the burst.
    fn refund(&mut self, rate: &Rate, now: Instant) {
        *self = Level {
            tokens: (self.tokens(rate, now) + 1.0).min(rate.burst),
            at: now,
        };
    }

    fn is_full(&self, rate: &Rate, now: Instant) -> bool {
        self.tokens(rate, now) >= rate.burst
    }
}

/// One token bucket.
///
/// Two ways to charge it, for two kinds of limit:
/// - [`try_take`](Self::try_take) takes a token only when there is one and otherwise says
///   how long until there is (a refused action costs nothing: logins, calls);
/// - [`take`](Self::take) charges a token whether or not there is one, down to empty or to
///   the rate's debt (every attempt counts, refused or not: a flood must stop to recover).
///
/// ```
/// use std::time::{Duration, Instant};
/// use qpq_runtime::limits::{Rate, TokenBucket};
///
/// let t0 = Instant::now();
/// // 2 a second, at most 2 at once, and up to 1 s of debt.
/// let mut budget = TokenBucket::full(Rate::per_second(2).with_debt(Duration::from_secs(1)), t0);
/// assert!(budget.take(t0) && budget.take(t0));
/// // A flood: refused, and charged into debt.
/// assert!(!budget.take(t0) && !budget.take(t0));
/// assert_eq!(budget.wait(t0), Duration::from_millis(1500));
/// // It recovers once the debt is repaid.
/// assert!(budget.take(t0 + Duration::from_millis(1500)));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rate: Rate,
    level: Level,
}

impl TokenBucket {
    /// A bucket holding its whole burst at `now`.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            level: Level {
                tokens: rate.burst,
                at: now,
            },
        }
    }

    /// A bucket holding no token at `now` (it starts refilling at once).
    pub fn empty(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            level: Level {
                tokens: 0.0,
                at: now,
            },
        }
    }

    /// Its rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Tokens held at `now`, fractional; negative while in debt.
    pub fn tokens(&self, now: Instant) -> f64 {
        self.level.tokens(&self.rate, now)
    }

    /// Whether it holds its whole burst at `now` (a full bucket carries no information).
    pub fn is_full(&self, now: Instant) -> bool {
        self.level.is_full(&self.rate, now)
    }

    /// How long from `now` until it holds a whole token: zero if it does now,
    /// [`Duration::MAX`] if it never will (no refill, or a burst under one token).
    pub fn wait(&self, now: Instant) -> Duration {
        self.wait_for(1, now)
    }

    /// How long from `now` until it holds `tokens` tokens ([`Duration::MAX`] if never, e.g.
    /// more than the burst).
    pub fn wait_for(&self, tokens: u32, now: Instant) -> Duration {
        self.rate.wait(self.tokens(now), f64::from(tokens))
    }

    /// Charges one token whether or not there is one (down to empty, or into the rate's
    /// debt) and says whether there was a whole one, i.e. whether this action is within the
    /// rate.
    pub fn take(&mut self, now: Instant) -> bool {
        self.level.take(&self.rate, now)
    }

    /// Takes one token if there is a whole one; otherwise changes nothing and returns how
    /// long until there is one (as [`wait`](Self::wait)).
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.level.try_take(&self.rate, now)
    }

    /// Gives one token back (an action that turned out not to count), up to the burst.
    pub fn refund(&mut self, now: Instant) {
        self.level.refund(&self.rate, now);
    }
}

/// What [`KeyedBuckets::take`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Take {
    /// The key's bucket held a token, and it was taken.
    Granted,
    /// The bucket held no whole token; it was charged anyway, down to empty or into debt.
    Over,
    /// The key had no bucket and the map is full of buckets still refilling, so the key is
    /// not tracked: it is treated as a full bucket (the other limits of the action still
    /// apply). Worth a log line or a metric.
    Untracked,
}

impl Take {
    /// Whether the action is within the rate ([`Take::Granted`] or [`Take::Untracked`]).
    pub fn is_within(self) -> bool {
        !matches!(self, Take::Over)
    }
}

/// How often a full [`KeyedBuckets`] map may be swept for refilled buckets: a sweep visits
/// every key, so a map under a flood of new keys sweeps at most this often.
pub const FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A token bucket per key, all at one [`Rate`], in a map that holds at most `max_keys`.
///
/// A key without a bucket has a full one: only charging a key creates its bucket. A full
/// bucket carries no information, so buckets that have refilled are evicted by a sweep: when
/// a new key finds the map full (at most once per [`FULL_SWEEP_INTERVAL`]), and, if set by
/// [`sweep_idle_every`](Self::sweep_idle_every), at least that often when a new key is
/// charged. If the map is still full after that, the new key is not tracked
/// ([`Take::Untracked`]): memory stays bounded under a flood of keys, and the caller's other
/// limits (e.g. the address's bucket beside the account's) still apply.
///
/// Lookups take any borrowed form of the key (`&str` for `String` keys).
///
/// ```
/// use std::net::IpAddr;
/// use std::time::{Duration, Instant};
/// use qpq_runtime::limits::{KeyedBuckets, Rate, Take, address_key};
///
/// let t0 = Instant::now();
/// // 5 failed logins per 10 s per address, at most 10 000 addresses tracked.
/// let mut failures = KeyedBuckets::new(Rate::per(5, Duration::from_secs(10)), 10_000);
/// let ip: IpAddr = "2001:db8::7".parse().unwrap();
/// for _ in 0..5 {
///     assert_eq!(failures.take(&address_key(ip), t0), Take::Granted);
/// }
/// // The same /64 is the same key; the wait is for one token (10 s / 5).
/// let neighbour: IpAddr = "2001:db8::8".parse().unwrap();
/// assert_eq!(failures.wait(&address_key(neighbour), t0), Duration::from_secs(2));
/// // A success refunds its attempt.
/// failures.refund(&address_key(ip), t0);
/// assert!(failures.wait(&address_key(ip), t0).is_zero());
/// ```
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    rate: Rate,
    max_keys: usize,
    idle_sweep: Option<Duration>,
    last_sweep: Option<Instant>,
    map: HashMap<K, Level>,
}

impl<K: Hash + Eq> KeyedBuckets<K> {
    /// An empty map of buckets at `rate`, holding at most `max_keys` keys.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys,
            idle_sweep: None,
            last_sweep: None,
            map: HashMap::new(),
        }
    }

    /// Also sweeps refilled buckets at least every `every` (checked when a new key is
    /// charged), so a map that never fills still forgets its idle keys.
    pub fn sweep_idle_every(mut self, every: Duration) -> Self {
        self.idle_sweep = Some(every);
        self
    }

    /// The rate of every bucket.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Tokens `key` holds at `now` (the burst if it has no bucket).
    pub fn tokens<Q>(&self, key: &Q, now: Instant) -> f64
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map
            .get(key)
            .map_or(self.rate.burst, |level| level.tokens(&self.rate, now))
    }

    /// How long from `now` until `key` holds a whole token (zero if it does now).
    pub fn wait<Q>(&self, key: &Q, now: Instant) -> Duration
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.wait_for(key, 1, now)
    }

    /// How long from `now` until `key` holds `tokens` tokens ([`Duration::MAX`] if never).
    pub fn wait_for<Q>(&self, key: &Q, tokens: u32, now: Instant) -> Duration
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.rate.wait(self.tokens(key, now), f64::from(tokens))
    }

    /// Charges `key` one token whether or not it has one (as [`TokenBucket::take`]); a new
    /// key gets a bucket, unless the map stays full after eviction.
    pub fn take<Q>(&mut self, key: &Q, now: Instant) -> Take
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(level) = self.map.get_mut(key) {
            return if level.take(&self.rate, now) {
                Take::Granted
            } else {
                Take::Over
            };
        }
        if !self.make_room(now) {
            return Take::Untracked;
        }
        let mut level = Level {
            tokens: self.rate.burst,
            at: now,
        };
        let granted = level.take(&self.rate, now);
        self.map.insert(key.to_owned(), level);
        if granted { Take::Granted } else { Take::Over }
    }

    /// Takes a token from `key` if it has one; otherwise changes nothing and returns how long
    /// until it has one. A key that cannot be tracked is let through.
    pub fn try_take<Q>(&mut self, key: &Q, now: Instant) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let wait = self.wait(key, now);
        if wait.is_zero() {
            self.take(key, now);
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Gives `key` one token back, up to the burst. A key without a bucket is full already.
    pub fn refund<Q>(&mut self, key: &Q, now: Instant)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(level) = self.map.get_mut(key) {
            level.refund(&self.rate, now);
        }
    }

    /// Evicts every bucket that has refilled by `now`.
    pub fn sweep(&mut self, now: Instant) {
        self.last_sweep = Some(now);
        let rate = self.rate;
        self.map.retain(|_, level| !level.is_full(&rate, now));
    }

    /// Before a new key is inserted: sweeps when due, and says whether there is room.
    fn make_room(&mut self, now: Instant) -> bool {
        let since = self.last_sweep.map(|at| now.saturating_duration_since(at));
        let due = |interval: Duration| since.is_none_or(|since| since >= interval);
        let full = self.map.len() >= self.max_keys;
        if self.idle_sweep.is_some_and(due) || (full && due(FULL_SWEEP_INTERVAL)) {
            self.sweep(now);
        }
        self.map.len() < self.max_keys
    }
}

/// The key under which an address is limited: IPv4 as is, IPv4-mapped IPv6 as its IPv4
/// address, other IPv6 by its /64 (one host, or one customer, usually owns a whole /64, so
/// keying by the full address would give it 2^64 buckets).
///
/// ```
/// use std::net::IpAddr;
/// use qpq_runtime::limits::address_key;
///
/// let ip = |s: &str| s.parse::<IpAddr>().unwrap();
/// assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
/// assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
/// ```
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// The time, in the two forms the workspace needs: a monotonic [`Instant`] for rate windows,
/// timeouts and TTLs of in-memory state, and wall-clock Unix milliseconds for what is stored
/// or sent (message times, expiry dates). Cheap to clone; clones share a manual clock.
///
/// [`Clock::system`] reads the real clocks. [`Clock::manual`] stands still until its
/// [`ManualClock`] moves it, and moves both forms together, so tests of expiry and of rate
/// limits never sleep.
///
/// ```
/// use std::time::Duration;
/// use qpq_runtime::limits::{Clock, Rate, TokenBucket};
///
/// let (clock, hand) = Clock::manual(1_700_000_000_000);
/// let mut bucket = TokenBucket::empty(Rate::new(1, 1.0), clock.now());
/// assert!(bucket.try_take(clock.now()).is_err());
/// hand.advance(Duration::from_secs(1));
/// assert!(bucket.try_take(clock.now()).is_ok());
/// assert_eq!(clock.unix_ms(), 1_700_000_001_000);
/// ```
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

#[derive(Debug)]
struct Manual {
    base: Instant,
    /// Nanoseconds the monotonic clock has moved past `base`.
    elapsed_ns: AtomicU64,
    /// Wall clock in nanoseconds since the Unix epoch.
    unix_ns: AtomicU64,
}

impl Clock {
    /// The real clocks.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands still at `unix_ms` (wall clock) until the returned
    /// [`ManualClock`] moves it.
    pub fn manual(unix_ms: u64) -> (Self, ManualClock) {
        let manual = Arc::new(Manual {
            base: Instant::now(),
            elapsed_ns: AtomicU64::new(0),
            unix_ns: AtomicU64::new(unix_ms.saturating_mul(1_000_000)),
        });
        (
            Self {
                manual: Some(Arc::clone(&manual)),
            },
            ManualClock(manual),
        )
    }

    /// Monotonic now.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(manual) => {
                let elapsed = Duration::from_nanos(manual.elapsed_ns.load(Ordering::SeqCst));
                manual.base.checked_add(elapsed).unwrap_or(manual.base)
            }
        }
    }

    /// Wall-clock now, in milliseconds since the Unix epoch. A system clock set before 1970
    /// reads as 0 (a misconfigured host should not fail every call).
    pub fn unix_ms(&self) -> u64 {
        match &self.manual {
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| {
                    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
                }),
            Some(manual) => manual.unix_ns.load(Ordering::SeqCst) / 1_000_000,
        }
    }

    /// Whether this is a [`Clock::manual`] clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.manual.is_some() {
            "Clock(manual)"
        } else {
            "Clock(system)"
        })
    }
}

/// The hand that moves a [`Clock::manual`] clock (and every clone of it).
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Manual>);

impl ManualClock {
    /// Moves both the monotonic and the wall clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.elapsed_ns.fetch_add(ns, Ordering::SeqCst);
        self.0.unix_ns.fetch_add(ns, Ordering::SeqCst);
    }

    /// Sets the wall clock alone, as a host whose clock is corrected would (backward too);
    /// the monotonic clock does not move.
    pub fn set_unix_ms(&self, unix_ms: u64) {
        self.0
            .unix_ns
            .store(unix_ms.saturating_mul(1_000_000), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Waits are computed in floating point: equal to within a microsecond.
    fn assert_close(wait: Result<(), Duration>, expected: Duration) {
        let wait = wait.unwrap_err();
        let off = wait.abs_diff(expected);
        assert!(
            off < Duration::from_micros(1),
            "{wait:?} is not {expected:?}"
        );
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(Rate::new(2, 4.0), t0);
        assert!(bucket.is_full(t0));
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert_eq!(bucket.try_take(t0), Err(ms(250)));
        // A refused try costs nothing.
        assert_close(bucket.try_take(t0 + ms(100)), ms(150));
        assert_eq!(bucket.try_take(t0 + ms(250)), Ok(()));
        // Refill stops at the burst.
        assert_eq!(bucket.tokens(t0 + ms(10_000)), 2.0);
        assert!(bucket.is_full(t0 + ms(10_000)));
    }

    #[test]
    fn take_charges_even_when_refused_down_to_the_floor() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(Rate::new(1, 2.0), t0);
        assert!(bucket.take(t0));
        // Half a token: refused, and emptied (the half is lost).
        assert!(!bucket.take(t0 + ms(250)));
        assert_eq!(bucket.tokens(t0 + ms(250)), 0.0);
        assert!(!bucket.take(t0 + ms(250)));
        assert_eq!(
            bucket.tokens(t0 + ms(250)),
            0.0,
            "no debt without with_debt"
        );
        assert!(bucket.take(t0 + ms(750)));
    }

    #[test]
    fn debt_is_bounded_and_must_be_repaid() {
        let t0 = Instant::now();
        let rate = Rate::per_second(10).with_debt(Duration::from_secs(10));
        let mut bucket = TokenBucket::full(rate, t0);
        let granted = (0..1_000).filter(|_| bucket.take(t0)).count();
        assert_eq!(granted, 10);
        // Ten seconds' worth of debt at most: 100 tokens below empty.
        assert_eq!(bucket.tokens(t0), -100.0);
        assert_close(Err(bucket.wait(t0)), ms(10_100));
        assert!(!bucket.take(t0 + ms(10_000)));
        assert!(bucket.take(t0 + ms(10_200)));
    }

    #[test]
    fn refunds_stop_at_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(Rate::new(3, 0.0), t0);
        bucket.refund(t0);
        assert_eq!(bucket.tokens(t0), 3.0);
        assert!(bucket.take(t0));
        bucket.refund(t0);
        assert_eq!(bucket.tokens(t0), 3.0);
    }

    #[test]
    fn waits_that_never_end_are_duration_max() {
        let t0 = Instant::now();
        let mut never = TokenBucket::full(Rate::new(1, 0.0), t0);
        assert!(never.take(t0));
        assert_eq!(never.wait(t0), Duration::MAX);
        let zero = TokenBucket::full(Rate::per_second(0), t0);
        assert_eq!(zero.wait(t0), Duration::MAX);
        let small = TokenBucket::full(Rate::new(2, 1.0), t0);
        assert_eq!(small.wait_for(3, t0), Duration::MAX);
        assert_eq!(small.wait_for(2, t0), Duration::ZERO);
        assert_eq!(
            TokenBucket::empty(Rate::new(2, 1.0), t0).wait_for(2, t0),
            ms(2_000)
        );
    }

    #[test]
    fn time_read_out_of_order_adds_nothing() {
        let t0 = Instant::now() + ms(1_000);
        let mut bucket = TokenBucket::empty(Rate::new(1, 1.0), t0);
        assert!(bucket.try_take(t0 - ms(500)).is_err());
        assert_eq!(bucket.tokens(t0 - ms(500)), 0.0);
    }

    #[test]
    fn rates_per_period_match_count_over_period() {
        let rate = Rate::per(5, Duration::from_secs(60));
        assert_eq!((rate.burst(), rate.per_sec()), (5.0, 5.0 / 60.0));
        assert_eq!(Rate::per(0, Duration::ZERO).burst(), 1.0);
        assert_eq!(Rate::per(0, Duration::ZERO).per_sec(), 1_000.0);
        assert_eq!(Rate::new(1, f64::NAN).per_sec(), 0.0);
    }

    #[test]
    fn keyed_buckets_charge_per_key_and_untracked_keys_are_full() {
        let t0 = Instant::now();
        let mut buckets = KeyedBuckets::new(Rate::new(2, 1.0), 100);
        assert_eq!(buckets.tokens(&7u32, t0), 2.0);
        assert_eq!(buckets.take(&7, t0), Take::Granted);
        assert_eq!(buckets.take(&7, t0), Take::Granted);
        assert_eq!(buckets.take(&7, t0), Take::Over);
        assert!(!Take::Over.is_within());
        assert_eq!(buckets.try_take(&7, t0), Err(ms(1_000)));
        assert_eq!(buckets.try_take(&8, t0), Ok(()));
        assert_eq!(buckets.len(), 2);
        // Refunding a key that has no bucket creates none.
        buckets.refund(&9, t0);
        assert_eq!(buckets.len(), 2);
    }

    #[test]
    fn keyed_buckets_borrow_their_keys() {
        let t0 = Instant::now();
        let mut users: KeyedBuckets<String> = KeyedBuckets::new(Rate::new(1, 1.0), 10);
        assert_eq!(users.take("alice", t0), Take::Granted);
        assert_eq!(users.wait("alice", t0), ms(1_000));
        users.refund("alice", t0);
        assert!(users.wait("alice", t0).is_zero());
    }

    #[test]
    fn a_full_map_evicts_refilled_buckets_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut buckets = KeyedBuckets::new(Rate::new(1, 1.0), 3);
        for key in 0..3u32 {
            assert_eq!(buckets.take(&key, t0), Take::Granted);
        }
        // Full, and nothing has refilled: the first sweep finds nothing to evict.
        assert_eq!(buckets.take(&10, t0 + ms(500)), Take::Untracked);
        assert_eq!(buckets.len(), 3);
        // Everything has refilled, but the last sweep was under a second ago.
        assert_eq!(buckets.take(&11, t0 + ms(1_200)), Take::Untracked);
        // A second after it: the refilled buckets go and the new key is tracked.
        assert_eq!(buckets.take(&12, t0 + ms(1_500)), Take::Granted);
        assert_eq!(buckets.len(), 1);
    }

    #[test]
    fn idle_sweeps_forget_refilled_keys_of_a_map_that_never_fills() {
        let t0 = Instant::now();
        let mut buckets =
            KeyedBuckets::new(Rate::new(2, 1.0), 100).sweep_idle_every(Duration::from_secs(60));
        buckets.take(&1u32, t0);
        buckets.take(&2, t0 + ms(30_000));
        assert_eq!(buckets.len(), 2);
        // Key 1 refilled long ago, key 2 too, but key 3 arrives before the interval is up.
        buckets.take(&3, t0 + ms(59_000));
        assert_eq!(buckets.len(), 3);
        // Past the interval, charging a new key sweeps the two refilled ones; key 3 (taken
        // two seconds ago) has refilled too, so only the new key stays.
        buckets.take(&4, t0 + ms(61_000));
        assert_eq!(buckets.len(), 1);
        // A bucket still refilling survives a sweep.
        buckets.take(&4, t0 + ms(61_000));
        buckets.sweep(t0 + ms(61_500));
        assert_eq!(buckets.len(), 1);
        buckets.sweep(t0 + ms(63_000));
        assert!(buckets.is_empty());
    }

    #[test]
    fn addresses_are_keyed_by_v4_or_v6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::1")), ip("::"));
    }

    #[test]
    fn a_manual_clock_moves_both_times_together_and_only_when_told() {
        let (clock, hand) = Clock::manual(5_000);
        let copy = clock.clone();
        let t0 = clock.now();
        assert_eq!((clock.now(), clock.unix_ms()), (t0, 5_000));
        hand.advance(ms(1_500));
        assert_eq!((copy.now(), copy.unix_ms()), (t0 + ms(1_500), 6_500));
        hand.set_unix_ms(1_000);
        assert_eq!((clock.now(), clock.unix_ms()), (t0 + ms(1_500), 1_000));
        assert!(clock.is_manual());
        assert_eq!(format!("{clock:?}"), "Clock(manual)");
    }

    #[test]
    fn the_system_clock_reads_real_time() {
        let clock = Clock::system();
        assert!(!clock.is_manual());
        let before = Instant::now();
        assert!(clock.now() >= before);
        // After 2020-01-01.
        assert!(clock.unix_ms() > 1_577_836_800_000);
    }
}
