//! Auth (100-103): registration and login with OPAQUE.
//!
//! The OPAQUE exchange itself is `crate::auth` (the only module that names opaque-ke); here
//! are the wire checks (username syntax, identity key), the failed-login limiter's flow
//! (see `crate::auth`'s module doc) and the session a successful login stores (only its
//! token's SHA-256).

use crate::auth::{LoginId, new_session_token};
use crate::store::{Account, SessionRecord, Store, StoreError};
use crate::{Messenger, errors};
use bytes::Bytes;
use qpq_runtime::{Anonymous, Ctx, Status};
use qpq_schema::{AuthService, proto};

/// Longest username, in bytes.
pub(crate) const MAX_USERNAME: usize = 64;

/// Usernames: 1-64 of `a-z 0-9 . _ -`, starting with a letter or digit. `@` separates a name
/// from its server's domain, so it can never be part of a local name.
pub(crate) fn check_username(username: &str) -> Result<(), Status> {
    let valid = !username.is_empty()
        && username.len() <= MAX_USERNAME
        && username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && username
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(Status::bad_request(format!(
            "username `{}` is not valid: use 1 to {MAX_USERNAME} characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            username.chars().take(80).collect::<String>()
        )))
    }
}

/// An Ed25519 public key: 32 bytes that decode to a curve point.
pub(crate) fn check_identity_key(key: &[u8]) -> Result<[u8; 32], Status> {
    let bytes: [u8; 32] = key.try_into().map_err(|_| {
        Status::bad_request(format!(
            "identity_key must be a 32-byte Ed25519 public key, got {} bytes",
            key.len()
        ))
    })?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| Status::bad_request("identity_key is not a valid Ed25519 public key"))?;
    if key.is_weak() {
        return Err(Status::bad_request(
            "identity_key is a weak (small-order) Ed25519 key; generate a proper key pair",
        ));
    }
    Ok(bytes)
}

fn taken(username: &str) -> Status {
    Status::conflict(format!(
        "username `{username}` is already taken; choose another"
    ))
}

impl<S: Store> AuthService for Messenger<S> {
    async fn opaque_register_start(
        &self,
        _ctx: Ctx<Anonymous>,
        request: proto::OpaqueRegisterStartRequest,
    ) -> Result<proto::OpaqueRegisterStartResponse, Status> {
        check_username(&request.username)?;
        // Registration necessarily reveals whether a name is free; saying so early spares the
        // client an Argon2 run for nothing.
        if self
            .store
            .account_by_username(&request.username)
            .await
            .map_err(errors::store)?
            .is_some()
        {
            return Err(taken(&request.username));
        }
        let response = self
            .opaque
            .register_start(&request.username, &request.registration_request)
            .map_err(errors::auth)?;
        Ok(proto::OpaqueRegisterStartResponse {
            registration_response: Bytes::from(response),
        })
    }

    async fn opaque_register_finish(
        &self,
        _ctx: Ctx<Anonymous>,
        request: proto::OpaqueRegisterFinishRequest,
    ) -> Result<proto::OpaqueRegisterFinishResponse, Status> {
        check_username(&request.username)?;
        let identity_key = check_identity_key(&request.identity_key)?;
        let password_file = self
            .opaque
            .register_finish(&request.registration_upload)
            .map_err(errors::auth)?;
        let account = Account {
            username: request.username.clone(),
            identity_key,
            password_file,
            created_at_ms: self.now_ms(),
        };
        match self.store.create_account(account).await {
            Ok(()) => {
                tracing::info!(username = %request.username, "account registered");
                Ok(proto::OpaqueRegisterFinishResponse {})
            }
            Err(StoreError::UsernameTaken) => Err(taken(&request.username)),
            Err(StoreError::IdentityTaken) => Err(Status::conflict(
                "this identity key is already registered to another account; generate a new identity key",
            )),
            Err(other) => Err(errors::store(other)),
        }
    }

    async fn opaque_login_start(
        &self,
        ctx: Ctx<Anonymous>,
        request: proto::OpaqueLoginStartRequest,
    ) -> Result<proto::OpaqueLoginStartResponse, Status> {
        let ip = ctx.peer_addr().ip();
        if let Err(retry) = self.limiter.check(&request.username, ip) {
            let ms = u32::try_from(retry.0.as_millis())
                .unwrap_or(u32::MAX)
                .max(1);
            return Err(Status::rate_limited(
                "too many login attempts for this username or from this address; wait and retry",
                ms,
            ));
        }
        // Charged now: a client that finds the password wrong knows it locally and never
        // sends LoginFinish. A successful finish refunds it.
        self.limiter.record_failure(&request.username, ip);
        // Unknown (or even invalid) usernames get the same fake answer as real ones.
        let account = if check_username(&request.username).is_ok() {
            self.store
                .account_by_username(&request.username)
                .await
                .map_err(errors::store)?
        } else {
            None
        };
        let (login_id, response) = self
            .opaque
            .login_start(
                &request.username,
                account.as_ref().map(|a| a.password_file.as_slice()),
                &request.credential_request,
            )
            .map_err(errors::auth)?;
        Ok(proto::OpaqueLoginStartResponse {
            login_id: Bytes::copy_from_slice(login_id.as_bytes()),
            credential_response: Bytes::from(response),
        })
    }

    async fn opaque_login_finish(
        &self,
        ctx: Ctx<Anonymous>,
        request: proto::OpaqueLoginFinishRequest,
    ) -> Result<proto::OpaqueLoginFinishResponse, Status> {
        let login_id = LoginId::from_slice(&request.login_id).map_err(errors::auth)?;
        self.opaque
            .login_finish(
                &login_id,
                &request.username,
                &request.credential_finalization,
            )
            .map_err(errors::auth)?;
        let account = self
            .store
            .account_by_username(&request.username)
            .await
            .map_err(errors::store)?
            .ok_or_else(|| Status::unauthorized("login failed: the account no longer exists"))?;
        if !request.identity_key.is_empty() && request.identity_key[..] != account.identity_key {
            return Err(Status::unauthorized(
                "login failed: identity_key is not the key this account registered",
            ));
        }
        if let Some(ban) = self
            .store
            .server_ban(&account.identity_key)
            .await
            .map_err(errors::store)?
        {
            return Err(errors::banned(ban.expires_at_ms));
        }
        if request.device_id.len() > 64 {
            return Err(Status::bad_request("device_id must be at most 64 bytes"));
        }
        self.limiter
            .record_success(&request.username, ctx.peer_addr().ip());
        let (token, token_hash) = new_session_token();
        let now = self.now_ms();
        let expires_at_ms = now.saturating_add(self.session_ttl().as_millis() as u64);
        let record = SessionRecord {
            token_hash,
            username: account.username.clone(),
            identity_key: account.identity_key,
            device_id: (!request.device_id.is_empty()).then(|| request.device_id.to_vec()),
            created_at_ms: now,
            expires_at_ms,
            login_at_ms: now,
        };
        match self.store.put_session(record).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => {
                return Err(Status::unauthorized(
                    "login failed: the account was deleted meanwhile",
                ));
            }
            Err(StoreError::Banned { until_ms }) => return Err(errors::banned(until_ms)),
            Err(other) => return Err(errors::store(other)),
        }
        tracing::info!(username = %account.username, "login");
        Ok(proto::OpaqueLoginFinishResponse {
            session_token: Bytes::copy_from_slice(&token),
            expires_at_unix_ms: expires_at_ms,
        })
    }
}
