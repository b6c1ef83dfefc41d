//! Who may connect, and who may keep a connection: the decisions the accept loop and the
//! streams of a connection take before any call runs.
//!
//! - [`Admission`]: per connection attempt, in order: the connection limit
//!   ([`ServerOptions::max_connections`]), the abuse [`PenaltyBox`], then, for clients that
//!   have not proven their address, the unvalidated-handshake budget
//!   ([`ServerOptions::unvalidated_handshakes_per_sec`]) and the pending-handshake threshold:
//!   accept, ask for a stateless retry, or refuse.
//! - [`AbandonBudget`]: per connection, the streams it may abandon before their request
//!   header ([`ServerOptions::abandoned_streams_burst`]) before it is closed for abuse.
//! - [`PenaltyBox`]: addresses (IPv6 by /64) recently closed for abuse, and the few
//!   connections each may open meanwhile ([`ServerOptions::abuse_penalty`]).
//!
//! Pure decisions on the rate arithmetic of [`crate::limits`]: nothing here touches a socket
//! or a connection, and time is passed in, so the tests below use injected instants. Acting
//! on a verdict (refusing, retrying, closing) is the caller's (`mod.rs`, `stream.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::ServerOptions;
use crate::limits::{Rate, TokenBucket, address_key};

/// How far into debt the unvalidated-handshake budget may run under a flood: every Initial
/// from an unproven address counts, so a flood keeps the budget dry until it stops.
const UNVALIDATED_DEBT: Duration = Duration::from_secs(10);

/// Most addresses serving an abuse penalty at once; past it, a new one is not recorded.
const MAX_PENALIZED: usize = 10_000;

/// What the accept loop does with a connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Handshake now.
    Accept,
    /// Have the client prove its address first (a stateless retry).
    Retry,
    /// Refuse: the server holds [`ServerOptions::max_connections`] already.
    RefuseFull,
    /// Refuse: the address serves an abuse penalty and has used its connections for now.
    RefusePenalized,
}

/// The accept loop's admission policy (owned by the loop: no lock).
pub(super) struct Admission {
    max_connections: usize,
    retry_above_pending: usize,
    /// New clients from unproven addresses, retried or not.
    unvalidated: TokenBucket,
    penalties: Arc<PenaltyBox>,
}

impl Admission {
    pub(super) fn new(options: &ServerOptions, penalties: Arc<PenaltyBox>, now: Instant) -> Self {
        let rate =
            Rate::per_second(options.unvalidated_handshakes_per_sec).with_debt(UNVALIDATED_DEBT);
        Self {
            max_connections: options.max_connections,
            retry_above_pending: options.retry_above_pending_handshakes,
            unvalidated: TokenBucket::full(rate, now),
            penalties,
        }
    }

    /// Judges a connection attempt from `ip`; `validated` when the client has proven its
    /// address (it answered a retry), with `open` connections and `pending` handshakes now.
    pub(super) fn judge(
        &mut self,
        ip: IpAddr,
        validated: bool,
        open: usize,
        pending: usize,
        now: Instant,
    ) -> Verdict {
        if open >= self.max_connections {
            return Verdict::RefuseFull;
        }
        if !self.penalties.admit_at(ip, now) {
            return Verdict::RefusePenalized;
        }
        if validated {
            return Verdict::Accept;
        }
        let within_budget = self.unvalidated.take(now);
        if !within_budget || pending >= self.retry_above_pending {
            Verdict::Retry
        } else {
            Verdict::Accept
        }
    }
}

/// The streams one connection may abandon before their request header (opened and reset,
/// finished early, or silent past the header timeout): a token bucket of
/// [`ServerOptions::abandoned_streams_burst`] refilled at
/// [`ServerOptions::abandoned_streams_per_sec`], charged for every abandoned stream.
pub(super) struct AbandonBudget {
    bucket: Mutex<TokenBucket>,
    /// Set once the budget ran dry (the connection is closed once).
    exhausted: AtomicBool,
}

impl AbandonBudget {
    pub(super) fn new(options: &ServerOptions, now: Instant) -> Self {
        let rate = Rate::new(
            options.abandoned_streams_burst.max(1),
            f64::from(options.abandoned_streams_per_sec),
        );
        Self {
            bucket: Mutex::new(TokenBucket::full(rate, now)),
            exhausted: AtomicBool::new(false),
        }
    }

    /// Counts one abandoned stream. True exactly once: the first time the budget is dry,
    /// when the connection must be closed.
    pub(super) fn abandoned(&self, now: Instant) -> bool {
        let within = lock(&self.bucket).take(now);
        !within && !self.exhausted.swap(true, Ordering::Relaxed)
    }
}

/// One address serving a penalty.
#[derive(Clone, Copy, Debug)]
pub(super) struct Penalty {
    until: Instant,
    /// New connections it may open: one at most, refilled at the penalty rate.
    connections: TokenBucket,
}

/// Addresses recently closed for abuse, and how many new connections each may still open
/// (see [`ServerOptions::abuse_penalty`]).
pub(super) struct PenaltyBox {
    duration: Duration,
    rate: Rate,
    entries: Mutex<HashMap<IpAddr, Penalty>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these are locked; if something did, the numbers are still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PenaltyBox {
    pub(super) fn new(options: &ServerOptions) -> Self {
        Self {
            duration: options.abuse_penalty,
            rate: Rate::new(1, f64::from(options.abuse_penalty_connections_per_sec)),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn entries(&self) -> MutexGuard<'_, HashMap<IpAddr, Penalty>> {
        lock(&self.entries)
    }

    /// Starts (or restarts) the penalty of `ip`, with no connection token left.
    pub(super) fn punish(&self, ip: IpAddr) {
        self.punish_at(ip, Instant::now());
    }

    pub(super) fn punish_at(&self, ip: IpAddr, now: Instant) {
        if self.duration.is_zero() {
            return;
        }
        let key = address_key(ip);
        let mut entries = self.entries();
        if entries.len() >= MAX_PENALIZED && !entries.contains_key(&key) {
            entries.retain(|_, penalty| penalty.until > now);
            if entries.len() >= MAX_PENALIZED {
                return;
            }
        }
        let penalty = Penalty {
            until: now + self.duration,
            connections: TokenBucket::empty(self.rate, now),
        };
        entries.insert(key, penalty);
    }

    /// Whether a new connection from `ip` may be accepted at `now`.
    pub(super) fn admit_at(&self, ip: IpAddr, now: Instant) -> bool {
        let mut entries = self.entries();
        if entries.is_empty() {
            return true;
        }
        let key = address_key(ip);
        let Some(penalty) = entries.get_mut(&key) else {
            return true;
        };
        if penalty.until <= now {
            entries.remove(&key);
            return true;
        }
        penalty.connections.try_take(now).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn an_abusive_address_gets_few_connections_until_its_penalty_ends() {
        let options = ServerOptions {
            abuse_penalty: Duration::from_secs(30),
            abuse_penalty_connections_per_sec: 2,
            ..ServerOptions::default()
        };
        let penalties = PenaltyBox::new(&options);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let abuser: std::net::IpAddr = "2001:db8:1:2::7".parse().unwrap();
        let neighbour: std::net::IpAddr = "2001:db8:1:2::8".parse().unwrap();
        let other: std::net::IpAddr = "2001:db8:1:3::7".parse().unwrap();
        assert!(penalties.admit_at(abuser, t0));
        penalties.punish_at(abuser, t0);
        // No token right after; the same /64 shares the penalty; another /64 does not.
        assert!(!penalties.admit_at(abuser, at(100)));
        assert!(!penalties.admit_at(neighbour, at(200)));
        assert!(penalties.admit_at(other, at(200)));
        // 2 a second: one connection each half second, no more.
        assert!(penalties.admit_at(abuser, at(700)));
        assert!(!penalties.admit_at(abuser, at(800)));
        assert!(penalties.admit_at(abuser, at(1_300)));
        // After the penalty, all are admitted and the entry is gone.
        for _ in 0..10 {
            assert!(penalties.admit_at(abuser, at(30_001)));
        }
        assert!(penalties.entries().is_empty());
    }

    fn admission(options: &ServerOptions, t0: Instant) -> Admission {
        Admission::new(options, Arc::new(PenaltyBox::new(options)), t0)
    }

    #[test]
    fn unproven_clients_past_the_budget_are_retried_until_the_flood_stops() {
        let options = ServerOptions {
            unvalidated_handshakes_per_sec: 4,
            ..ServerOptions::default()
        };
        let t0 = Instant::now();
        let mut admission = admission(&options, t0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..6)
            .map(|_| admission.judge(ip, false, 0, 0, t0))
            .collect();
        assert_eq!(verdicts[..4], [Verdict::Accept; 4]);
        assert_eq!(verdicts[4..], [Verdict::Retry; 2]);
        // Proven clients are neither retried nor charged.
        assert_eq!(admission.judge(ip, true, 0, 0, t0), Verdict::Accept);
        // A flood of 1000 Initials at once runs the budget 10 s (40 tokens) into debt ...
        for _ in 0..1_000 {
            assert_eq!(admission.judge(ip, false, 0, 0, t0), Verdict::Retry);
        }
        // ... so 10 s later it is still dry, and a flood that goes on keeps it so.
        assert_eq!(
            admission.judge(ip, false, 0, 0, t0 + ms(10_000)),
            Verdict::Retry
        );
        // Once it has stopped for long enough, clients handshake without a retry again.
        assert_eq!(
            admission.judge(ip, false, 0, 0, t0 + ms(10_600)),
            Verdict::Accept
        );
    }

    #[test]
    fn many_pending_handshakes_or_a_full_server_stop_new_clients() {
        let options = ServerOptions {
            max_connections: 10,
            retry_above_pending_handshakes: 3,
            ..ServerOptions::default()
        };
        let t0 = Instant::now();
        let mut admission = admission(&options, t0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(admission.judge(ip, false, 0, 2, t0), Verdict::Accept);
        assert_eq!(admission.judge(ip, false, 0, 3, t0), Verdict::Retry);
        assert_eq!(admission.judge(ip, true, 0, 3, t0), Verdict::Accept);
        assert_eq!(admission.judge(ip, true, 10, 0, t0), Verdict::RefuseFull);
        admission.penalties.punish_at(ip, t0);
        assert_eq!(
            admission.judge(ip, true, 0, 0, t0),
            Verdict::RefusePenalized
        );
    }

    #[test]
    fn a_connection_is_closed_once_when_it_abandons_its_budget() {
        let options = ServerOptions {
            abandoned_streams_burst: 3,
            abandoned_streams_per_sec: 1,
            ..ServerOptions::default()
        };
        let t0 = Instant::now();
        let budget = AbandonBudget::new(&options, t0);
        assert!(!budget.abandoned(t0) && !budget.abandoned(t0) && !budget.abandoned(t0));
        assert!(budget.abandoned(t0 + ms(500)), "dry: close");
        assert!(!budget.abandoned(t0 + ms(600)), "closed already");
    }
}
