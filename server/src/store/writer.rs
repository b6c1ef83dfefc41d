//! Group commit: one writer thread runs every write and shares one `fsync` among many.
//!
//! Writers hand their operation (a closure over the engine) to the writer thread and await
//! the answer. The thread loops:
//!
//! 1. take every request queued so far (up to [`MAX_CYCLE`]);
//! 2. run them one after another; each commits its own atomic batch to the journal
//!    *without* syncing (a buffered append), and sees the effects of the ones before it;
//! 3. sync the journal once ([`Durability::GroupCommit`]);
//! 4. answer all of them: `Ok` only if that sync succeeded.
//!
//! While the thread syncs, new requests pile up in the channel and form the next cycle, so
//! syncs per second stay near `1 / fsync time` while writes per second grow with the number
//! of writers in flight — also for writes to one hot queue, which a per-queue lock held across
//! the commit would serialize behind each sync (fjall holds its journal lock while it syncs).
//!
//! One thread also means writes are serialized, so read-modify-write operations (sequence
//! counters, caps, uniqueness checks) need no locks. Reads do not go through the thread.
//!
//! In [`Durability::SyncEachWrite`] mode the thread syncs after every committing request
//! instead: the baseline for the benchmark.
//!
//! A failed sync (or commit) is sticky ([`Health`]): the requests of that cycle and every
//! later call answer [`StoreError::Unavailable`]. This module knows nothing about the storage
//! engine: it runs closures and calls the `persist` function it is given.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::{Durability, StoreError};

/// Most requests answered by one sync: bounds the latency a cycle adds to its first request.
pub(super) const MAX_CYCLE: usize = 1024;

/// Requests that may wait for the writer; senders beyond it wait asynchronously (backpressure).
const QUEUE_CAPACITY: usize = 4096;

/// Syncs the storage engine's journal; the error text goes to logs and `Unavailable`.
pub(super) type PersistFn = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Called with the outcome of the sync that covers a request.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A request: runs on the writer thread, says whether it committed anything, and returns
/// what to do once its sync is known.
type Job<E> = Box<dyn FnOnce(&E) -> (bool, Completion) + Send>;

/// Sticky failure state, sync counter and test hook; shared by the writer and the readers.
#[derive(Debug, Default)]
pub(super) struct Health {
    failure: OnceLock<String>,
    syncs: AtomicU64,
    inject_failure: AtomicBool,
    /// Total time spent in syncs, microseconds.
    sync_micros: AtomicU64,
    /// Duration of the latest sync, microseconds.
    last_sync_micros: AtomicU64,
    /// Sync durations by [`SYNC_BUCKETS_US`] upper bound (last: larger).
    sync_buckets: [AtomicU64; SYNC_BUCKETS_US.len() + 1],
}

/// Upper bounds (microseconds) of the sync-latency histogram buckets.
pub const SYNC_BUCKETS_US: [u64; 11] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];

/// Journal sync statistics since the store was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Syncs performed.
    pub count: u64,
    /// Time spent in them, microseconds.
    pub total_micros: u64,
    /// Duration of the latest one, microseconds (0 before the first).
    pub last_micros: u64,
    /// Count per bucket of [`SYNC_BUCKETS_US`] (not cumulative); the last counts larger ones.
    pub buckets: Vec<u64>,
}

impl Health {
    /// `Unavailable` once a write failed; checked before every operation.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        match self.failure.get() {
            Some(msg) => Err(StoreError::Unavailable(msg.clone())),
            None => Ok(()),
        }
    }

    /// Records a fatal failure (the first one wins) and returns the error to answer.
    pub(super) fn fail(&self, msg: String) -> StoreError {
        StoreError::Unavailable(self.record(msg))
    }

    /// Records a fatal failure; returns the sticky message (the first failure's).
    fn record(&self, msg: String) -> String {
        if self.failure.set(msg.clone()).is_ok() {
            tracing::error!(error = %msg, "store: write failure; refusing all calls until restart");
        }
        self.failure.get().cloned().unwrap_or(msg)
    }

    /// Journal syncs performed so far.
    pub(super) fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Sync count, time and latency histogram.
    pub(super) fn sync_stats(&self) -> SyncStats {
        SyncStats {
            count: self.syncs.load(Ordering::Relaxed),
            total_micros: self.sync_micros.load(Ordering::Relaxed),
            last_micros: self.last_sync_micros.load(Ordering::Relaxed),
            buckets: self
                .sync_buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// Makes the next sync fail as if `fsync` had (test hook).
    pub(super) fn inject_sync_failure(&self) {
        self.inject_failure.store(true, Ordering::Release);
    }

    /// One counted journal sync; a failure is recorded for good.
    fn sync(&self, persist: &PersistFn) -> Result<(), String> {
        if let Some(msg) = self.failure.get() {
            return Err(msg.clone());
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let result = if self.inject_failure.swap(false, Ordering::AcqRel) {
            Err("injected sync failure".to_owned())
        } else {
            persist()
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.sync_micros.fetch_add(micros, Ordering::Relaxed);
        self.last_sync_micros.store(micros, Ordering::Relaxed);
        let bucket = SYNC_BUCKETS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(SYNC_BUCKETS_US.len());
        if let Some(counter) = self.sync_buckets.get(bucket) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        result.map_err(|e| self.record(format!("journal sync failed: {e}")))
    }
}

/// Handle to the writer thread; dropping it drains the queue and joins the thread.
pub(super) struct Writer<E: Send + Sync + 'static> {
    tx: Option<mpsc::Sender<Job<E>>>,
    thread: Option<JoinHandle<()>>,
}

impl<E: Send + Sync + 'static> Writer<E> {
    /// Starts the writer thread over `engine`.
    pub(super) fn start(
        engine: Arc<E>,
        health: Arc<Health>,
        mode: Durability,
        persist: PersistFn,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("qpq-store-writer".into())
            .spawn(move || run(engine.as_ref(), &health, mode, &persist, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `op` on the writer thread and returns its value once it is durable.
    ///
    /// `op` returns its value and whether it committed a batch. An `Err` from `op` is
    /// returned as is; an `Ok` becomes `Unavailable` if the covering sync fails.
    pub(super) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&E) -> Result<(T, bool), StoreError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job<E> = Box::new(move |engine: &E| {
            let result = op(engine);
            let committed = matches!(result, Ok((_, true)));
            let done: Completion = Box::new(move |synced: Result<(), String>| {
                let answer = result
                    .and_then(|(value, _)| synced.map(|()| value).map_err(StoreError::Unavailable));
                // The caller may have gone away (cancelled); the write stands regardless.
                let _ = reply_tx.send(answer);
            });
            (committed, done)
        });
        let stopped =
            || StoreError::Unavailable("store writer stopped or the operation panicked".into());
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        tx.send(job).await.map_err(|_| stopped())?;
        reply_rx.await.map_err(|_| stopped())?
    }
}

impl<E: Send + Sync + 'static> Drop for Writer<E> {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what is queued and exit; joining makes
        // sure it has released the engine, so the database can be reopened at once.
        drop(self.tx.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("store: writer thread panicked");
        }
    }
}

fn run<E>(
    engine: &E,
    health: &Health,
    mode: Durability,
    persist: &PersistFn,
    mut rx: mpsc::Receiver<Job<E>>,
) {
    let mut cycle = Vec::with_capacity(MAX_CYCLE);
    let mut waiting: Vec<Completion> = Vec::with_capacity(MAX_CYCLE);
    while let Some(first) = rx.blocking_recv() {
        cycle.push(first);
        while cycle.len() < MAX_CYCLE {
            match rx.try_recv() {
                Ok(job) => cycle.push(job),
                Err(_) => break,
            }
        }
        let mut dirty = false;
        for job in cycle.drain(..) {
            // A panicking operation is a bug: its caller sees its reply channel close
            // (Unavailable) and the writer keeps serving the others.
            let Ok((committed, done)) = catch_unwind(AssertUnwindSafe(|| job(engine))) else {
                tracing::error!("store: a write operation panicked");
                continue;
            };
            match mode {
                Durability::SyncEachWrite => {
                    done(if committed {
                        health.sync(persist)
                    } else {
                        Ok(())
                    });
                }
                Durability::GroupCommit => {
                    dirty |= committed;
                    waiting.push(done);
                }
            }
        }
        if !waiting.is_empty() {
            // Requests that committed nothing still wait for this sync: they may have read
            // state that earlier requests of the cycle committed.
            let synced = if dirty { health.sync(persist) } else { Ok(()) };
            for done in waiting.drain(..) {
                done(synced.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Counter(AtomicU64);

    fn writer(mode: Durability, persist: PersistFn) -> (Writer<Counter>, Arc<Health>) {
        let health = Arc::new(Health::default());
        let w = Writer::start(
            Arc::new(Counter(AtomicU64::new(0))),
            health.clone(),
            mode,
            persist,
        )
        .unwrap();
        (w, health)
    }

    fn slow_persist() -> PersistFn {
        Box::new(|| {
            std::thread::sleep(Duration::from_millis(2));
            Ok(())
        })
    }

    fn bump(c: &Counter) -> Result<(u64, bool), StoreError> {
        Ok((c.0.fetch_add(1, Ordering::SeqCst) + 1, true))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_syncs_and_are_serialized() {
        let (w, health) = writer(Durability::GroupCommit, slow_persist());
        let w = Arc::new(w);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move { w.write(bump).await }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap().unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, (1..=100).collect::<Vec<_>>());
        let syncs = health.sync_count();
        assert!((1..100).contains(&syncs), "syncs = {syncs}");
    }

    #[tokio::test]
    async fn sync_each_write_syncs_every_committing_write() {
        let (w, health) = writer(Durability::SyncEachWrite, slow_persist());
        for _ in 0..3 {
            w.write(bump).await.unwrap();
        }
        w.write(|_| Ok(((), false))).await.unwrap();
        assert_eq!(health.sync_count(), 3);
    }

    #[tokio::test]
    async fn failure_is_sticky_in_both_modes() {
        for mode in [Durability::GroupCommit, Durability::SyncEachWrite] {
            let (w, health) = writer(mode, Box::new(|| Ok(())));
            health.inject_sync_failure();
            let r = w.write(bump).await;
            assert!(
                matches!(r, Err(StoreError::Unavailable(_))),
                "{mode:?}: {r:?}"
            );
            assert!(matches!(health.check(), Err(StoreError::Unavailable(_))));
            let r = w.write(bump).await;
            assert!(
                matches!(r, Err(StoreError::Unavailable(_))),
                "{mode:?}: {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn persist_error_is_unavailable_with_its_reason() {
        let (w, _) = writer(
            Durability::GroupCommit,
            Box::new(|| Err("disk on fire".into())),
        );
        let err = w.write(bump).await.unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }

    #[tokio::test]
    async fn operation_errors_pass_through_and_panics_do_not_kill_the_writer() {
        let (w, _) = writer(Durability::GroupCommit, Box::new(|| Ok(())));
        let r: Result<(), _> = w.write(|_| Err(StoreError::NotFound)).await;
        assert!(matches!(r, Err(StoreError::NotFound)));
        let r: Result<(), StoreError> = w
            .write(|_| -> Result<((), bool), StoreError> { panic!("bug") })
            .await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))));
        assert_eq!(w.write(bump).await.unwrap(), 1);
    }
}
