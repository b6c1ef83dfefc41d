//! Benchmarks of the messenger server itself: FetchWait wake-up with many parked waiters,
//! memory per idle authenticated connection, and OPAQUE logins.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use qpq_client::IdentityKey;
use qpq_runtime::{ClientOptions, Connector};
use qpq_schema::{QpqClient, proto};
use qpq_server::Config;

use crate::stats::{fmt_latency, table};

const PASSWORD: &[u8] = b"benchmark password";

/// A server configuration without rate limits: the benchmark measures the server, not its
/// abuse limits.
pub(crate) fn unlimited(dir: &std::path::Path) -> anyhow::Result<Config> {
    let mut config = Config::for_data_dir("127.0.0.1:0".parse()?, dir);
    config.rate_limit = vec!["all=off".parse().map_err(anyhow::Error::msg)?];
    Ok(config)
}

fn to(key: &[u8]) -> Option<proto::UserRef> {
    Some(proto::UserRef {
        target: Some(proto::user_ref::Target::IdentityKey(
            Bytes::copy_from_slice(key),
        )),
    })
}

/// FetchWait wake-up: 1,000 FetchWaits parked (20 on each of 50 users, each on its own
/// connection), then one Enqueue at a time to one user; the latency is from the sender getting
/// its Ok (the message is durable) to each of that user's waiters getting the message.
pub(crate) async fn wakeup(rounds: usize) -> anyhow::Result<()> {
    const USERS: usize = 50;
    const PER_USER: usize = 20;
    println!(
        "## FetchWait wake-up ({} parked waiters)\n",
        USERS * PER_USER
    );
    let dir = tempfile::tempdir()?;
    let server = qpq_server::start(unlimited(dir.path())?).await?;
    let options = ClientOptions::pinned(server.identity.cert.clone());
    let connector = Connector::new(false, &options)?;
    let sender = QpqClient::new(connector.connect(server.addr).await?);
    let sender_key = IdentityKey::generate();
    qpq_client::register(&sender, "sender", PASSWORD, &sender_key.public()).await?;
    let sender_session = qpq_client::login(&sender, "sender", PASSWORD, None).await?;
    let mut users = Vec::new();
    for u in 0..USERS {
        let key = IdentityKey::generate();
        let name = format!("waiter{u}");
        qpq_client::register(&sender, &name, PASSWORD, &key.public()).await?;
        let session = qpq_client::login(&sender, &name, PASSWORD, None).await?;
        users.push((key, session.token));
    }
    let mut connections = Vec::new();
    for _ in 0..USERS * PER_USER {
        connections.push(QpqClient::new(connector.connect(server.addr).await?));
    }
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64, Instant)>();
    // Each waiter loops: park in FetchWait (peek mode, after the last seq it saw), report.
    for (i, client) in connections.into_iter().enumerate() {
        let user = i % USERS;
        let token = users[user].1.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let mut after = 0;
            loop {
                let page = client
                    .fetch_wait(proto::FetchWaitRequest {
                        session_token: token.clone(),
                        limit: 10,
                        timeout_ms: 60_000,
                        peek: true,
                        after_seq: after,
                    })
                    .await;
                let Ok(page) = page else { return };
                if let Some(last) = page.messages.last() {
                    after = last.seq;
                    if done.send((user, last.seq, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut from_ok = Vec::new();
    let mut from_send = Vec::new();
    let mut first_from_ok = Vec::new();
    for round in 0..rounds {
        let user = round % USERS;
        let sent = Instant::now();
        let response = sender
            .enqueue(proto::EnqueueRequest {
                session_token: sender_session.token.clone(),
                recipient: to(&users[user].0.public()),
                payload: Bytes::from_static(b"wake"),
                ttl_secs: 0,
                channel_id: Bytes::new(),
            })
            .await?;
        let ok = Instant::now();
        let mut woken = 0;
        while woken < PER_USER {
            let (u, seq, at) = done_rx
                .recv()
                .await
                .ok_or_else(|| anyhow::anyhow!("waiters stopped"))?;
            if u == user && seq == response.seq {
                if woken == 0 {
                    first_from_ok.push(at.saturating_duration_since(ok));
                }
                woken += 1;
                from_ok.push(at.saturating_duration_since(ok));
                from_send.push(at.duration_since(sent));
            }
        }
        // Let the woken waiters park again before the next round.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    from_ok.sort_unstable();
    from_send.sort_unstable();
    first_from_ok.sort_unstable();
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    table(
        &[
            "wake-ups",
            "first waiter p50 / p99 from Ok",
            "all 20 p50 from Ok",
            "all 20 p99 from Ok",
            "p50 from send",
            "p99 from send",
        ],
        &[vec![
            from_ok.len().to_string(),
            format!(
                "{} / {}",
                fmt_latency(pct(&first_from_ok, 0.5)),
                fmt_latency(pct(&first_from_ok, 0.99))
            ),
            fmt_latency(pct(&from_ok, 0.5)),
            fmt_latency(pct(&from_ok, 0.99)),
            fmt_latency(pct(&from_send, 0.5)),
            fmt_latency(pct(&from_send, 0.99)),
        ]],
    );
    println!(
        "\"From Ok\": after the sender's Ok (the message is synced) until a waiter has it \
         (\"first waiter\": the first of the user's 20 parked waiters to return; \"all 20\": every \
         one of them); \"from send\" adds the durable Enqueue itself. Target: p99 under 1 ms.\n"
    );
    server.shutdown().await;
    Ok(())
}

fn rss_kib(child: &Child) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{}/status", child.id()))
}

/// The server process, killed however the section ends (an error included).
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the release `qpq-server` binary next to this one.
fn spawn_server(dir: &std::path::Path) -> anyhow::Result<(ServerProcess, std::net::SocketAddr)> {
    use std::io::BufRead;
    let exe = std::env::current_exe()?.with_file_name("qpq-server");
    anyhow::ensure!(
        exe.exists(),
        "{} is missing: build it with `cargo build --release --locked -p qpq-server`",
        exe.display()
    );
    let mut child = ServerProcess(
        Command::new(exe)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--rate-limit",
                "all=off",
                "--data-dir",
            ])
            .arg(dir)
            // QPQ_BENCH_SERVER_LOG (a RUST_LOG filter) shows the server's logs when diagnosing.
            .env(
                "RUST_LOG",
                std::env::var("QPQ_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    stdout.read_line(&mut line)?;
    // The server's later output (its logs) goes on to stderr rather than into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::stderr()));
    let addr = line
        .trim()
        .strip_prefix("qpq-server listening on ")
        .ok_or_else(|| anyhow::anyhow!("unexpected server output {line:?}"))?
        .parse()?;
    Ok((child, addr))
}

/// Server RSS with many idle authenticated connections (the real binary, its own process).
pub(crate) async fn connections(count: usize) -> anyhow::Result<()> {
    println!("## Idle authenticated connections (qpq-server process RSS)\n");
    let dir = tempfile::tempdir()?;
    let (child, addr) = spawn_server(dir.path())?;
    let cert = qpq_runtime::tls::load_cert(&dir.path().join("server-cert.der"))?;
    let mut options = ClientOptions::pinned(cert);
    options.keep_alive = Some(Duration::from_secs(5));
    let connector = Connector::new(false, &options)?;
    let first = QpqClient::new(connector.connect(addr).await?);
    let key = IdentityKey::generate();
    qpq_client::register(&first, "idle", PASSWORD, &key.public()).await?;
    let session = qpq_client::login(&first, "idle", PASSWORD, None).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss_kib(&child.0)?;
    let started = Instant::now();
    let mut held = Vec::with_capacity(count);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut retries = 0;
    while held.len() < count {
        while tasks.len() < 64 && next < count {
            next += 1;
            let (connector, token) = (connector.clone(), session.token.clone());
            tasks.spawn(async move {
                // A handshake lost in the burst is tried again (up to twice), and counted.
                let mut retried = 0;
                let connection = loop {
                    match connector.connect(addr).await {
                        Ok(connection) => break connection,
                        Err(_) if retried < 2 => retried += 1,
                        Err(error) => return Err(error.into()),
                    }
                };
                let client = QpqClient::new(connection);
                // An authenticated call ties the connection to the account, as a real client's.
                client
                    .peek(proto::PeekRequest {
                        session_token: token,
                        limit: 1,
                        after_seq: u64::MAX,
                    })
                    .await?;
                anyhow::Ok((client, retried))
            });
        }
        match tasks.join_next().await {
            Some(result) => {
                let (client, retried) = result??;
                retries += retried;
                held.push(client);
            }
            None => break,
        }
    }
    let setup = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_kib(&child.0)?;
    table(
        &[
            "connections",
            "RSS before",
            "RSS with them",
            "per connection",
            "set-up time",
        ],
        &[vec![
            held.len().to_string(),
            format!("{:.1} MiB", base as f64 / 1024.0),
            format!("{:.1} MiB", loaded as f64 / 1024.0),
            format!(
                "{:.1} KiB",
                (loaded.saturating_sub(base)) as f64 / held.len() as f64
            ),
            format!("{:.1} s", setup.as_secs_f64()),
        ]],
    );
    if retries > 0 {
        println!("{retries} connect attempts timed out in the burst and were made again.\n");
    }
    println!("Target: under 1 GiB with 10,000 connections.\n");
    drop(held);
    drop(child);
    Ok(())
}

/// OPAQUE logins per second (the client's Argon2id dominates) and the server's own cost.
pub(crate) async fn opaque(duration: Duration) -> anyhow::Result<()> {
    println!("## OPAQUE logins\n");
    let dir = tempfile::tempdir()?;
    let server = qpq_server::start(unlimited(dir.path())?).await?;
    let client = QpqClient::new(
        qpq_runtime::connect(
            server.addr,
            &ClientOptions::pinned(server.identity.cert.clone()),
        )
        .await?,
    );
    let key = IdentityKey::generate();
    qpq_client::register(&client, "opaque", PASSWORD, &key.public()).await?;
    let started = Instant::now();
    let mut logins = 0u32;
    while started.elapsed() < duration || logins == 0 {
        qpq_client::login(&client, "opaque", PASSWORD, None).await?;
        logins += 1;
    }
    let elapsed = started.elapsed();
    let server_cost = qpq_server::auth::measure_server_login_cost(dir.path(), 50)
        .map_err(|e| anyhow::anyhow!("measuring the server login cost: {e}"))?;
    table(
        &[
            "logins",
            "logins/s (one client thread)",
            "per login",
            "server CPU per login",
        ],
        &[vec![
            logins.to_string(),
            format!("{:.1}", f64::from(logins) / elapsed.as_secs_f64()),
            fmt_latency(elapsed / logins),
            fmt_latency(server_cost),
        ]],
    );
    println!(
        "Argon2id (client side only): m = {} KiB, t = {}, p = {}. The server never runs Argon2.\n",
        qpq_server::auth::opaque::KSF_M_COST_KIB,
        qpq_server::auth::opaque::KSF_T_COST,
        qpq_server::auth::opaque::KSF_P_COST
    );
    server.shutdown().await;
    Ok(())
}
