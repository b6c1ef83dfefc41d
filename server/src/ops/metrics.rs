//! Prometheus metrics: calls by method and status, call latency histograms, open connections,
//! queue depth, and storage sync latency, served as text on an optional HTTP listener
//! (`--metrics-listen`, path `/metrics`).
//!
//! The counters are plain atomics in fixed tables indexed by method, so recording a call on
//! the hot path takes no lock and allocates nothing. Gauges that need the store (queue depth,
//! sync stats) are read when scraped.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use qpq_runtime::{MethodDescriptor, Observer, StatusCode};
use qpq_schema::METHODS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::store::{SYNC_BUCKETS_US, Store, SyncStats};

/// Upper bounds (seconds) of the call latency histogram.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Status columns: the wire codes by byte, plus "Cancelled" (the client gave up).
const STATUS_SLOTS: usize = 13;
const CANCELLED: usize = 12;

fn status_slot(status: Option<StatusCode>) -> usize {
    match status {
        None => CANCELLED,
        Some(code) => usize::from(code.as_u8()).min(CANCELLED - 1),
    }
}

fn slot_name(slot: usize) -> &'static str {
    if slot == CANCELLED {
        "Cancelled"
    } else {
        StatusCode::from_u8(slot as u8).name()
    }
}

struct MethodStats {
    by_status: [AtomicU64; STATUS_SLOTS],
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_micros: AtomicU64,
}

impl Default for MethodStats {
    fn default() -> Self {
        Self {
            by_status: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_micros: AtomicU64::new(0),
        }
    }
}

/// The gauges of `store`: queue totals from the domain, commit figures from its engine (if
/// it has one).
pub(crate) fn gauges<S: Store>(store: S) -> StoreGauges {
    let engine = store.engine();
    Arc::new(move || {
        let store = store.clone();
        let engine = engine.clone();
        Box::pin(async move {
            let queues = store.queue_totals().await.unwrap_or_default();
            StoreSnapshot {
                queued_messages: queues.messages,
                queued_bytes: queues.bytes,
                nonempty_queues: queues.nonempty_queues,
                sync: engine.map(|e| e.commit_stats()).unwrap_or_default(),
            }
        })
    })
}

/// Gauges read from the store at scrape time.
pub(crate) type StoreGauges =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = StoreSnapshot> + Send>> + Send + Sync>;

/// What the store reports at scrape time.
#[derive(Default)]
pub(crate) struct StoreSnapshot {
    pub(crate) queued_messages: u64,
    pub(crate) queued_bytes: u64,
    pub(crate) nonempty_queues: u64,
    pub(crate) sync: SyncStats,
}

/// The server's metrics.
pub(crate) struct Metrics {
    methods: Vec<MethodStats>,
    unknown_methods: AtomicU64,
    connections: AtomicI64,
    connections_total: AtomicU64,
    stateless_retries: AtomicU64,
    closed_for_abuse: AtomicU64,
    store: StoreGauges,
}

impl Metrics {
    pub(crate) fn new(store: StoreGauges) -> Self {
        Self {
            methods: METHODS.iter().map(|_| MethodStats::default()).collect(),
            unknown_methods: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            stateless_retries: AtomicU64::new(0),
            closed_for_abuse: AtomicU64::new(0),
            store,
        }
    }

    fn index(method: &MethodDescriptor) -> Option<usize> {
        METHODS.binary_search_by_key(&method.id, |m| m.id).ok()
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) async fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("# HELP qpq_calls_total RPC calls answered, by method and status.\n");
        out.push_str("# TYPE qpq_calls_total counter\n");
        for (method, stats) in METHODS.iter().zip(&self.methods) {
            for (slot, count) in stats.by_status.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "qpq_calls_total{{method=\"{}\",id=\"{}\",status=\"{}\"}} {count}",
                        method.name,
                        method.id,
                        slot_name(slot)
                    );
                }
            }
        }
        out.push_str(
            "# HELP qpq_call_duration_seconds Time from request header to response, by method.\n",
        );
        out.push_str("# TYPE qpq_call_duration_seconds histogram\n");
        for (method, stats) in METHODS.iter().zip(&self.methods) {
            let total: u64 = stats
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .sum();
            if total == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&stats.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "qpq_call_duration_seconds_bucket{{method=\"{}\",le=\"{bound}\"}} {cumulative}",
                    method.name
                );
            }
            let _ = writeln!(
                out,
                "qpq_call_duration_seconds_bucket{{method=\"{}\",le=\"+Inf\"}} {total}",
                method.name
            );
            let sum = stats.latency_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "qpq_call_duration_seconds_sum{{method=\"{}\"}} {sum}",
                method.name
            );
            let _ = writeln!(
                out,
                "qpq_call_duration_seconds_count{{method=\"{}\"}} {total}",
                method.name
            );
        }
        let _ = writeln!(
            out,
            "# HELP qpq_unknown_method_calls_total Requests for a method ID this server does not have.\n\
             # TYPE qpq_unknown_method_calls_total counter\n\
             qpq_unknown_method_calls_total {}",
            self.unknown_methods.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP qpq_open_connections QUIC connections open now.\n\
             # TYPE qpq_open_connections gauge\n\
             qpq_open_connections {}\n\
             # HELP qpq_connections_total QUIC connections accepted since start.\n\
             # TYPE qpq_connections_total counter\n\
             qpq_connections_total {}",
            self.connections.load(Ordering::Relaxed),
            self.connections_total.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP qpq_stateless_retries_total New clients asked to prove their address (stateless retry) under handshake load.\n\
             # TYPE qpq_stateless_retries_total counter\n\
             qpq_stateless_retries_total {}\n\
             # HELP qpq_connections_closed_for_abuse_total Connections closed for abandoning too many streams before a request.\n\
             # TYPE qpq_connections_closed_for_abuse_total counter\n\
             qpq_connections_closed_for_abuse_total {}",
            self.stateless_retries.load(Ordering::Relaxed),
            self.closed_for_abuse.load(Ordering::Relaxed)
        );
        let store = (self.store)().await;
        let _ = writeln!(
            out,
            "# HELP qpq_queued_messages Messages waiting in delivery queues.\n\
             # TYPE qpq_queued_messages gauge\n\
             qpq_queued_messages {}\n\
             # HELP qpq_queued_bytes Payload bytes waiting in delivery queues.\n\
             # TYPE qpq_queued_bytes gauge\n\
             qpq_queued_bytes {}\n\
             # HELP qpq_nonempty_queues Delivery queues holding at least one message.\n\
             # TYPE qpq_nonempty_queues gauge\n\
             qpq_nonempty_queues {}",
            store.queued_messages, store.queued_bytes, store.nonempty_queues
        );
        out.push_str(
            "# HELP qpq_storage_sync_duration_seconds Journal syncs (fsync) of the store.\n",
        );
        out.push_str("# TYPE qpq_storage_sync_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (bound, count) in SYNC_BUCKETS_US.iter().zip(&store.sync.buckets) {
            cumulative += count;
            let _ = writeln!(
                out,
                "qpq_storage_sync_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "qpq_storage_sync_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
             qpq_storage_sync_duration_seconds_sum {}\n\
             qpq_storage_sync_duration_seconds_count {}",
            store.sync.count,
            store.sync.total_micros as f64 / 1e6,
            store.sync.count
        );
        out
    }
}

impl Observer for Metrics {
    fn call_finished(
        &self,
        method: &'static MethodDescriptor,
        status: Option<StatusCode>,
        latency: Duration,
    ) {
        let Some(stats) = Self::index(method).and_then(|i| self.methods.get(i)) else {
            return;
        };
        stats.by_status[status_slot(status)].fetch_add(1, Ordering::Relaxed);
        let seconds = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        stats.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        stats.latency_micros.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn unknown_method(&self, _method_id: u16) {
        self.unknown_methods.fetch_add(1, Ordering::Relaxed);
    }

    fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    fn stateless_retry(&self) {
        self.stateless_retries.fetch_add(1, Ordering::Relaxed);
    }

    fn connection_closed_for_abuse(&self) {
        self.closed_for_abuse.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped. Anything else is 404; a
/// client gets 5 s to send its request head (at most 8 KiB).
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &metrics).await {
                tracing::debug!(%peer, %error, "metrics request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > 8 * 1024 {
                return Err(std::io::Error::other(
                    "incomplete or oversized request head",
                ));
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .map_err(|_| std::io::Error::other("request head timed out"))??;
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) = if line.starts_with(b"GET /metrics ") {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render().await,
        )
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only GET /metrics is served here\n".to_owned(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds the metrics listener.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
