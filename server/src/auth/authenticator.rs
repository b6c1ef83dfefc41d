//! The [`Authenticator`]: turns the `session_token` of a request into the caller, before any
//! handler runs. Only the SHA-256 of a token is stored; an unknown, malformed or expired
//! token is Unauthorized, a valid non-admin on an admin method Forbidden.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use qpq_runtime::{Admin, Authenticator, CallInfo, FederationPeer, Principal, Session, Status};

use crate::auth::hash_token;
use crate::auth::tokens::SESSION_TOKEN_LEN;
use crate::live::Attached;
use crate::store::{SessionRecord, Store};
use crate::{Messenger, errors};

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn runtime_session(record: SessionRecord) -> Session {
    Session {
        username: record.username,
        identity_key: Bytes::copy_from_slice(&record.identity_key),
        device_id: record.device_id.map(Bytes::from),
        session_id: record.token_hash,
        login_at: time(record.login_at_ms),
        expires_at: time(record.expires_at_ms),
    }
}

/// The caller's identity key as the store's fixed-size type.
pub(crate) fn identity_of(session: &Session) -> Result<[u8; 32], Status> {
    session.identity_key[..]
        .try_into()
        .map_err(|_| Status::internal())
}

impl<S: Store> Messenger<S> {
    /// Looks a token up and, on success, ties the calling connection to the identity so it
    /// receives its pushes and closes when the session is revoked.
    async fn validate(&self, call: &CallInfo, token: &[u8]) -> Result<Session, Status> {
        if token.is_empty() {
            return Err(Status::unauthorized(
                "this method needs a session_token; log in with OpaqueLoginStart/OpaqueLoginFinish",
            ));
        }
        if token.len() != SESSION_TOKEN_LEN {
            return Err(Status::unauthorized(format!(
                "session_token must be the {SESSION_TOKEN_LEN} bytes OpaqueLoginFinish returned"
            )));
        }
        let record = self
            .store
            .session_by_token_hash(&hash_token(token))
            .await
            .map_err(errors::store)?
            .ok_or_else(|| {
                Status::unauthorized("session token is invalid, expired or revoked; log in again")
            })?;
        if let Some(device) = record.device_id.as_deref() {
            self.seen.touch(&record.identity_key, device, self.now_ms());
        }
        let identity = record.identity_key;
        let session_id = record.token_hash;
        let connection = call.connection();
        if let Attached::New = self.live.attach(identity, session_id, connection) {
            let connection = connection.clone();
            let live = Arc::clone(&self.live);
            tokio::spawn(async move {
                connection.closed().await;
                live.detach(&identity, connection.id());
            });
        }
        Ok(runtime_session(record))
    }
}

impl<S: Store> Authenticator for Messenger<S> {
    async fn session(&self, call: &CallInfo, token: &[u8]) -> Result<Session, Status> {
        self.validate(call, token).await
    }

    async fn admin(&self, call: &CallInfo, token: &[u8]) -> Result<Admin, Status> {
        let session = self.validate(call, token).await?;
        if self.config.admins.iter().any(|a| a == &session.username) {
            Ok(Admin { session })
        } else {
            Err(Status::forbidden(format!(
                "{} ({}) is for server administrators only",
                call.method().name,
                call.method().id
            )))
        }
    }

    async fn federation_peer(&self, call: &CallInfo) -> Result<FederationPeer, Status> {
        // The presented certificate must be pinned for a configured peer (`federation/`).
        self.federation_caller(call)
    }

    /// Token buckets per `rate_class`, per account and per address (`crate::limits`).
    fn rate_limit(&self, call: &CallInfo, principal: Principal<'_>) -> Result<(), Status> {
        self.rate_limits.check(call, principal)
    }
}
