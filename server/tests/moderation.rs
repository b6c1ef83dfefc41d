//! Moderation (420-424) over real QUIC: reports by members, admin-only listings, server-wide
//! bans that end sessions and stop logins, and channel bans that keep a user out.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, User, code};
use qpq_runtime::{RpcError, StatusCode};
use qpq_schema::proto;

fn name(user: &str) -> Option<proto::UserRef> {
    Some(proto::UserRef {
        target: Some(proto::user_ref::Target::Username(user.into())),
    })
}

async fn create(owner: &User, members: &[&User]) -> Bytes {
    owner
        .client
        .create_channel(proto::CreateChannelRequest {
            session_token: owner.token(),
            initial_members: members.iter().map(|m| m.to().unwrap()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .channel_id
}

async fn report(
    from: &User,
    about: &User,
    channel: Bytes,
    reason: &str,
) -> Result<proto::ReportMessageResponse, RpcError> {
    from.client
        .report_message(proto::ReportMessageRequest {
            session_token: from.token(),
            channel_id: channel,
            reported_identity_key: Bytes::copy_from_slice(&about.identity.public()),
            seq: 7,
            category: proto::ReportCategory::Abuse as i32,
            reason: reason.into(),
            evidence: Bytes::from_static(b"what they wrote"),
        })
        .await
}

async fn ban(
    by: &User,
    who: &str,
    channel: Bytes,
    duration_secs: u32,
) -> Result<proto::BanUserResponse, RpcError> {
    by.client
        .ban_user(proto::BanUserRequest {
            session_token: by.token(),
            target: name(who),
            channel_id: channel,
            reason: "rules".into(),
            duration_secs,
        })
        .await
}

async fn unban(by: &User, who: &str, channel: Bytes) -> Result<bool, RpcError> {
    by.client
        .unban_user(proto::UnbanUserRequest {
            session_token: by.token(),
            target: name(who),
            channel_id: channel,
        })
        .await
        .map(|r| r.was_banned)
}

async fn list_banned(by: &User, channel: Bytes) -> Result<Vec<proto::Ban>, RpcError> {
    by.client
        .list_banned(proto::ListBannedRequest {
            session_token: by.token(),
            channel_id: channel,
            limit: 0,
            cursor: Bytes::new(),
        })
        .await
        .map(|r| r.bans)
}

async fn login(
    server: &TestServer,
    user: &str,
) -> Result<qpq_client::Login, qpq_client::ClientError> {
    let client = server.client().await;
    qpq_client::login(&client, user, b"password of test", None).await
}

fn is_forbidden_login(result: &Result<qpq_client::Login, qpq_client::ClientError>) -> bool {
    matches!(result, Err(qpq_client::ClientError::Rpc(e)) if e.code() == Some(StatusCode::Forbidden) && e.to_string().contains("banned"))
}

#[tokio::test]
async fn listings_are_for_server_admins_only() {
    let server = TestServer::with_admin("root").await;
    let alice = server.user("alice").await;
    let root = server.user("root").await;
    let reports = |user: &User| {
        let client = user.client.clone();
        let token = user.token();
        async move {
            client
                .list_reports(proto::ListReportsRequest {
                    session_token: token,
                    limit: 0,
                    cursor: Bytes::new(),
                })
                .await
        }
    };
    let err = reports(&alice).await.unwrap_err();
    assert_eq!(err.code(), Some(StatusCode::Forbidden));
    assert!(err.to_string().contains("administrators"), "{err}");
    assert_eq!(
        code(list_banned(&alice, Bytes::new()).await),
        StatusCode::Forbidden
    );
    assert!(reports(&root).await.unwrap().reports.is_empty());
    assert!(list_banned(&root, Bytes::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn members_report_and_admins_page_through_reports_oldest_first() {
    let server = TestServer::with_admin("root").await;
    let root = server.user("root").await;
    let alice = server.user("alice").await;
    let mallory = server.user("mallory").await;
    let carol = server.user("carol").await;
    let channel = create(&alice, &[&mallory]).await;

    let first = report(&alice, &mallory, channel.clone(), "threats")
        .await
        .unwrap();
    assert_eq!(first.report_id.len(), 16);
    // Not a member of the channel.
    assert_eq!(
        code(report(&carol, &mallory, channel.clone(), "x").await),
        StatusCode::Forbidden
    );
    // A direct message needs no channel.
    tokio::time::sleep(Duration::from_millis(5)).await;
    report(&carol, &mallory, Bytes::new(), "spam in my inbox")
        .await
        .unwrap();
    assert_eq!(
        code(report(&carol, &carol, Bytes::new(), "me").await),
        StatusCode::BadRequest
    );
    let long = "r".repeat(1025);
    assert_eq!(
        code(report(&carol, &mallory, Bytes::new(), &long).await),
        StatusCode::BadRequest
    );

    let page = root
        .client
        .list_reports(proto::ListReportsRequest {
            session_token: root.token(),
            limit: 1,
            cursor: Bytes::new(),
        })
        .await
        .unwrap();
    assert_eq!(page.reports.len(), 1);
    let r = &page.reports[0];
    assert_eq!(r.report_id, first.report_id);
    assert_eq!(
        (r.reporter_username.as_str(), r.reported_username.as_str()),
        ("alice", "mallory")
    );
    assert_eq!(r.channel_id, channel);
    assert_eq!(
        (r.seq, r.category),
        (7, proto::ReportCategory::Abuse as i32)
    );
    assert_eq!(&r.evidence[..], b"what they wrote");
    assert!(!page.next_cursor.is_empty());
    let rest = root
        .client
        .list_reports(proto::ListReportsRequest {
            session_token: root.token(),
            limit: 10,
            cursor: page.next_cursor,
        })
        .await
        .unwrap();
    assert_eq!(rest.reports.len(), 1);
    assert_eq!(rest.reports[0].reporter_username, "carol");
    assert!(rest.reports[0].channel_id.is_empty());
    assert!(rest.next_cursor.is_empty());
}

#[tokio::test]
async fn a_server_wide_ban_ends_sessions_and_login_fails_until_lifted() {
    let server = TestServer::with_admin("root").await;
    let root = server.user("root").await;
    let alice = server.user("alice").await;
    let mallory = server.user("mallory").await;
    mallory.peek().await;

    // Only server admins ban server-wide.
    let err = ban(&alice, "mallory", Bytes::new(), 0).await.unwrap_err();
    assert_eq!(err.code(), Some(StatusCode::Forbidden));
    assert_eq!(
        code(ban(&root, "root", Bytes::new(), 0).await),
        StatusCode::BadRequest
    );
    assert_eq!(
        code(ban(&root, "nobody", Bytes::new(), 0).await),
        StatusCode::NotFound
    );

    let banned = ban(&root, "mallory", Bytes::new(), 0).await.unwrap();
    assert_eq!(banned.expires_at_unix_ms, 0);
    // Her session is gone and her connection closed.
    let after = mallory
        .client
        .peek(proto::PeekRequest {
            session_token: mallory.token(),
            limit: 1,
            after_seq: 0,
        })
        .await;
    assert!(after.is_err());
    let fresh = server.client().await;
    let again = fresh
        .peek(proto::PeekRequest {
            session_token: mallory.token(),
            limit: 1,
            after_seq: 0,
        })
        .await;
    assert_eq!(code(again), StatusCode::Unauthorized);
    // Login fails.
    assert!(is_forbidden_login(&login(&server, "mallory").await));

    let bans = list_banned(&root, Bytes::new()).await.unwrap();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].username, "mallory");
    assert_eq!(&bans[0].banned_by_identity_key[..], &root.identity.public());
    assert!(bans[0].channel_id.is_empty());

    assert_eq!(
        code(unban(&alice, "mallory", Bytes::new()).await),
        StatusCode::Forbidden
    );
    assert!(unban(&root, "mallory", Bytes::new()).await.unwrap());
    assert!(
        !unban(&root, "mallory", Bytes::new()).await.unwrap(),
        "a retry is harmless"
    );
    login(&server, "mallory").await.expect("login works again");
}

#[tokio::test]
async fn a_timed_ban_ends_by_itself() {
    let server = TestServer::with_admin("root").await;
    let root = server.user("root").await;
    server.user("mallory").await;
    let banned = ban(&root, "mallory", Bytes::new(), 1).await.unwrap();
    assert!(banned.expires_at_unix_ms > 0);
    assert!(is_forbidden_login(&login(&server, "mallory").await));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    login(&server, "mallory").await.expect("the ban expired");
    assert!(list_banned(&root, Bytes::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_channel_ban_removes_the_member_and_keeps_them_out() {
    let server = TestServer::with_admin("root").await;
    let root = server.user("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mallory = server.user("mallory").await;
    let channel = create(&alice, &[&bob, &mallory]).await;

    // A plain member may not ban; nobody bans the owner.
    assert_eq!(
        code(ban(&bob, "mallory", channel.clone(), 0).await),
        StatusCode::Forbidden
    );
    assert_eq!(
        code(ban(&root, "alice", channel.clone(), 0).await),
        StatusCode::Forbidden
    );

    ban(&alice, "mallory", channel.clone(), 0).await.unwrap();
    let listed = mallory
        .client
        .list_group_members(proto::ListGroupMembersRequest {
            session_token: mallory.token(),
            channel_id: channel.clone(),
            limit: 0,
            cursor: Bytes::new(),
        })
        .await;
    assert_eq!(code(listed), StatusCode::Forbidden);
    // She cannot be added back by a commit's welcome.
    let readd = |epoch: u64| {
        let client = alice.client.clone();
        let token = alice.token();
        let channel = channel.clone();
        let to = mallory.to();
        async move {
            client
                .rotate_keys(proto::RotateKeysRequest {
                    session_token: token,
                    channel_id: channel,
                    epoch,
                    commit: Bytes::from_static(b"add"),
                    welcomes: vec![proto::WelcomeDelivery {
                        recipient: to,
                        welcome: Bytes::from_static(b"welcome"),
                    }],
                })
                .await
        }
    };
    let err = readd(0).await.unwrap_err();
    assert_eq!(err.code(), Some(StatusCode::Forbidden));
    assert!(
        err.to_string().contains("banned from this channel"),
        "{err}"
    );
    // She may not send channel-tagged messages either.
    let tagged = mallory
        .client
        .enqueue(proto::EnqueueRequest {
            session_token: mallory.token(),
            recipient: bob.to(),
            payload: Bytes::from_static(b"hi"),
            ttl_secs: 0,
            channel_id: channel.clone(),
        })
        .await;
    assert_eq!(code(tagged), StatusCode::Forbidden);

    let bans = list_banned(&root, channel.clone()).await.unwrap();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].channel_id, channel);
    assert_eq!(list_banned(&root, Bytes::new()).await.unwrap().len(), 1);
    assert!(
        list_banned(&root, Bytes::from_static(&[3; 16]))
            .await
            .unwrap()
            .is_empty()
    );

    assert!(unban(&alice, "mallory", channel.clone()).await.unwrap());
    assert_eq!(readd(0).await.unwrap().new_epoch, 1);
}

#[tokio::test]
async fn listing_bans_pages_across_scopes() {
    let server = TestServer::with_admin("root").await;
    let root = server.user("root").await;
    let alice = server.user("alice").await;
    let mut users = Vec::new();
    for i in 0..3 {
        users.push(server.user(&format!("u{i}")).await);
    }
    let channel = create(&alice, &users.iter().collect::<Vec<_>>()).await;
    ban(&root, "u0", Bytes::new(), 0).await.unwrap();
    ban(&alice, "u1", channel.clone(), 0).await.unwrap();
    ban(&alice, "u2", channel.clone(), 0).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = Bytes::new();
    loop {
        let page = root
            .client
            .list_banned(proto::ListBannedRequest {
                session_token: root.token(),
                channel_id: Bytes::new(),
                limit: 1,
                cursor: cursor.clone(),
            })
            .await
            .unwrap();
        assert!(page.bans.len() <= 1);
        seen.extend(
            page.bans
                .into_iter()
                .map(|b| (b.username, b.channel_id.is_empty())),
        );
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("u0".into(), true),
            ("u1".into(), false),
            ("u2".into(), false)
        ]
    );
}
