//! Several instances of one domain: two real servers in this process on one PostgreSQL (a
//! throw-away cluster with `fsync` on) and one nats-server, both started here. Prints the
//! wake-up latency of a FetchWait parked on instance A when the Enqueue goes through A or
//! through B, and durable Enqueue at 256 in flight through one instance and through two.

use std::time::{Duration, Instant};

use bytes::Bytes;
use qpq_client::IdentityKey;
use qpq_runtime::ClientOptions;
use qpq_schema::{QpqClient, proto};
use qpq_server::testing::{NatsServer, PgCluster};
use qpq_server::{BusChoice, RunningServer, StoreChoice};

use crate::stats::{Sample, fmt_latency, table};

const PASSWORD: &[u8] = b"benchmark password";
/// Recipients of the throughput load.
const RECIPIENTS: usize = 64;
/// Wake-ups measured per row.
const WAKE_UPS: usize = 1000;

async fn instance(
    dir: &std::path::Path,
    store: &StoreChoice,
    bus: &BusChoice,
) -> anyhow::Result<RunningServer> {
    let mut config = crate::messenger::unlimited(dir)?;
    config.store = store.clone();
    config.bus = bus.clone();
    config.queue_max_messages = u64::MAX >> 2;
    config.queue_max_bytes = u64::MAX >> 2;
    qpq_server::start(config).await
}

async fn connect(server: &RunningServer) -> anyhow::Result<QpqClient> {
    let connection = qpq_runtime::connect(
        server.addr,
        &ClientOptions::pinned(server.identity.cert.clone()),
    )
    .await?;
    Ok(QpqClient::new(connection))
}

/// Registers `name` through `client` and answers its public key.
async fn register(client: &QpqClient, name: &str) -> anyhow::Result<Bytes> {
    let key = IdentityKey::generate();
    qpq_client::register(client, name, PASSWORD, &key.public()).await?;
    Ok(Bytes::copy_from_slice(&key.public()))
}

async fn login(client: &QpqClient, name: &str) -> anyhow::Result<Bytes> {
    Ok(qpq_client::login(client, name, PASSWORD, None).await?.token)
}

/// Latencies from the sender's Ok to the parked FetchWait's answer, one wake-up at a time.
async fn wake_ups(
    waiter: &(QpqClient, Bytes),
    sender: &(QpqClient, Bytes),
    to: &Bytes,
) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(WAKE_UPS);
    for _ in 0..WAKE_UPS {
        let (client, token) = waiter.clone();
        let parked = tokio::spawn(async move {
            client
                .fetch_wait(proto::FetchWaitRequest {
                    session_token: token,
                    limit: 10,
                    timeout_ms: 10_000,
                    peek: false,
                    after_seq: 0,
                })
                .await
        });
        // Let the call park before the message is sent.
        tokio::time::sleep(Duration::from_millis(1)).await;
        sender
            .0
            .enqueue(proto::EnqueueRequest {
                session_token: sender.1.clone(),
                recipient: Some(proto::UserRef {
                    target: Some(proto::user_ref::Target::IdentityKey(to.clone())),
                }),
                payload: Bytes::from_static(b"wake up"),
                ttl_secs: 0,
                channel_id: Bytes::new(),
            })
            .await?;
        let sent = Instant::now();
        let answer = parked.await??;
        anyhow::ensure!(answer.messages.len() == 1, "a wake-up without its message");
        latencies.push(sent.elapsed());
    }
    Ok(Sample {
        ops: WAKE_UPS as u64,
        elapsed: started.elapsed(),
        latencies,
        server_cpu: None,
    })
}

/// Prints the tables of two instances on one PostgreSQL and one NATS.
pub(crate) async fn run(duration: Duration) -> anyhow::Result<()> {
    println!(
        "## Two instances on one PostgreSQL and one NATS (in this process; client, servers, \
         PostgreSQL and nats-server share the machine)\n"
    );
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await?
        .map_err(anyhow::Error::msg)?;
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await?
        .map_err(anyhow::Error::msg)?;
    let store = StoreChoice::Postgres(cluster.postgres_url(&cluster.create_database()));
    let bus = BusChoice::Nats(nats.url());
    let dir_a = tempfile::tempdir()?;
    let dir_b = tempfile::tempdir()?;
    let a = instance(dir_a.path(), &store, &bus).await?;
    for file in qpq_server::INSTANCE_FILES {
        std::fs::copy(dir_a.path().join(file), dir_b.path().join(file))?;
    }
    let b = instance(dir_b.path(), &store, &bus).await?;

    let (on_a, on_b) = (connect(&a).await?, connect(&b).await?);
    let alice = register(&on_a, "alice").await?;
    register(&on_b, "bob").await?;
    let mut recipients = Vec::new();
    for i in 0..RECIPIENTS {
        recipients.push(register(&on_a, &format!("r{i}")).await?);
    }
    let waiter = (connect(&a).await?, Bytes::new());
    let waiter = (waiter.0.clone(), login(&waiter.0, "alice").await?);
    let bob_a = (on_a.clone(), login(&on_a, "bob").await?);
    let bob_b = (on_b.clone(), login(&on_b, "bob").await?);

    let mut rows = Vec::new();
    for (label, sender) in [
        ("A (same instance)", &bob_a),
        ("B (across instances)", &bob_b),
    ] {
        let mut sample = wake_ups(&waiter, sender, &alice).await?;
        rows.push(vec![
            label.to_string(),
            WAKE_UPS.to_string(),
            fmt_latency(sample.percentile(0.5)),
            fmt_latency(sample.percentile(0.99)),
        ]);
    }
    println!("FetchWait parked on instance A, one wake-up at a time:\n");
    table(
        &["Enqueue through", "wake-ups", "p50 from Ok", "p99 from Ok"],
        &rows,
    );

    let mut rows = Vec::new();
    let one = [bob_a.clone()];
    let two = [bob_a.clone(), bob_b.clone()];
    let single = crate::storage::enqueue_rate(&one, &recipients, 256, true, duration).await?;
    let both = crate::storage::enqueue_rate(&two, &recipients, 256, true, duration).await?;
    rows.push(vec![
        "1 (A)".into(),
        "256".into(),
        format!("{single:.0}"),
        "1.00x".into(),
    ]);
    rows.push(vec![
        "2 (A and B, 128 each)".into(),
        "256".into(),
        format!("{both:.0}"),
        format!("{:.2}x", both / single),
    ]);
    println!(
        "\nDurable Enqueue (256-byte payloads, spread over {RECIPIENTS} queues), one connection per instance:\n"
    );
    table(&["instances", "in flight", "msg/s", "vs one"], &rows);
    a.shutdown().await;
    b.shutdown().await;
    drop(nats);
    drop(cluster);
    Ok(())
}
