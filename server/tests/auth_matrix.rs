//! The authorization matrix over real QUIC, generated from `qpq_schema::METHODS`: every
//! method × every way of calling it without the right to, with the status each must give,
//! and a victim whose stored state must come out unchanged.
//!
//! Columns (which apply follows from the method's `auth` level):
//! - `none`: no session token; `forged`: 32 random bytes; `expired`: a token past its TTL
//!   (a second server with a 1 s session TTL); all Unauthorized.
//! - `ended`: a logged-out token. There is no Logout RPC; the equivalent used here is a
//!   session ended on the server while the account stays in good standing: an admin bans
//!   the user server-wide (which ends every session at once) and unbans them; the old token
//!   stays dead and a new login works. `deleted`: the other session of an account deleted
//!   with DeleteAccount. Both Unauthorized.
//! - `revoked`: a session logged in with a device id, after RevokeDevice of that device
//!   from another session of the same account: Unauthorized.
//! - `other`: a valid token of another user (the attacker) aimed at the victim's resources
//!   (their queue's sequence numbers, channel, device, key, upload, recovery bundle): each
//!   method's own answer (Forbidden, NotFound, or Ok acting on the caller's own state only).
//!   Methods that act only on the caller or are public lookups by design say so.
//! - `non-admin`: a valid non-admin token on an `admin` method: Forbidden.
//! - `no cert` / `unpinned`: a `federation` method from a connection without a client
//!   certificate, or with one that is not a configured peer: Unauthorized.
//!
//! For the token columns the body is the method's real request aimed at the victim's
//! resources, so a token wrongly accepted would show up as a change to the victim.

mod common;
mod seeds;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, User};
use prost::Message;
use qpq_runtime::tls::TlsIdentity;
use qpq_runtime::{AuthLevel, MethodDescriptor, RpcError, StatusCode};
use qpq_schema::{METHODS, QpqClient, proto};
use rand::RngCore;
use seeds::SeedCtx;

const PASSWORD: &[u8] = b"password of test";
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    NoToken,
    Forged,
    Expired,
    Ended,
    Deleted,
    Revoked,
    Other,
    NonAdmin,
    NoCert,
    Unpinned,
}

impl Case {
    const ALL: [Case; 10] = [
        Case::NoToken,
        Case::Forged,
        Case::Expired,
        Case::Ended,
        Case::Deleted,
        Case::Revoked,
        Case::Other,
        Case::NonAdmin,
        Case::NoCert,
        Case::Unpinned,
    ];

    fn title(self) -> &'static str {
        match self {
            Case::NoToken => "none",
            Case::Forged => "forged",
            Case::Expired => "expired",
            Case::Ended => "ended",
            Case::Deleted => "deleted",
            Case::Revoked => "revoked",
            Case::Other => "other",
            Case::NonAdmin => "non-admin",
            Case::NoCert => "no cert",
            Case::Unpinned => "unpinned",
        }
    }
}

fn user_ref(key: &[u8]) -> Option<proto::UserRef> {
    Some(proto::UserRef {
        target: Some(proto::user_ref::Target::IdentityKey(
            Bytes::copy_from_slice(key),
        )),
    })
}

/// Everything the victim owns, and the secrets that must never appear in an attacker's
/// answers.
struct Victim {
    user: User,
    friend: User,
    channel: Bytes,
    device: Bytes,
    upload_id: Bytes,
    uploaded: u64,
    seqs: Vec<u64>,
    secrets: Vec<Vec<u8>>,
}

/// What the matrix compares before and after: the victim's queue, recovery bundle,
/// devices, channel, key revocation status and P2P endpoints, and the server's bans.
async fn victim_state(victim: &Victim, admin: &User) -> (String, String) {
    let c = &victim.user.client;
    let t = victim.user.token();
    let queue = c
        .peek(proto::PeekRequest {
            session_token: t.clone(),
            limit: 1000,
            after_seq: 0,
        })
        .await
        .unwrap();
    let queue: Vec<(u64, Bytes)> = queue
        .messages
        .into_iter()
        .map(|m| (m.seq, m.payload))
        .collect();
    let bundle = c
        .fetch_recovery_bundle(proto::FetchRecoveryBundleRequest {
            session_token: t.clone(),
        })
        .await
        .unwrap()
        .bundle;
    let devices: Vec<(Bytes, String, Bytes, bool)> = c
        .list_devices(proto::ListDevicesRequest {
            session_token: t.clone(),
        })
        .await
        .unwrap()
        .devices
        .into_iter()
        .map(|d| (d.device_id, d.name, d.device_key, d.has_push_token))
        .collect();
    let channel = c
        .list_group_members(proto::ListGroupMembersRequest {
            session_token: t.clone(),
            channel_id: victim.channel.clone(),
            limit: 100,
            cursor: Bytes::new(),
        })
        .await
        .unwrap();
    let members: Vec<(Bytes, i32)> = channel
        .members
        .iter()
        .map(|m| (m.identity_key.clone(), m.role))
        .collect();
    let info = channel.channel.map(|i| format!("{i:?}"));
    let revoked = c
        .check_revocation(proto::CheckRevocationRequest {
            session_token: t.clone(),
            identity_key: Bytes::copy_from_slice(&victim.user.identity.public()),
        })
        .await
        .unwrap()
        .revoked;
    let endpoints = c
        .resolve_endpoint(proto::ResolveEndpointRequest {
            session_token: t.clone(),
            identity_key: Bytes::copy_from_slice(&victim.user.identity.public()),
        })
        .await
        .unwrap()
        .endpoints
        .len();
    let bans = admin
        .client
        .list_banned(proto::ListBannedRequest {
            session_token: admin.token(),
            ..Default::default()
        })
        .await
        .unwrap();
    let channel_bans = admin
        .client
        .list_banned(proto::ListBannedRequest {
            session_token: admin.token(),
            channel_id: victim.channel.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let summary = format!(
        "{} queued messages, a {}-byte recovery bundle, {} device(s), {} channel members, key revoked: {revoked}, {endpoints} endpoint(s), {} server and {} channel bans",
        queue.len(),
        bundle.len(),
        devices.len(),
        members.len(),
        bans.bans.len(),
        channel_bans.bans.len()
    );
    let full = format!(
        "queue {queue:?}\nbundle {bundle:?}\ndevices {devices:?}\nmembers {members:?}\nchannel {info:?}\nrevoked {revoked}\nendpoints {endpoints}\nserver bans {bans:?}\nchannel bans {channel_bans:?}"
    );
    (full, summary)
}

/// The attacker's request against the victim for the `other` column, with the status it
/// must get; or why the column does not apply to the method.
enum CrossUser {
    Attempt(Vec<u8>, &'static [StatusCode]),
    NotApplicable(&'static str),
}

/// Methods whose `other` attempt changes the attacker's own account (RegisterDevice binds
/// the attacker's session to the device id it names): they run as a second attacker, so
/// the first one's account stays as it was for the rest of the column.
const SCRATCH_ATTACKER: &[&str] = &["RegisterDevice"];

fn cross_user(method: &MethodDescriptor, v: &Victim, attacker: &Bytes) -> CrossUser {
    use CrossUser::{Attempt, NotApplicable};
    let t = attacker.clone();
    let channel = v.channel.clone();
    let friend = Bytes::copy_from_slice(&v.friend.identity.public());
    let victim_key = Bytes::copy_from_slice(&v.user.identity.public());
    match method.name {
        // The attacker's own queue: Ok, holding none of the victim's messages (checked by
        // the secrets and the victim's unchanged queue).
        "Fetch" => Attempt(
            proto::FetchRequest {
                session_token: t,
                limit: 100,
            }
            .encode_to_vec(),
            &[StatusCode::Ok],
        ),
        "FetchWait" => Attempt(
            proto::FetchWaitRequest {
                session_token: t,
                limit: 100,
                timeout_ms: 1,
                peek: true,
                after_seq: 0,
            }
            .encode_to_vec(),
            &[StatusCode::Ok],
        ),
        "Peek" => Attempt(
            proto::PeekRequest {
                session_token: t,
                limit: 100,
                after_seq: 0,
            }
            .encode_to_vec(),
            &[StatusCode::Ok],
        ),
        // The victim's sequence numbers: acknowledges nothing of theirs.
        "Ack" => Attempt(
            proto::AckRequest {
                session_token: t,
                seqs: v.seqs.clone(),
            }
            .encode_to_vec(),
            &[StatusCode::Ok],
        ),
        // Messages tagged with the victim's channel, which the attacker is not in.
        "Enqueue" => Attempt(
            proto::EnqueueRequest {
                session_token: t,
                recipient: user_ref(&friend),
                payload: Bytes::from_static(b"into a channel I am not in"),
                ttl_secs: 0,
                channel_id: channel,
            }
            .encode_to_vec(),
            &[StatusCode::Forbidden],
        ),
        "BatchEnqueue" => Attempt(
            proto::BatchEnqueueRequest {
                session_token: t,
                items: vec![proto::EnqueueItem {
                    recipient: user_ref(&friend),
                    payload: Bytes::from_static(b"into a channel I am not in"),
                    ttl_secs: 0,
                    channel_id: channel,
                }],
            }
            .encode_to_vec(),
            &[StatusCode::Forbidden],
        ),
        "SendTyping" => Attempt(
            proto::SendTypingRequest {
                session_token: t,
                channel_id: channel,
                typing: true,
            }
            .encode_to_vec(),
            &[StatusCode::Forbidden],
        ),
        "RemoveMember" => Attempt(
            proto::RemoveMemberRequest {
                session_token: t,
                channel_id: channel,
                member_identity_key: friend,
            }
            .encode_to_vec(),
            &[StatusCode::Forbidden],
        ),
        "UpdateGroupMetadata" => Attempt(
            proto::UpdateGroupMetadataRequest {
                session_token: t,
                channel_id: channel,
                name: Some("taken over".into()),
                ..Default::default()
            }
            .encode_to_vec(),
            &[StatusCode::Forbidden],
        ),
        "ListGroupMembers" => Attempt(
            proto::ListGroupMembersRequest {
                session_token: t,
                channel_id: channel,
                limit: 100,
                cursor: Bytes::new(),
            }
            .encode_to_vec(),
            &[StatusCode::Forbidden],
        ),
        "RotateKeys" => Attempt(
            proto::RotateKeysRequest {
                session_token: t,
                channel_id: channel,
                epoch: 0,
                commit: Bytes::from_static(b"a commit for someone else's group"),
                ..Default::default()
            }
            .encode_to_vec(),
            &[StatusCode::Forbidden],
        ),
        "ReportMessage" => Attempt(
            proto::ReportMessageRequest {
                session_token: t,
                channel_id: channel,
                reported_identity_key: friend,
                seq: 1,
                reason: "reporting from outside".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            &[StatusCode::Forbidden],
        ),
        "BanUser" => Attempt(
            proto::BanUserRequest {
                session_token: t,
                target: user_ref(&friend),
                channel_id: channel,
                reason: "not mine to ban".into(),
                duration_secs: 0,
            }
            .encode_to_vec(),
            &[StatusCode::Forbidden],
        ),
        "UnbanUser" => Attempt(
            proto::UnbanUserRequest {
                session_token: t,
                target: user_ref(&friend),
                channel_id: channel,
            }
            .encode_to_vec(),
            &[StatusCode::Forbidden],
        ),
        "RevokeKey" => Attempt(
            proto::RevokeKeyRequest {
                session_token: t,
                identity_key: victim_key,
                reason: proto::RevocationReason::Compromised.into(),
            }
            .encode_to_vec(),
            &[StatusCode::Forbidden],
        ),
        // Continue the victim's unfinished upload.
        "UploadBlob" => Attempt(
            proto::UploadBlobRequest {
                session_token: t,
                upload_id: v.upload_id.clone(),
                offset: v.uploaded,
                chunk: Bytes::from_static(b"appended by someone else"),
                finish: false,
                ..Default::default()
            }
            .encode_to_vec(),
            &[StatusCode::NotFound],
        ),
        // The victim's device id, on the attacker's own account: registers a device of the
        // attacker's (Ok); the victim's devices are unchanged.
        "RegisterDevice" => Attempt(
            proto::RegisterDeviceRequest {
                session_token: t,
                device_id: v.device.clone(),
                name: "not your phone".into(),
                device_key: Bytes::from(vec![9; 32]),
            }
            .encode_to_vec(),
            &[StatusCode::Ok],
        ),
        "RevokeDevice" => Attempt(
            proto::RevokeDeviceRequest {
                session_token: t,
                device_id: v.device.clone(),
            }
            .encode_to_vec(),
            &[StatusCode::NotFound],
        ),
        "RegisterPushToken" => Attempt(
            proto::RegisterPushTokenRequest {
                session_token: t,
                device_id: v.device.clone(),
                platform: proto::PushPlatform::UnifiedPush.into(),
                token: "https://push.example/steal".into(),
            }
            .encode_to_vec(),
            &[StatusCode::NotFound],
        ),
        // Recovery bundles are the caller's own: the attacker has none, and deleting "the"
        // bundle deletes nothing of the victim's.
        "FetchRecoveryBundle" => Attempt(
            proto::FetchRecoveryBundleRequest { session_token: t }.encode_to_vec(),
            &[StatusCode::NotFound],
        ),
        "DeleteRecoveryBundle" => Attempt(
            proto::DeleteRecoveryBundleRequest { session_token: t }.encode_to_vec(),
            &[StatusCode::Ok],
        ),
        "ListDevices" => Attempt(
            proto::ListDevicesRequest { session_token: t }.encode_to_vec(),
            &[StatusCode::Ok],
        ),
        "UploadKeyPackage"
        | "UploadHybridKey"
        | "CreateChannel"
        | "StoreRecoveryBundle"
        | "PublishEndpoint"
        | "DeleteAccount" => NotApplicable("acts on the caller's own account only"),
        "FetchKeyPackage"
        | "FetchHybridKey"
        | "FetchHybridKeys"
        | "ResolveUser"
        | "ResolveIdentity"
        | "CheckRevocation"
        | "AuditKeyTransparency"
        | "ResolveEndpoint" => NotApplicable("a lookup any user may make, by design"),
        "DownloadBlob" => {
            NotApplicable("a blob id is a capability: any session knowing it may download")
        }
        "ProxyFetchKeyPackage"
        | "ProxyFetchHybridKey"
        | "ProxyResolveUser"
        | "FederationHealth" => NotApplicable("addresses another server"),
        _ => panic!(
            "{} ({}) has no entry in the authorization matrix: say what another user's token may do with it",
            method.name, method.id
        ),
    }
}

/// The wire answer in a cell of the table.
fn answer(result: &Result<Bytes, RpcError>) -> String {
    match result {
        Ok(_) => "Ok".into(),
        Err(RpcError::Status(status)) => status.code().name().into(),
        Err(other) => format!("error: {other}"),
    }
}

fn code(result: &Result<Bytes, RpcError>) -> Option<StatusCode> {
    match result {
        Ok(_) => Some(StatusCode::Ok),
        Err(RpcError::Status(status)) => Some(status.code()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_refuses_every_caller_without_the_right() {
    let server = TestServer::start_with(|c| c.admins = vec!["admin".into()]).await;
    let admin = server.user("admin").await;
    let victim = server.user("victim").await;
    let friend = server.user("friend").await;
    let mallory = server.user("mallory").await;
    let scratch = server.user("scratch").await;

    // The victim's state: messages, a recovery bundle, a device, a channel with a friend,
    // an unfinished upload, a published endpoint.
    let mut secrets = Vec::new();
    let mut seqs = Vec::new();
    for i in 0..3 {
        let mut marker = format!("victim secret {i} ").into_bytes();
        marker.extend((0..16).map(|_| rand::random::<u8>()));
        seqs.push(friend.send(&victim, &marker).await.unwrap());
        secrets.push(marker);
    }
    let mut bundle = b"victim recovery bundle ".to_vec();
    bundle.extend((0..32).map(|_| rand::random::<u8>()));
    let vc = &victim.client;
    vc.store_recovery_bundle(proto::StoreRecoveryBundleRequest {
        session_token: victim.token(),
        bundle: Bytes::from(bundle.clone()),
    })
    .await
    .unwrap();
    secrets.push(bundle);
    let mut device = vec![0u8; 16];
    rand::thread_rng().fill_bytes(&mut device);
    let device = Bytes::from(device);
    vc.register_device(proto::RegisterDeviceRequest {
        session_token: victim.token(),
        device_id: device.clone(),
        name: "victim's phone".into(),
        device_key: Bytes::copy_from_slice(&qpq_client::IdentityKey::generate().public()),
    })
    .await
    .unwrap();
    let channel = vc
        .create_channel(proto::CreateChannelRequest {
            session_token: victim.token(),
            name: "victim's room".into(),
            initial_members: vec![user_ref(&friend.identity.public()).unwrap()],
            ..Default::default()
        })
        .await
        .unwrap()
        .channel_id;
    let content = vec![0x55u8; 1000];
    let started = vc
        .upload_blob(proto::UploadBlobRequest {
            session_token: victim.token(),
            offset: 0,
            chunk: Bytes::copy_from_slice(&content[..400]),
            finish: false,
            expected_sha256: Bytes::copy_from_slice(&<sha2::Sha256 as sha2::Digest>::digest(
                &content,
            )),
            total_size: content.len() as u64,
            ..Default::default()
        })
        .await
        .unwrap();
    vc.publish_endpoint(proto::PublishEndpointRequest {
        session_token: victim.token(),
        endpoint: Some(proto::P2pEndpoint {
            node_id: Bytes::from(vec![1; 32]),
            relay_url: "https://relay.example".into(),
            direct_addrs: vec![],
        }),
        ttl_secs: 600,
    })
    .await
    .unwrap();
    let victim = Victim {
        user: victim,
        friend,
        channel,
        device,
        upload_id: started.upload_id,
        uploaded: started.bytes_received,
        seqs,
        secrets,
    };

    // The refused tokens.
    let mut forged = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut forged);
    let forged = Bytes::from(forged);
    // Ended: ban (ends every session at once), then unban; the account is in good standing.
    let benched = server.user("benched").await;
    admin
        .client
        .ban_user(proto::BanUserRequest {
            session_token: admin.token(),
            target: user_ref(&benched.identity.public()),
            channel_id: Bytes::new(),
            reason: "ends the session".into(),
            duration_secs: 0,
        })
        .await
        .unwrap();
    admin
        .client
        .unban_user(proto::UnbanUserRequest {
            session_token: admin.token(),
            target: user_ref(&benched.identity.public()),
            channel_id: Bytes::new(),
        })
        .await
        .unwrap();
    let ended = benched.token();
    let again = qpq_client::login(&server.client().await, "benched", PASSWORD, None)
        .await
        .expect("after the unban the account logs in again");
    assert_ne!(again.token, ended);
    // Deleted: the other session of an account deleted with DeleteAccount.
    let leaver = server.user("leaver").await;
    let second = server.client().await;
    let leaver_second = qpq_client::login(&second, "leaver", PASSWORD, None)
        .await
        .unwrap();
    second
        .delete_account(proto::DeleteAccountRequest {
            session_token: leaver_second.token,
        })
        .await
        .unwrap();
    let deleted = leaver.token();
    // Revoked: a session logged in with a device id, that device revoked by another
    // session of the same account, which keeps working.
    let owner = server.user("owner").await;
    let phone_id = [7u8; 16];
    let phone_client = server.client().await;
    let phone = qpq_client::login(&phone_client, "owner", PASSWORD, Some(&phone_id))
        .await
        .unwrap();
    phone_client
        .register_device(proto::RegisterDeviceRequest {
            session_token: phone.token.clone(),
            device_id: Bytes::copy_from_slice(&phone_id),
            name: "owner's phone".into(),
            device_key: Bytes::copy_from_slice(&qpq_client::IdentityKey::generate().public()),
        })
        .await
        .unwrap();
    owner
        .client
        .revoke_device(proto::RevokeDeviceRequest {
            session_token: owner.token(),
            device_id: Bytes::copy_from_slice(&phone_id),
        })
        .await
        .unwrap();
    let revoked = phone.token.clone();
    owner.peek().await;
    // Expired: a second server whose sessions last 1 s.
    let short = TestServer::start_with(|c| c.session_ttl_secs = 1).await;
    let late = short.user("late").await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let expired = late.token();
    let short_client = short.client().await;
    let fresh = qpq_client::login(&short_client, "late", PASSWORD, None)
        .await
        .unwrap();
    short_client
        .peek(proto::PeekRequest {
            session_token: fresh.token,
            limit: 1,
            after_seq: 0,
        })
        .await
        .expect("a fresh login on the short-TTL server works");

    // Connections for the federation columns.
    let no_cert = server.client_with(server.addr(), &server.pinned()).await;
    let stranger = TlsIdentity::generate(&["mallory.example"]).unwrap();
    let unpinned = server
        .client_with(server.addr(), &server.pinned().with_identity(stranger))
        .await;

    let before = victim_state(&victim, &admin).await;

    // The matrix.
    let caller = server.client().await;
    let victim_ctx = |token: Bytes| SeedCtx {
        token,
        username: victim.user.name.clone(),
        me: victim.user.identity.public(),
        other: victim.user.identity.public(),
        other_name: victim.user.name.clone(),
        channel: victim.channel.clone(),
        device: victim.device.clone(),
    };
    let mut table: BTreeMap<(u16, Case), String> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    // A certificate that is not pinned: unauthenticated, or authenticated as nobody
    // allowed; either refusal is right.
    const NOT_A_PEER: &[StatusCode] = &[StatusCode::Unauthorized, StatusCode::Forbidden];
    const UNAUTHORIZED: &[StatusCode] = &[StatusCode::Unauthorized];
    const FORBIDDEN: &[StatusCode] = &[StatusCode::Forbidden];
    for method in METHODS.iter() {
        let mut cells: Vec<(Case, &QpqClient, Vec<u8>, &[StatusCode])> = Vec::new();
        match method.auth {
            AuthLevel::None => {}
            AuthLevel::Session | AuthLevel::Admin => {
                for (case, token) in [
                    (Case::NoToken, Bytes::new()),
                    (Case::Forged, forged.clone()),
                    (Case::Ended, ended.clone()),
                    (Case::Deleted, deleted.clone()),
                    (Case::Revoked, revoked.clone()),
                ] {
                    let body = seeds::seed(method, &victim_ctx(token));
                    cells.push((case, &caller, body, UNAUTHORIZED));
                }
                let body = seeds::seed(method, &victim_ctx(expired.clone()));
                cells.push((Case::Expired, &short_client, body, UNAUTHORIZED));
                if method.auth == AuthLevel::Admin {
                    let body = seeds::seed(method, &victim_ctx(mallory.token()));
                    cells.push((Case::NonAdmin, &mallory.client, body, FORBIDDEN));
                    table.insert((method.id, Case::Other), "n/a".into());
                } else {
                    let attacker = if SCRATCH_ATTACKER.contains(&method.name) {
                        &scratch
                    } else {
                        &mallory
                    };
                    match cross_user(method, &victim, &attacker.token()) {
                        CrossUser::Attempt(body, expect) => {
                            cells.push((Case::Other, &attacker.client, body, expect));
                        }
                        CrossUser::NotApplicable(why) => {
                            table.insert((method.id, Case::Other), format!("n/a: {why}"));
                        }
                    }
                }
            }
            AuthLevel::Federation => {
                let body = seeds::seed(method, &victim_ctx(Bytes::new()));
                cells.push((Case::NoCert, &no_cert, body.clone(), UNAUTHORIZED));
                cells.push((Case::Unpinned, &unpinned, body, NOT_A_PEER));
            }
        }
        for (case, client, body, expect) in cells {
            let result = client
                .connection()
                .call(method.id, &body, CALL_TIMEOUT)
                .await;
            checked += 1;
            if let Ok(response) = &result {
                for secret in &victim.secrets {
                    if response.windows(secret.len()).any(|w| w == &secret[..]) {
                        failures.push(format!(
                            "{} × {}: the answer holds a secret of the victim",
                            method.name,
                            case.title()
                        ));
                    }
                }
            }
            if !code(&result).is_some_and(|c| expect.contains(&c)) {
                let wanted: Vec<&str> = expect.iter().map(|c| c.name()).collect();
                failures.push(format!(
                    "{} × {}: expected {}, got {}",
                    method.name,
                    case.title(),
                    wanted.join(" or "),
                    match &result {
                        Err(RpcError::Status(status)) => status.to_string(),
                        other => answer(other),
                    }
                ));
            }
            table.insert((method.id, case), answer(&result));
        }
    }

    // Admin methods do work for an admin: the refusals above are about the caller.
    for method in METHODS.iter().filter(|m| m.auth == AuthLevel::Admin) {
        let ctx = SeedCtx {
            token: admin.token(),
            ..victim_ctx(Bytes::new())
        };
        let body = seeds::seed(method, &ctx);
        let result = admin
            .client
            .connection()
            .call(method.id, &body, CALL_TIMEOUT)
            .await;
        assert!(
            !matches!(
                code(&result),
                Some(StatusCode::Unauthorized | StatusCode::Forbidden)
            ),
            "{} refused its admin: {}",
            method.name,
            answer(&result)
        );
    }

    let after = victim_state(&victim, &admin).await;

    print_table(&table);
    println!(
        "\n{checked} refused calls checked over {} methods",
        METHODS.len()
    );
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(before.0, after.0, "the victim's stored state changed");
    println!("victim state unchanged: {}", after.1);

    // And the victim's own use of their resources still works: the upload continues.
    let rest = victim
        .user
        .client
        .upload_blob(proto::UploadBlobRequest {
            session_token: victim.user.token(),
            upload_id: victim.upload_id.clone(),
            offset: victim.uploaded,
            chunk: Bytes::copy_from_slice(&content[victim.uploaded as usize..]),
            finish: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.blob_id.len(), 32, "the victim's upload completed");
}

fn print_table(table: &BTreeMap<(u16, Case), String>) {
    let width = 10;
    print!("\n{:<22}", "method");
    for case in Case::ALL {
        print!(" {:<width$}", case.title());
    }
    println!();
    let mut notes: Vec<String> = Vec::new();
    for method in METHODS.iter() {
        print!("{:<22}", method.name);
        for case in Case::ALL {
            let cell = match table.get(&(method.id, case)) {
                None => "-".to_owned(),
                Some(text) if text.starts_with("n/a: ") => {
                    notes.push(format!(
                        "{} × {}: {}",
                        method.name,
                        case.title(),
                        &text[5..]
                    ));
                    "n/a".to_owned()
                }
                Some(text) => short(text),
            };
            print!(" {cell:<width$}");
        }
        println!();
    }
    println!("\n- : the column does not apply to the method's auth level");
    for note in notes {
        println!("n/a {note}");
    }
}

fn short(status: &str) -> String {
    match status {
        "Unauthorized" => "Unauth".into(),
        "Forbidden" => "Forbidden".into(),
        other => other.chars().take(10).collect(),
    }
}
