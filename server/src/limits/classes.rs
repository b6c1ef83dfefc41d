//! Rate limits per `rate_class` of `schema/methods.toml`: token buckets keyed per account
//! and per source address, checked by [`Authenticator::rate_limit`] after authentication
//! and before any handler; Enqueue and BatchEnqueue also have a bucket per sender→recipient
//! pair (checked in `api/delivery.rs`, where the recipient is known).
//!
//! A bucket holds `count` tokens and refills at `count` per `per`, so a rate is also its
//! burst: `1000/5s` allows 1000 calls at once, then 200 a second. A call takes one token
//! from each bucket that applies (the caller's account, or the federation peer's domain,
//! and its address), and only when every one has a token: a refused call costs nothing.
//! IPv6 addresses are keyed by their /64, IPv4-mapped IPv6 addresses as IPv4.
//!
//! The defaults ([`DEFAULTS`]) are documented in docs/running.md and changed with
//! `--rate-limit CLASS[.account|.address|.pair]=COUNT/PERIOD` or `=off` (`all=off` turns
//! every limit off, e.g. for benchmarks).
//!
//! Memory is bounded: each map holds at most [`MAX_TRACKED`] keys. A full bucket carries no
//! information, so buckets that have refilled are evicted (a sweep at most once a second
//! when a map is full, and once a minute otherwise). If a map is still full, the new key is
//! not tracked: the other keys of the call still limit it.
//!
//! [`Authenticator::rate_limit`]: qpq_runtime::Authenticator::rate_limit

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use qpq_runtime::limits::{self, Clock, KeyedBuckets, Take, address_key};
use qpq_runtime::{CallInfo, Principal, Status};

use crate::store::IdentityKey;

/// Most keys one map tracks (about 100 bytes each).
pub(crate) const MAX_TRACKED: usize = 100_000;

/// Idle (refilled) buckets are evicted at least this often.
const IDLE_SWEEP: Duration = Duration::from_secs(60);

/// The class name of the per sender→recipient bucket of Enqueue and BatchEnqueue items.
pub(crate) const ENQUEUE_PAIR: &str = "enqueue";

/// `count` calls per `per`; `count` is also the burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Calls allowed at once, and per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    const fn new(count: u32, per_secs: u64) -> Self {
        Self {
            count,
            per: Duration::from_secs(per_secs),
        }
    }

    /// The token bucket rate: `count` at once, refilled at `count` per `per`.
    fn bucket(&self) -> limits::Rate {
        limits::Rate::per(self.count, self.per)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.per.as_secs();
        match secs {
            1 => write!(f, "{}/s", self.count),
            60 => write!(f, "{}/min", self.count),
            3600 => write!(f, "{}/h", self.count),
            s if s % 3600 == 0 => write!(f, "{}/{}h", self.count, s / 3600),
            s if s % 60 == 0 => write!(f, "{}/{}min", self.count, s / 60),
            s => write!(f, "{}/{s}s", self.count),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (count, period) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not COUNT/PERIOD, e.g. 100/s or 20/min"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{count}` is not a count of calls"))?;
        if count == 0 {
            return Err("a rate of 0 would refuse every call; use `off` to disable a limit".into());
        }
        let period = period.trim();
        let unit_at = period
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{period}` has no unit (s, min or h)"))?;
        let (number, unit) = period.split_at(unit_at);
        let number: u64 = if number.is_empty() {
            1
        } else {
            number
                .parse()
                .map_err(|_| format!("`{number}` is not a number"))?
        };
        let unit_secs = match unit {
            "s" => 1,
            "min" => 60,
            "h" => 3600,
            other => return Err(format!("unknown unit `{other}`; use s, min or h")),
        };
        if number == 0 {
            return Err("the period must be longer than 0".into());
        }
        Ok(Rate {
            count,
            per: Duration::from_secs(number.saturating_mul(unit_secs)),
        })
    }
}

/// Which bucket of a class a setting changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Per account (session callers) or per federation peer.
    Account,
    /// Per source address (IPv6 by /64).
    Address,
    /// Per sender→recipient pair (the `enqueue` class only).
    Pair,
}

/// One `--rate-limit` value: `CLASS[.SCOPE]=COUNT/PERIOD` or `CLASS[.SCOPE]=off`; `all=off`
/// turns every limit off. Without a scope the rate applies to every bucket of the class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitSetting {
    /// The rate class of methods.toml, or `all`.
    pub class: String,
    /// The bucket changed; `None` for all of the class's buckets.
    pub scope: Option<Scope>,
    /// The new rate; `None` turns the limit off.
    pub rate: Option<Rate>,
}

impl FromStr for RateLimitSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, value) = text.split_once('=').ok_or_else(|| {
            format!("`{text}` is not CLASS=COUNT/PERIOD (e.g. enqueue.account=100/s) or CLASS=off")
        })?;
        let (class, scope) = match name.trim().split_once('.') {
            None => (name.trim(), None),
            Some((class, "account")) => (class, Some(Scope::Account)),
            Some((class, "address")) => (class, Some(Scope::Address)),
            Some((class, "pair")) => (class, Some(Scope::Pair)),
            Some((_, other)) => {
                return Err(format!(
                    "unknown scope `{other}`; use account, address or pair"
                ));
            }
        };
        let known: Vec<&str> = DEFAULTS.iter().map(|d| d.class).collect();
        if class != "all" && !known.contains(&class) {
            return Err(format!(
                "unknown rate class `{class}`; the classes are {} (or `all`)",
                known.join(", ")
            ));
        }
        if scope == Some(Scope::Pair) && class != ENQUEUE_PAIR {
            return Err(format!(
                "only the `{ENQUEUE_PAIR}` class has a per-pair limit"
            ));
        }
        let value = value.trim();
        let rate = if value == "off" {
            None
        } else {
            Some(value.parse()?)
        };
        if class == "all" && rate.is_some() {
            return Err("`all` can only be turned off (all=off)".into());
        }
        Ok(Self {
            class: class.to_owned(),
            scope,
            rate,
        })
    }
}

impl fmt::Display for RateLimitSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.class)?;
        match self.scope {
            None => {}
            Some(Scope::Account) => f.write_str(".account")?,
            Some(Scope::Address) => f.write_str(".address")?,
            Some(Scope::Pair) => f.write_str(".pair")?,
        }
        match self.rate {
            None => f.write_str("=off"),
            Some(rate) => write!(f, "={rate}"),
        }
    }
}

/// The default limits of one rate class.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClassDefault {
    /// The class name in methods.toml.
    pub(crate) class: &'static str,
    /// Per account (or federation peer); `None` for classes of anonymous methods.
    pub(crate) account: Option<Rate>,
    /// Per source address.
    pub(crate) address: Option<Rate>,
    /// Per sender→recipient pair (enqueue only).
    pub(crate) pair: Option<Rate>,
}

/// The default limits, by class (documented in docs/running.md).
pub(crate) const DEFAULTS: &[ClassDefault] = &[
    // Registration: 2 calls each; 30 accounts per hour per address.
    ClassDefault {
        class: "register",
        account: None,
        address: Some(Rate::new(60, 3600)),
        pair: None,
    },
    // Logins: 2 calls each. Failed logins also have their own, stricter limiter.
    ClassDefault {
        class: "login",
        account: None,
        address: Some(Rate::new(120, 60)),
        pair: None,
    },
    ClassDefault {
        class: "enqueue",
        account: Some(Rate::new(1_000, 5)),
        address: Some(Rate::new(10_000, 5)),
        pair: Some(Rate::new(1_000, 10)),
    },
    ClassDefault {
        class: "key_package_fetch",
        account: Some(Rate::new(120, 60)),
        address: Some(Rate::new(1_200, 60)),
        pair: None,
    },
    ClassDefault {
        class: "key_fetch",
        account: Some(Rate::new(600, 60)),
        address: Some(Rate::new(6_000, 60)),
        pair: None,
    },
    ClassDefault {
        class: "resolve",
        account: Some(Rate::new(600, 60)),
        address: Some(Rate::new(6_000, 60)),
        pair: None,
    },
    ClassDefault {
        class: "channel_create",
        account: Some(Rate::new(100, 3600)),
        address: Some(Rate::new(1_000, 3600)),
        pair: None,
    },
    ClassDefault {
        class: "report",
        account: Some(Rate::new(60, 3600)),
        address: Some(Rate::new(600, 3600)),
        pair: None,
    },
    ClassDefault {
        class: "blob",
        account: Some(Rate::new(1_000, 10)),
        address: Some(Rate::new(10_000, 10)),
        pair: None,
    },
    ClassDefault {
        class: "relay",
        account: Some(Rate::new(20_000, 10)),
        address: Some(Rate::new(20_000, 10)),
        pair: None,
    },
];

/// The buckets of one class and scope, with the configured rate (for messages).
#[derive(Debug)]
struct Scoped<K> {
    rate: Rate,
    buckets: Mutex<KeyedBuckets<K>>,
}

impl<K: Hash + Eq> Scoped<K> {
    fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(
                KeyedBuckets::new(rate.bucket(), MAX_TRACKED).sweep_idle_every(IDLE_SWEEP),
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyedBuckets<K>> {
        // Nothing panics while a bucket map is locked; if something did, the numbers in it
        // are still usable.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Charges `key`; a key the full map cannot track is let through (the call's other buckets
/// still limit it) and logged.
fn charge<K: Hash + Eq + Clone>(buckets: &mut KeyedBuckets<K>, key: &K, now: Instant) {
    if buckets.take(key, now) == Take::Untracked {
        tracing::warn!(
            max = MAX_TRACKED,
            "rate limiter full; a new key is not tracked"
        );
    }
}

/// Who a bucket belongs to in the account scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Caller {
    Identity(Bytes),
    Peer(String),
}

#[derive(Debug)]
struct Class {
    name: &'static str,
    account: Option<Scoped<Caller>>,
    address: Option<Scoped<IpAddr>>,
}

/// Rounds a wait up to whole milliseconds (at least 1), so a client retrying on time is let
/// through.
fn retry_ms(wait: Duration) -> u32 {
    u32::try_from(wait.as_millis())
        .unwrap_or(u32::MAX)
        .saturating_add(1)
}

/// The limits in effect: [`DEFAULTS`] with the `--rate-limit` settings applied in order.
fn effective(settings: &[RateLimitSetting]) -> Vec<ClassDefault> {
    let mut classes = DEFAULTS.to_vec();
    for setting in settings {
        for class in &mut classes {
            if setting.class != "all" && setting.class != class.class {
                continue;
            }
            let all = setting.scope.is_none();
            if all || setting.scope == Some(Scope::Account) {
                class.account = setting.rate.filter(|_| class.account.is_some() || !all);
            }
            if all || setting.scope == Some(Scope::Address) {
                class.address = setting.rate;
            }
            if (all && class.class == ENQUEUE_PAIR) || setting.scope == Some(Scope::Pair) {
                class.pair = setting.rate;
            }
        }
    }
    classes
}

/// The rate limiter of the server: one map of buckets per class and scope.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    classes: Vec<Class>,
    pair: Option<Scoped<(IdentityKey, IdentityKey)>>,
    clock: Clock,
}

impl RateLimiter {
    /// The default limits changed by `settings` (the `--rate-limit` values).
    pub(crate) fn new(settings: &[RateLimitSetting], clock: Clock) -> Self {
        let effective = effective(settings);
        let pair = effective
            .iter()
            .find(|c| c.class == ENQUEUE_PAIR)
            .and_then(|c| c.pair)
            .map(Scoped::new);
        let classes = effective
            .into_iter()
            .map(|c| Class {
                name: c.class,
                account: c.account.map(Scoped::new),
                address: c.address.map(Scoped::new),
            })
            .collect();
        Self {
            classes,
            pair,
            clock,
        }
    }

    /// Takes a token for the call's rate class from the caller's and the address's buckets,
    /// or answers RateLimited with the wait until both have one.
    pub(crate) fn check(&self, call: &CallInfo, principal: Principal<'_>) -> Result<(), Status> {
        let Some(name) = call.method().rate_class else {
            return Ok(());
        };
        let Some(class) = self.classes.iter().find(|c| c.name == name) else {
            return Ok(());
        };
        let caller = match principal {
            Principal::Session(session) => Some(Caller::Identity(session.identity_key.clone())),
            Principal::Peer(peer) => Some(Caller::Peer(peer.domain.clone())),
            _ => None,
        };
        let address = address_key(call.peer_addr().ip());
        let now = self.clock.now();
        let account = class.account.as_ref().filter(|_| caller.is_some());
        let mut accounts = account.map(Scoped::lock);
        let mut addresses = class.address.as_ref().map(Scoped::lock);
        let account_wait = match (&accounts, &caller) {
            (Some(buckets), Some(caller)) => buckets.wait(caller, now),
            _ => Duration::ZERO,
        };
        let address_wait = addresses
            .as_ref()
            .map_or(Duration::ZERO, |b| b.wait(&address, now));
        if account_wait.is_zero() && address_wait.is_zero() {
            if let (Some(buckets), Some(caller)) = (accounts.as_mut(), &caller) {
                charge(buckets, caller, now);
            }
            if let Some(buckets) = addresses.as_mut() {
                charge(buckets, &address, now);
            }
            return Ok(());
        }
        let (scope, rate, wait) = if account_wait >= address_wait {
            ("this account", account.map(|s| s.rate), account_wait)
        } else {
            (
                "this address",
                class.address.as_ref().map(|s| s.rate),
                address_wait,
            )
        };
        let ms = retry_ms(wait);
        let rate = rate.map(|r| r.to_string()).unwrap_or_default();
        Err(Status::rate_limited(
            format!(
                "too many `{name}` calls ({} ({})) from {scope}: the limit is {rate}",
                call.method().name,
                call.method().id,
            ),
            ms,
        ))
    }

    /// Takes one token per item from each sender→recipient pair of an Enqueue or
    /// BatchEnqueue, or answers RateLimited when any pair lacks tokens (taking none).
    pub(crate) fn check_pairs(
        &self,
        sender: &IdentityKey,
        recipients: &[IdentityKey],
    ) -> Result<(), Status> {
        let Some(pairs) = &self.pair else {
            return Ok(());
        };
        let now = self.clock.now();
        let mut buckets = pairs.lock();
        // Items to the same recipient share a bucket: count them together.
        let mut wanted: HashMap<&IdentityKey, u32> = HashMap::new();
        for recipient in recipients {
            *wanted.entry(recipient).or_default() += 1;
        }
        let rate = pairs.rate;
        let longest = wanted
            .iter()
            .map(|(recipient, count)| buckets.wait_for(&(*sender, **recipient), *count, now))
            .max()
            .unwrap_or_default();
        if !longest.is_zero() {
            let ms = retry_ms(longest);
            return Err(Status::rate_limited(
                format!(
                    "too many messages from this account to one recipient: the limit is {rate} per sender and recipient"
                ),
                ms,
            ));
        }
        for (recipient, count) in wanted {
            for _ in 0..count {
                charge(&mut buckets, &(*sender, *recipient), now);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_settings_parse_and_print() {
        let rate: Rate = "100/s".parse().unwrap();
        assert_eq!(rate, Rate::new(100, 1));
        assert_eq!("20/min".parse::<Rate>().unwrap(), Rate::new(20, 60));
        assert_eq!("1000/5s".parse::<Rate>().unwrap(), Rate::new(1000, 5));
        assert_eq!("3/2h".parse::<Rate>().unwrap(), Rate::new(3, 7200));
        assert_eq!(Rate::new(1000, 5).to_string(), "1000/5s");
        assert_eq!(Rate::new(60, 3600).to_string(), "60/h");
        for bad in ["100", "0/s", "5/0s", "5/day", "x/s", "5/"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        let setting: RateLimitSetting = "enqueue.pair=10/s".parse().unwrap();
        assert_eq!(setting.to_string(), "enqueue.pair=10/s");
        let setting: RateLimitSetting = "login=off".parse().unwrap();
        assert_eq!((setting.scope, setting.rate), (None, None));
        assert!("all=off".parse::<RateLimitSetting>().is_ok());
        for bad in [
            "nosuch=1/s",
            "all=5/s",
            "login.pair=1/s",
            "login.device=1/s",
            "login",
        ] {
            let error = bad.parse::<RateLimitSetting>().unwrap_err();
            assert!(!error.is_empty(), "{bad}");
        }
    }

    #[test]
    fn every_rate_class_of_the_schema_has_defaults() {
        for method in qpq_schema::METHODS.iter() {
            if let Some(class) = method.rate_class {
                assert!(
                    DEFAULTS.iter().any(|d| d.class == class),
                    "rate class `{class}` of {} has no default limits in limits/classes.rs",
                    method.name
                );
            }
        }
    }

    #[test]
    fn settings_override_defaults_in_order() {
        let settings: Vec<RateLimitSetting> = ["all=off", "enqueue.account=5/s"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let classes = effective(&settings);
        let enqueue = classes.iter().find(|c| c.class == "enqueue").unwrap();
        assert_eq!(enqueue.account, Some(Rate::new(5, 1)));
        assert_eq!((enqueue.address, enqueue.pair), (None, None));
        assert!(
            classes
                .iter()
                .filter(|c| c.class != "enqueue")
                .all(|c| c.account.is_none() && c.address.is_none())
        );
        // A class-wide rate does not invent an account bucket for anonymous classes.
        let classes = effective(&["register=5/min".parse().unwrap()]);
        let register = classes.iter().find(|c| c.class == "register").unwrap();
        assert_eq!(
            (register.account, register.address),
            (None, Some(Rate::new(5, 60)))
        );
    }

    #[test]
    fn pairs_are_charged_per_item_and_refused_whole() {
        let limiter = RateLimiter::new(&["enqueue.pair=3/min".parse().unwrap()], Clock::system());
        let (alice, bob, carol) = ([1; 32], [2; 32], [3; 32]);
        limiter.check_pairs(&alice, &[bob, bob]).unwrap();
        // Two more to bob exceed the 3; nothing is taken, so carol's item alone still passes.
        let status = limiter.check_pairs(&alice, &[bob, bob, carol]).unwrap_err();
        assert!(status.retry_after_ms().unwrap() > 0, "{status}");
        limiter.check_pairs(&alice, &[bob, carol]).unwrap();
        assert!(limiter.check_pairs(&alice, &[bob]).is_err());
        // Another sender to bob has its own bucket.
        limiter.check_pairs(&carol, &[bob]).unwrap();
    }
}
