//! Account (950-952): deleting one's own account, and the operator's views (ListUsers,
//! StorageStats; `admin` methods, so the authenticator has refused everyone else before a
//! handler runs).

use bytes::Bytes;
use qpq_runtime::{Admin, Ctx, Session, Status};
use qpq_schema::{AccountService, proto};

use crate::api::auth::MAX_USERNAME;
use crate::auth::identity_of;
use crate::store::{AccountSummary, Store, SyncStats};
use crate::{Messenger, errors};

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

impl<S: Store> Messenger<S> {
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

impl<S: Store> AccountService for Messenger<S> {
    async fn delete_account(
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
        self.end_sessions(
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

    async fn list_users(
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

    async fn storage_stats(
        &self,
        _ctx: Ctx<Admin>,
        _request: proto::StorageStatsRequest,
    ) -> Result<proto::StorageStatsResponse, Status> {
        let stats = self.store.storage_stats().await.map_err(errors::store)?;
        // The engine's own figures; a backend without them answers zeros.
        let (disk_bytes, sync) = match self.store.engine() {
            Some(engine) => (
                engine.disk_bytes().await.map_err(errors::store)?,
                engine.commit_stats(),
            ),
            None => (0, SyncStats::default()),
        };
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
            disk_bytes,
            journal_syncs: sync.count,
            mean_sync_micros: sync.total_micros.checked_div(sync.count).unwrap_or(0),
            last_sync_micros: sync.last_micros,
        })
    }
}
