//! Federation: peers' outboxes (FIFO, positions never reused, caps, all-or-nothing with the
//! local deliveries) and relayed deliveries (exactly once per relay id and peer, until the
//! id is forgotten; each delivery refused or stored on its own).

use super::{ALICE, Backend, Fixture, msg};
use crate::store::{
    ChannelId, FederationStore, OutboxLimits, OutboxMessage, QueueLimit, QueueLimits, RelayStored,
    RelayedDelivery, Seq, Store, StoreError,
};

const LIMITS: OutboxLimits = OutboxLimits {
    max_messages: 3,
    max_bytes: 100,
};

/// A message from alice for bob at b.example; even ids carry a channel.
fn out(id: u8, payload: &str) -> OutboxMessage {
    OutboxMessage {
        relay_id: [id; 16],
        sender: "alice@a.example".into(),
        sender_identity_key: ALICE,
        recipient: "bob@b.example".into(),
        channel_id: id.is_multiple_of(2).then_some(ChannelId([id; 16])),
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        enqueued_at_ms: 1_000 + u64::from(id),
        ttl_ms: 60_000,
    }
}

/// A message relayed for alice, its id remembered until 5 000.
fn relayed(id: u8, payload: &str) -> RelayedDelivery {
    RelayedDelivery {
        relay_id: [id; 16],
        recipient: ALICE,
        message: msg(payload),
        remember_until_ms: 5_000,
    }
}

pub async fn outbox_is_fifo_per_peer_survives_reopen_and_counts<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let seqs = f
        .store
        .enqueue_with_outbox(
            vec![(ALICE, msg("local"))],
            vec![
                ("b.example".into(), out(1, "one")),
                ("c.example".into(), out(2, "other peer")),
                ("b.example".into(), out(3, "three")),
            ],
            LIMITS,
        )
        .await
        .unwrap();
    assert_eq!(seqs, vec![Seq(1)]);
    let f = f.reopen().await;
    let s = &f.store;
    assert_eq!(s.outbox_depth("b.example").await.unwrap(), 2);
    assert_eq!(s.outbox_depth("c.example").await.unwrap(), 1);
    assert_eq!(s.outbox_depth("b.exampl").await.unwrap(), 0);
    assert_eq!(
        s.outbox_peers().await.unwrap(),
        vec![("b.example".to_owned(), 2), ("c.example".to_owned(), 1)]
    );
    let front = s.outbox_front("b.example", 10).await.unwrap();
    assert_eq!(front.len(), 2);
    assert_eq!(front[0].message, out(1, "one"));
    assert_eq!(front[1].message, out(3, "three"));
    assert!(front[0].position < front[1].position);
    assert_eq!(s.outbox_front("b.example", 1).await.unwrap().len(), 1);
    let removed = s
        .outbox_remove("b.example", &[front[0].position, front[0].position, 99])
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(s.outbox_depth("b.example").await.unwrap(), 1);
    let front = s.outbox_front("b.example", 10).await.unwrap();
    assert_eq!(front[0].message, out(3, "three"));
    // Positions are never reused.
    s.enqueue_with_outbox(Vec::new(), vec![("b.example".into(), out(5, "5"))], LIMITS)
        .await
        .unwrap();
    let front = s.outbox_front("b.example", 10).await.unwrap();
    assert!(front[1].position > front[0].position);
    assert_eq!(s.queue_depth(&ALICE).await.unwrap().messages, 1);
    // An emptied outbox is no peer any more.
    let all: Vec<u64> = front.iter().map(|e| e.position).collect();
    assert_eq!(s.outbox_remove("b.example", &all).await.unwrap(), 2);
    assert_eq!(
        s.outbox_peers().await.unwrap(),
        vec![("c.example".to_owned(), 1)]
    );
}

pub async fn full_outbox_or_unknown_local_recipient_stores_nothing<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    let three: Vec<_> = (1..=3).map(|i| ("b.example".into(), out(i, "x"))).collect();
    s.enqueue_with_outbox(Vec::new(), three, LIMITS)
        .await
        .unwrap();
    let before = f.census().await;
    let err = s
        .enqueue_with_outbox(
            vec![(ALICE, msg("local"))],
            vec![("b.example".into(), out(4, "x"))],
            LIMITS,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::QueueFull {
                limit: QueueLimit::Messages(3)
            }
        ),
        "{err}"
    );
    let big = "y".repeat(101);
    let err = s
        .enqueue_with_outbox(Vec::new(), vec![("c.example".into(), out(5, &big))], LIMITS)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QueueFull { .. }), "{err}");
    let err = s
        .enqueue_with_outbox(
            vec![([0xee; 32], msg("nobody"))],
            vec![("c.example".into(), out(6, "x"))],
            LIMITS,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err}");
    assert_eq!(s.queue_depth(&ALICE).await.unwrap().messages, 0);
    assert_eq!(s.outbox_depth("b.example").await.unwrap(), 3);
    assert_eq!(s.outbox_depth("c.example").await.unwrap(), 0);
    let err = s
        .enqueue_with_outbox(Vec::new(), vec![(String::new(), out(7, "x"))], LIMITS)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    assert_eq!(f.census().await, before, "a refused batch leaves no record");
}

pub async fn relay_ids_make_relays_exactly_once_per_peer_until_purged<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let outcomes = f
        .store
        .store_relayed(
            "b.example",
            vec![relayed(1, "one"), relayed(1, "again"), relayed(2, "two")],
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            RelayStored::Stored(Seq(1)),
            RelayStored::Duplicate(Seq(1)),
            RelayStored::Stored(Seq(2))
        ]
    );
    let f = f.reopen().await;
    let s = &f.store;
    let outcomes = s
        .store_relayed("b.example", vec![relayed(2, "replay")])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![RelayStored::Duplicate(Seq(2))]);
    // Relay ids are per peer: the same id from another peer is another message.
    let outcomes = s
        .store_relayed("c.example", vec![relayed(2, "from c")])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![RelayStored::Stored(Seq(3))]);
    let unknown = RelayedDelivery {
        recipient: [0xee; 32],
        ..relayed(9, "nobody")
    };
    let outcomes = s.store_relayed("b.example", vec![unknown]).await.unwrap();
    assert_eq!(outcomes, vec![RelayStored::NoRecipient]);
    assert_eq!(s.queue_depth(&ALICE).await.unwrap().messages, 3);

    assert_eq!(s.purge_expired_relay_ids(4_999).await.unwrap(), (0, false));
    assert_eq!(s.purge_expired_relay_ids(5_000).await.unwrap(), (3, false));
    // Forgotten ids leave no record: a twin that got the three messages by local delivery
    // holds as many.
    let twin = Fixture::with_alice(backend).await;
    for payload in ["one", "two", "from c"] {
        twin.store
            .enqueue(vec![(ALICE, msg(payload))])
            .await
            .unwrap();
    }
    assert_eq!(f.census().await, twin.census().await);
    // The refused relay left no id behind: it can be stored once its recipient exists.
    let outcomes = s
        .store_relayed("b.example", vec![relayed(9, "now")])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![RelayStored::Stored(Seq(4))]);
}

pub async fn a_full_queue_refuses_only_its_delivery<B: Backend>(backend: &B) {
    let f = Fixture::with_limits(
        backend,
        QueueLimits {
            max_messages: 1,
            ..QueueLimits::default()
        },
    )
    .await;
    let s = &f.store;
    s.create_account(super::account("alice", ALICE))
        .await
        .unwrap();
    let outcomes = s
        .store_relayed("b.example", vec![relayed(1, "fits"), relayed(2, "full")])
        .await
        .unwrap();
    assert!(matches!(
        outcomes[..],
        [RelayStored::Stored(Seq(1)), RelayStored::QueueFull(_)]
    ));
    // The refused id was not remembered: a retry after the queue drained stores it.
    s.ack(&ALICE, &[Seq(1)]).await.unwrap();
    let outcomes = s
        .store_relayed("b.example", vec![relayed(2, "full")])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![RelayStored::Stored(Seq(2))]);
}

pub async fn concurrent_relays_of_one_id_store_it_once<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            s.store_relayed("b.example", vec![relayed(7, &format!("copy {i}"))])
                .await
                .unwrap()
        }));
    }
    let mut stored = 0;
    for t in tasks {
        match &t.await.unwrap()[..] {
            [RelayStored::Stored(Seq(1))] => stored += 1,
            [RelayStored::Duplicate(Seq(1))] => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(f.store.queue_depth(&ALICE).await.unwrap().messages, 1);
}
