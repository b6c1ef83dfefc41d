//! The instance bus: what one instance of a domain tells the others, so several instances
//! over one shared store act as one server.
//!
//! Two events cross instances, both published after the store committed what they announce:
//!
//! - a **wake-up** of an identity that has a new message (the other instances wake the
//!   identity's parked FetchWait calls and push the `NewMessageEvent` on its connections);
//! - a **revocation** of sessions (ban, device revocation, account deletion): the other
//!   instances end the parked calls of those sessions and close their connections.
//!
//! With `--bus local` (the default) nothing leaves the process: the handlers act on the
//! instance's own [`Live`] registry directly, and that is all there is. With `--bus nats://…`
//! ([`nats`]) events also go to every other instance through one NATS subject per domain.
//!
//! The bus is a hint, never the truth: an event can be lost (NATS down, a full buffer), so a
//! parked FetchWait re-reads its queue and its session every `--bus-recheck-ms` (≤ 5 s) when a
//! bus is configured. A lost wake-up delays a message; a lost revocation leaves a parked call
//! alive until its next re-check; the store refuses the session's next call at once either way.
//!
//! Anyone who can publish on the subject can wake or end sessions on every instance: the NATS
//! server must be private to the domain's instances (its own network, credentials in the URL).

pub(crate) mod nats;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use qpq_schema::{QpqPush, proto};

use crate::Messenger;
use crate::live::SessionId;
use crate::store::{IdentityKey, Store};

/// Version byte of every bus message (a newer instance may add kinds; an older one drops
/// messages it cannot read).
const VERSION: u8 = 1;
const KIND_WAKE: u8 = 1;
const KIND_REVOKE: u8 = 2;
/// Most sessions in one revocation message (a larger set goes as several).
pub(crate) const MAX_SESSIONS: usize = 1024;
/// Longest reason carried (cut at a character boundary).
const MAX_REASON: usize = 200;
/// Largest bus message read: a wake-up with a pushed payload (16 KiB) and its envelope.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// An event for the other instances.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Event {
    /// `identity` has a new message; `message` is the push event for its connections.
    Wake {
        identity: IdentityKey,
        message: proto::NewMessageEvent,
    },
    /// `sessions` of `identity` ended.
    Revoke {
        identity: IdentityKey,
        sessions: Vec<SessionId>,
        reason: String,
    },
}

/// Why a bus message was not read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("bus message of {0} bytes is larger than {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("bus message is truncated")]
    Truncated,
    #[error("bus message has version {0}; this instance reads version {VERSION}")]
    Version(u8),
    #[error("bus message has unknown kind {0}")]
    Kind(u8),
    #[error("bus message names {0} sessions; at most {MAX_SESSIONS}")]
    TooManySessions(usize),
    #[error("bus message has a malformed push event")]
    Event,
    #[error("bus message's reason is not UTF-8")]
    Reason,
}

impl Event {
    /// The wire form: version, kind, the 16-byte id of the sending instance, the identity,
    /// then for a wake-up the protobuf `NewMessageEvent`, for a revocation a u16 count, the
    /// 32-byte session ids and the UTF-8 reason.
    pub(crate) fn encode(&self, instance: &[u8; 16]) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(VERSION);
        match self {
            Event::Wake { identity, message } => {
                out.put_u8(KIND_WAKE);
                out.put_slice(instance);
                out.put_slice(identity);
                message.encode(&mut out).unwrap_or_default();
            }
            Event::Revoke {
                identity,
                sessions,
                reason,
            } => {
                out.put_u8(KIND_REVOKE);
                out.put_slice(instance);
                out.put_slice(identity);
                let sessions = &sessions[..sessions.len().min(MAX_SESSIONS)];
                out.put_u16(sessions.len() as u16);
                for s in sessions {
                    out.put_slice(s);
                }
                let mut end = reason.len().min(MAX_REASON);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                out.put_slice(&reason.as_bytes()[..end]);
            }
        }
        out.freeze()
    }

    /// Reads a bus message: the sending instance and the event.
    pub(crate) fn decode(bytes: &[u8]) -> Result<([u8; 16], Event), DecodeError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let kind = r.u8()?;
        let instance: [u8; 16] = r.array()?;
        let identity: IdentityKey = r.array()?;
        let event = match kind {
            KIND_WAKE => Event::Wake {
                identity,
                message: proto::NewMessageEvent::decode(r.0).map_err(|_| DecodeError::Event)?,
            },
            KIND_REVOKE => {
                let count = usize::from(u16::from_be_bytes(r.array()?));
                if count > MAX_SESSIONS {
                    return Err(DecodeError::TooManySessions(count));
                }
                let mut sessions = Vec::with_capacity(count);
                for _ in 0..count {
                    sessions.push(r.array()?);
                }
                let reason = std::str::from_utf8(r.0).map_err(|_| DecodeError::Reason)?;
                Event::Revoke {
                    identity,
                    sessions,
                    reason: reason.to_owned(),
                }
            }
            other => return Err(DecodeError::Kind(other)),
        };
        Ok((instance, event))
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let [b] = self.array()?;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }
}

/// Where a messenger sends its events: nowhere (one instance) or to NATS.
#[derive(Default)]
pub(crate) enum Bus {
    /// One instance: the handlers' direct action on [`crate::live::Live`] is everything.
    #[default]
    Local,
    /// Several instances: events are also published on NATS.
    Nats(nats::Publisher),
}

impl Bus {
    /// Hands `event` to the other instances. Never blocks and never fails the caller: the bus
    /// is a hint (see the module doc).
    pub(crate) fn publish(&self, event: Event) {
        match self {
            Bus::Local => {}
            Bus::Nats(publisher) => publisher.publish(event),
        }
    }

    /// Whether events cross instances (then parked waits also re-read the store).
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Bus::Nats(_))
    }
}

impl<S: Store> Messenger<S> {
    /// Sends this messenger's events to the other instances through `bus`.
    pub(crate) fn with_bus(mut self, bus: Bus) -> Self {
        self.bus = bus;
        self
    }

    /// Ends `sessions` of `identity` here (parked calls, connections but `spare`) and on
    /// every other instance. Call after the store committed their end.
    pub(crate) fn end_sessions(
        &self,
        identity: &IdentityKey,
        sessions: &[SessionId],
        spare: Option<u64>,
        reason: &str,
    ) {
        self.live.revoke(identity, sessions, spare, reason);
        if self.bus.is_shared() {
            for chunk in sessions.chunks(MAX_SESSIONS) {
                self.bus.publish(Event::Revoke {
                    identity: *identity,
                    sessions: chunk.to_vec(),
                    reason: reason.to_owned(),
                });
            }
        }
    }

    /// Acts on another instance's event as if it had happened here.
    pub(crate) fn apply_remote(&self, event: Event) {
        match event {
            Event::Wake { identity, message } => {
                self.live.wake(&identity);
                for connection in self.live.connections_of(&identity) {
                    // A full push buffer only loses the hint; the queue has the message.
                    let _ = connection.push().push_new_message(&message);
                }
            }
            Event::Revoke {
                identity,
                sessions,
                reason,
            } => self.live.revoke(&identity, &sessions, None, &reason),
        }
    }

    /// How often a parked wait re-reads the store when a bus is shared.
    pub(crate) fn recheck_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.bus_recheck_ms.clamp(100, 5000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wake() -> Event {
        Event::Wake {
            identity: [7; 32],
            message: proto::NewMessageEvent {
                seq: 42,
                sender_identity_key: Bytes::from_static(&[1; 32]),
                sender: "alice".into(),
                payload_len: 3,
                payload: Bytes::from_static(b"abc"),
                enqueued_at_unix_ms: 9,
                ..Default::default()
            },
        }
    }

    #[test]
    fn events_round_trip() {
        let revoke = Event::Revoke {
            identity: [3; 32],
            sessions: vec![[1; 32], [2; 32]],
            reason: "banned from this server".into(),
        };
        for event in [wake(), revoke] {
            let bytes = event.encode(&[9; 16]);
            assert_eq!(Event::decode(&bytes), Ok(([9; 16], event)));
        }
    }

    #[test]
    fn long_reasons_and_session_lists_are_cut_not_refused() {
        let event = Event::Revoke {
            identity: [3; 32],
            sessions: vec![[1; 32]; MAX_SESSIONS + 5],
            reason: "é".repeat(MAX_REASON),
        };
        let (
            _,
            Event::Revoke {
                sessions, reason, ..
            },
        ) = Event::decode(&event.encode(&[0; 16])).unwrap()
        else {
            panic!("a revocation");
        };
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(reason.len() <= MAX_REASON && reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn malformed_messages_are_refused_without_panicking() {
        let good = wake().encode(&[0; 16]);
        // Every truncation of a revocation, and of the wake-up's fixed head.
        let revoke = Event::Revoke {
            identity: [3; 32],
            sessions: vec![[1; 32]; 3],
            reason: String::new(),
        }
        .encode(&[0; 16]);
        for n in 0..revoke.len() {
            assert!(Event::decode(&revoke[..n]).is_err(), "{n} bytes");
        }
        for n in 0..50 {
            assert_eq!(Event::decode(&good[..n]), Err(DecodeError::Truncated));
        }
        let mut v = good.to_vec();
        v[0] = 2;
        assert_eq!(Event::decode(&v), Err(DecodeError::Version(2)));
        v[0] = VERSION;
        v[1] = 9;
        assert_eq!(Event::decode(&v), Err(DecodeError::Kind(9)));
        let mut v = revoke.to_vec();
        v[50..52].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            Event::decode(&v),
            Err(DecodeError::TooManySessions(u16::MAX.into()))
        );
        let mut v = good.to_vec();
        v.extend_from_slice(&[0xff; 3]);
        assert_eq!(Event::decode(&v), Err(DecodeError::Event));
        assert_eq!(
            Event::decode(&vec![VERSION; MAX_MESSAGE + 1]),
            Err(DecodeError::TooLarge(MAX_MESSAGE + 1))
        );
    }
}
