//! Channels: creation, membership (pages, the member index, removal and the passing of
//! ownership), metadata updates, and commit ordering (the epoch compare-and-set, racing
//! commits, all-or-nothing batches); account deletion's removal from every channel.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::{ALICE, BOB, Backend, CAROL, Fixture, T0, account, msg};
use crate::store::{
    Actor, BanRecord, BanScope, Channel, ChannelId, ChannelRole, ChannelStore, ChannelUpdate,
    HybridKeyRecord, IdentityKey, KeyPackageUpload, KeyStore, ModerationStore, NewChannel,
    QueueLimit, QueueLimits, Refusal, RotateCommit, Seq, Store, StoreError,
};

const ID: ChannelId = ChannelId([7; 16]);

fn channel(owner: IdentityKey) -> Channel {
    let mut settings = BTreeMap::new();
    settings.insert("theme".to_owned(), "dark".to_owned());
    Channel {
        id: ID,
        name: "ops".into(),
        description: "on call".into(),
        settings,
        owner,
        created_at_ms: T0,
        epoch: 0,
    }
}

fn actor(identity: IdentityKey) -> Actor {
    Actor {
        identity,
        server_admin: false,
    }
}

/// A fixture holding alice, bob and carol.
async fn cast<B: Backend>(backend: &B) -> Fixture<'_, B> {
    let f = Fixture::with_alice(backend).await;
    f.store.create_account(account("bob", BOB)).await.unwrap();
    f.store
        .create_account(account("carol", CAROL))
        .await
        .unwrap();
    f
}

/// Alice's channel `ID` with `members`.
async fn create<S: Store>(s: &S, members: Vec<IdentityKey>) -> Channel {
    s.create_channel(NewChannel {
        channel: channel(ALICE),
        members,
    })
    .await
    .unwrap()
    .unwrap()
}

fn commit(sender: IdentityKey, epoch: u64, welcomes: Vec<IdentityKey>) -> RotateCommit {
    RotateCommit {
        channel: ID,
        sender: actor(sender),
        epoch,
        commit: msg("commit"),
        welcomes: welcomes.into_iter().map(|w| (w, msg("welcome"))).collect(),
    }
}

pub async fn create_read_and_page_members<B: Backend>(backend: &B) {
    let f = cast(backend).await;
    let s = &f.store;
    // Duplicates and the owner among the members are ignored.
    let created = create(s, vec![BOB, BOB, ALICE, CAROL]).await;
    assert_eq!(created, channel(ALICE));
    let f = f.reopen().await;
    let s = &f.store;
    assert_eq!(s.channel(&ID).await.unwrap(), Some(channel(ALICE)));
    assert_eq!(s.channel(&ChannelId([8; 16])).await.unwrap(), None);
    let owner = s.member(&ID, &ALICE).await.unwrap().unwrap();
    assert_eq!((owner.role, owner.joined_at_ms), (ChannelRole::Owner, T0));
    assert_eq!(
        s.member(&ID, &BOB).await.unwrap().unwrap().role,
        ChannelRole::Member
    );
    assert_eq!(s.member(&ID, &[9; 32]).await.unwrap(), None);
    let all: BTreeSet<_> = s
        .member_identities(&ID)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(all, BTreeSet::from([ALICE, BOB, CAROL]));
    for who in [ALICE, BOB, CAROL] {
        assert_eq!(s.channels_of(&who).await.unwrap(), vec![ID]);
    }
    assert!(s.channels_of(&[9; 32]).await.unwrap().is_empty());

    // Pages of one cover every member once, each page in join order.
    let mut paged = Vec::new();
    let mut cursor = Vec::new();
    loop {
        let page = s.members_page(&ID, &cursor, 1).await.unwrap();
        assert!(page.members.len() <= 1);
        paged.extend(page.members);
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let identities: BTreeSet<_> = paged.iter().map(|m| m.identity).collect();
    assert_eq!((paged.len(), identities), (3, all));
    assert!(matches!(
        s.members_page(&ID, b"not a cursor", 10).await,
        Err(StoreError::InvalidArgument(_))
    ));
    // A channel id that exists already is refused, and so is a member without an account.
    let again = s
        .create_channel(NewChannel {
            channel: channel(BOB),
            members: Vec::new(),
        })
        .await;
    assert!(
        matches!(again, Err(StoreError::InvalidArgument(_))),
        "{again:?}"
    );
    let stranger = s
        .create_channel(NewChannel {
            channel: Channel {
                id: ChannelId([8; 16]),
                ..channel(ALICE)
            },
            members: vec![[9; 32]],
        })
        .await
        .unwrap();
    assert_eq!(stranger, Err(Refusal::UnknownAccount([9; 32])));
    assert_eq!(s.channel(&ChannelId([8; 16])).await.unwrap(), None);
}

pub async fn removal_rules_and_the_passing_of_ownership<B: Backend>(backend: &B) {
    let f = cast(backend).await;
    let s = &f.store;
    create(s, vec![BOB, CAROL]).await;
    // A plain member removes nobody else, and nobody removes the owner.
    assert!(matches!(
        s.remove_member(&ID, actor(BOB), &CAROL).await.unwrap(),
        Err(Refusal::Forbidden(_))
    ));
    assert_eq!(
        s.remove_member(&ID, actor([9; 32]), &CAROL).await.unwrap(),
        Err(Refusal::NotMember)
    );
    let server_admin = Actor {
        identity: [9; 32],
        server_admin: true,
    };
    assert!(matches!(
        s.remove_member(&ID, server_admin, &ALICE).await.unwrap(),
        Err(Refusal::Forbidden(_))
    ));
    assert_eq!(
        s.remove_member(&ChannelId([8; 16]), actor(ALICE), &BOB)
            .await
            .unwrap(),
        Err(Refusal::NoChannel)
    );
    // Carol, made admin, inherits the channel when the owner leaves.
    let update = ChannelUpdate {
        role_changes: vec![(CAROL, ChannelRole::Admin)],
        max_settings: 10,
        ..ChannelUpdate::default()
    };
    s.update_channel(&ID, actor(ALICE), update)
        .await
        .unwrap()
        .unwrap();
    let left = s
        .remove_member(&ID, actor(ALICE), &ALICE)
        .await
        .unwrap()
        .unwrap();
    assert!(left.removed && !left.channel_deleted);
    assert_eq!(left.new_owner, Some(CAROL));
    let remaining: BTreeSet<_> = left.remaining.into_iter().collect();
    assert_eq!(remaining, BTreeSet::from([BOB, CAROL]));
    assert_eq!(s.channel(&ID).await.unwrap().unwrap().owner, CAROL);
    assert_eq!(
        s.member(&ID, &CAROL).await.unwrap().unwrap().role,
        ChannelRole::Owner
    );
    assert!(s.channels_of(&ALICE).await.unwrap().is_empty());
    // Removing a non-member changes nothing.
    let again = s
        .remove_member(&ID, actor(CAROL), &ALICE)
        .await
        .unwrap()
        .unwrap();
    assert!(!again.removed);
    // The new owner removes bob, then leaves: the channel is gone, with every record.
    assert!(
        s.remove_member(&ID, actor(CAROL), &BOB)
            .await
            .unwrap()
            .unwrap()
            .removed
    );
    let last = s
        .remove_member(&ID, actor(CAROL), &CAROL)
        .await
        .unwrap()
        .unwrap();
    assert!(last.removed && last.channel_deleted && last.remaining.is_empty());
    assert_eq!(s.channel(&ID).await.unwrap(), None);
    assert!(s.member_identities(&ID).await.unwrap().is_empty());
    let twin = cast(backend).await;
    assert_eq!(f.census().await, twin.census().await);
}

pub async fn updates_are_the_owners_and_checked_whole<B: Backend>(backend: &B) {
    let f = cast(backend).await;
    let s = &f.store;
    create(s, vec![BOB]).await;
    let mut set_settings = BTreeMap::new();
    set_settings.insert("topic".to_owned(), "incidents".to_owned());
    let update = ChannelUpdate {
        name: Some("ops-2".into()),
        description: None,
        set_settings,
        remove_settings: vec!["theme".into()],
        role_changes: vec![(BOB, ChannelRole::Admin)],
        max_settings: 1,
    };
    assert!(matches!(
        s.update_channel(&ID, actor(BOB), update.clone())
            .await
            .unwrap(),
        Err(Refusal::Forbidden(_))
    ));
    assert_eq!(
        s.update_channel(&ID, actor(CAROL), update.clone())
            .await
            .unwrap(),
        Err(Refusal::NotMember)
    );
    let (after, members) = s
        .update_channel(&ID, actor(ALICE), update.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.name, "ops-2");
    assert_eq!(after.description, "on call");
    assert_eq!(
        after.settings.into_iter().collect::<Vec<_>>(),
        vec![("topic".to_owned(), "incidents".to_owned())]
    );
    assert_eq!(members.len(), 2);
    assert_eq!(
        s.member(&ID, &BOB).await.unwrap().unwrap().role,
        ChannelRole::Admin
    );
    // Refused updates change nothing: too many settings, the owner's role, a non-member.
    let before = s.channel(&ID).await.unwrap();
    let mut two = BTreeMap::new();
    two.insert("a".to_owned(), String::new());
    for refused in [
        ChannelUpdate {
            name: Some("never".into()),
            set_settings: two,
            max_settings: 1,
            ..ChannelUpdate::default()
        },
        ChannelUpdate {
            name: Some("never".into()),
            role_changes: vec![(BOB, ChannelRole::Member), (ALICE, ChannelRole::Admin)],
            max_settings: 10,
            ..ChannelUpdate::default()
        },
        ChannelUpdate {
            name: Some("never".into()),
            role_changes: vec![(BOB, ChannelRole::Member), (CAROL, ChannelRole::Admin)],
            max_settings: 10,
            ..ChannelUpdate::default()
        },
    ] {
        assert!(matches!(
            s.update_channel(&ID, actor(ALICE), refused).await.unwrap(),
            Err(Refusal::Invalid(_))
        ));
        assert_eq!(s.channel(&ID).await.unwrap(), before);
        assert_eq!(
            s.member(&ID, &BOB).await.unwrap().unwrap().role,
            ChannelRole::Admin
        );
    }
}

pub async fn a_commit_wins_only_at_the_channels_epoch<B: Backend>(backend: &B) {
    let f = cast(backend).await;
    let s = &f.store;
    create(s, vec![BOB]).await;
    f.advance(5);
    let won = s
        .rotate(commit(ALICE, 0, vec![CAROL]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(won.new_epoch, 1);
    assert_eq!(won.added, vec![CAROL]);
    assert_eq!(won.queued, vec![(BOB, Seq(1)), (CAROL, Seq(1))]);
    let members: BTreeSet<_> = won.members.into_iter().collect();
    assert_eq!(members, BTreeSet::from([ALICE, BOB, CAROL]));
    let carol = s.member(&ID, &CAROL).await.unwrap().unwrap();
    assert_eq!(
        (carol.role, carol.joined_at_ms),
        (ChannelRole::Member, T0 + 5)
    );
    assert_eq!(s.channels_of(&CAROL).await.unwrap(), vec![ID]);
    let bob_got = s.peek(&BOB, Seq::ZERO, 10).await.unwrap().messages;
    assert_eq!(&bob_got[0].payload[..], b"commit");
    let carol_got = s.peek(&CAROL, Seq::ZERO, 10).await.unwrap().messages;
    assert_eq!(&carol_got[0].payload[..], b"welcome");
    assert_eq!(
        s.queue_depth(&ALICE).await.unwrap().messages,
        0,
        "not the sender"
    );

    // A stale commit, and each refused one, leaves no trace.
    let before = f.census().await;
    assert_eq!(
        s.rotate(commit(BOB, 0, Vec::new())).await.unwrap(),
        Err(Refusal::StaleEpoch { current: 1 })
    );
    assert_eq!(
        s.rotate(commit(BOB, 2, Vec::new())).await.unwrap(),
        Err(Refusal::StaleEpoch { current: 1 })
    );
    assert!(matches!(
        s.rotate(commit(BOB, 1, vec![[9; 32]])).await.unwrap(),
        Err(Refusal::Forbidden(_))
    ));
    assert_eq!(
        s.rotate(commit(ALICE, 1, vec![[9; 32]])).await.unwrap(),
        Err(Refusal::UnknownAccount([9; 32]))
    );
    assert!(matches!(
        s.rotate(commit(ALICE, 1, vec![BOB])).await.unwrap(),
        Err(Refusal::Invalid(_))
    ));
    assert_eq!(
        s.rotate(commit([9; 32], 1, Vec::new())).await.unwrap(),
        Err(Refusal::NotMember)
    );
    assert_eq!(
        s.rotate(RotateCommit {
            channel: ChannelId([8; 16]),
            ..commit(ALICE, 0, Vec::new())
        })
        .await
        .unwrap(),
        Err(Refusal::NoChannel)
    );
    assert_eq!(f.census().await, before);
    assert_eq!(s.channel(&ID).await.unwrap().unwrap().epoch, 1);
    // The epoch survives a reopen.
    let f = f.reopen().await;
    assert_eq!(f.store.channel(&ID).await.unwrap().unwrap().epoch, 1);
    let next = f.store.rotate(commit(BOB, 1, Vec::new())).await.unwrap();
    assert_eq!(next.unwrap().new_epoch, 2);
}

pub async fn racing_commits_of_one_epoch_admit_one<B: Backend>(backend: &B) {
    let f = cast(backend).await;
    create(&f.store, vec![BOB, CAROL]).await;
    let mut tasks = Vec::new();
    for sender in [ALICE, BOB, CAROL, ALICE, BOB, CAROL] {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            (
                sender,
                s.rotate(commit(sender, 0, Vec::new())).await.unwrap(),
            )
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (sender, Ok(outcome)) => {
                assert_eq!(outcome.new_epoch, 1);
                winners.push(sender);
            }
            (_, Err(refusal)) => assert_eq!(refusal, Refusal::StaleEpoch { current: 1 }),
        }
    }
    assert_eq!(winners.len(), 1, "one commit per epoch");
    // Only the winner's commit was queued: one message for each other member.
    for who in [ALICE, BOB, CAROL] {
        let expected = u64::from(who != winners[0]);
        assert_eq!(f.store.queue_depth(&who).await.unwrap().messages, expected);
    }
}

pub async fn a_full_members_queue_refuses_the_whole_commit<B: Backend>(backend: &B) {
    let limits = QueueLimits {
        max_messages: 1,
        ..QueueLimits::default()
    };
    let f = Fixture::with_limits(backend, limits).await;
    let s = &f.store;
    for (name, who) in [("alice", ALICE), ("bob", BOB), ("carol", CAROL)] {
        s.create_account(account(name, who)).await.unwrap();
    }
    create(s, vec![BOB]).await;
    s.enqueue(vec![(BOB, msg("fills bob's queue"))])
        .await
        .unwrap();
    let before = f.census().await;
    let err = s.rotate(commit(ALICE, 0, vec![CAROL])).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::QueueFull {
                limit: QueueLimit::Messages(1)
            }
        ),
        "{err}"
    );
    assert_eq!(f.census().await, before);
    assert_eq!(s.channel(&ID).await.unwrap().unwrap().epoch, 0);
    assert_eq!(s.member(&ID, &CAROL).await.unwrap(), None);
    assert_eq!(s.queue_depth(&CAROL).await.unwrap().messages, 0);
}

pub async fn a_channel_ban_refuses_a_welcome<B: Backend>(backend: &B) {
    let f = cast(backend).await;
    let s = &f.store;
    create(s, vec![BOB]).await;
    let ban = BanRecord {
        scope: BanScope::Channel(ID),
        identity: CAROL,
        username: "carol".into(),
        reason: "spam".into(),
        banned_by: ALICE,
        created_at_ms: T0,
        expires_at_ms: T0 + 1_000,
    };
    s.ban(ban, actor(ALICE)).await.unwrap().unwrap();
    assert_eq!(
        s.rotate(commit(ALICE, 0, vec![CAROL])).await.unwrap(),
        Err(Refusal::Banned(CAROL))
    );
    // Once the ban has run out, carol can be welcomed.
    f.advance(1_000);
    let won = s
        .rotate(commit(ALICE, 0, vec![CAROL]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(won.added, vec![CAROL]);
}

pub async fn account_deletion_leaves_no_key_or_membership_record_behind<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    s.create_account(account("bob", BOB)).await.unwrap();
    for last_resort in [false, false, true] {
        s.upload_key_package(KeyPackageUpload {
            identity: ALICE,
            key_package: Bytes::from_static(b"kp"),
            last_resort,
            max_queued: 10,
        })
        .await
        .unwrap();
    }
    let hybrid = HybridKeyRecord {
        x25519_public: [1; 32],
        mlkem768_public: Bytes::from_static(&[0; 1184]),
        signature: [2; 64],
        created_at_ms: 3,
    };
    s.put_hybrid_key(&ALICE, hybrid).await.unwrap();
    create(s, vec![BOB]).await;

    s.delete_account("alice").await.unwrap();
    assert!(matches!(
        s.fetch_key_package(&ALICE).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.hybrid_keys(&[ALICE]).await.unwrap(), vec![None]);
    let left = s.channel(&ID).await.unwrap().unwrap();
    assert_eq!(left.owner, BOB, "the remaining member owns the channel");
    assert_eq!(
        s.member(&ID, &BOB).await.unwrap().unwrap().role,
        ChannelRole::Owner
    );
    assert_eq!(s.member_identities(&ID).await.unwrap(), vec![BOB]);
    assert!(s.channels_of(&ALICE).await.unwrap().is_empty());
    // Only bob's records remain (and the transparency log keeps both bindings): a twin in
    // which alice never had keys and bob created the channel holds as many.
    let twin = Fixture::with_alice(backend).await;
    twin.store
        .create_account(account("bob", BOB))
        .await
        .unwrap();
    twin.store.delete_account("alice").await.unwrap();
    twin.store
        .create_channel(NewChannel {
            channel: channel(BOB),
            members: Vec::new(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.census().await, twin.census().await);

    s.delete_account("bob").await.unwrap();
    assert!(s.channel(&ID).await.unwrap().is_none(), "nobody left");
}
