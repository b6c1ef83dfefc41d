//! Enqueue on PostgreSQL, and its group commit.
//!
//! Every [`Store::enqueue`](crate::store::Store::enqueue) call goes to one of a few gathering
//! tasks (`gather.rs`; [`SHARDS`], chosen by recipient, limits in [`BATCHES`]), which writes
//! the calls waiting at that moment in one transaction: one round of row locks, one multi-row
//! insert, one commit and so one WAL flush for all of them. While a task's transaction runs,
//! new calls queue up for its next batch, so batches grow with load instead of the flushes.
//!
//! Each call is judged on its own inside the batch (its recipients must exist, its queues
//! must take it), against the queue counters as the earlier calls of the batch left them, so
//! a refused call stores nothing and does not hurt the others. When the batch's transaction
//! fails for a reason that is not "try again", its calls are run again one by one, so one
//! call that PostgreSQL refuses cannot fail the others.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use super::gather::{self, Gather, Limits, Reply};
use super::{PgError, Shared, Tx, drop_expired, fixed, int, query, transact, uint};
use crate::store::{Clock, IdentityKey, NewMessage, QueueDepth, QueueLimits, Seq, StoreError};

/// Longest sender name a message may carry (the embedded store's record bound too).
const MAX_SENDER_BYTES: usize = u16::MAX as usize;
/// Gathering tasks, each writing one batch at a time. A call goes to the task its first
/// recipient hashes to, so the two batches in flight lock disjoint queue rows (unless a call
/// names recipients of both tasks; then the sorted lock order keeps them deadlock-free), and
/// one task's transaction works while the other's waits for its WAL flush. Measured at 256
/// calls in flight (docs/BENCHMARKS.md): four batches in flight from one shared set waited on
/// each other's row locks through every flush; with one batch per task, two tasks gave the
/// most throughput (fewer, larger batches cost PostgreSQL less per message than eight).
const SHARDS: usize = 2;
/// How one task's batches grow: at most 256 calls and 16 MiB of payload per transaction,
/// one transaction at a time (one pooled connection), 1024 calls waiting.
const BATCHES: Limits = Limits {
    calls: 256,
    bytes: 16 * 1024 * 1024,
    concurrent: 1,
    waiting: 1024,
};

type Deliveries = Vec<(IdentityKey, NewMessage)>;

/// The handle of the enqueue tasks; dropping it ends the tasks after their batches.
pub(super) struct Enqueuer {
    shards: Vec<Gather<Deliveries, Vec<Seq>>>,
    /// Keyed, so the recipients a caller picks do not choose which task their calls share.
    hasher: RandomState,
}

impl Enqueuer {
    pub(super) fn start(pool: Arc<Shared>, limits: QueueLimits, clock: Clock) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                let pool = Arc::clone(&pool);
                let clock = clock.clone();
                Gather::start("enqueue", BATCHES, payload_bytes, move |batch| {
                    let pool = Arc::clone(&pool);
                    let clock = clock.clone();
                    async move { write_batch(&pool, limits, &clock, batch).await }
                })
            })
            .collect();
        Self {
            shards,
            hasher: RandomState::new(),
        }
    }

    pub(super) async fn enqueue(&self, deliveries: Deliveries) -> Result<Vec<Seq>, StoreError> {
        let shard = match deliveries.first() {
            Some((recipient, _)) => self.hasher.hash_one(recipient) as usize % self.shards.len(),
            None => 0,
        };
        self.shards[shard].call(deliveries).await
    }
}

fn payload_bytes(d: &Deliveries) -> usize {
    d.iter().map(|(_, m)| m.payload.len()).sum()
}

async fn write_batch(
    pool: &Shared,
    limits: QueueLimits,
    clock: &Clock,
    batch: Vec<(Deliveries, Reply<Vec<Seq>>)>,
) {
    let (calls, replies): (Vec<Deliveries>, Vec<Reply<Vec<Seq>>>) = batch.into_iter().unzip();
    let outcome = {
        let calls = &calls;
        transact(pool, "enqueue", &mut |tx, _| {
            Box::pin(async move { enqueue_calls(tx, calls, clock.unix_ms(), limits).await })
        })
        .await
    };
    match outcome {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        // PostgreSQL refused a value of one of the calls (a data error): the others may be
        // fine, so each is written alone. Only this error: after any other (a lost commit
        // whose outcome is unknown, an unreachable database) running the calls again could
        // store them twice, or wait long for a database that is down.
        Err(StoreError::InvalidArgument(why)) if calls.len() > 1 => {
            tracing::debug!(%why, calls = calls.len(), "enqueue batch refused; writing its calls one by one");
            for (call, reply) in calls.iter().zip(replies) {
                let one = std::slice::from_ref(call);
                let answer = transact(pool, "enqueue", &mut |tx, _| {
                    Box::pin(async move { enqueue_calls(tx, one, clock.unix_ms(), limits).await })
                })
                .await
                .and_then(|mut a| a.pop().unwrap_or_else(|| Err(lost())));
                let _ = reply.send(answer);
            }
        }
        Err(e) => gather::fail_all(replies, &e),
    }
}

fn lost() -> StoreError {
    StoreError::Corrupt("enqueue lost track of a call".into())
}

/// Appends `deliveries` inside the caller's transaction, all or nothing (see
/// [`Store::enqueue`](crate::store::Store::enqueue)): another group stores messages
/// atomically with its own change this way (RotateKeys: the epoch and the commit; federation:
/// the outbox). Locks the recipients' queue rows, so the caller must hold no locks that come
/// later in the lock order (see the module doc of `postgres`).
pub(crate) async fn enqueue_in(
    tx: &Tx<'_>,
    deliveries: &[(IdentityKey, NewMessage)],
    now_ms: u64,
    limits: QueueLimits,
) -> Result<Vec<Seq>, PgError> {
    let calls = std::slice::from_ref(&deliveries);
    let mut answers = enqueue_refs(tx, calls, now_ms, limits).await?;
    Ok(answers.pop().unwrap_or_else(|| Err(lost()))?)
}

async fn enqueue_calls(
    tx: &Tx<'_>,
    calls: &[Deliveries],
    now_ms: u64,
    limits: QueueLimits,
) -> Result<Vec<Result<Vec<Seq>, StoreError>>, PgError> {
    let refs: Vec<&[(IdentityKey, NewMessage)]> = calls.iter().map(Vec::as_slice).collect();
    enqueue_refs(tx, &refs, now_ms, limits).await
}

/// A queue row as locked, and what this transaction did to it.
struct Queue {
    next_seq: u64,
    depth: QueueDepth,
    dropped_expired: bool,
    changed: bool,
}

/// Judges each call against the locked queue rows, in order, and writes the accepted ones.
async fn enqueue_refs(
    tx: &Tx<'_>,
    calls: &[&[(IdentityKey, NewMessage)]],
    now_ms: u64,
    limits: QueueLimits,
) -> Result<Vec<Result<Vec<Seq>, StoreError>>, PgError> {
    let mut recipients: Vec<&[u8]> = calls
        .iter()
        .flat_map(|c| c.iter().map(|(r, _)| r.as_slice()))
        .collect();
    recipients.sort_unstable();
    recipients.dedup();
    // Locked in identity order (the sort runs before the lock), as every writer of queues.
    let rows = query(
        tx,
        "SELECT identity_key, next_seq, messages, bytes FROM queues \
         WHERE identity_key = ANY($1) ORDER BY identity_key FOR UPDATE",
        &[&recipients],
    )
    .await?;
    let mut queues: BTreeMap<IdentityKey, Queue> = BTreeMap::new();
    for row in &rows {
        let identity: IdentityKey = fixed(row.get("identity_key"), "identity key")?;
        queues.insert(
            identity,
            Queue {
                next_seq: uint(row.get("next_seq"))?,
                depth: QueueDepth {
                    messages: uint(row.get("messages"))?,
                    bytes: uint(row.get("bytes"))?,
                },
                dropped_expired: false,
                changed: false,
            },
        );
    }

    let mut new = Inserts::default();
    let mut answers = Vec::with_capacity(calls.len());
    for call in calls {
        answers.push(judge(tx, &mut queues, &mut new, call, now_ms, limits).await?);
    }
    new.write(tx).await?;

    let changed: Vec<(&IdentityKey, &Queue)> = queues.iter().filter(|(_, q)| q.changed).collect();
    if !changed.is_empty() {
        let ids: Vec<&[u8]> = changed.iter().map(|(i, _)| i.as_slice()).collect();
        let next: Vec<i64> = changed.iter().map(|(_, q)| int(q.next_seq)).collect();
        let messages: Vec<i64> = changed.iter().map(|(_, q)| int(q.depth.messages)).collect();
        let bytes: Vec<i64> = changed.iter().map(|(_, q)| int(q.depth.bytes)).collect();
        query(
            tx,
            "UPDATE queues AS q SET next_seq = u.next_seq, messages = u.messages, bytes = u.bytes \
             FROM UNNEST($1::bytea[], $2::int8[], $3::int8[], $4::int8[]) \
             AS u(identity_key, next_seq, messages, bytes) WHERE q.identity_key = u.identity_key",
            &[&ids, &next, &messages, &bytes],
        )
        .await?;
    }
    Ok(answers)
}

/// One call's verdict; on acceptance its messages join `new` and the counters move.
async fn judge(
    tx: &Tx<'_>,
    queues: &mut BTreeMap<IdentityKey, Queue>,
    new: &mut Inserts,
    call: &[(IdentityKey, NewMessage)],
    now_ms: u64,
    limits: QueueLimits,
) -> Result<Result<Vec<Seq>, StoreError>, PgError> {
    // What this call adds per recipient.
    let mut adds: BTreeMap<IdentityKey, QueueDepth> = BTreeMap::new();
    for (recipient, m) in call {
        if m.sender.len() > MAX_SENDER_BYTES {
            return Ok(Err(StoreError::InvalidArgument(
                "sender longer than 65535 bytes".into(),
            )));
        }
        let add = adds.entry(*recipient).or_default();
        add.messages += 1;
        add.bytes += m.payload.len() as u64;
    }
    for (recipient, add) in &adds {
        let Some(queue) = queues.get_mut(recipient) else {
            return Ok(Err(StoreError::NotFound));
        };
        if limits.admit(queue.depth, *add).is_err() && !queue.dropped_expired {
            // Expired messages count until deleted; clear them before refusing.
            let gone = drop_expired(tx, recipient, now_ms).await?;
            queue.dropped_expired = true;
            if gone.messages > 0 {
                queue.depth.messages -= gone.messages.min(queue.depth.messages);
                queue.depth.bytes -= gone.bytes.min(queue.depth.bytes);
                queue.changed = true;
            }
        }
        if let Err(limit) = limits.admit(queue.depth, *add) {
            return Ok(Err(StoreError::QueueFull { limit }));
        }
        if queue.next_seq.checked_add(add.messages).is_none() {
            return Ok(Err(StoreError::Corrupt(
                "queue sequence number overflow".into(),
            )));
        }
    }
    let mut seqs = Vec::with_capacity(call.len());
    for (recipient, m) in call {
        let Some(queue) = queues.get_mut(recipient) else {
            return Err(lost().into());
        };
        let seq = Seq(queue.next_seq);
        queue.next_seq += 1;
        queue.depth.messages += 1;
        queue.depth.bytes += m.payload.len() as u64;
        queue.changed = true;
        new.push(
            recipient,
            seq,
            m,
            now_ms,
            limits.expires_at(now_ms, m.ttl_ms),
        );
        seqs.push(seq);
    }
    Ok(Ok(seqs))
}

/// Messages to insert, as columns (one multi-row insert).
#[derive(Default)]
struct Inserts {
    recipient: Vec<Vec<u8>>,
    seq: Vec<i64>,
    sender_identity: Vec<Vec<u8>>,
    sender: Vec<Vec<u8>>,
    channel: Vec<Option<Vec<u8>>>,
    payload: Vec<bytes::Bytes>,
    enqueued: Vec<i64>,
    expires: Vec<i64>,
}

impl Inserts {
    fn push(&mut self, recipient: &IdentityKey, seq: Seq, m: &NewMessage, now: u64, expires: u64) {
        self.recipient.push(recipient.to_vec());
        self.seq.push(int(seq.0));
        self.sender_identity.push(m.sender_identity_key.to_vec());
        self.sender.push(m.sender.as_bytes().to_vec());
        self.channel.push(m.channel_id.map(|c| c.0.to_vec()));
        self.payload.push(m.payload.clone());
        self.enqueued.push(int(now));
        self.expires.push(int(expires));
    }

    async fn write(&self, tx: &Tx<'_>) -> Result<(), PgError> {
        if self.seq.is_empty() {
            return Ok(());
        }
        let payload: Vec<&[u8]> = self.payload.iter().map(|p| p.as_ref()).collect();
        query(
            tx,
            "INSERT INTO messages (identity_key, seq, sender_identity_key, sender, channel_id, \
             payload, enqueued_at_ms, expires_at_ms) \
             SELECT * FROM UNNEST($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[], $5::bytea[], \
             $6::bytea[], $7::int8[], $8::int8[])",
            &[
                &self.recipient,
                &self.seq,
                &self.sender_identity,
                &self.sender,
                &self.channel,
                &payload,
                &self.enqueued,
                &self.expires,
            ],
        )
        .await?;
        Ok(())
    }
}
