//! Enqueue on PostgreSQL, and its group commit.
//!
//! Every [`Store::enqueue`](crate::store::Store::enqueue) call goes to one task per store,
//! which gathers the calls waiting at that moment (up to [`MAX_BATCH_CALLS`] calls and
//! [`MAX_BATCH_BYTES`] payload bytes) and writes them in one transaction: one round of row
//! locks, one multi-row insert, one commit and so one WAL flush for all of them. At most
//! [`CONCURRENT_BATCHES`] such transactions run at once; while they do, new calls queue up
//! for the next batch, so batches grow with load instead of the flushes.
//!
//! Each call is judged on its own inside the batch (its recipients must exist, its queues
//! must take it), against the queue counters as the earlier calls of the batch left them, so
//! a refused call stores nothing and does not hurt the others. When the batch's transaction
//! fails for a reason that is not "try again", its calls are run again one by one, so one
//! call that PostgreSQL refuses cannot fail the others.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{PgError, Shared, Tx, drop_expired, fixed, int, query, transact, uint};
use crate::store::{Clock, IdentityKey, NewMessage, QueueDepth, QueueLimits, Seq, StoreError};

/// Longest sender name a message may carry (the embedded store's record bound too).
const MAX_SENDER_BYTES: usize = u16::MAX as usize;
/// Most enqueue calls written in one transaction.
const MAX_BATCH_CALLS: usize = 256;
/// Most payload bytes written in one transaction (a call larger than this goes alone).
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Most batch transactions in flight at once (each holds one pooled connection).
const CONCURRENT_BATCHES: usize = 4;
/// Calls waiting for a batch before `enqueue` itself waits (bounds the memory they hold).
const WAITING_CALLS: usize = 4096;

type Deliveries = Vec<(IdentityKey, NewMessage)>;
type Reply = oneshot::Sender<Result<Vec<Seq>, StoreError>>;

/// The handle of the enqueue task; dropping the last one ends the task after its batches.
pub(super) struct Enqueuer {
    calls: mpsc::Sender<(Deliveries, Reply)>,
}

impl Enqueuer {
    pub(super) fn start(pool: Arc<Shared>, limits: QueueLimits, clock: Clock) -> Self {
        let (calls, rx) = mpsc::channel(WAITING_CALLS);
        tokio::spawn(run(pool, limits, clock, rx));
        Self { calls }
    }

    pub(super) async fn enqueue(&self, deliveries: Deliveries) -> Result<Vec<Seq>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.calls
            .send((deliveries, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the enqueue task has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the enqueue task stopped before it answered; retry".into())
        })?
    }
}

async fn run(
    pool: Arc<Shared>,
    limits: QueueLimits,
    clock: Clock,
    mut rx: mpsc::Receiver<(Deliveries, Reply)>,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_BATCHES));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut bytes = payload_bytes(&first.0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_CALLS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(call) => {
                    bytes += payload_bytes(&call.0);
                    batch.push(call);
                }
                Err(_) => break,
            }
        }
        let pool = Arc::clone(&pool);
        let clock = clock.clone();
        tokio::spawn(async move {
            write_batch(&pool, limits, &clock, batch).await;
            drop(slot);
        });
    }
}

fn payload_bytes(d: &Deliveries) -> usize {
    d.iter().map(|(_, m)| m.payload.len()).sum()
}

async fn write_batch(
    pool: &Shared,
    limits: QueueLimits,
    clock: &Clock,
    batch: Vec<(Deliveries, Reply)>,
) {
    let (calls, replies): (Vec<Deliveries>, Vec<Reply>) = batch.into_iter().unzip();
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
        Err(e) => {
            let why = e.to_string();
            let mut first = Some(e);
            for reply in replies {
                let answer = first
                    .take()
                    .unwrap_or_else(|| StoreError::Unavailable(why.clone()));
                let _ = reply.send(Err(answer));
            }
        }
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
