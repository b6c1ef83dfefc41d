//! Channels and group management (400, 410-413), typing (206) and presence over real QUIC:
//! commit ordering with Conflict, welcomes only after a winning commit, roles, paging, and
//! the membership, typing and presence pushes reaching the right members only.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, User, code};
use qpq_runtime::{RpcError, StatusCode};
use qpq_schema::{Event, QpqEvents, proto};

fn by_key(user: &User) -> Option<proto::UserRef> {
    user.to()
}

async fn create(owner: &User, members: &[&User], epoch: u64) -> Bytes {
    owner
        .client
        .create_channel(proto::CreateChannelRequest {
            session_token: owner.token(),
            name: "team".into(),
            description: "the team".into(),
            initial_members: members.iter().map(|m| by_key(m).unwrap()).collect(),
            initial_epoch: epoch,
            settings: Default::default(),
        })
        .await
        .unwrap()
        .channel_id
}

async fn rotate(
    user: &User,
    channel: &Bytes,
    epoch: u64,
    commit: &[u8],
    welcomes: Vec<(&User, &[u8])>,
) -> Result<proto::RotateKeysResponse, RpcError> {
    user.client
        .rotate_keys(proto::RotateKeysRequest {
            session_token: user.token(),
            channel_id: channel.clone(),
            epoch,
            commit: Bytes::copy_from_slice(commit),
            welcomes: welcomes
                .into_iter()
                .map(|(to, w)| proto::WelcomeDelivery {
                    recipient: to.to(),
                    welcome: Bytes::copy_from_slice(w),
                })
                .collect(),
        })
        .await
}

async fn members(
    user: &User,
    channel: &Bytes,
) -> Result<proto::ListGroupMembersResponse, RpcError> {
    user.client
        .list_group_members(proto::ListGroupMembersRequest {
            session_token: user.token(),
            channel_id: channel.clone(),
            limit: 0,
            cursor: Bytes::new(),
        })
        .await
}

async fn remove(user: &User, channel: &Bytes, target: &User) -> Result<bool, RpcError> {
    user.client
        .remove_member(proto::RemoveMemberRequest {
            session_token: user.token(),
            channel_id: channel.clone(),
            member_identity_key: Bytes::copy_from_slice(&target.identity.public()),
        })
        .await
        .map(|r| r.removed)
}

async fn set_role(
    owner: &User,
    channel: &Bytes,
    who: &User,
    role: proto::ChannelRole,
) -> Result<proto::UpdateGroupMetadataResponse, RpcError> {
    owner
        .client
        .update_group_metadata(proto::UpdateGroupMetadataRequest {
            session_token: owner.token(),
            channel_id: channel.clone(),
            role_changes: vec![proto::RoleChange {
                identity_key: Bytes::copy_from_slice(&who.identity.public()),
                role: role as i32,
            }],
            ..Default::default()
        })
        .await
}

/// Makes a session call so the user's connection is attached (online, receiving pushes).
async fn online(user: &User) -> QpqEvents {
    let events = user.client.events().expect("push stream");
    user.peek().await;
    events
}

/// The next event matching `want` within two seconds, skipping others.
async fn expect_event(events: &mut QpqEvents, want: impl Fn(&Event) -> bool) -> Event {
    let wait = async {
        loop {
            let event = events
                .next()
                .await
                .expect("push stream open")
                .expect("decodes");
            if want(&event) {
                return event;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), wait)
        .await
        .expect("the expected push arrived")
}

/// Asserts no event matching `unwanted` arrives within 300 ms.
async fn expect_none(events: &mut QpqEvents, unwanted: impl Fn(&Event) -> bool) {
    let wait = async {
        loop {
            match events.next().await {
                Some(Ok(event)) if unwanted(&event) => return event,
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    };
    if let Ok(event) = tokio::time::timeout(Duration::from_millis(300), wait).await {
        panic!("unexpected push: {event:?}");
    }
}

fn is_membership(event: &Event, kind: proto::MembershipChange) -> bool {
    matches!(event, Event::PushMembership(m) if m.kind == kind as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_for_one_epoch_exactly_one_wins_the_others_get_conflict() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let channel = create(&alice, &[&bob, &carol], 5).await;

    let mut tasks = Vec::new();
    for (n, user) in [&alice, &bob, &carol].into_iter().enumerate() {
        for i in 0..4 {
            let client = user.client.clone();
            let token = user.token();
            let channel = channel.clone();
            tasks.push(tokio::spawn(async move {
                let commit = format!("commit-{n}-{i}");
                let result = client
                    .rotate_keys(proto::RotateKeysRequest {
                        session_token: token,
                        channel_id: channel,
                        epoch: 5,
                        commit: Bytes::from(commit.clone()),
                        welcomes: Vec::new(),
                    })
                    .await;
                (n, commit, result)
            }));
        }
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (n, commit, result) = task.await.unwrap();
        match result {
            Ok(r) => {
                assert_eq!(r.new_epoch, 6);
                winners.push((n, commit));
            }
            Err(e) => {
                let status = e.status().expect("a status");
                assert_eq!(status.code(), StatusCode::Conflict, "{e}");
                assert!(status.message().contains("epoch 6"), "{}", status.message());
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one commit wins: {winners:?}");
    let (winner, commit) = winners.pop().unwrap();

    // The winning commit, and only it, is queued for every other member, tagged with the
    // channel and sent by the winner.
    let users = [&alice, &bob, &carol];
    for (n, user) in users.iter().enumerate() {
        let queued = user.peek().await;
        if n == winner {
            assert!(queued.is_empty(), "the sender does not get its own commit");
        } else {
            assert_eq!(queued.len(), 1, "{}", user.name);
            assert_eq!(&queued[0].payload[..], commit.as_bytes());
            assert_eq!(queued[0].channel_id, channel);
            assert_eq!(queued[0].sender, users[winner].name);
        }
    }
    let info = members(&alice, &channel).await.unwrap().channel.unwrap();
    assert_eq!(info.epoch, 6);
    // The next epoch goes on; a commit for the old one still conflicts.
    let next = rotate(users[(winner + 1) % 3], &channel, 6, b"next", vec![])
        .await
        .unwrap();
    assert_eq!(next.new_epoch, 7);
    assert_eq!(
        code(rotate(&alice, &channel, 6, b"late", vec![]).await),
        StatusCode::Conflict
    );
}

#[tokio::test]
async fn welcomes_are_queued_only_when_their_commit_wins() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let dave = server.user("dave").await;
    let outsider = server.user("outsider").await;
    let channel = create(&alice, &[&bob], 0).await;
    let mut bob_events = online(&bob).await;

    // A plain member may not add anyone.
    let err = rotate(&bob, &channel, 0, b"c", vec![(&dave, b"w")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(StatusCode::Forbidden), "{err}");
    // Not a member at all.
    assert_eq!(
        code(rotate(&outsider, &channel, 0, b"c", vec![]).await),
        StatusCode::Forbidden
    );
    // A losing commit delivers nothing and adds nobody.
    assert_eq!(
        code(rotate(&alice, &channel, 3, b"c", vec![(&dave, b"w")]).await),
        StatusCode::Conflict
    );
    assert!(dave.peek().await.is_empty());
    assert!(bob.peek().await.is_empty());
    assert_eq!(code(members(&dave, &channel).await), StatusCode::Forbidden);

    let won = rotate(
        &alice,
        &channel,
        0,
        b"add dave",
        vec![(&dave, b"welcome dave")],
    )
    .await
    .unwrap();
    assert_eq!(won.new_epoch, 1);
    let welcome = dave.peek().await;
    assert_eq!(welcome.len(), 1);
    assert_eq!(&welcome[0].payload[..], b"welcome dave");
    assert_eq!(welcome[0].channel_id, channel);
    assert_eq!(&bob.peek().await[0].payload[..], b"add dave");
    let list = members(&dave, &channel).await.unwrap();
    assert_eq!(list.members.len(), 3);
    let event = expect_event(&mut bob_events, |e| {
        is_membership(e, proto::MembershipChange::Added)
    })
    .await;
    let Event::PushMembership(m) = event else {
        unreachable!()
    };
    assert_eq!(&m.member_identity_key[..], &dave.identity.public());
    assert_eq!(&m.actor_identity_key[..], &alice.identity.public());

    // Welcoming a member again is refused.
    assert_eq!(
        code(rotate(&alice, &channel, 1, b"c", vec![(&dave, b"w")]).await),
        StatusCode::BadRequest
    );
}

#[tokio::test]
async fn roles_decide_who_may_remove_and_update() {
    let server = TestServer::start_with(|c| c.admins = vec!["root".into()]).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let erin = server.user("erin").await;
    let outsider = server.user("outsider").await;
    let root = server.user("root").await;
    let channel = create(&alice, &[&bob, &carol, &erin], 0).await;

    // Non-owner, non-admin: Forbidden.
    let err = remove(&bob, &channel, &carol).await.unwrap_err();
    assert_eq!(err.code(), Some(StatusCode::Forbidden));
    assert!(err.to_string().contains("owner or admins"), "{err}");
    assert_eq!(
        code(remove(&outsider, &channel, &carol).await),
        StatusCode::Forbidden
    );
    assert_eq!(
        code(set_role(&bob, &channel, &carol, proto::ChannelRole::Admin).await),
        StatusCode::Forbidden
    );
    assert_eq!(
        code(set_role(&alice, &channel, &bob, proto::ChannelRole::Owner).await),
        StatusCode::BadRequest
    );
    assert_eq!(
        code(set_role(&alice, &channel, &outsider, proto::ChannelRole::Admin).await),
        StatusCode::BadRequest
    );

    // The owner makes bob an admin; an admin may remove members but not the owner.
    let updated = set_role(&alice, &channel, &bob, proto::ChannelRole::Admin)
        .await
        .unwrap();
    assert_eq!(updated.channel.unwrap().name, "team");
    assert!(remove(&bob, &channel, &carol).await.unwrap());
    assert!(
        !remove(&bob, &channel, &carol).await.unwrap(),
        "a retry is harmless"
    );
    assert_eq!(
        code(remove(&bob, &channel, &alice).await),
        StatusCode::Forbidden
    );
    // A server admin may remove members without being one.
    assert!(remove(&root, &channel, &erin).await.unwrap());
    // Members only: carol was removed.
    assert_eq!(code(members(&carol, &channel).await), StatusCode::Forbidden);
    assert_eq!(
        code(members(&outsider, &channel).await),
        StatusCode::Forbidden
    );

    // The owner leaves: the admin inherits the channel.
    assert!(remove(&alice, &channel, &alice).await.unwrap());
    let list = members(&bob, &channel).await.unwrap();
    assert_eq!(
        &list.channel.unwrap().owner_identity_key[..],
        &bob.identity.public()
    );
    assert_eq!(list.members.len(), 1);
    assert_eq!(list.members[0].role, proto::ChannelRole::Owner as i32);
    // The last member leaves: the channel is gone.
    assert!(remove(&bob, &channel, &bob).await.unwrap());
    assert_eq!(code(members(&bob, &channel).await), StatusCode::NotFound);
}

#[tokio::test]
async fn metadata_updates_and_member_pages() {
    let server = TestServer::start().await;
    let owner = server.user("owner").await;
    let mut others = Vec::new();
    for i in 0..5 {
        others.push(server.user(&format!("member{i}")).await);
    }
    let refs: Vec<&User> = others.iter().collect();
    let channel = create(&owner, &refs, 0).await;

    let mut seen = Vec::new();
    let mut cursor = Bytes::new();
    loop {
        let page = owner
            .client
            .list_group_members(proto::ListGroupMembersRequest {
                session_token: owner.token(),
                channel_id: channel.clone(),
                limit: 2,
                cursor: cursor.clone(),
            })
            .await
            .unwrap();
        assert!(page.members.len() <= 2);
        seen.extend(page.members);
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let names: HashSet<_> = seen.iter().map(|m| m.username.clone()).collect();
    assert_eq!(seen.len(), 6);
    assert_eq!(names.len(), 6);
    assert!(names.contains("owner") && names.contains("member4"));
    let owners: Vec<_> = seen
        .iter()
        .filter(|m| m.role == proto::ChannelRole::Owner as i32)
        .collect();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].username, "owner");
    let bad_cursor = owner
        .client
        .list_group_members(proto::ListGroupMembersRequest {
            session_token: owner.token(),
            channel_id: channel.clone(),
            limit: 2,
            cursor: Bytes::from_static(b"junk"),
        })
        .await;
    assert_eq!(code(bad_cursor), StatusCode::BadRequest);

    let updated = owner
        .client
        .update_group_metadata(proto::UpdateGroupMetadataRequest {
            session_token: owner.token(),
            channel_id: channel.clone(),
            name: Some("renamed".into()),
            description: None,
            set_settings: [
                ("theme".to_owned(), "dark".to_owned()),
                ("x".to_owned(), "1".to_owned()),
            ]
            .into_iter()
            .collect(),
            remove_settings: vec!["x".into()],
            role_changes: Vec::new(),
        })
        .await
        .unwrap()
        .channel
        .unwrap();
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.description, "the team");
    assert_eq!(updated.settings.len(), 1);
    assert_eq!(updated.settings["theme"], "dark");
    let too_long = owner
        .client
        .update_group_metadata(proto::UpdateGroupMetadataRequest {
            session_token: owner.token(),
            channel_id: channel.clone(),
            name: Some("n".repeat(129)),
            ..Default::default()
        })
        .await;
    assert_eq!(code(too_long), StatusCode::BadRequest);
    let unknown = owner
        .client
        .update_group_metadata(proto::UpdateGroupMetadataRequest {
            session_token: owner.token(),
            channel_id: Bytes::from_static(&[9; 16]),
            name: Some("x".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(code(unknown), StatusCode::NotFound);
}

#[tokio::test]
async fn create_channel_checks_its_members() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let ghost = qpq_client::IdentityKey::generate();
    let err = alice
        .client
        .create_channel(proto::CreateChannelRequest {
            session_token: alice.token(),
            initial_members: vec![proto::UserRef {
                target: Some(proto::user_ref::Target::IdentityKey(
                    Bytes::copy_from_slice(&ghost.public()),
                )),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(StatusCode::NotFound));
    let by_name = alice
        .client
        .create_channel(proto::CreateChannelRequest {
            session_token: alice.token(),
            initial_members: vec![proto::UserRef {
                target: Some(proto::user_ref::Target::Username("nobody".into())),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        by_name.to_string().contains("initial_members[0]"),
        "{by_name}"
    );
}

#[tokio::test]
async fn membership_pushes_reach_the_members_concerned_only() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let mut alice_events = online(&alice).await;
    let mut bob_events = online(&bob).await;
    let mut carol_events = online(&carol).await;

    let channel = create(&alice, &[&bob], 0).await;
    let event = expect_event(&mut bob_events, |e| {
        is_membership(e, proto::MembershipChange::Added)
    })
    .await;
    let Event::PushMembership(m) = event else {
        unreachable!()
    };
    assert_eq!(m.channel_id, channel);
    assert_eq!(&m.member_identity_key[..], &bob.identity.public());
    assert_eq!(m.role, proto::ChannelRole::Member as i32);

    owner_renames(&alice, &channel).await;
    for events in [&mut alice_events, &mut bob_events] {
        expect_event(events, |e| {
            is_membership(e, proto::MembershipChange::MetadataUpdated)
        })
        .await;
    }
    assert!(remove(&alice, &channel, &bob).await.unwrap());
    for events in [&mut alice_events, &mut bob_events] {
        let event = expect_event(events, |e| {
            is_membership(e, proto::MembershipChange::Removed)
        })
        .await;
        let Event::PushMembership(m) = event else {
            unreachable!()
        };
        assert_eq!(&m.member_identity_key[..], &bob.identity.public());
    }
    expect_none(&mut carol_events, |e| matches!(e, Event::PushMembership(_))).await;
}

async fn owner_renames(owner: &User, channel: &Bytes) {
    owner
        .client
        .update_group_metadata(proto::UpdateGroupMetadataRequest {
            session_token: owner.token(),
            channel_id: channel.clone(),
            name: Some("new name".into()),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn typing_reaches_the_other_members_only() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let channel = create(&alice, &[&bob], 0).await;
    let mut alice_events = online(&alice).await;
    let mut bob_events = online(&bob).await;
    let mut carol_events = online(&carol).await;

    let typing = |user: &User, channel: Bytes, typing: bool| {
        let client = user.client.clone();
        let token = user.token();
        async move {
            client
                .send_typing(proto::SendTypingRequest {
                    session_token: token,
                    channel_id: channel,
                    typing,
                })
                .await
        }
    };
    typing(&bob, channel.clone(), true).await.unwrap();
    let event = expect_event(&mut alice_events, |e| matches!(e, Event::PushTyping(_))).await;
    let Event::PushTyping(t) = event else {
        unreachable!()
    };
    assert_eq!((t.channel_id.clone(), t.typing), (channel.clone(), true));
    assert_eq!(&t.identity_key[..], &bob.identity.public());
    typing(&bob, channel.clone(), false).await.unwrap();
    let event = expect_event(&mut alice_events, |e| matches!(e, Event::PushTyping(_))).await;
    assert!(matches!(event, Event::PushTyping(t) if !t.typing));
    expect_none(&mut bob_events, |e| matches!(e, Event::PushTyping(_))).await;
    expect_none(&mut carol_events, |e| matches!(e, Event::PushTyping(_))).await;

    assert_eq!(
        code(typing(&carol, channel.clone(), true).await),
        StatusCode::Forbidden
    );
    assert_eq!(
        code(typing(&carol, Bytes::from_static(&[1; 16]), true).await),
        StatusCode::NotFound
    );
    assert_eq!(
        code(typing(&carol, Bytes::from_static(&[1; 3]), true).await),
        StatusCode::BadRequest
    );
}

#[tokio::test]
async fn presence_reaches_users_sharing_a_channel_on_first_and_last_connection() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    create(&alice, &[&bob], 0).await;
    let mut alice_events = online(&alice).await;
    let mut carol_events = online(&carol).await;

    // Bob's first authenticated call brings him online.
    bob.peek().await;
    let event = expect_event(&mut alice_events, |e| matches!(e, Event::PushPresence(_))).await;
    let Event::PushPresence(p) = event else {
        unreachable!()
    };
    assert_eq!(&p.identity_key[..], &bob.identity.public());
    assert!(p.online);

    // A second connection of bob's is not news; closing it while the first stays is not either.
    let second = server.client().await;
    second
        .peek(proto::PeekRequest {
            session_token: bob.token(),
            limit: 1,
            after_seq: 0,
        })
        .await
        .unwrap();
    second.connection().close();
    expect_none(&mut alice_events, |e| matches!(e, Event::PushPresence(_))).await;

    // His last connection closes: offline.
    bob.client.connection().close();
    let event = expect_event(&mut alice_events, |e| matches!(e, Event::PushPresence(_))).await;
    let Event::PushPresence(p) = event else {
        unreachable!()
    };
    assert_eq!(&p.identity_key[..], &bob.identity.public());
    assert!(!p.online);

    expect_none(&mut carol_events, |e| matches!(e, Event::PushPresence(_))).await;
}

#[tokio::test]
async fn channel_tagged_messages_come_from_members_only() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let channel = create(&alice, &[&bob], 0).await;
    let send = |from: &User, to: &User, channel: Bytes| {
        let client = from.client.clone();
        let token = from.token();
        let recipient = to.to();
        async move {
            client
                .enqueue(proto::EnqueueRequest {
                    session_token: token,
                    recipient,
                    payload: Bytes::from_static(b"app message"),
                    ttl_secs: 0,
                    channel_id: channel,
                })
                .await
        }
    };
    send(&alice, &bob, channel.clone()).await.unwrap();
    let got = bob.peek().await;
    assert_eq!(got[0].channel_id, channel);
    assert_eq!(
        code(send(&carol, &bob, channel.clone()).await),
        StatusCode::Forbidden
    );
    assert_eq!(
        code(send(&alice, &bob, Bytes::from_static(&[2; 16])).await),
        StatusCode::NotFound
    );
    assert_eq!(
        code(send(&alice, &bob, Bytes::from_static(&[2; 5])).await),
        StatusCode::BadRequest
    );
}

#[tokio::test]
async fn deleting_the_owner_passes_the_channel_on() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let channel = create(&alice, &[&bob, &carol], 0).await;
    set_role(&alice, &channel, &carol, proto::ChannelRole::Admin)
        .await
        .unwrap();
    alice
        .client
        .delete_account(proto::DeleteAccountRequest {
            session_token: alice.token(),
        })
        .await
        .unwrap();
    let list = members(&bob, &channel).await.unwrap();
    assert_eq!(
        &list.channel.unwrap().owner_identity_key[..],
        &carol.identity.public(),
        "the admin inherits before earlier plain members"
    );
    assert_eq!(list.members.len(), 2);
}
