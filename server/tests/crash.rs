//! Crash consistency against the real binary: cycles of heavy Enqueue and Ack load ended by
//! SIGKILL at a random moment, then a restart on the same data directory. After every
//! restart each Enqueue that answered Ok is in the queue exactly once under its sequence
//! number (unless an Ack removed it), no message whose Ack answered Ok comes back, sequence
//! numbers only grow, and no payload appears twice.
//!
//! 3 cycles by default; 20 with `QPQ_LONG_TESTS=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ServerProcess, all_messages};
use qpq_client::IdentityKey;
use qpq_schema::proto;
use rand::Rng;

const PASSWORD: &[u8] = b"crash test password";
const SENDERS: u32 = 16;
const ACKERS: u32 = 2;

/// What the server acknowledged across all cycles.
#[derive(Default)]
struct Ledger {
    /// Enqueues answered Ok: seq → payload.
    enqueued: BTreeMap<u64, Vec<u8>>,
    /// Seqs an Ack answered Ok for (removed).
    acked: BTreeSet<u64>,
    /// Seqs named in any Ack sent, answered or not: one in flight at a kill may or may not
    /// have been applied.
    ack_sent: BTreeSet<u64>,
    /// What Peek showed: seq → payload. A seq once shown must never name another payload.
    seen: BTreeMap<u64, Vec<u8>>,
}

fn cycles() -> usize {
    if std::env::var("QPQ_LONG_TESTS").is_ok_and(|v| v == "1") {
        20
    } else {
        3
    }
}

fn spawn(dir: &std::path::Path) -> ServerProcess {
    // The load is unpaced on purpose: well past the default per-account enqueue limit.
    ServerProcess::spawn(dir, &["--rate-limit", "all=off"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_enqueues_and_acks_survive_repeated_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let cert = ServerProcess::cert_path(dir.path());
    let bob_key = {
        // Registered once; this first process is killed when dropped.
        let server = spawn(dir.path());
        let client = server.client(&cert).await;
        let alice = IdentityKey::generate();
        let bob = IdentityKey::generate();
        qpq_client::register(&client, "alice", PASSWORD, &alice.public())
            .await
            .unwrap();
        qpq_client::register(&client, "bob", PASSWORD, &bob.public())
            .await
            .unwrap();
        Bytes::copy_from_slice(&bob.public())
    };
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut highest_seen = 0u64;
    let total_cycles = cycles();
    let test_started = Instant::now();
    println!(
        "{:>5} {:>8} {:>7} {:>7} | after restart: {:>7} {:>6} {:>5} {:>5} {:>7}",
        "cycle", "kill at", "enq ok", "ack ok", "restart", "queue", "kept", "acks?", "verify"
    );
    let mut last_load: Option<Load> = None;
    for cycle in 0..=total_cycles {
        let restart_started = Instant::now();
        let mut server = spawn(dir.path());
        let client = server.client(&cert).await;
        let restarted = restart_started.elapsed();
        let alice = qpq_client::login(&client, "alice", PASSWORD, None)
            .await
            .unwrap();
        let bob = qpq_client::login(&client, "bob", PASSWORD, None)
            .await
            .unwrap();

        // Verify what the previous cycles acknowledged.
        let verify_started = Instant::now();
        let stored = all_messages(&client, &bob.token).await;
        let check = verify(&ledger.lock().unwrap(), &stored, cycle);
        for message in &stored {
            highest_seen = highest_seen.max(message.seq);
        }
        let verified = verify_started.elapsed();
        if let Some(load) = last_load.take() {
            println!(
                "{:>5} {:>6}ms {:>7} {:>7} | {:>20}ms {:>6} {:>5} {:>5} {:>5}ms",
                cycle - 1,
                load.kill_at.as_millis(),
                load.enqueued,
                load.acked,
                restarted.as_millis(),
                check.queued,
                check.kept,
                check.acks_in_doubt_applied,
                verified.as_millis()
            );
        }
        if cycle == total_cycles {
            // The last restart only checks the last cycle.
            server.signal_and_wait("TERM");
            break;
        }

        // Load: senders enqueue and ackers acknowledge, as fast as they can, until killed.
        let floor = highest_seen;
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for sender in 0..SENDERS {
            let (client, token, ledger, stop, to) = (
                client.clone(),
                alice.token.clone(),
                ledger.clone(),
                stop.clone(),
                bob_key.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut count = 0u64;
                for n in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let payload = format!("cycle {cycle} sender {sender} message {n}").into_bytes();
                    let result = client
                        .enqueue(proto::EnqueueRequest {
                            session_token: token.clone(),
                            recipient: Some(proto::UserRef {
                                target: Some(proto::user_ref::Target::IdentityKey(to.clone())),
                            }),
                            payload: Bytes::from(payload.clone()),
                            ttl_secs: 0,
                            channel_id: Bytes::new(),
                        })
                        .await;
                    let Ok(response) = result else { break };
                    assert!(
                        response.seq > floor,
                        "seq {} handed out again after a restart (highest before: {floor})",
                        response.seq
                    );
                    let previous = ledger
                        .lock()
                        .unwrap()
                        .enqueued
                        .insert(response.seq, payload);
                    assert!(
                        previous.is_none(),
                        "seq {} acknowledged twice",
                        response.seq
                    );
                    count += 1;
                }
                count
            }));
        }
        for acker in 0..ACKERS {
            let (client, token, ledger, stop) = (
                client.clone(),
                bob.token.clone(),
                ledger.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(page) = client
                        .peek(proto::PeekRequest {
                            session_token: token.clone(),
                            limit: 64,
                            after_seq: 0,
                        })
                        .await
                    else {
                        break;
                    };
                    {
                        let mut ledger = ledger.lock().unwrap();
                        for m in &page.messages {
                            let previous = ledger.seen.insert(m.seq, m.payload.to_vec());
                            assert!(
                                previous.as_ref().is_none_or(|p| p[..] == m.payload[..]),
                                "seq {} showed two payloads",
                                m.seq
                            );
                        }
                    }
                    // Each acker takes every other message so the two rarely collide.
                    let seqs: Vec<u64> = page
                        .messages
                        .iter()
                        .map(|m| m.seq)
                        .filter(|s| s % u64::from(ACKERS) == u64::from(acker))
                        .collect();
                    if seqs.is_empty() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    ledger.lock().unwrap().ack_sent.extend(seqs.iter().copied());
                    let Ok(response) = client
                        .ack(proto::AckRequest {
                            session_token: token.clone(),
                            seqs,
                        })
                        .await
                    else {
                        break;
                    };
                    count += response.removed.len() as u64;
                    ledger.lock().unwrap().acked.extend(response.removed);
                }
                count
            }));
        }
        let kill_at = Duration::from_millis(rand::thread_rng().gen_range(300..1_500));
        tokio::time::sleep(kill_at).await;
        server.signal_and_wait("KILL");
        stop.store(true, Ordering::Relaxed);
        let mut enqueued = 0;
        let mut acked = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            let count = task.await.unwrap();
            if i < SENDERS as usize {
                enqueued += count;
            } else {
                acked += count;
            }
        }
        last_load = Some(Load {
            kill_at,
            enqueued,
            acked,
        });
        let ledger = ledger.lock().unwrap();
        for seqs in [
            ledger.enqueued.keys().next_back(),
            ledger.acked.iter().next_back(),
            ledger.seen.keys().next_back(),
        ] {
            highest_seen = highest_seen.max(seqs.copied().unwrap_or(0));
        }
    }

    let ledger = ledger.lock().unwrap();
    println!(
        "kept: queued though never acknowledged to the sender (in flight at the kill; allowed)"
    );
    println!(
        "acks?: acknowledged messages gone because an Ack in flight at a kill took effect (cumulative)"
    );
    println!(
        "{total_cycles} SIGKILLs: {} enqueues and {} acked messages acknowledged in all, every one checked after every restart; {:.1} s",
        ledger.enqueued.len(),
        ledger.acked.len(),
        test_started.elapsed().as_secs_f64()
    );
    assert!(
        ledger.enqueued.len() > 100,
        "the load acknowledged too little to prove much"
    );
    assert!(!ledger.acked.is_empty(), "no Ack was acknowledged");
}

/// One cycle's load, for the printed table.
struct Load {
    kill_at: Duration,
    enqueued: u64,
    acked: u64,
}

/// What a restart found.
struct Check {
    queued: usize,
    /// Queued though no Ok acknowledged them (in flight at the kill: allowed).
    kept: usize,
    /// Acknowledged messages gone because an Ack in flight at the kill took effect.
    acks_in_doubt_applied: usize,
}

/// Checks the stored queue against the ledger.
fn verify(ledger: &Ledger, stored: &[proto::QueuedMessage], cycle: usize) -> Check {
    let mut by_seq = BTreeMap::new();
    for message in stored {
        assert!(
            by_seq.insert(message.seq, &message.payload[..]).is_none(),
            "before cycle {cycle}: seq {} stored twice",
            message.seq
        );
    }
    assert!(
        stored.windows(2).all(|w| w[0].seq < w[1].seq),
        "before cycle {cycle}: queue out of order"
    );
    let mut payloads: Vec<&[u8]> = stored.iter().map(|m| &m.payload[..]).collect();
    payloads.sort_unstable();
    let len = payloads.len();
    payloads.dedup();
    assert_eq!(
        payloads.len(),
        len,
        "before cycle {cycle}: a payload stored twice"
    );
    let mut acks_in_doubt_applied = 0;
    for (seq, payload) in &ledger.enqueued {
        if ledger.acked.contains(seq) {
            continue;
        }
        if ledger.ack_sent.contains(seq) && !by_seq.contains_key(seq) {
            // Its Ack was in flight at a kill and took effect: allowed.
            acks_in_doubt_applied += 1;
            continue;
        }
        assert_eq!(
            by_seq.get(seq).copied(),
            Some(&payload[..]),
            "before cycle {cycle}: acknowledged message {seq} is missing or changed"
        );
    }
    for (seq, payload) in &ledger.seen {
        if let Some(stored) = by_seq.get(seq) {
            assert_eq!(
                *stored,
                &payload[..],
                "before cycle {cycle}: seq {seq} now names another payload than Peek showed"
            );
        }
    }
    for seq in &ledger.acked {
        assert!(
            !by_seq.contains_key(seq),
            "before cycle {cycle}: message {seq}, removed by an acknowledged Ack, came back"
        );
    }
    Check {
        queued: stored.len(),
        kept: stored
            .iter()
            .filter(|m| !ledger.enqueued.contains_key(&m.seq))
            .count(),
        acks_in_doubt_applied,
    }
}
