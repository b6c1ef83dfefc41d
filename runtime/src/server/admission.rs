//! Who may connect: the abuse [`PenaltyBox`] of addresses recently closed for abandoning
//! streams. (The connection limit and the unvalidated-handshake budget are judged in the
//! accept loop.)
//!
//! Pure bookkeeping: nothing here touches a socket or a connection.

use std::time::{Duration, Instant};

use super::ServerOptions;

/// Most addresses serving an abuse penalty at once; past it, a new one is not recorded.
const MAX_PENALIZED: usize = 10_000;

/// Per address: penalty end, connection tokens (at most one), when they were counted.
type Penalties = std::collections::HashMap<std::net::IpAddr, (Instant, f64, Instant)>;

/// Addresses recently closed for abuse, and how many new connections each may still open
/// (see [`ServerOptions::abuse_penalty`]).
pub(super) struct PenaltyBox {
    duration: Duration,
    per_sec: f64,
    entries: std::sync::Mutex<Penalties>,
}

/// IPv4 as is (IPv4-mapped IPv6 too), other IPv6 by its /64: one host usually owns one.
fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

impl PenaltyBox {
    pub(super) fn new(options: &ServerOptions) -> Self {
        Self {
            duration: options.abuse_penalty,
            per_sec: f64::from(options.abuse_penalty_connections_per_sec),
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub(super) fn entries(&self) -> std::sync::MutexGuard<'_, Penalties> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts (or restarts) the penalty of `ip`, with no connection token left.
    pub(super) fn punish(&self, ip: std::net::IpAddr) {
        self.punish_at(ip, Instant::now());
    }

    pub(super) fn punish_at(&self, ip: std::net::IpAddr, now: Instant) {
        if self.duration.is_zero() {
            return;
        }
        let key = address_key(ip);
        let mut entries = self.entries();
        if entries.len() >= MAX_PENALIZED && !entries.contains_key(&key) {
            entries.retain(|_, (until, _, _)| *until > now);
            if entries.len() >= MAX_PENALIZED {
                return;
            }
        }
        entries.insert(key, (now + self.duration, 0.0, now));
    }

    /// Whether a new connection from `ip` may be accepted now.
    pub(super) fn admit(&self, ip: std::net::IpAddr) -> bool {
        self.admit_at(ip, Instant::now())
    }

    pub(super) fn admit_at(&self, ip: std::net::IpAddr, now: Instant) -> bool {
        let mut entries = self.entries();
        if entries.is_empty() {
            return true;
        }
        let key = address_key(ip);
        let Some((until, tokens, at)) = entries.get_mut(&key) else {
            return true;
        };
        if *until <= now {
            entries.remove(&key);
            return true;
        }
        let refilled =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_sec).min(1.0);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            true
        } else {
            *tokens = refilled;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
