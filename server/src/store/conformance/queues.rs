//! Delivery queues: FIFO order, pages, acks, sequence numbers (monotonic per queue, never
//! reused, across reopens and under concurrency), caps, TTLs and the expiry sweep.

use std::collections::BTreeSet;

use super::{ALICE, BOB, Backend, CAROL, Fixture, T0, account, msg, session};
use crate::store::{
    NewMessage, PurgeStats, QueueDepth, QueueLimit, QueueLimits, QueuePage, Seq, Store, StoreError,
};

/// The sequence numbers of a page.
pub(crate) fn seqs(page: &QueuePage) -> Vec<u64> {
    page.messages.iter().map(|m| m.seq.0).collect()
}

async fn seqs_of<S: Store>(s: &S, who: &crate::store::IdentityKey) -> Vec<u64> {
    seqs(&s.peek(who, Seq::ZERO, 1_000).await.unwrap())
}

async fn enqueue_to<S: Store>(
    s: &S,
    recipient: &crate::store::IdentityKey,
    messages: Vec<NewMessage>,
) -> Result<Vec<Seq>, StoreError> {
    s.enqueue(messages.into_iter().map(|m| (*recipient, m)).collect())
        .await
}

pub async fn multi_recipient_enqueue_is_all_or_nothing<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    s.create_account(account("bob", BOB)).await.unwrap();
    let seqs = s
        .enqueue(vec![
            (ALICE, msg("a1")),
            (BOB, msg("b1")),
            (ALICE, msg("a2")),
        ])
        .await
        .unwrap();
    assert_eq!(seqs, [Seq(1), Seq(1), Seq(2)]);
    // An unknown recipient anywhere in the batch stores nothing for the others.
    let unknown = [9u8; 32];
    assert!(matches!(
        s.enqueue(vec![(ALICE, msg("a3")), (unknown, msg("x"))])
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(seqs_of(s, &ALICE).await, [1, 2]);
    assert_eq!(seqs_of(s, &BOB).await, [1]);
}

pub async fn fetch_is_fifo_with_pages_and_more<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    for i in 1..=5 {
        let got = enqueue_to(s, &ALICE, vec![msg(&format!("m{i}"))])
            .await
            .unwrap();
        assert_eq!(got, vec![Seq(i)]);
    }
    assert_eq!(
        s.queue_depth(&ALICE).await.unwrap(),
        QueueDepth {
            messages: 5,
            bytes: 10
        }
    );
    let p = s.fetch(&ALICE, 2).await.unwrap();
    assert_eq!((seqs(&p), p.more), (vec![1, 2], true));
    assert_eq!(&p.messages[0].payload[..], b"m1");
    assert_eq!(p.messages[0].sender, "bob");
    assert_eq!(p.messages[0].sender_identity_key, BOB);
    assert_eq!(p.messages[0].enqueued_at_ms, T0);
    let p = s.fetch(&ALICE, 2).await.unwrap();
    assert_eq!((seqs(&p), p.more), (vec![3, 4], true));
    let p = s.fetch(&ALICE, 2).await.unwrap();
    assert_eq!((seqs(&p), p.more), (vec![5], false));
    let p = s.fetch(&ALICE, 2).await.unwrap();
    assert_eq!((seqs(&p), p.more), (vec![], false));
    assert_eq!(s.queue_depth(&ALICE).await.unwrap(), QueueDepth::default());
    // Another queue is untouched and unknown recipients are refused.
    assert_eq!(s.fetch(&BOB, 10).await.unwrap(), QueuePage::default());
    assert!(matches!(
        enqueue_to(s, &BOB, vec![msg("x")]).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn peek_does_not_remove<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    let got = enqueue_to(s, &ALICE, vec![msg("a"), msg("b"), msg("c"), msg("d")])
        .await
        .unwrap();
    assert_eq!(got, vec![Seq(1), Seq(2), Seq(3), Seq(4)]);
    let p = s.peek(&ALICE, Seq::ZERO, 10).await.unwrap();
    assert_eq!((seqs(&p), p.more), (vec![1, 2, 3, 4], false));
    let p = s.peek(&ALICE, Seq(1), 2).await.unwrap();
    assert_eq!((seqs(&p), p.more), (vec![2, 3], true));
    let p = s.peek(&ALICE, Seq(4), 2).await.unwrap();
    assert_eq!((seqs(&p), p.more), (vec![], false));
    let p = s.peek(&ALICE, Seq(u64::MAX), 2).await.unwrap();
    assert!(p.messages.is_empty());
    assert_eq!(s.queue_depth(&ALICE).await.unwrap().messages, 4);
    let p = s.fetch(&ALICE, 10).await.unwrap();
    assert_eq!(seqs(&p), vec![1, 2, 3, 4]);
}

pub async fn ack_reports_removed_and_unknown<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    enqueue_to(s, &ALICE, vec![msg("a"), msg("bb"), msg("ccc")])
        .await
        .unwrap();
    let out = s
        .ack(&ALICE, &[Seq(2), Seq(7), Seq(2), Seq(0), Seq(3)])
        .await
        .unwrap();
    assert_eq!(out.removed, vec![Seq(2), Seq(3)]);
    assert_eq!(out.unknown, vec![Seq(7), Seq(0)]);
    assert_eq!(
        s.queue_depth(&ALICE).await.unwrap(),
        QueueDepth {
            messages: 1,
            bytes: 1
        }
    );
    let out = s.ack(&ALICE, &[Seq(2)]).await.unwrap();
    assert_eq!((out.removed, out.unknown), (vec![], vec![Seq(2)]));
    // A seq of another queue is unknown here and stays there.
    s.create_account(account("bob", BOB)).await.unwrap();
    enqueue_to(s, &BOB, vec![msg("b1")]).await.unwrap();
    let out = s.ack(&ALICE, &[Seq(1), Seq(4)]).await.unwrap();
    assert_eq!((out.removed, out.unknown), (vec![Seq(1)], vec![Seq(4)]));
    let out = s.ack(&ALICE, &[Seq(1)]).await.unwrap();
    assert_eq!(out.unknown, vec![Seq(1)]);
    assert_eq!(s.queue_depth(&BOB).await.unwrap().messages, 1);
    assert!(
        s.peek(&ALICE, Seq::ZERO, 10)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
}

pub async fn seq_never_reused_after_ack_fetch_and_reopen<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    enqueue_to(s, &ALICE, vec![msg("a"), msg("b"), msg("c")])
        .await
        .unwrap();
    s.ack(&ALICE, &[Seq(1), Seq(2), Seq(3)]).await.unwrap();
    assert_eq!(
        enqueue_to(s, &ALICE, vec![msg("d")]).await.unwrap(),
        vec![Seq(4)]
    );
    s.fetch(&ALICE, 10).await.unwrap();
    assert_eq!(s.queue_depth(&ALICE).await.unwrap(), QueueDepth::default());
    let f = f.reopen().await;
    assert_eq!(
        enqueue_to(&f.store, &ALICE, vec![msg("e")]).await.unwrap(),
        vec![Seq(5)]
    );
}

/// Sequence numbers only grow, per queue, through emptied queues, expiry sweeps and several
/// reopens, and each queue counts on its own.
pub async fn seqs_stay_monotonic_across_reopens_of_many_queues<B: Backend>(backend: &B) {
    let mut f = Fixture::with_alice(backend).await;
    f.store.create_account(account("bob", BOB)).await.unwrap();
    f.store
        .create_account(account("carol", CAROL))
        .await
        .unwrap();
    let mut last = [0u64; 3];
    let who = [ALICE, BOB, CAROL];
    for round in 0..4u64 {
        for (i, recipient) in who.iter().enumerate() {
            // Queue i gets i + 1 messages a round, some with a 1 ms TTL.
            let batch: Vec<_> = (0..=i)
                .map(|n| {
                    let mut m = msg(&format!("r{round}q{i}n{n}"));
                    if n % 2 == 1 {
                        m.ttl_ms = Some(1);
                    }
                    (*recipient, m)
                })
                .collect();
            let got = f.store.enqueue(batch).await.unwrap();
            for seq in got {
                assert!(seq.0 > last[i], "queue {i}: {seq} after {}", last[i]);
                last[i] = seq.0;
            }
        }
        // Empty one queue by fetch, ack another, sweep what expired, then reopen.
        f.store.fetch(&ALICE, 100).await.unwrap();
        let bobs: Vec<Seq> = f
            .store
            .peek(&BOB, Seq::ZERO, 100)
            .await
            .unwrap()
            .messages
            .iter()
            .map(|m| m.seq)
            .collect();
        f.store.ack(&BOB, &bobs).await.unwrap();
        f.advance(10);
        while f.store.purge_expired(f.now()).await.unwrap().more {}
        f = f.reopen().await;
    }
    // 4 rounds of 1, 2 and 3 messages.
    assert_eq!(last, [4, 8, 12]);
}

pub async fn caps_refuse_with_nothing_stored<B: Backend>(backend: &B) {
    let limits = QueueLimits {
        max_messages: 3,
        max_bytes: 10,
        ..QueueLimits::default()
    };
    let f = Fixture::with_limits(backend, limits).await;
    let s = &f.store;
    s.create_account(account("alice", ALICE)).await.unwrap();
    enqueue_to(s, &ALICE, vec![msg("aa"), msg("bb")])
        .await
        .unwrap();
    let err = enqueue_to(s, &ALICE, vec![msg("c"), msg("d")])
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
    assert_eq!(
        err.to_string(),
        "recipient queue is full (at most 3 messages)"
    );
    let err = enqueue_to(s, &ALICE, vec![msg("0123456")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::QueueFull {
                limit: QueueLimit::Bytes(10)
            }
        ),
        "{err}"
    );
    assert_eq!(
        s.queue_depth(&ALICE).await.unwrap(),
        QueueDepth {
            messages: 2,
            bytes: 4
        }
    );
    // The refused batches consumed no sequence numbers.
    assert_eq!(
        enqueue_to(s, &ALICE, vec![msg("e")]).await.unwrap(),
        vec![Seq(3)]
    );
    let p = s.peek(&ALICE, Seq::ZERO, 10).await.unwrap();
    assert_eq!(seqs(&p), vec![1, 2, 3]);
}

pub async fn batch_is_all_or_nothing<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    let mut bad = msg("x");
    bad.sender = "s".repeat(70_000);
    let err = enqueue_to(s, &ALICE, vec![msg("a"), msg("b"), bad])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    assert_eq!(s.queue_depth(&ALICE).await.unwrap(), QueueDepth::default());
    assert!(
        s.peek(&ALICE, Seq::ZERO, 10)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    assert_eq!(
        enqueue_to(s, &ALICE, vec![msg("a"), msg("b")])
            .await
            .unwrap(),
        vec![Seq(1), Seq(2)]
    );
}

pub async fn ttl_expiry_and_purge<B: Backend>(backend: &B) {
    let limits = QueueLimits {
        max_messages: 3,
        default_ttl_ms: 5_000,
        max_ttl_ms: 10_000,
        ..QueueLimits::default()
    };
    let f = Fixture::with_limits(backend, limits).await;
    let s = &f.store;
    s.create_account(account("alice", ALICE)).await.unwrap();
    let short = NewMessage {
        ttl_ms: Some(1_000),
        ..msg("short")
    };
    let long = NewMessage {
        ttl_ms: Some(u64::MAX),
        ..msg("long")
    };
    enqueue_to(s, &ALICE, vec![short, msg("default"), long])
        .await
        .unwrap();
    let p = s.peek(&ALICE, Seq::ZERO, 10).await.unwrap();
    let expiries: Vec<_> = p.messages.iter().map(|m| m.expires_at_ms - T0).collect();
    assert_eq!(
        expiries,
        vec![1_000, 5_000, 10_000],
        "default and clamped TTLs"
    );

    f.advance(1_000);
    let p = s.peek(&ALICE, Seq::ZERO, 10).await.unwrap();
    assert_eq!(seqs(&p), vec![2, 3], "expired message is not returned");
    // The queue is full by count, but the expired message makes room.
    assert_eq!(
        enqueue_to(s, &ALICE, vec![msg("new")]).await.unwrap(),
        vec![Seq(4)]
    );
    assert_eq!(s.queue_depth(&ALICE).await.unwrap().messages, 3);

    f.advance(4_000);
    // fetch skips and deletes the expired message.
    let p = s.fetch(&ALICE, 1).await.unwrap();
    assert_eq!((seqs(&p), p.more), (vec![3], true));
    assert_eq!(s.queue_depth(&ALICE).await.unwrap().messages, 1);

    // purge_expired sweeps messages and sessions.
    s.put_session(session(1, "alice", ALICE, T0 + 6_000))
        .await
        .unwrap();
    f.advance(100_000);
    let stats = s.purge_expired(f.now()).await.unwrap();
    assert_eq!(
        stats,
        PurgeStats {
            messages: 1,
            sessions: 1,
            more: false
        }
    );
    assert_eq!(s.queue_depth(&ALICE).await.unwrap(), QueueDepth::default());
    // No message, session or index entry is left: the same records as a twin whose queue
    // got as many messages and had them all acknowledged.
    let twin = Fixture::with_limits(backend, limits).await;
    twin.store
        .create_account(account("alice", ALICE))
        .await
        .unwrap();
    for batch in [3, 1] {
        let seqs = enqueue_to(&twin.store, &ALICE, vec![msg("x"); batch])
            .await
            .unwrap();
        twin.store.ack(&ALICE, &seqs).await.unwrap();
    }
    assert_eq!(f.census().await, twin.census().await);
    let stats = s.purge_expired(f.now()).await.unwrap();
    assert_eq!(stats, PurgeStats::default());
}

pub async fn purge_works_in_bounded_chunks<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    let many: Vec<_> = (0..B::PURGE_BOUND + 1)
        .map(|_| NewMessage {
            ttl_ms: Some(1),
            ..msg("x")
        })
        .collect();
    enqueue_to(s, &ALICE, many).await.unwrap();
    let now = T0 + 1;
    let first = s.purge_expired(now).await.unwrap();
    assert_eq!((first.messages, first.more), (B::PURGE_BOUND as u64, true));
    let second = s.purge_expired(now).await.unwrap();
    assert_eq!((second.messages, second.more), (1, false));
    assert_eq!(s.queue_depth(&ALICE).await.unwrap(), QueueDepth::default());
}

pub async fn purge_leaves_unexpired_data<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    enqueue_to(s, &ALICE, vec![msg("a")]).await.unwrap();
    s.put_session(session(1, "alice", ALICE, T0 + 1))
        .await
        .unwrap();
    let stats = s.purge_expired(T0).await.unwrap();
    assert_eq!(stats, PurgeStats::default());
    assert_eq!(s.queue_depth(&ALICE).await.unwrap().messages, 1);
    assert!(s.session_by_token_hash(&[1; 32]).await.unwrap().is_some());
}

pub async fn concurrent_enqueues_get_distinct_consecutive_seqs<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            enqueue_to(&s, &ALICE, vec![msg(&format!("{i}"))])
                .await
                .unwrap()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap().into_iter().map(|s| s.0));
    }
    got.sort_unstable();
    assert_eq!(got, (1..=200).collect::<Vec<_>>());
    // Every seq maps to exactly one stored message, in order.
    let p = f.store.peek(&ALICE, Seq::ZERO, 1_000).await.unwrap();
    assert_eq!(seqs(&p), (1..=200).collect::<Vec<_>>());
}

/// Fetches racing on one queue split it: every message is handed out once, none twice.
pub async fn concurrent_fetches_never_hand_out_a_message_twice<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    for chunk in 0..10 {
        let batch = (0..30)
            .map(|i| (ALICE, msg(&format!("{chunk}-{i}"))))
            .collect();
        f.store.enqueue(batch).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let page = s.fetch(&ALICE, 7).await.unwrap();
                if page.messages.is_empty() {
                    return mine;
                }
                mine.extend(page.messages.into_iter().map(|m| m.seq.0));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "a message was fetched twice");
    assert_eq!(distinct, (1..=300).collect::<BTreeSet<_>>());
    assert_eq!(
        f.store.queue_depth(&ALICE).await.unwrap(),
        QueueDepth::default()
    );
}
