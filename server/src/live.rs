//! What is happening right now, in memory: which connections are authenticated as which
//! identity (for pushes and for ending sessions), and who is parked in FetchWait.
//!
//! Nothing here is durable; the store is the source of truth. Losing this state (a restart)
//! only means clients reconnect and re-authenticate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use qpq_runtime::ConnectionInfo;
use qpq_runtime::limits::Clock;
use tokio::sync::{Notify, mpsc, watch};

use crate::store::IdentityKey;

/// Token hash: the id of a session.
pub(crate) type SessionId = [u8; 32];

#[derive(Default)]
struct State {
    /// Connections per identity, each with the session it authenticated with.
    connections: HashMap<IdentityKey, Vec<(SessionId, ConnectionInfo)>>,
    /// Revocation signals of sessions someone is waiting on (FetchWait).
    revocations: HashMap<SessionId, watch::Sender<bool>>,
    /// Wake-ups for FetchWait, per identity.
    waiters: HashMap<IdentityKey, Arc<Notify>>,
}

/// An identity's first connection came (`online`) or its last one went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PresenceChange {
    pub(crate) identity: IdentityKey,
    pub(crate) online: bool,
    pub(crate) at_ms: u64,
}

/// Presence changes buffered for the task that pushes them; beyond it they are dropped
/// (presence is a hint).
const PRESENCE_BUFFER: usize = 4096;

/// The live registry. Cheap to share; every method takes the lock briefly and never across
/// an `.await`.
pub(crate) struct Live {
    state: Mutex<State>,
    /// Sent under the state lock, so changes of one identity arrive in order.
    presence: mpsc::Sender<PresenceChange>,
    presence_events: Mutex<Option<mpsc::Receiver<PresenceChange>>>,
    /// Times presence changes.
    clock: Clock,
}

impl Live {
    /// An empty registry on `clock`.
    pub(crate) fn new(clock: Clock) -> Self {
        let (presence, events) = mpsc::channel(PRESENCE_BUFFER);
        Self {
            state: Mutex::default(),
            presence,
            presence_events: Mutex::new(Some(events)),
            clock,
        }
    }
}

impl Default for Live {
    fn default() -> Self {
        Self::new(Clock::system())
    }
}

/// What [`Live::attach`] did.
pub(crate) enum Attached {
    /// The connection was already attached for this identity.
    Known,
    /// First time: the caller should watch the connection and [`Live::detach`] it on close.
    New,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave it inconsistent (every update is a
        // single map operation), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stream of presence changes (the first call takes it; later calls get `None`).
    pub(crate) fn take_presence_events(&self) -> Option<mpsc::Receiver<PresenceChange>> {
        self.presence_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn presence_changed(&self, identity: IdentityKey, online: bool) {
        let change = PresenceChange {
            identity,
            online,
            at_ms: self.clock.unix_ms(),
        };
        let _ = self.presence.try_send(change);
    }

    /// Records that `connection` authenticated as `identity` with `session`.
    pub(crate) fn attach(
        &self,
        identity: IdentityKey,
        session: SessionId,
        connection: &ConnectionInfo,
    ) -> Attached {
        let mut state = self.lock();
        let list = state.connections.entry(identity).or_default();
        if list
            .iter()
            .any(|(s, c)| *s == session && c.id() == connection.id())
        {
            return Attached::Known;
        }
        let first_for_connection = !list.iter().any(|(_, c)| c.id() == connection.id());
        let first_for_identity = list.is_empty();
        list.push((session, connection.clone()));
        if first_for_identity {
            self.presence_changed(identity, true);
        }
        if first_for_connection {
            Attached::New
        } else {
            Attached::Known
        }
    }

    /// Forgets a closed connection.
    pub(crate) fn detach(&self, identity: &IdentityKey, connection_id: u64) {
        let mut state = self.lock();
        if let Some(list) = state.connections.get_mut(identity) {
            list.retain(|(_, c)| c.id() != connection_id);
            if list.is_empty() {
                state.connections.remove(identity);
                self.presence_changed(*identity, false);
            }
        }
    }

    /// The open connections of an identity (one per connection, whatever its sessions).
    pub(crate) fn connections_of(&self, identity: &IdentityKey) -> Vec<ConnectionInfo> {
        let state = self.lock();
        let mut out: Vec<ConnectionInfo> = Vec::new();
        for (_, connection) in state.connections.get(identity).into_iter().flatten() {
            if !out.iter().any(|c| c.id() == connection.id()) {
                out.push(connection.clone());
            }
        }
        out
    }

    /// Whether any connection is authenticated as `identity` now.
    pub(crate) fn is_online(&self, identity: &IdentityKey) -> bool {
        self.lock().connections.contains_key(identity)
    }

    /// Identities with at least one authenticated connection now.
    pub(crate) fn online_count(&self) -> usize {
        self.lock().connections.len()
    }

    /// Ends sessions now: signals their parked FetchWaits and closes the connections that
    /// authenticated with them, except `spare` (the connection asking for the revocation,
    /// which still needs its answer); that one only stops receiving pushes.
    pub(crate) fn revoke(
        &self,
        identity: &IdentityKey,
        sessions: &[SessionId],
        spare: Option<u64>,
        reason: &str,
    ) {
        let to_close: Vec<ConnectionInfo> = {
            let mut state = self.lock();
            for session in sessions {
                if let Some(signal) = state.revocations.remove(session) {
                    let _ = signal.send(true);
                }
            }
            let mut closing = Vec::new();
            if let Some(list) = state.connections.get_mut(identity) {
                list.retain(|(s, c)| {
                    if sessions.contains(s) {
                        if Some(c.id()) != spare {
                            closing.push(c.clone());
                        }
                        false
                    } else {
                        true
                    }
                });
                if list.is_empty() {
                    state.connections.remove(identity);
                    self.presence_changed(*identity, false);
                }
            }
            closing
        };
        for connection in to_close {
            connection.close(reason);
        }
    }

    /// A receiver that turns `true` when the session is revoked.
    pub(crate) fn revocation(&self, session: SessionId) -> watch::Receiver<bool> {
        let mut state = self.lock();
        state
            .revocations
            .entry(session)
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }

    /// Drops the revocation signal of a session nobody waits on any more.
    pub(crate) fn release_revocation(&self, session: &SessionId) {
        let mut state = self.lock();
        if let Some(signal) = state.revocations.get(session)
            && signal.receiver_count() == 0
        {
            state.revocations.remove(session);
        }
    }

    /// The wake-up of an identity's FetchWait callers.
    pub(crate) fn waiter(&self, identity: IdentityKey) -> Arc<Notify> {
        self.lock().waiters.entry(identity).or_default().clone()
    }

    /// Drops an identity's wake-up when nobody else holds it.
    pub(crate) fn release_waiter(&self, identity: &IdentityKey, notify: Arc<Notify>) {
        let mut state = self.lock();
        drop(notify);
        if state
            .waiters
            .get(identity)
            .is_some_and(|n| Arc::strong_count(n) == 1)
        {
            state.waiters.remove(identity);
        }
    }

    /// Wakes an identity's parked FetchWait callers.
    pub(crate) fn wake(&self, identity: &IdentityKey) {
        if let Some(notify) = self.lock().waiters.get(identity) {
            notify.notify_waiters();
        }
    }

    /// Number of parked-waiter entries (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn waiter_entries(&self) -> usize {
        self.lock().waiters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_and_are_released() {
        let live = Live::default();
        let alice = [1u8; 32];
        let first = live.waiter(alice);
        let second = live.waiter(alice);
        assert_eq!(live.waiter_entries(), 1);
        {
            let notified = first.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            live.wake(&alice);
            tokio::time::timeout(std::time::Duration::from_secs(1), notified)
                .await
                .expect("woken");
        }
        live.release_waiter(&alice, first);
        assert_eq!(live.waiter_entries(), 1, "still held by the second waiter");
        live.release_waiter(&alice, second);
        assert_eq!(live.waiter_entries(), 0);
    }

    #[tokio::test]
    async fn revocation_signals_subscribers() {
        let live = Live::default();
        let session = [2u8; 32];
        let mut revoked = live.revocation(session);
        live.revoke(&[3u8; 32], &[session], None, "test");
        tokio::time::timeout(std::time::Duration::from_secs(1), revoked.changed())
            .await
            .expect("signalled")
            .ok();
        assert!(*revoked.borrow());
    }
}
