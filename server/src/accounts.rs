//! Auth (100-103), User (500-501) and Account (950-952): registration and login with OPAQUE,
//! sessions, name lookups, account deletion, and the operator's views (ListUsers,
//! StorageStats; `admin` methods, so the authenticator has refused everyone else before a
//! handler runs).

use bytes::Bytes;
use qpq_runtime::{Admin, Anonymous, Ctx, Session, Status};
use qpq_schema::proto;

use crate::auth::{LoginId, new_session_token};
use crate::clock::now_ms;
use crate::session::identity_of;
use crate::store::{Account, AccountSummary, SessionRecord, Store, StoreError};
use crate::{Messenger, errors};

/// Longest username, in bytes.
const MAX_USERNAME: usize = 64;
/// ListUsers page size when the request says 0.
const DEFAULT_USER_PAGE: usize = 100;
/// Largest ListUsers page: each account costs a few point reads and at most about 150 bytes
/// of answer, so a page stays under 150 KiB.
const MAX_USER_PAGE: usize = 1000;

fn user_page_size(limit: u32) -> usize {
    match limit as usize {
        0 => DEFAULT_USER_PAGE,
        n => n.min(MAX_USER_PAGE),
    }
}

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

impl<S: Store> Messenger<S> {
    pub(crate) async fn opaque_register_start(
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

    pub(crate) async fn opaque_register_finish(
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
            created_at_ms: now_ms(),
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

    pub(crate) async fn opaque_login_start(
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

    pub(crate) async fn opaque_login_finish(
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
        let now = now_ms();
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

    pub(crate) async fn resolve_user(
        &self,
        _ctx: Ctx<Session>,
        request: proto::ResolveUserRequest,
    ) -> Result<proto::ResolveUserResponse, Status> {
        let name = self.local_name(&request.username)?;
        let account = self
            .store
            .account_by_username(name)
            .await
            .map_err(errors::store)?;
        Ok(match account {
            Some(account) => proto::ResolveUserResponse {
                identity_key: Bytes::copy_from_slice(&account.identity_key),
                found: true,
            },
            None => proto::ResolveUserResponse {
                identity_key: Bytes::new(),
                found: false,
            },
        })
    }

    pub(crate) async fn resolve_identity(
        &self,
        _ctx: Ctx<Session>,
        request: proto::ResolveIdentityRequest,
    ) -> Result<proto::ResolveIdentityResponse, Status> {
        let identity: [u8; 32] = request.identity_key[..].try_into().map_err(|_| {
            Status::bad_request(format!(
                "identity_key must be 32 bytes, got {}",
                request.identity_key.len()
            ))
        })?;
        let account = self
            .store
            .account_by_identity(&identity)
            .await
            .map_err(errors::store)?;
        Ok(match account {
            Some(account) => proto::ResolveIdentityResponse {
                profile: Some(proto::Profile {
                    display_name: account.username.clone(),
                    avatar_blob_id: Bytes::new(),
                }),
                username: account.username,
                found: true,
            },
            None => proto::ResolveIdentityResponse::default(),
        })
    }

    pub(crate) async fn delete_account(
        &self,
        ctx: Ctx<Session>,
        _request: proto::DeleteAccountRequest,
    ) -> Result<proto::DeleteAccountResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let deleted = self
            .store
            .delete_account(&ctx.auth().username)
            .await
            .map_err(errors::store)?;
        let mut sessions: Vec<[u8; 32]> = deleted.sessions.iter().map(|s| s.token_hash).collect();
        sessions.push(ctx.auth().session_id);
        self.live.revoke(
            &identity,
            &sessions,
            Some(ctx.connection().id()),
            "account deleted",
        );
        tracing::info!(
            username = %ctx.auth().username,
            messages = deleted.messages_removed,
            "account deleted"
        );
        Ok(proto::DeleteAccountResponse {})
    }

    pub(crate) async fn list_users(
        &self,
        _ctx: Ctx<Admin>,
        request: proto::ListUsersRequest,
    ) -> Result<proto::ListUsersResponse, Status> {
        if request.after.len() > MAX_USERNAME {
            return Err(Status::bad_request(format!(
                "after is {} bytes; give a username (at most {MAX_USERNAME} bytes), usually the next_after of the previous page",
                request.after.len()
            )));
        }
        let page = self
            .store
            .list_accounts(&request.after, user_page_size(request.limit))
            .await
            .map_err(errors::store)?;
        Ok(proto::ListUsersResponse {
            users: page
                .accounts
                .into_iter()
                .map(|a| self.user_summary(a))
                .collect(),
            next_after: page.next_after.unwrap_or_default(),
        })
    }

    fn user_summary(&self, a: AccountSummary) -> proto::UserSummary {
        proto::UserSummary {
            online: self.live.is_online(&a.identity_key),
            identity_key: Bytes::copy_from_slice(&a.identity_key),
            username: a.username,
            created_at_unix_ms: a.created_at_ms,
            banned: a.banned_until_ms.is_some(),
            banned_until_unix_ms: a.banned_until_ms.unwrap_or(0),
            queued_messages: a.queue.messages,
            queued_bytes: a.queue.bytes,
            devices: u32::try_from(a.devices).unwrap_or(u32::MAX),
        }
    }

    pub(crate) async fn storage_stats(
        &self,
        _ctx: Ctx<Admin>,
        _request: proto::StorageStatsRequest,
    ) -> Result<proto::StorageStatsResponse, Status> {
        let stats = self.store.storage_stats().await.map_err(errors::store)?;
        let sync = &stats.sync;
        Ok(proto::StorageStatsResponse {
            accounts: stats.accounts,
            live_sessions: stats.live_sessions,
            online_users: self.live.online_count() as u64,
            queued_messages: stats.queued_messages,
            queued_bytes: stats.queued_bytes,
            nonempty_queues: stats.nonempty_queues,
            blobs: stats.blobs,
            blob_bytes: stats.blob_bytes,
            channels: stats.channels,
            kt_log_size: stats.kt_log_size,
            federation_outbox_messages: stats.outbox_messages,
            federation_outbox_bytes: stats.outbox_bytes,
            disk_bytes: stats.disk_bytes,
            journal_syncs: sync.count,
            mean_sync_micros: sync.total_micros.checked_div(sync.count).unwrap_or(0),
            last_sync_micros: sync.last_micros,
        })
    }

    /// The local part of `name` or `name@<this server's domain>`; other domains are remote.
    pub(crate) fn local_name<'a>(&self, name: &'a str) -> Result<&'a str, Status> {
        match name.split_once('@') {
            None => Ok(name),
            Some((local, domain)) if Some(domain) == self.config.domain.as_deref() => Ok(local),
            // Users of peers are reached by Enqueue/BatchEnqueue and the Proxy methods only.
            Some((_, domain)) if self.federation.peer(domain).is_some() => {
                Err(Status::bad_request(format!(
                    "`{name}` is a user of the federation peer {domain}; this method takes users of this server only (reach remote users with Enqueue, BatchEnqueue, ProxyResolveUser, ProxyFetchKeyPackage and ProxyFetchHybridKey)"
                )))
            }
            Some((_, domain)) => Err(Status::not_found(format!(
                "`{name}` is a user of {domain}, which is not a federation peer of this server"
            ))),
        }
    }
}

fn taken(username: &str) -> Status {
    Status::conflict(format!(
        "username `{username}` is already taken; choose another"
    ))
}
