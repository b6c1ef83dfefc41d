//! Moderation: reports (kept oldest first, paged, outliving accounts) and bans (who may ban
//! whom, what a ban removes in the same batch, expiry, listing in pages).

use bytes::Bytes;

use super::{ALICE, BOB, Backend, CAROL, Fixture, T0, account, new_channel, session};
use crate::store::{
    Actor, BanRecord, BanScope, ChannelId, ChannelRole, ChannelStore, ChannelUpdate, IdentityKey,
    ModerationStore, Refusal, ReportRecord, Store, StoreError,
};

const ID: ChannelId = ChannelId([7; 16]);
const ADMIN: Actor = Actor {
    identity: [0xad; 32],
    server_admin: true,
};

fn actor(identity: IdentityKey) -> Actor {
    Actor {
        identity,
        server_admin: false,
    }
}

fn report(id: u8, created_at_ms: u64) -> ReportRecord {
    ReportRecord {
        id: [id; 16],
        reporter: ALICE,
        reporter_username: "alice".into(),
        reported: BOB,
        reported_username: "bob".into(),
        channel: id.is_multiple_of(2).then_some(ID),
        seq: u64::from(id),
        category: 2,
        reason: format!("report {id}"),
        evidence: Bytes::from(vec![id; 8]),
        created_at_ms,
    }
}

fn ban(scope: BanScope, identity: IdentityKey, expires_at_ms: u64) -> BanRecord {
    BanRecord {
        scope,
        identity,
        username: "someone".into(),
        reason: "spam".into(),
        banned_by: ALICE,
        created_at_ms: T0,
        expires_at_ms,
    }
}

/// Alice, bob and carol, and alice's channel `ID` with bob and carol.
async fn cast<B: Backend>(backend: &B) -> Fixture<'_, B> {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    s.create_account(account("bob", BOB)).await.unwrap();
    s.create_account(account("carol", CAROL)).await.unwrap();
    s.create_channel(new_channel(ID, ALICE, vec![BOB, CAROL]))
        .await
        .unwrap()
        .unwrap();
    f
}

pub async fn reports_are_kept_oldest_first_in_pages<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    for (id, at) in [
        (3, T0 + 30),
        (1, T0 + 10),
        (2, T0 + 10),
        (4, T0 + 40),
        (5, T0),
    ] {
        s.add_report(report(id, at)).await.unwrap();
    }
    let f = f.reopen().await;
    let s = &f.store;
    let mut seen = Vec::new();
    let mut cursor = Vec::new();
    loop {
        let page = s.reports(&cursor, 2).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items);
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let order: Vec<u8> = seen.iter().map(|r| r.id[0]).collect();
    assert_eq!(order, vec![5, 1, 2, 3, 4]);
    assert_eq!(seen[0], report(5, T0));
    assert!(matches!(
        s.reports(b"bad", 2).await,
        Err(StoreError::InvalidArgument(_))
    ));
    // Reports are the server's records: they outlive the reporter's account.
    s.delete_account("alice").await.unwrap();
    assert_eq!(s.reports(&[], 10).await.unwrap().items.len(), 5);
}

pub async fn a_server_ban_ends_sessions_in_the_same_write<B: Backend>(backend: &B) {
    let f = cast(backend).await;
    let s = &f.store;
    s.put_session(session(1, "bob", BOB, T0 + 60_000))
        .await
        .unwrap();
    s.put_session(session(2, "bob", BOB, T0 + 60_000))
        .await
        .unwrap();
    s.put_session(session(3, "carol", CAROL, T0 + 60_000))
        .await
        .unwrap();
    assert!(matches!(
        s.ban(ban(BanScope::Server, BOB, 0), actor(ALICE))
            .await
            .unwrap(),
        Err(Refusal::Forbidden(_))
    ));
    assert!(s.session_by_token_hash(&[1; 32]).await.unwrap().is_some());
    let outcome = s
        .ban(ban(BanScope::Server, BOB, T0 + 1_000), ADMIN)
        .await
        .unwrap()
        .unwrap();
    let mut ended: Vec<u8> = outcome.sessions.iter().map(|r| r.token_hash[0]).collect();
    ended.sort();
    assert_eq!(ended, vec![1, 2]);
    for token in [1, 2] {
        assert_eq!(s.session_by_token_hash(&[token; 32]).await.unwrap(), None);
    }
    assert!(s.session_by_token_hash(&[3; 32]).await.unwrap().is_some());
    let f = f.reopen().await;
    let s = &f.store;
    assert_eq!(
        s.server_ban(&BOB).await.unwrap(),
        Some(ban(BanScope::Server, BOB, T0 + 1_000))
    );
    assert_eq!(s.server_ban(&CAROL).await.unwrap(), None);
    // A ban that has run out is not in force, and not listed.
    f.advance(1_000);
    assert_eq!(s.server_ban(&BOB).await.unwrap(), None);
    assert!(s.bans(None, &[], 10).await.unwrap().items.is_empty());
    // Lifting answers whether a ban was in force.
    assert_eq!(
        s.unban(BanScope::Server, &BOB, ADMIN).await.unwrap(),
        Ok(false)
    );
    s.ban(ban(BanScope::Server, BOB, 0), ADMIN)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        s.unban(BanScope::Server, &BOB, actor(ALICE)).await.unwrap(),
        Err(Refusal::Forbidden(_))
    ));
    assert_eq!(
        s.unban(BanScope::Server, &BOB, ADMIN).await.unwrap(),
        Ok(true)
    );
    assert_eq!(s.server_ban(&BOB).await.unwrap(), None);
    assert_eq!(
        s.unban(BanScope::Server, &BOB, ADMIN).await.unwrap(),
        Ok(false)
    );
}

pub async fn who_may_ban_from_a_channel_and_what_it_removes<B: Backend>(backend: &B) {
    let f = cast(backend).await;
    let s = &f.store;
    let scope = BanScope::Channel(ID);
    let before = f.census().await;
    assert!(matches!(
        s.ban(ban(scope, CAROL, 0), actor(BOB)).await.unwrap(),
        Err(Refusal::Forbidden(_))
    ));
    assert_eq!(
        s.ban(ban(scope, CAROL, 0), actor([9; 32])).await.unwrap(),
        Err(Refusal::NotMember)
    );
    assert!(matches!(
        s.ban(ban(scope, ALICE, 0), ADMIN).await.unwrap(),
        Err(Refusal::Forbidden(_))
    ));
    assert!(matches!(
        s.ban(ban(scope, ALICE, 0), actor(ALICE)).await.unwrap(),
        Err(Refusal::Invalid(_))
    ));
    assert_eq!(
        s.ban(ban(BanScope::Channel(ChannelId([8; 16])), BOB, 0), ADMIN)
            .await
            .unwrap(),
        Err(Refusal::NoChannel)
    );
    assert_eq!(f.census().await, before, "refusals store nothing");
    // A channel admin cannot ban another admin.
    let admins = ChannelUpdate {
        role_changes: vec![(BOB, ChannelRole::Admin), (CAROL, ChannelRole::Admin)],
        max_settings: 10,
        ..ChannelUpdate::default()
    };
    s.update_channel(&ID, actor(ALICE), admins)
        .await
        .unwrap()
        .unwrap();
    let before_roles = f.census().await;
    assert!(matches!(
        s.ban(ban(scope, CAROL, 0), actor(BOB)).await.unwrap(),
        Err(Refusal::Forbidden(_))
    ));
    assert_eq!(f.census().await, before_roles);

    let outcome = s
        .ban(ban(scope, CAROL, 0), actor(ALICE))
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.removed_from_channel);
    let mut remaining = outcome.remaining;
    remaining.sort();
    let mut expected = vec![ALICE, BOB];
    expected.sort();
    assert_eq!(remaining, expected);
    assert_eq!(s.member(&ID, &CAROL).await.unwrap(), None);
    assert!(s.channels_of(&CAROL).await.unwrap().is_empty());
    // Banning a non-member records the ban and removes nobody.
    s.create_account(account("dave", [0xda; 32])).await.unwrap();
    let outcome = s
        .ban(ban(scope, [0xda; 32], 0), actor(BOB))
        .await
        .unwrap()
        .unwrap();
    assert!(!outcome.removed_from_channel);
    assert_eq!(s.bans(Some(ID), &[], 10).await.unwrap().items.len(), 2);
    assert_eq!(s.unban(scope, &CAROL, actor(BOB)).await.unwrap(), Ok(true));
    assert_eq!(s.unban(scope, &CAROL, actor(BOB)).await.unwrap(), Ok(false));
}

pub async fn bans_are_listed_server_wide_first_in_pages<B: Backend>(backend: &B) {
    let f = cast(backend).await;
    let s = &f.store;
    let other = ChannelId([9; 16]);
    s.create_channel(new_channel(other, ALICE, Vec::new()))
        .await
        .unwrap()
        .unwrap();
    for i in 0..3u8 {
        s.ban(ban(BanScope::Server, [0x10 + i; 32], 0), ADMIN)
            .await
            .unwrap()
            .unwrap();
        s.ban(ban(BanScope::Channel(ID), [0x20 + i; 32], 0), ADMIN)
            .await
            .unwrap()
            .unwrap();
        s.ban(ban(BanScope::Channel(other), [0x30 + i; 32], 0), ADMIN)
            .await
            .unwrap()
            .unwrap();
    }
    // One that has run out is skipped.
    s.ban(ban(BanScope::Channel(ID), [0x2f; 32], T0), ADMIN)
        .await
        .unwrap()
        .unwrap();
    let all = |channel: Option<ChannelId>| async move {
        let mut out = Vec::new();
        let mut cursor = Vec::new();
        loop {
            let page = s.bans(channel, &cursor, 2).await.unwrap();
            assert!(page.items.len() <= 2);
            out.extend(page.items);
            if page.next_cursor.is_empty() {
                return out;
            }
            cursor = page.next_cursor;
        }
    };
    let everything = all(None).await;
    assert_eq!(everything.len(), 9);
    assert!(everything[..3].iter().all(|b| b.scope == BanScope::Server));
    assert!(everything[3..].iter().all(|b| b.scope != BanScope::Server));
    let in_id = all(Some(ID)).await;
    let banned: Vec<u8> = in_id.iter().map(|b| b.identity[0]).collect();
    assert_eq!(banned, vec![0x20, 0x21, 0x22]);
    // A cursor from one channel's listing is refused for another's.
    let page = s.bans(Some(ID), &[], 1).await.unwrap();
    assert!(matches!(
        s.bans(Some(other), &page.next_cursor, 1).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.bans(None, b"bad", 1).await,
        Err(StoreError::InvalidArgument(_))
    ));
}
