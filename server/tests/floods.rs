//! Floods against the real binary, each while a normal client on its own connection makes
//! small calls (Health, one every 2 ms) and measures their p99:
//!
//! - **streams**: one connection opens bidirectional streams and resets them at once, as
//!   fast as it can (reconnecting when closed). The server closes a connection that abandons
//!   more streams than `ServerOptions::abandoned_streams_*` allow, and then admits at most 2
//!   new connections a second from its address for 30 s (`ServerOptions::abuse_penalty`).
//! - **handshakes**: a quinn client starts handshakes through a relay of 32 UDP sockets (so
//!   they come from 32 source ports) that forwards each connection's first datagram, its
//!   Initial, to the server and drops everything the server answers: every handshake stays
//!   incomplete. Past `retry_above_pending_handshakes` (or `unvalidated_handshakes_per_sec`)
//!   the server answers with stateless retries, which the attacker never completes, so it
//!   holds no state for them.
//!
//! The attacker is a separate process (this test binary again, in its `attacker` role:
//! `harness = false`, see `common/harness.rs`) under the SCHED_IDLE policy (`chrt --idle 0`): it stands for a
//! machine elsewhere, so what the normal client feels is the server's cost of the attack
//! rather than the attacker's own CPU use on this 2-core machine. Its achieved rate is
//! printed.
//!
//! The attacker is switched on and off every second (through its standard input): ten
//! one-second flood windows alternate with ten one-second quiet windows (30 of each with
//! `QPQ_LONG_TESTS=1`), so whatever else loads this shared machine weighs on both alike.
//! Checked: the normal client's p99 over the flood windows stays within 3x its p99 over the
//! quiet windows (one retry of the whole measurement is allowed before failing); the
//! server's resident memory stays bounded; the attacker is disconnected (streams) or retried
//! without state (handshakes), read from the server's `/metrics` counters. The two floods
//! share the machine's cores, so they run one at a time, as the harness runs every test.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TempServerProcess, free_port, harness, rss_kib, scrape};
use qpq_runtime::tls::ServerTrust;
use qpq_runtime::{ClientOptions, tls};
use qpq_schema::{QpqClient, proto};

fn main() -> std::process::ExitCode {
    harness::main(
        &[
            (
                "a_stream_flood_is_cut_off_and_normal_calls_keep_their_latency",
                || {
                    harness::block_on(
                        a_stream_flood_is_cut_off_and_normal_calls_keep_their_latency(),
                    )
                },
            ),
            (
                "a_handshake_flood_meets_stateless_retry_and_normal_calls_keep_their_latency",
                || {
                    harness::block_on(
                        a_handshake_flood_meets_stateless_retry_and_normal_calls_keep_their_latency(
                        ),
                    )
                },
            ),
        ],
        &[("attacker", attacker)],
    )
}

const PACE: Duration = Duration::from_millis(2);
/// Handshakes the attacker starts per second (`QPQ_FLOOD_HANDSHAKES_PER_SEC` to change).
const HANDSHAKES_PER_SEC: u64 = 2_000;

fn handshakes_per_sec() -> u64 {
    std::env::var("QPQ_FLOOD_HANDSHAKES_PER_SEC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(HANDSHAKES_PER_SEC)
}
const RELAY_SOCKETS: usize = 32;

/// One-second flood windows, each followed by a one-second quiet window: 10, or 30 with
/// `QPQ_LONG_TESTS=1`.
fn windows() -> usize {
    if std::env::var("QPQ_LONG_TESTS").is_ok_and(|v| v == "1") {
        30
    } else {
        10
    }
}

/// Calls measured per window (after 100 ms for the attacker to start or stop).
const WINDOW: Duration = Duration::from_millis(900);

/// A counter of the server's `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = scrape(addr, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// Health calls paced every [`PACE`] for `duration`; their latencies.
async fn measure(client: &QpqClient, duration: Duration) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let end = Instant::now() + duration;
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < end {
        tick.tick().await;
        let started = Instant::now();
        client.health(proto::HealthRequest {}).await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies
}

fn p99(latencies: &[Duration]) -> Duration {
    percentile(latencies, 990)
}

/// The `per_mille`th latency of `latencies`.
fn percentile(latencies: &[Duration], per_mille: usize) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    sorted[(sorted.len() * per_mille / 1000).min(sorted.len() - 1)]
}

/// Peak resident memory of `pid` while `running` is set.
fn sample_rss(pid: u32, running: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while running.load(Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

/// The real binary with `/metrics` on its own port.
struct Server {
    binary: TempServerProcess,
    metrics: SocketAddr,
}

fn start_server() -> Server {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    Server {
        binary: TempServerProcess::spawn(&["--metrics-listen", &metrics.to_string()]),
        metrics,
    }
}

/// What one flood did to the normal client and the server.
struct Outcome {
    quiet_p99: Duration,
    flood_p99: Duration,
    /// p50, p90, p99.9 of the flood, for the report.
    flood_spread: [Duration; 3],
    calls: usize,
    rss_before: u64,
    rss_peak: u64,
}

impl Outcome {
    fn within(&self) -> bool {
        self.flood_p99 <= self.quiet_p99 * 3
    }
}

/// Runs the `kind` attacker process and switches it on and off every second, measuring the
/// normal client in both kinds of window, so that whatever else loads the machine weighs on
/// both alike; returns what was measured and the attacker's report line.
async fn under_attack(server: &Server, client: &QpqClient, kind: &str) -> (Outcome, String) {
    use std::io::Write as _;
    let pid = server.binary.process.child.id();
    // SCHED_IDLE: the attacker only gets CPU time nothing else wants (`nice` is the fallback
    // where `chrt` is missing).
    let (program, args) = if std::process::Command::new("chrt")
        .arg("--version")
        .output()
        .is_ok()
    {
        ("chrt", ["--idle", "0"])
    } else {
        ("nice", ["-n", "19"])
    };
    let mut attacker = std::process::Command::new(program)
        .args(args)
        .arg(std::env::current_exe().unwrap())
        .args(harness::role_args("attacker"))
        .env("QPQ_FLOOD_ATTACK", kind)
        .env("QPQ_FLOOD_SERVER", server.binary.process.addr.to_string())
        .env("QPQ_FLOOD_CERT", &server.binary.cert)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut switch = attacker.stdin.take().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(pid);
    let running = Arc::new(AtomicBool::new(true));
    let sampler = sample_rss(pid, running.clone());
    let (mut quiet, mut flooded) = (Vec::new(), Vec::new());
    for _ in 0..windows() {
        writeln!(switch, "on").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        flooded.extend(measure(client, WINDOW).await);
        writeln!(switch, "off").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        quiet.extend(measure(client, WINDOW).await);
    }
    writeln!(switch, "quit").unwrap();
    drop(switch);
    let output = tokio::task::spawn_blocking(move || attacker.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    running.store(false, Ordering::Relaxed);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = stdout
        .lines()
        .find(|l| l.starts_with("attacker:"))
        .unwrap_or_else(|| panic!("the attacker process did not report:\n{stdout}"))
        .to_owned();
    (
        Outcome {
            quiet_p99: p99(&quiet),
            flood_p99: p99(&flooded),
            flood_spread: [
                percentile(&flooded, 500),
                percentile(&flooded, 900),
                percentile(&flooded, 999),
            ],
            calls: flooded.len(),
            rss_before,
            rss_peak: sampler.join().unwrap(),
        },
        report,
    )
}

/// The attacker's on/off switch, driven by lines on its standard input.
struct Switch {
    running: AtomicBool,
    active: AtomicBool,
}

impl Switch {
    fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
}

/// A number `key=N` in the attacker's report line.
fn field(report: &str, key: &str) -> u64 {
    report
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in `{report}`"))
}

fn report(name: &str, outcome: &Outcome) {
    println!(
        "{name}: normal client p99 {:.2} ms quiet, {:.2} ms under the flood ({:.1}x, {} calls; p50 {:.2}, p90 {:.2}, p99.9 {:.2} ms); server RSS {} MiB before, peak {} MiB",
        outcome.quiet_p99.as_secs_f64() * 1e3,
        outcome.flood_p99.as_secs_f64() * 1e3,
        outcome.flood_p99.as_secs_f64() / outcome.quiet_p99.as_secs_f64(),
        outcome.calls,
        outcome.flood_spread[0].as_secs_f64() * 1e3,
        outcome.flood_spread[1].as_secs_f64() * 1e3,
        outcome.flood_spread[2].as_secs_f64() * 1e3,
        outcome.rss_before / 1024,
        outcome.rss_peak / 1024
    );
}

/// Opens and resets streams on one connection as fast as it can while switched on,
/// reconnecting when the server closes it; counts streams and disconnections.
async fn stream_flood(addr: SocketAddr, options: ClientOptions, switch: Arc<Switch>) {
    let (mut streams, mut disconnects, mut refused) = (0u64, 0u64, 0u64);
    while switch.running() {
        if !switch.active() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let Ok(connection) = qpq_runtime::connect(addr, &options).await else {
            refused += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while switch.running() {
            if !switch.active() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            match connection.open_raw_stream().await {
                Ok((mut send, recv)) => {
                    let _ = send.reset(quinn::VarInt::from_u32(0));
                    drop(recv);
                    streams += 1;
                }
                Err(_) => {
                    disconnects += 1;
                    break;
                }
            }
            if streams.is_multiple_of(32) {
                // Let the connection's driver send what was queued.
                tokio::task::yield_now().await;
            }
        }
    }
    println!("attacker: streams={streams} disconnects={disconnects} refused={refused}");
}

async fn a_stream_flood_is_cut_off_and_normal_calls_keep_their_latency() {
    let server = start_server();
    let client = server.binary.client().await;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let closed_before = metric(server.metrics, "qpq_connections_closed_for_abuse_total").await;
        let (outcome, attacker) = under_attack(&server, &client, "streams").await;
        let closed =
            metric(server.metrics, "qpq_connections_closed_for_abuse_total").await - closed_before;
        let seconds = windows() as f64;
        let (streams, disconnects, refused) = (
            field(&attacker, "streams"),
            field(&attacker, "disconnects"),
            field(&attacker, "refused"),
        );
        report("stream flood", &outcome);
        println!(
            "stream flood: {streams} streams opened and reset ({:.0}/s), attacker disconnected {disconnects} times, server closed {closed} connections for abuse and refused {refused} reconnections",
            streams as f64 / seconds,
        );
        assert!(
            closed > 0,
            "the server never closed the flooding connection"
        );
        assert!(disconnects > 0);
        assert!(
            outcome.rss_peak < outcome.rss_before + 64 * 1024,
            "server memory grew too much"
        );
        if outcome.within() {
            break;
        }
        assert!(
            attempt < 2,
            "normal p99 went past 3x its quiet baseline in two runs"
        );
        println!("p99 past 3x the baseline; measuring once more");
    }
    // The normal client was never disturbed into failing a call (measure unwraps each).
    client.health(proto::HealthRequest {}).await.unwrap();
}

/// The Destination Connection ID of a QUIC long-header packet.
fn initial_dcid(datagram: &[u8]) -> Option<&[u8]> {
    if datagram.first()? & 0x80 == 0 {
        return None;
    }
    let len = usize::from(*datagram.get(5)?);
    datagram.get(6..6 + len)
}

/// Starts `HANDSHAKES_PER_SEC` handshakes a second with a real quinn client, relayed so
/// that only each connection's first datagram reaches the server and nothing comes back.
async fn handshake_flood(server: SocketAddr, switch: Arc<Switch>) {
    let started = Arc::new(AtomicU64::new(0));
    let forwarded = Arc::new(AtomicU64::new(0));
    let mut crypto = tls::client_crypto(&ServerTrust::DangerAcceptAnyCertificate, None).unwrap();
    crypto.alpn_protocols = vec![tls::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let client_addr = endpoint.local_addr().unwrap();
    let mut relays = Vec::new();
    for _ in 0..RELAY_SOCKETS {
        let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let relay_addr = socket.local_addr().unwrap();
        let (switch, forwarded) = (switch.clone(), forwarded.clone());
        relays.push(relay_addr);
        tokio::spawn(async move {
            let mut seen: HashSet<Vec<u8>> = HashSet::new();
            let mut buf = vec![0u8; 65_536];
            while switch.running() {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    break;
                };
                // Only the client's first datagram of each connection goes on; the
                // server's answers (handshake, retries) are dropped here.
                if from != client_addr {
                    continue;
                }
                let Some(dcid) = initial_dcid(&buf[..len]) else {
                    continue;
                };
                if seen.len() > 100_000 {
                    seen.clear();
                }
                if seen.insert(dcid.to_vec()) {
                    let _ = socket.send_to(&buf[..len], server).await;
                    forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    // Handshakes are kept (never completing) for 2 s, then dropped.
    let mut pending = std::collections::VecDeque::new();
    let per_tick = handshakes_per_sec() / 100;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0usize;
    while switch.running() {
        tick.tick().await;
        if !switch.active() {
            continue;
        }
        for _ in 0..per_tick {
            let relay = relays[n % relays.len()];
            n += 1;
            if let Ok(connecting) = endpoint.connect(relay, "localhost") {
                pending.push_back((Instant::now(), connecting));
                started.fetch_add(1, Ordering::Relaxed);
            }
        }
        while pending
            .front()
            .is_some_and(|(at, _)| at.elapsed() > Duration::from_secs(2))
        {
            pending.pop_front();
        }
    }
    println!(
        "attacker: started={} forwarded={}",
        started.load(Ordering::Relaxed),
        forwarded.load(Ordering::Relaxed)
    );
}

async fn a_handshake_flood_meets_stateless_retry_and_normal_calls_keep_their_latency() {
    let server = start_server();
    let client = server.binary.client().await;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let retries_before = metric(server.metrics, "qpq_stateless_retries_total").await;
        let accepted_before = metric(server.metrics, "qpq_connections_total").await;
        let (outcome, attacker) = under_attack(&server, &client, "handshakes").await;
        let retries = metric(server.metrics, "qpq_stateless_retries_total").await - retries_before;
        let completed = metric(server.metrics, "qpq_connections_total").await - accepted_before;
        let (started, forwarded) = (field(&attacker, "started"), field(&attacker, "forwarded"));
        report("handshake flood", &outcome);
        println!(
            "handshake flood: {started} handshakes started, {forwarded} Initials reached the server from {RELAY_SOCKETS} ports, {retries} answered with a stateless retry ({:.0}%), {completed} handshakes completed",
            retries as f64 * 100.0 / forwarded.max(1) as f64
        );
        assert!(
            forwarded > 1_000,
            "the attacker reached the server too little"
        );
        assert!(
            retries * 2 > forwarded,
            "stateless retry did not take over under handshake load"
        );
        assert_eq!(completed, 0, "an attacker handshake completed");
        assert!(
            outcome.rss_peak < outcome.rss_before + 64 * 1024,
            "server memory grew too much"
        );
        if outcome.within() {
            break;
        }
        assert!(
            attempt < 2,
            "normal p99 went past 3x its quiet baseline in two runs"
        );
        println!("p99 past 3x the baseline; measuring once more");
    }
    client.health(proto::HealthRequest {}).await.unwrap();
}

/// The attacker of the floods above (the `attacker` role), run by them as a separate process
/// under SCHED_IDLE; `QPQ_FLOOD_ATTACK` names the flood, `QPQ_FLOOD_SERVER` and
/// `QPQ_FLOOD_CERT` the server, and its standard input switches it on and off.
fn attacker() {
    let kind = std::env::var("QPQ_FLOOD_ATTACK").expect("QPQ_FLOOD_ATTACK names the flood");
    let server: SocketAddr = std::env::var("QPQ_FLOOD_SERVER").unwrap().parse().unwrap();
    let cert = std::path::PathBuf::from(std::env::var("QPQ_FLOOD_CERT").unwrap());
    let switch = Arc::new(Switch {
        running: AtomicBool::new(true),
        active: AtomicBool::new(false),
    });
    let reader = {
        let switch = switch.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                match line.as_deref().map(str::trim) {
                    Ok("on") => switch.active.store(true, Ordering::Relaxed),
                    Ok("off") => switch.active.store(false, Ordering::Relaxed),
                    _ => break,
                }
            }
            switch.running.store(false, Ordering::Relaxed);
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        match kind.as_str() {
            "streams" => {
                let options = ClientOptions::pinned(tls::load_cert(&cert).unwrap());
                stream_flood(server, options, switch).await;
            }
            "handshakes" => handshake_flood(server, switch).await,
            other => panic!("unknown attack {other}"),
        }
    });
    reader.join().unwrap();
}
