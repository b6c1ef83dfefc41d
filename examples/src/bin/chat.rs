//! chat: two users exchange messages through a local quicproquo server.
//!
//! Starts a `qpq-server` in this process on a temporary data directory, then Alice and Bob
//! each connect (pinning the server's certificate), register and log in with OPAQUE. Bob
//! listens for pushes; Alice sends; Bob is told at once, fetches the message from his queue
//! and acknowledges it; Bob answers and Alice, parked in FetchWait, wakes with the reply.
//! The payloads here are plain text for brevity; a real client sends MLS ciphertext (see
//! `mls-chat`), which the server stores as opaque bytes either way.
//!
//! Run it: `cargo run -p qpq-examples --bin chat`

use bytes::Bytes;
use qpq_client::{IdentityKey, QpqClient, proto};
use qpq_runtime::ClientOptions;
use qpq_schema::Event;

async fn connect(server: &qpq_server::RunningServer) -> anyhow::Result<QpqClient> {
    let options = ClientOptions::pinned(server.identity.cert.clone());
    Ok(QpqClient::new(
        qpq_runtime::connect(server.addr, &options).await?,
    ))
}

fn to(identity: &IdentityKey) -> Option<proto::UserRef> {
    Some(proto::UserRef {
        target: Some(proto::user_ref::Target::IdentityKey(
            Bytes::copy_from_slice(&identity.public()),
        )),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = qpq_server::start(qpq_server::Config::for_data_dir(
        "127.0.0.1:0".parse()?,
        dir.path(),
    ))
    .await?;
    println!("server on {}", server.addr);

    let alice_client = connect(&server).await?;
    let bob_client = connect(&server).await?;
    let alice_key = IdentityKey::generate();
    let bob_key = IdentityKey::generate();
    qpq_client::register(
        &alice_client,
        "alice",
        b"alice's passphrase",
        &alice_key.public(),
    )
    .await?;
    qpq_client::register(&bob_client, "bob", b"bob's passphrase", &bob_key.public()).await?;
    let alice = qpq_client::login(&alice_client, "alice", b"alice's passphrase", None).await?;
    let bob = qpq_client::login(&bob_client, "bob", b"bob's passphrase", None).await?;
    println!("alice and bob registered and logged in");

    // Bob's connection receives his pushes once it has made an authenticated call.
    let mut bob_events = bob_client.events().expect("fresh connection");
    bob_client
        .peek(proto::PeekRequest {
            session_token: bob.token.clone(),
            limit: 1,
            after_seq: 0,
        })
        .await?;

    let sent = alice_client
        .enqueue(proto::EnqueueRequest {
            session_token: alice.token.clone(),
            recipient: to(&bob_key),
            payload: Bytes::from_static(b"hi bob, lunch at noon?"),
            ttl_secs: 0,
            channel_id: Bytes::new(),
        })
        .await?;
    println!("alice sent message {} to bob", sent.seq);

    match bob_events.next().await {
        Some(Ok(Event::PushNewMessage(event))) => {
            println!("bob was told: message {} from {}", event.seq, event.sender)
        }
        other => anyhow::bail!("expected a new-message push, got {other:?}"),
    }
    let page = bob_client
        .peek(proto::PeekRequest {
            session_token: bob.token.clone(),
            limit: 10,
            after_seq: 0,
        })
        .await?;
    for message in &page.messages {
        println!(
            "bob reads from {}: {}",
            message.sender,
            String::from_utf8_lossy(&message.payload)
        );
    }
    let acked = bob_client
        .ack(proto::AckRequest {
            session_token: bob.token.clone(),
            seqs: page.messages.iter().map(|m| m.seq).collect(),
        })
        .await?;
    println!("bob acknowledged {} message(s)", acked.removed.len());

    // Alice parks in FetchWait; Bob's reply wakes her.
    let waiting = {
        let client = alice_client.clone();
        let token = alice.token.clone();
        tokio::spawn(async move {
            client
                .fetch_wait(proto::FetchWaitRequest {
                    session_token: token,
                    limit: 10,
                    timeout_ms: 10_000,
                    peek: false,
                    after_seq: 0,
                })
                .await
        })
    };
    bob_client
        .enqueue(proto::EnqueueRequest {
            session_token: bob.token.clone(),
            recipient: to(&alice_key),
            payload: Bytes::from_static(b"yes, see you there"),
            ttl_secs: 0,
            channel_id: Bytes::new(),
        })
        .await?;
    let reply = waiting.await??;
    for message in &reply.messages {
        println!(
            "alice reads from {}: {}",
            message.sender,
            String::from_utf8_lossy(&message.payload)
        );
    }
    anyhow::ensure!(reply.messages.len() == 1, "alice got the reply");
    server.shutdown().await;
    println!("done");
    Ok(())
}
