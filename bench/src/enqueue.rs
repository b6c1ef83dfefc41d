//! Durable Enqueue throughput over QUIC through the real server: every `Ok` counted here was
//! synced to disk before it was sent. Group commit (the default) against one sync per write,
//! at 1, 16 and 256 calls in flight on one connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use qpq_client::IdentityKey;
use qpq_runtime::ClientOptions;
use qpq_schema::{QpqClient, proto};

use crate::stats::{Sample, fmt_latency, table};

const PASSWORD: &[u8] = b"benchmark password";
const PAYLOAD: usize = 256;

struct Setup {
    server: qpq_server::RunningServer,
    _dir: tempfile::TempDir,
    client: QpqClient,
    token: Bytes,
    recipient: Bytes,
}

async fn setup(sync_each_write: bool) -> anyhow::Result<Setup> {
    let dir = tempfile::tempdir()?;
    let mut config = crate::messenger::unlimited(dir.path())?;
    config.sync_each_write = sync_each_write;
    config.queue_max_messages = u64::MAX;
    config.queue_max_bytes = u64::MAX;
    let server = qpq_server::start(config).await?;
    let connection = qpq_runtime::connect(
        server.addr,
        &ClientOptions::pinned(server.identity.cert.clone()),
    )
    .await?;
    let client = QpqClient::new(connection);
    let alice = IdentityKey::generate();
    let bob = IdentityKey::generate();
    qpq_client::register(&client, "alice", PASSWORD, &alice.public()).await?;
    qpq_client::register(&client, "bob", PASSWORD, &bob.public()).await?;
    let session = qpq_client::login(&client, "alice", PASSWORD, None).await?;
    Ok(Setup {
        server,
        _dir: dir,
        client,
        token: session.token,
        recipient: Bytes::copy_from_slice(&bob.public()),
    })
}

async fn measure(setup: &Setup, in_flight: usize, duration: Duration) -> anyhow::Result<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let client = setup.client.clone();
        let token = setup.token.clone();
        let recipient = setup.recipient.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let payload = Bytes::from(vec![0x42u8; PAYLOAD]);
            while !stop.load(Ordering::Relaxed) {
                let begun = Instant::now();
                client
                    .enqueue(proto::EnqueueRequest {
                        session_token: token.clone(),
                        recipient: Some(proto::UserRef {
                            target: Some(proto::user_ref::Target::IdentityKey(recipient.clone())),
                        }),
                        payload: payload.clone(),
                        ttl_secs: 0,
                        channel_id: Bytes::new(),
                    })
                    .await?;
                latencies.push(begun.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Sample {
        ops: latencies.len() as u64,
        elapsed: started.elapsed(),
        latencies,
        server_cpu: None,
    })
}

/// Prints the durable-enqueue table.
pub(crate) async fn run(duration: Duration) -> anyhow::Result<()> {
    println!("## Durable Enqueue ({PAYLOAD}-byte payloads, one connection, every Ok synced)\n");
    let group = setup(false).await?;
    let each = setup(true).await?;
    let mut rows = Vec::new();
    for in_flight in [1usize, 16, 256] {
        let mut g = measure(&group, in_flight, duration).await?;
        let mut e = measure(&each, in_flight, duration).await?;
        rows.push(vec![
            in_flight.to_string(),
            format!("{:.0}", g.per_second()),
            format!(
                "{} / {}",
                fmt_latency(g.percentile(0.5)),
                fmt_latency(g.percentile(0.99))
            ),
            format!("{:.0}", e.per_second()),
            format!(
                "{} / {}",
                fmt_latency(e.percentile(0.5)),
                fmt_latency(e.percentile(0.99))
            ),
            format!("{:.1}x", g.per_second() / e.per_second()),
        ]);
    }
    table(
        &[
            "in flight",
            "group commit msg/s",
            "group p50 / p99",
            "sync-each msg/s",
            "sync-each p50 / p99",
            "group / sync-each",
        ],
        &rows,
    );
    group.server.shutdown().await;
    each.server.shutdown().await;
    Ok(())
}
