//! [`AdminStore`] on PostgreSQL: reads over the other groups' tables; no table of its own.
//!
//! | figure | read |
//! |---|---|
//! | accounts | `count(*)` of `accounts` |
//! | live sessions | `sessions` expiring after now |
//! | queued messages, bytes, non-empty queues | the counters of `queues` (one row per queue) |
//! | blobs, blob bytes | `blobs` (committed blobs, one row per content; never `blob_pieces`) |
//! | channels | `count(*)` of `channels` |
//! | transparency log size | [`KtStore::kt_size`] |
//! | outbox messages, bytes | the counters of `outbox_meta` (one row per peer) |
//!
//! The row counts come from one statement, so they are one snapshot; the log size is a
//! second read. A page of the account listing is one range read of `accounts` (with each
//! account's queue counters and active device count), and per account the server-wide ban
//! in force ([`ModerationStore::server_ban`]).
//!
//! Space on disk is no figure of [`StorageStats`]; on PostgreSQL it is the cluster's
//! (`pg_database_size`), which its own tools report.

use super::{PgStore, fixed, int, query, query_one, uint};
use crate::store::admin::{AccountPage, AccountSummary, AdminStore, StorageStats};
use crate::store::{KtStore, ModerationStore, QueueDepth, QueueTotals, StoreError};

impl AdminStore for PgStore {
    async fn list_accounts(&self, after: &str, limit: usize) -> Result<AccountPage, StoreError> {
        let limit = limit.max(1);
        let take = int(limit as u64).saturating_add(1);
        let rows = self
            .read(|c, _| {
                Box::pin(async move {
                    query(
                        c,
                        "SELECT a.username, a.identity_key, a.created_at_ms, \
                         coalesce(q.messages, 0) AS messages, coalesce(q.bytes, 0) AS bytes, \
                         (SELECT count(*) FROM devices d WHERE d.identity_key = a.identity_key \
                         AND d.revoked_at_ms IS NULL)::int8 AS devices \
                         FROM accounts a LEFT JOIN queues q ON q.identity_key = a.identity_key \
                         WHERE a.username > $1 ORDER BY a.username LIMIT $2",
                        &[&after, &take],
                    )
                    .await
                })
            })
            .await?;
        let mut page = AccountPage::default();
        for row in &rows {
            if page.accounts.len() >= limit {
                page.next_after = page.accounts.last().map(|a| a.username.clone());
                break;
            }
            let identity_key = fixed(row.get("identity_key"), "identity key")?;
            let ban = self.server_ban(&identity_key).await?;
            page.accounts.push(AccountSummary {
                username: row.get("username"),
                identity_key,
                created_at_ms: uint(row.get("created_at_ms"))?,
                banned_until_ms: ban.map(|b| b.expires_at_ms),
                queue: QueueDepth {
                    messages: uint(row.get("messages"))?,
                    bytes: uint(row.get("bytes"))?,
                },
                devices: uint(row.get("devices"))?,
            });
        }
        Ok(page)
    }

    async fn storage_stats(&self) -> Result<StorageStats, StoreError> {
        let now = int(self.now());
        let mut stats = self
            .read(|c, _| {
                Box::pin(async move {
                    let r = query_one(
                        c,
                        "SELECT \
                         (SELECT count(*) FROM accounts)::int8 AS accounts, \
                         (SELECT count(*) FROM sessions WHERE expires_at_ms > $1)::int8 AS sessions, \
                         q.messages, q.bytes, q.nonempty, \
                         b.blobs, b.blob_bytes, \
                         (SELECT count(*) FROM channels)::int8 AS channels, \
                         o.messages AS outbox_messages, o.bytes AS outbox_bytes \
                         FROM (SELECT coalesce(sum(messages), 0)::int8 AS messages, \
                               coalesce(sum(bytes), 0)::int8 AS bytes, \
                               count(*) FILTER (WHERE messages > 0)::int8 AS nonempty FROM queues) q, \
                              (SELECT count(*)::int8 AS blobs, \
                               coalesce(sum(size), 0)::int8 AS blob_bytes FROM blobs) b, \
                              (SELECT coalesce(sum(messages), 0)::int8 AS messages, \
                               coalesce(sum(bytes), 0)::int8 AS bytes FROM outbox_meta) o",
                        &[&now],
                    )
                    .await?;
                    Ok(StorageStats {
                        accounts: uint(r.get("accounts"))?,
                        live_sessions: uint(r.get("sessions"))?,
                        queued_messages: uint(r.get("messages"))?,
                        queued_bytes: uint(r.get("bytes"))?,
                        nonempty_queues: uint(r.get("nonempty"))?,
                        blobs: uint(r.get("blobs"))?,
                        blob_bytes: uint(r.get("blob_bytes"))?,
                        channels: uint(r.get("channels"))?,
                        kt_log_size: 0,
                        outbox_messages: uint(r.get("outbox_messages"))?,
                        outbox_bytes: uint(r.get("outbox_bytes"))?,
                    })
                })
            })
            .await?;
        stats.kt_log_size = self.kt_size().await?;
        Ok(stats)
    }

    async fn queue_totals(&self) -> Result<QueueTotals, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let r = query_one(
                    c,
                    "SELECT coalesce(sum(messages), 0)::int8 AS messages, \
                     coalesce(sum(bytes), 0)::int8 AS bytes, \
                     count(*) FILTER (WHERE messages > 0)::int8 AS nonempty FROM queues",
                    &[],
                )
                .await?;
                Ok(QueueTotals {
                    messages: uint(r.get("messages"))?,
                    bytes: uint(r.get("bytes"))?,
                    nonempty_queues: uint(r.get("nonempty"))?,
                })
            })
        })
        .await
    }
}
