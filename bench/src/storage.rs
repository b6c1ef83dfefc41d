//! Durable Enqueue on the two storage backends side by side: the embedded store (fjall) and
//! PostgreSQL (a throw-away cluster with `fsync` on, started here), through the real server
//! over QUIC. Spread over many recipients' queues and into one hot queue, at 1, 16 and 256
//! calls in flight on one connection; every `Ok` counted was durable before it was sent.
//!
//! For PostgreSQL it also prints the server's commits and PostgreSQL's WAL flushes
//! (`pg_stat_wal.wal_sync`) per second: group commit shows as many messages per commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use qpq_client::IdentityKey;
use qpq_runtime::ClientOptions;
use qpq_schema::{QpqClient, proto};
use qpq_server::StoreChoice;
use qpq_server::testing::PgCluster;

use crate::stats::table;

const PASSWORD: &[u8] = b"benchmark password";
const PAYLOAD: usize = 256;
/// Recipients of the "spread" load.
const RECIPIENTS: usize = 64;

struct Setup {
    server: qpq_server::RunningServer,
    _dir: tempfile::TempDir,
    client: QpqClient,
    token: Bytes,
    recipients: Vec<Bytes>,
}

async fn setup(store: StoreChoice) -> anyhow::Result<Setup> {
    let dir = tempfile::tempdir()?;
    let mut config = crate::messenger::unlimited(dir.path())?;
    config.store = store;
    config.queue_max_messages = u64::MAX >> 2;
    config.queue_max_bytes = u64::MAX >> 2;
    let server = qpq_server::start(config).await?;
    let connection = qpq_runtime::connect(
        server.addr,
        &ClientOptions::pinned(server.identity.cert.clone()),
    )
    .await?;
    let client = QpqClient::new(connection);
    let alice = IdentityKey::generate();
    qpq_client::register(&client, "alice", PASSWORD, &alice.public()).await?;
    let mut recipients = Vec::new();
    for i in 0..RECIPIENTS {
        let key = IdentityKey::generate();
        qpq_client::register(&client, &format!("r{i}"), PASSWORD, &key.public()).await?;
        recipients.push(Bytes::copy_from_slice(&key.public()));
    }
    let session = qpq_client::login(&client, "alice", PASSWORD, None).await?;
    Ok(Setup {
        server,
        _dir: dir,
        client,
        token: session.token,
        recipients,
    })
}

/// Messages per second with `in_flight` callers; `spread` sends round-robin over every
/// recipient, else all to the first.
async fn measure(
    setup: &Setup,
    in_flight: usize,
    spread: bool,
    duration: Duration,
) -> anyhow::Result<f64> {
    let senders = [(setup.client.clone(), setup.token.clone())];
    enqueue_rate(&senders, &setup.recipients, in_flight, spread, duration).await
}

/// Messages per second with `in_flight` callers spread over `senders` (a connection and its
/// session each); `spread` sends round-robin over `recipients`, else all to the first.
pub(crate) async fn enqueue_rate(
    senders: &[(QpqClient, Bytes)],
    recipients: &[Bytes],
    in_flight: usize,
    spread: bool,
    duration: Duration,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..in_flight {
        let (client, token) = senders[n % senders.len()].clone();
        let recipients = recipients.to_vec();
        let stop = stop.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let payload = Bytes::from(vec![0x42u8; PAYLOAD]);
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = if spread {
                    next.fetch_add(1, Ordering::Relaxed) % recipients.len()
                } else {
                    0
                };
                client
                    .enqueue(proto::EnqueueRequest {
                        session_token: token.clone(),
                        recipient: Some(proto::UserRef {
                            target: Some(proto::user_ref::Target::IdentityKey(
                                recipients[i].clone(),
                            )),
                        }),
                        payload: payload.clone(),
                        ttl_secs: 0,
                        channel_id: Bytes::new(),
                    })
                    .await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut done = 0;
    for task in tasks {
        done += task.await??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// PostgreSQL's WAL flushes so far (`pg_stat_wal.wal_sync`).
async fn wal_syncs(url: &str) -> anyhow::Result<i64> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let n: i64 = client
        .query_one("SELECT wal_sync FROM pg_stat_wal", &[])
        .await?
        .get(0);
    drop(client);
    let _ = task.await;
    Ok(n)
}

/// Prints the table of durable Enqueue on fjall and on PostgreSQL.
pub(crate) async fn run(duration: Duration) -> anyhow::Result<()> {
    println!(
        "## Durable Enqueue: embedded store vs PostgreSQL ({PAYLOAD}-byte payloads, one connection, \
         spread over {RECIPIENTS} queues or into one)\n"
    );
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await?
        .map_err(anyhow::Error::msg)?;
    let db = cluster.create_database();
    let pg_url = cluster.url(&db);
    let fjall = setup(StoreChoice::Embedded).await?;
    let pg = setup(StoreChoice::Postgres(cluster.postgres_url(&db))).await?;
    let pg_engine = pg
        .server
        .engine()
        .ok_or_else(|| anyhow::anyhow!("the PostgreSQL store has no engine figures"))?;
    let mut rows = Vec::new();
    for spread in [true, false] {
        for in_flight in [1usize, 16, 256] {
            let f = measure(&fjall, in_flight, spread, duration).await?;
            let commits_before = pg_engine.commit_stats().count;
            let wal_before = wal_syncs(&pg_url).await?;
            let began = Instant::now();
            let p = measure(&pg, in_flight, spread, duration).await?;
            let secs = began.elapsed().as_secs_f64();
            let commits = (pg_engine.commit_stats().count - commits_before) as f64 / secs;
            let wal = (wal_syncs(&pg_url).await? - wal_before) as f64 / secs;
            rows.push(vec![
                if spread { "spread" } else { "one queue" }.to_string(),
                in_flight.to_string(),
                format!("{f:.0}"),
                format!("{p:.0}"),
                format!("{:.2}x", p / f),
                format!("{commits:.0}"),
                format!("{wal:.0}"),
                format!("{:.1}", p / commits.max(1.0)),
            ]);
        }
    }
    table(
        &[
            "queues",
            "in flight",
            "fjall msg/s",
            "PostgreSQL msg/s",
            "PG / fjall",
            "PG commits/s",
            "PG WAL flushes/s",
            "msg per commit",
        ],
        &rows,
    );
    fjall.server.shutdown().await;
    pg.server.shutdown().await;
    drop(cluster);
    Ok(())
}
