//! The relay worker: one task per peer drains that peer's outbox with RelayBatchEnqueue.
//!
//! An entry leaves the outbox only after the peer answered for it: stored, duplicate (stored
//! by an earlier attempt whose answer was lost) or rejected for good. Until then it is sent
//! again, with the same relay id, so the peer stores it exactly once. When the peer is down or
//! asks to retry later, the worker waits with exponential backoff (capped at
//! [`BACKOFF_MAX`]); otherwise it sleeps until an enqueue wakes it ([`PeerLink::wake`]), and
//! probes the peer's Health (every [`PROBE_EVERY`] when healthy, with backoff when down) so
//! FederationHealth stays current. On start it resumes whatever the outbox holds.
//!
//! Order: entries go out in outbox order, in batches of the outbox front. An entry the peer
//! asks to retry later (the recipient's queue is full) stays at the front and goes out again
//! with every batch, with backoff when nothing else moved; later entries for other recipients
//! are stored meanwhile. Messages wait; none is lost.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use qpq_schema::proto;

use super::link::PeerLink;
use crate::Messenger;
use crate::store::{OutboxEntry, Store};

/// Most messages per RelayBatchEnqueue (its limit).
const BATCH: usize = 256;
/// Payload bytes per RelayBatchEnqueue, below its 4 MiB + 128 KiB request limit with room for
/// the other fields (one message of up to 1 MiB always fits).
const BATCH_BYTES: usize = 3 << 20;
/// First wait after a failed attempt; doubles up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest wait between attempts while the peer is down.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often an idle worker probes the peer's Health.
const PROBE_EVERY: Duration = Duration::from_secs(30);

/// What one pass over the outbox front achieved.
enum Pass {
    /// The outbox is empty.
    Empty,
    /// Entries left the outbox; more may follow at once.
    Progress,
    /// Nothing left the outbox (peer down, refused, or asked to retry later).
    Stalled,
}

/// Runs the worker of `link` until the server stops (the task is aborted).
pub(crate) async fn run<S: Store>(messenger: Arc<Messenger<S>>, link: Arc<PeerLink>) {
    let mut backoff = BACKOFF_START;
    let mut probe_backoff = BACKOFF_START;
    let mut failing = false;
    // A first probe, so FederationHealth knows the peer before any message goes out.
    let _ = link.probe().await;
    loop {
        match pass(&messenger, &link).await {
            Pass::Empty => {
                backoff = BACKOFF_START;
                recovered(&link, &mut failing);
                // A peer that is down (or whose latency is unknown) is probed again with
                // backoff, so its health recovers soon after it does; a healthy one rarely.
                let health = link.health();
                let wait = if health.reachable && health.latency_ms > 0 {
                    probe_backoff = BACKOFF_START;
                    PROBE_EVERY
                } else {
                    let wait = probe_backoff;
                    probe_backoff = (probe_backoff * 2).min(BACKOFF_MAX);
                    wait
                };
                tokio::select! {
                    () = link.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {
                        let _ = link.probe().await;
                    }
                }
            }
            Pass::Progress => {
                backoff = BACKOFF_START;
                recovered(&link, &mut failing);
            }
            Pass::Stalled => {
                if !failing {
                    failing = true;
                    tracing::warn!(
                        peer = %link.domain,
                        error = %link.health().last_error,
                        "relaying to federation peer stalled; retrying with backoff"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn recovered(link: &PeerLink, failing: &mut bool) {
    if std::mem::take(failing) {
        tracing::info!(peer = %link.domain, "relaying to federation peer resumed");
    }
}

fn relayed(entry: &OutboxEntry) -> proto::RelayedMessage {
    let m = &entry.message;
    proto::RelayedMessage {
        relay_id: Bytes::copy_from_slice(&m.relay_id),
        sender: m.sender.clone(),
        sender_identity_key: Bytes::copy_from_slice(&m.sender_identity_key),
        recipient: Some(proto::UserRef {
            target: Some(proto::user_ref::Target::Username(m.recipient.clone())),
        }),
        payload: m.payload.clone(),
        ttl_secs: u32::try_from(m.ttl_ms.div_ceil(1000)).unwrap_or(u32::MAX),
        enqueued_at_unix_ms: m.enqueued_at_ms,
        channel_id: m
            .channel_id
            .map(|c| Bytes::copy_from_slice(&c.0))
            .unwrap_or_default(),
    }
}

/// Sends the front of the outbox once and removes what the peer answered for.
async fn pass<S: Store>(messenger: &Messenger<S>, link: &PeerLink) -> Pass {
    let store = &messenger.store;
    let front = match store.outbox_front(&link.domain, BATCH).await {
        Ok(front) => front,
        Err(error) => {
            tracing::error!(peer = %link.domain, %error, "could not read the federation outbox");
            return Pass::Stalled;
        }
    };
    if front.is_empty() {
        return Pass::Empty;
    }
    let now = messenger.now_ms();
    let mut done = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    for entry in front {
        if entry.message.expires_at_ms() <= now {
            // Expired while waiting: the peer would refuse it, and nobody can read it anymore.
            tracing::info!(peer = %link.domain, "dropping a relay that expired in the outbox");
            done.push(entry.position);
            continue;
        }
        bytes += entry.message.payload.len();
        if !batch.is_empty() && bytes > BATCH_BYTES {
            break;
        }
        batch.push(entry);
    }
    let mut progress = !done.is_empty();
    if !batch.is_empty() {
        let request = proto::RelayBatchEnqueueRequest {
            messages: batch.iter().map(relayed).collect(),
        };
        match link
            .call(|client| async move { client.relay_batch_enqueue(request).await })
            .await
        {
            Ok(response) if response.results.len() == batch.len() => {
                for (entry, result) in batch.iter().zip(&response.results) {
                    if result.relay_id[..] != entry.message.relay_id {
                        tracing::warn!(peer = %link.domain, "peer answered for another relay id");
                        continue;
                    }
                    match proto::RelayOutcome::try_from(result.outcome) {
                        Ok(proto::RelayOutcome::Stored | proto::RelayOutcome::Duplicate) => {
                            done.push(entry.position);
                        }
                        Ok(proto::RelayOutcome::Rejected) => {
                            tracing::warn!(
                                peer = %link.domain,
                                recipient = %entry.message.recipient,
                                error = %result.error,
                                "federation peer rejected a relayed message; dropped from the outbox"
                            );
                            done.push(entry.position);
                        }
                        _ => {}
                    }
                }
            }
            Ok(response) => {
                tracing::warn!(
                    peer = %link.domain,
                    sent = batch.len(),
                    answered = response.results.len(),
                    "federation peer answered a relay batch with the wrong number of results"
                );
            }
            Err(error) => {
                tracing::debug!(peer = %link.domain, %error, "relay batch failed");
            }
        }
    }
    if !done.is_empty() {
        match store.outbox_remove(&link.domain, &done).await {
            Ok(_) => progress = true,
            Err(error) => {
                // The peer has them; the next pass sends them again and gets duplicates.
                tracing::error!(peer = %link.domain, %error, "could not remove relayed messages from the outbox");
                progress = false;
            }
        }
    }
    if progress {
        Pass::Progress
    } else {
        Pass::Stalled
    }
}
