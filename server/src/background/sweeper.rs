//! The sweeper: once a minute, deletes what expired (messages, sessions, blob uploads, P2P
//! endpoints, pending logins, federation relay ids) and records device last-seen times.
//!
//! Each pass does bounded work per store call ([`PurgeStats::more`](crate::store::PurgeStats)
//! says whether to call again), so a large backlog never holds the store for long.

use std::sync::Arc;
use std::time::Duration;

use crate::Messenger;
use crate::store::Store;

/// Deletes expired messages, sessions, blob uploads and P2P endpoints, forgets expired
/// logins and federation relay ids, and records device last-seen times, once a minute.
pub(crate) async fn run<S: Store>(messenger: Arc<Messenger<S>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        messenger.opaque.evict_expired();
        loop {
            match messenger.store.purge_expired(messenger.now_ms()).await {
                Ok(stats) if stats.more => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "expiry sweep failed");
                    break;
                }
            }
        }
        messenger.sweep_uploads().await;
        messenger.sweep_endpoints().await;
        messenger.flush_last_seen().await;
        messenger.sweep_relay_ids().await;
    }
}
