//! Gathering concurrent calls into batches, so PostgreSQL does one round of work for many.
//!
//! A [`Gather`] has one task that takes the calls waiting at that moment (up to a count and a
//! byte budget) and hands them, with their replies, to a batch function that runs as its own
//! task. At most a fixed number of batches run at once; while they do, new calls wait for the
//! next batch, so under load batches grow instead of the statements per call. A lone call
//! goes at once, as a batch of one: gathering adds one task hop, never a timer.
//!
//! Used for durable enqueues (one transaction and one WAL flush per batch, `enqueue.rs`) and
//! for session look-ups (one indexed `= ANY` select per batch: every authenticated request
//! makes one, so at 256 calls in flight they were most of PostgreSQL's work).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::StoreError;

/// Where a batch function sends one call's answer.
pub(super) type Reply<R> = oneshot::Sender<Result<R, StoreError>>;

/// How large batches grow and how many run at once.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Most calls in one batch.
    pub calls: usize,
    /// Most bytes (as the weight function counts them) in one batch; a call larger than this
    /// goes alone.
    pub bytes: usize,
    /// Most batches running at once (each holds one pooled connection).
    pub concurrent: usize,
    /// Calls waiting for a batch before callers themselves wait (bounds the memory held).
    pub waiting: usize,
}

/// The handle of a gathering task; dropping it ends the task once its batches are done.
pub(super) struct Gather<C, R> {
    calls: mpsc::Sender<(C, Reply<R>)>,
    /// What the calls are, for the message when the task is gone.
    what: &'static str,
}

impl<C: Send + 'static, R: Send + 'static> Gather<C, R> {
    /// Starts the task: `weight` counts a call's bytes, `batch` writes or reads one batch and
    /// answers every reply it was given (a reply it drops answers Unavailable).
    pub(super) fn start<B, F>(
        what: &'static str,
        limits: Limits,
        weight: fn(&C) -> usize,
        batch: B,
    ) -> Self
    where
        B: Fn(Vec<(C, Reply<R>)>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (calls, rx) = mpsc::channel(limits.waiting.max(1));
        tokio::spawn(run(rx, limits, weight, batch));
        Self { calls, what }
    }

    /// Joins the next batch and waits for its answer.
    pub(super) async fn call(&self, call: C) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.calls.send((call, reply)).await.map_err(|_| {
            StoreError::Unavailable(format!("the {} task has stopped; retry", self.what))
        })?;
        answer.await.map_err(|_| {
            StoreError::Unavailable(format!(
                "the {} task stopped before it answered; retry",
                self.what
            ))
        })?
    }
}

async fn run<C, R, B, F>(
    mut rx: mpsc::Receiver<(C, Reply<R>)>,
    limits: Limits,
    weight: fn(&C) -> usize,
    batch: B,
) where
    C: Send + 'static,
    R: Send + 'static,
    B: Fn(Vec<(C, Reply<R>)>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.concurrent.max(1)));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut bytes = weight(&first.0);
        let mut calls = vec![first];
        while calls.len() < limits.calls && bytes < limits.bytes {
            match rx.try_recv() {
                Ok(call) => {
                    bytes += weight(&call.0);
                    calls.push(call);
                }
                Err(_) => break,
            }
        }
        let work = batch(calls);
        tokio::spawn(async move {
            work.await;
            drop(slot);
        });
    }
}

/// Answers every reply with `error` (a batch that failed as a whole).
pub(super) fn fail_all<R>(replies: impl IntoIterator<Item = Reply<R>>, error: &StoreError) {
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}
