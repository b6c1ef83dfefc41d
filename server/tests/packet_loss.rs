//! Packet loss: 10,000 RPCs through a loopback that drops 5% of UDP packets at random, all
//! answered correctly, with QUIC's own recovery and no retry by the application.
//!
//! `tc netem` is not available on this kernel, so the loss is an nftables rule on the input
//! hook of the loopback interface of a network namespace the test creates (and deletes):
//! `numgen random mod 100 < 5 drop`. Both the real `qpq-server` binary and the client run
//! inside it: the client is this same test binary, started with `ip netns exec` in its
//! `lossy-client` role (`harness = false`, see `common/harness.rs`).
//!
//! The client registers two users, sends 10,000 Enqueues (32 in flight; each payload
//! unique), then reads the whole queue back: every acknowledged message must be there once,
//! under the sequence number its Enqueue returned. Where the test is not root or `ip netns`
//! or `nft` is missing it is skipped with a line on stderr saying why, and fails under
//! `CI=true` (`.ci/run` runs as root and installs both).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use common::{ServerProcess, harness, skip};
use qpq_client::IdentityKey;
use qpq_runtime::{ClientOptions, RpcError};
use qpq_schema::{QpqClient, proto};

const RPCS: usize = 10_000;
const IN_FLIGHT: usize = 32;
const DROP_PERCENT: u32 = 5;
const PASSWORD: &[u8] = b"lossy password";
const TEST: &str = "ten_thousand_rpcs_complete_through_five_percent_packet_loss";

fn main() -> std::process::ExitCode {
    harness::main(
        &[(
            TEST,
            ten_thousand_rpcs_complete_through_five_percent_packet_loss,
        )],
        &[("lossy-client", lossy_client_role)],
    )
}

/// The network namespace, deleted on drop.
struct Namespace(String);

impl Namespace {
    fn exec(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0, program]);
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Why this machine cannot run the test, if it cannot.
fn unsupported() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not running as root (ip netns and nft need it)".into());
    }
    for (tool, args) in [("ip", &["-V"][..]), ("nft", &["--version"][..])] {
        let found = Command::new(tool)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "`{tool}` is not installed (apt-get install -y {})",
                if tool == "ip" { "iproute2" } else { "nftables" }
            ));
        }
    }
    None
}

fn run(command: &mut Command) -> Result<String, String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Packets counted by the two rules (all UDP on lo, dropped).
fn counters(ns: &Namespace) -> (u64, u64) {
    let text = run(ns.exec("nft").args(["list", "table", "inet", "qpqloss"])).unwrap();
    let mut packets = text.lines().filter_map(|l| {
        let after = l.split("counter packets ").nth(1)?;
        after.split_whitespace().next()?.parse::<u64>().ok()
    });
    (packets.next().unwrap_or(0), packets.next().unwrap_or(0))
}

fn ten_thousand_rpcs_complete_through_five_percent_packet_loss() {
    if let Some(why) = unsupported() {
        skip(TEST, &why);
        return;
    }
    let ns = Namespace(format!("qpq-loss-{}", std::process::id()));
    if let Err(error) = run(Command::new("ip").args(["netns", "add", &ns.0])) {
        std::mem::forget(ns);
        skip(TEST, &format!("cannot create a network namespace: {error}"));
        return;
    }
    run(ns.exec("ip").args(["link", "set", "lo", "up"])).unwrap();
    let rules = format!(
        "table inet qpqloss {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority 0; policy accept;\n\
         \t\tiifname \"lo\" meta l4proto udp counter\n\
         \t\tiifname \"lo\" meta l4proto udp numgen random mod 100 < {DROP_PERCENT} counter drop\n\
         \t}}\n\
         }}\n"
    );
    let mut nft = ns
        .exec("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), rules.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success(), "nft rules applied");

    // The server, inside the namespace.
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn_command(
        ns.exec(ServerProcess::BINARY),
        dir.path(),
        &["--rate-limit", "all=off"],
    );

    // The client: this test binary again, inside the namespace.
    let started = Instant::now();
    let output = ns
        .exec(std::env::current_exe().unwrap().to_str().unwrap())
        .args(harness::role_args("lossy-client"))
        .env("QPQ_LOSS_SERVER", server.addr.to_string())
        .env("QPQ_LOSS_CERT", ServerProcess::cert_path(dir.path()))
        .output()
        .unwrap();
    let (udp, dropped) = counters(&ns);
    let client_out = String::from_utf8_lossy(&output.stdout);
    for line in client_out.lines().filter(|l| l.starts_with("loss client:")) {
        println!("{line}");
    }
    println!(
        "nftables in the namespace: {dropped} of {udp} UDP packets dropped ({:.2}%); {:.1} s in all",
        dropped as f64 * 100.0 / udp.max(1) as f64,
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "the client failed:\n{client_out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        client_out.contains("loss client: all"),
        "the client did not report its run:\n{client_out}"
    );
    let rate = dropped as f64 / udp.max(1) as f64;
    // Every call needs at least one packet; how many more depends on how much QUIC
    // coalesces, which grows when the machine is busy (18k for 10k calls seen then).
    assert!(
        (0.03..0.07).contains(&rate) && udp > 10_000,
        "the namespace did not drop about {DROP_PERCENT}% of the traffic: {dropped} of {udp}"
    );
}

/// The client half of the test above (the `lossy-client` role), started by it inside the
/// namespace with the server's address in `QPQ_LOSS_SERVER` and its certificate in
/// `QPQ_LOSS_CERT`.
fn lossy_client_role() {
    let addr: SocketAddr = std::env::var("QPQ_LOSS_SERVER")
        .expect("QPQ_LOSS_SERVER names the server")
        .parse()
        .unwrap();
    let cert = std::env::var("QPQ_LOSS_CERT").expect("QPQ_LOSS_CERT names its certificate");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(lossy_client(addr, cert.into()));
}

async fn lossy_client(addr: SocketAddr, cert: std::path::PathBuf) {
    let cert = qpq_runtime::tls::load_cert(&cert).unwrap();
    let connected = Instant::now();
    let client = QpqClient::new(
        qpq_runtime::connect(addr, &ClientOptions::pinned(cert))
            .await
            .unwrap(),
    );
    let alice_key = IdentityKey::generate();
    let bob_key = IdentityKey::generate();
    qpq_client::register(&client, "alice", PASSWORD, &alice_key.public())
        .await
        .unwrap();
    qpq_client::register(&client, "bob", PASSWORD, &bob_key.public())
        .await
        .unwrap();
    let alice = qpq_client::login(&client, "alice", PASSWORD, None)
        .await
        .unwrap();
    let bob = qpq_client::login(&client, "bob", PASSWORD, None)
        .await
        .unwrap();
    println!(
        "loss client: connected, registered and logged in 2 users in {:.1} s",
        connected.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut calls = Vec::with_capacity(RPCS);
    let to = Bytes::copy_from_slice(&bob_key.public());
    for n in 0..RPCS {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let (client, token, to) = (client.clone(), alice.token.clone(), to.clone());
        calls.push(tokio::spawn(async move {
            let payload = format!("lossy message {n}").into_bytes();
            let began = Instant::now();
            let result = client
                .enqueue(proto::EnqueueRequest {
                    session_token: token,
                    recipient: Some(proto::UserRef {
                        target: Some(proto::user_ref::Target::IdentityKey(to)),
                    }),
                    payload: Bytes::from(payload.clone()),
                    ttl_secs: 0,
                    channel_id: Bytes::new(),
                })
                .await;
            drop(permit);
            (payload, result.map(|r| r.seq), began.elapsed())
        }));
    }
    let mut acknowledged: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut latencies = Vec::with_capacity(RPCS);
    let mut failures: Vec<RpcError> = Vec::new();
    for call in calls {
        let (payload, result, latency) = call.await.unwrap();
        latencies.push(latency);
        match result {
            Ok(seq) => assert!(
                acknowledged.insert(seq, payload).is_none(),
                "seq {seq} twice"
            ),
            Err(error) => failures.push(error),
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "loss client: {RPCS} Enqueues in {:.1} s ({:.0}/s, {IN_FLIGHT} in flight): {} Ok, {} failed; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        elapsed.as_secs_f64(),
        RPCS as f64 / elapsed.as_secs_f64(),
        acknowledged.len(),
        failures.len(),
        pct(50).as_secs_f64() * 1e3,
        pct(99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3
    );
    assert!(
        failures.is_empty(),
        "{} calls failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // Read everything back (more RPCs through the same loss) and compare.
    let mut stored = BTreeMap::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = client
            .peek(proto::PeekRequest {
                session_token: bob.token.clone(),
                limit: 1000,
                after_seq: after,
            })
            .await
            .unwrap();
        pages += 1;
        for m in &page.messages {
            assert!(
                stored.insert(m.seq, m.payload.to_vec()).is_none(),
                "seq {} stored twice",
                m.seq
            );
            after = m.seq;
        }
        if !page.more || page.messages.is_empty() {
            break;
        }
    }
    assert_eq!(
        stored, acknowledged,
        "the queue differs from what was acknowledged"
    );
    println!(
        "loss client: all {} messages read back in {pages} Peeks, each once under its seq",
        stored.len()
    );
}
