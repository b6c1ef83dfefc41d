//! Durability: every Enqueue that answered Ok survives SIGKILL of the server process, in
//! order, exactly once, with its sequence number.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{ServerProcess, all_messages};
use qpq_client::IdentityKey;
use qpq_schema::{QpqClient, proto};

const PASSWORD: &[u8] = b"durability password";

async fn register(client: &QpqClient, name: &str) -> IdentityKey {
    let identity = IdentityKey::generate();
    qpq_client::register(client, name, PASSWORD, &identity.public())
        .await
        .unwrap();
    identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_enqueue_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let cert = ServerProcess::cert_path(dir.path());
    let mut server = ServerProcess::spawn(dir.path(), &[]);
    let client = server.client(&cert).await;
    register(&client, "alice").await;
    let bob = register(&client, "bob").await;
    let alice = qpq_client::login(&client, "alice", PASSWORD, None)
        .await
        .unwrap();

    // 16 senders enqueue as fast as they can; each records what the server acknowledged.
    let acknowledged: Arc<Mutex<BTreeMap<u64, Vec<u8>>>> = Arc::default();
    let mut senders = Vec::new();
    for sender in 0..16u32 {
        let client = client.clone();
        let token = alice.token.clone();
        let acknowledged = acknowledged.clone();
        let to = Bytes::copy_from_slice(&bob.public());
        senders.push(tokio::spawn(async move {
            for n in 0u32.. {
                let payload = format!("sender {sender} message {n}").into_bytes();
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
                match result {
                    Ok(response) => {
                        let previous = acknowledged.lock().unwrap().insert(response.seq, payload);
                        assert!(
                            previous.is_none(),
                            "seq {} acknowledged twice",
                            response.seq
                        );
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let writes pile up, then kill the process mid-stream.
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if acknowledged.lock().unwrap().len() >= 400 {
            break;
        }
    }
    server.signal_and_wait("KILL");
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    println!("acknowledged before SIGKILL: {}", acknowledged.len());

    let server = ServerProcess::spawn(dir.path(), &[]);
    let client = server.client(&cert).await;
    let bob_session = qpq_client::login(&client, "bob", PASSWORD, None)
        .await
        .unwrap();
    let stored = all_messages(&client, &bob_session.token).await;
    let mut by_seq = BTreeMap::new();
    for message in &stored {
        assert!(
            by_seq
                .insert(message.seq, message.payload.to_vec())
                .is_none(),
            "seq {} stored twice",
            message.seq
        );
    }
    assert!(
        stored.windows(2).all(|w| w[0].seq < w[1].seq),
        "FIFO order by seq"
    );
    for (seq, payload) in &acknowledged {
        assert_eq!(
            by_seq.get(seq),
            Some(payload),
            "acknowledged message {seq} is missing or changed after SIGKILL"
        );
    }
    // Payloads are unique, so no message appears under two sequence numbers.
    let mut payloads: Vec<_> = stored.iter().map(|m| m.payload.clone()).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), stored.len(), "a message stored twice");
}
