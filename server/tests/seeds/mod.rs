//! A valid request body for every method of `qpq_schema::METHODS`, built for one caller:
//! the seeds the malformed-input test mutates and the requests the authorization matrix
//! sends. Every method needs its own seed here: a method without one fails
//! `every_method_has_a_malformed_input_seed` (`malformed.rs`) and panics in [`seed`], naming
//! the method and this file, rather than being fuzzed from a body its handler rejects at once.

#![allow(dead_code)]

use bytes::Bytes;
use opaque_ke::{ClientLogin, ClientRegistration};
use prost::Message;
use qpq_runtime::{AuthLevel, MethodDescriptor};
use qpq_schema::proto;
use qpq_server::auth::QpqSuite;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

/// What a seed may refer to: the caller's token and keys, another user, a channel the
/// caller created, a device id.
#[derive(Clone, Debug)]
pub(crate) struct SeedCtx {
    pub(crate) token: Bytes,
    pub(crate) username: String,
    pub(crate) me: [u8; 32],
    pub(crate) other: [u8; 32],
    pub(crate) other_name: String,
    pub(crate) channel: Bytes,
    pub(crate) device: Bytes,
}

impl SeedCtx {
    /// Made-up values, for seeds that are only decoded, never sent.
    pub(crate) fn placeholder() -> Self {
        Self {
            token: Bytes::from(vec![1; 32]),
            username: "u".into(),
            me: [2; 32],
            other: [3; 32],
            other_name: "o".into(),
            channel: Bytes::from(vec![4; 16]),
            device: Bytes::from(vec![5; 16]),
        }
    }
}

fn user_ref(key: &[u8; 32]) -> Option<proto::UserRef> {
    Some(proto::UserRef {
        target: Some(proto::user_ref::Target::IdentityKey(
            Bytes::copy_from_slice(key),
        )),
    })
}

fn key(key: &[u8; 32]) -> Bytes {
    Bytes::copy_from_slice(key)
}

/// The encoded request of `method` for the caller in `cx`; panics for a method without a seed.
pub(crate) fn seed(method: &MethodDescriptor, cx: &SeedCtx) -> Vec<u8> {
    explicit(method, cx).unwrap_or_else(|| panic!("{}", missing(method)))
}

/// What a failing test says of a method without a seed.
pub(crate) fn missing(method: &MethodDescriptor) -> String {
    format!(
        "method {} has no malformed-input seed: add a valid request for it (its message in \
         schema/proto/) to `explicit` in server/tests/seeds/mod.rs",
        method.name
    )
}

/// The methods of `methods` without a seed.
pub(crate) fn unseeded<'a>(
    methods: &'a [MethodDescriptor],
    cx: &SeedCtx,
) -> Vec<&'a MethodDescriptor> {
    methods
        .iter()
        .filter(|m| explicit(m, cx).is_none())
        .collect()
}

/// The seed written for `method`, if there is one.
fn explicit(method: &MethodDescriptor, cx: &SeedCtx) -> Option<Vec<u8>> {
    let t = cx.token.clone();
    Some(match method.name {
        "OpaqueRegisterStart" => {
            let start = ClientRegistration::<QpqSuite>::start(&mut OsRng, b"seed password")
                .expect("OPAQUE registration start");
            proto::OpaqueRegisterStartRequest {
                username: format!("{}-new", cx.username),
                registration_request: Bytes::copy_from_slice(&start.message.serialize()),
            }
            .encode_to_vec()
        }
        "OpaqueRegisterFinish" => proto::OpaqueRegisterFinishRequest {
            username: format!("{}-new", cx.username),
            registration_upload: Bytes::from(vec![0x5a; 192]),
            identity_key: key(&cx.me),
        }
        .encode_to_vec(),
        "OpaqueLoginStart" => {
            let start = ClientLogin::<QpqSuite>::start(&mut OsRng, b"seed password")
                .expect("OPAQUE login start");
            proto::OpaqueLoginStartRequest {
                username: cx.username.clone(),
                credential_request: Bytes::copy_from_slice(&start.message.serialize()),
            }
            .encode_to_vec()
        }
        "OpaqueLoginFinish" => proto::OpaqueLoginFinishRequest {
            username: cx.username.clone(),
            login_id: Bytes::from(vec![1; 16]),
            credential_finalization: Bytes::from(vec![2; 64]),
            identity_key: Bytes::new(),
            device_id: cx.device.clone(),
        }
        .encode_to_vec(),
        "Enqueue" => proto::EnqueueRequest {
            session_token: t,
            recipient: user_ref(&cx.other),
            payload: Bytes::from_static(b"seed payload"),
            ttl_secs: 60,
            channel_id: Bytes::new(),
        }
        .encode_to_vec(),
        "Fetch" => proto::FetchRequest {
            session_token: t,
            limit: 10,
        }
        .encode_to_vec(),
        "FetchWait" => proto::FetchWaitRequest {
            session_token: t,
            limit: 10,
            timeout_ms: 1,
            peek: false,
            after_seq: 0,
        }
        .encode_to_vec(),
        "Peek" => proto::PeekRequest {
            session_token: t,
            limit: 10,
            after_seq: 0,
        }
        .encode_to_vec(),
        "Ack" => proto::AckRequest {
            session_token: t,
            seqs: vec![1, 2, 3],
        }
        .encode_to_vec(),
        "BatchEnqueue" => proto::BatchEnqueueRequest {
            session_token: t,
            items: (0..2)
                .map(|i| proto::EnqueueItem {
                    recipient: user_ref(&cx.other),
                    payload: Bytes::from(vec![i; 16]),
                    ttl_secs: 60,
                    channel_id: Bytes::new(),
                })
                .collect(),
        }
        .encode_to_vec(),
        "SendTyping" => proto::SendTypingRequest {
            session_token: t,
            channel_id: cx.channel.clone(),
            typing: true,
        }
        .encode_to_vec(),
        "UploadKeyPackage" => proto::UploadKeyPackageRequest {
            session_token: t,
            key_package: Bytes::from(vec![0x4b; 256]),
            last_resort: false,
        }
        .encode_to_vec(),
        "FetchKeyPackage" => proto::FetchKeyPackageRequest {
            session_token: t,
            identity_key: key(&cx.other),
        }
        .encode_to_vec(),
        "UploadHybridKey" => proto::UploadHybridKeyRequest {
            session_token: t,
            key: Some(proto::HybridPublicKey {
                x25519_public: Bytes::from(vec![9; 32]),
                mlkem768_public: Bytes::from(vec![0; 1184]),
                signature: Bytes::from(vec![1; 64]),
                created_at_unix_ms: 1,
            }),
        }
        .encode_to_vec(),
        "FetchHybridKey" => proto::FetchHybridKeyRequest {
            session_token: t,
            identity_key: key(&cx.other),
        }
        .encode_to_vec(),
        "FetchHybridKeys" => proto::FetchHybridKeysRequest {
            session_token: t,
            identity_keys: vec![key(&cx.other), key(&cx.me)],
        }
        .encode_to_vec(),
        "CreateChannel" => proto::CreateChannelRequest {
            session_token: t,
            name: "seed channel".into(),
            description: "made by a seed".into(),
            initial_members: vec![user_ref(&cx.other).unwrap()],
            ..Default::default()
        }
        .encode_to_vec(),
        "RemoveMember" => proto::RemoveMemberRequest {
            session_token: t,
            channel_id: cx.channel.clone(),
            member_identity_key: key(&cx.other),
        }
        .encode_to_vec(),
        "UpdateGroupMetadata" => proto::UpdateGroupMetadataRequest {
            session_token: t,
            channel_id: cx.channel.clone(),
            name: Some("renamed".into()),
            description: None,
            set_settings: [("topic".to_owned(), "seeds".to_owned())].into(),
            remove_settings: vec!["old".into()],
            ..Default::default()
        }
        .encode_to_vec(),
        "ListGroupMembers" => proto::ListGroupMembersRequest {
            session_token: t,
            channel_id: cx.channel.clone(),
            limit: 10,
            cursor: Bytes::new(),
        }
        .encode_to_vec(),
        "RotateKeys" => proto::RotateKeysRequest {
            session_token: t,
            channel_id: cx.channel.clone(),
            epoch: 1,
            commit: Bytes::from(vec![0x33; 64]),
            ..Default::default()
        }
        .encode_to_vec(),
        "ReportMessage" => proto::ReportMessageRequest {
            session_token: t,
            channel_id: cx.channel.clone(),
            reported_identity_key: key(&cx.other),
            seq: 1,
            category: proto::ReportCategory::Spam.into(),
            reason: "seed".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        "BanUser" => proto::BanUserRequest {
            session_token: t,
            target: user_ref(&cx.other),
            channel_id: cx.channel.clone(),
            reason: "seed".into(),
            duration_secs: 60,
        }
        .encode_to_vec(),
        "UnbanUser" => proto::UnbanUserRequest {
            session_token: t,
            target: user_ref(&cx.other),
            channel_id: cx.channel.clone(),
        }
        .encode_to_vec(),
        "ListReports" => proto::ListReportsRequest {
            session_token: t,
            limit: 10,
            cursor: Bytes::new(),
        }
        .encode_to_vec(),
        "ListBanned" => proto::ListBannedRequest {
            session_token: t,
            channel_id: cx.channel.clone(),
            limit: 10,
            cursor: Bytes::new(),
        }
        .encode_to_vec(),
        "ResolveUser" => proto::ResolveUserRequest {
            session_token: t,
            username: cx.other_name.clone(),
        }
        .encode_to_vec(),
        "ResolveIdentity" => proto::ResolveIdentityRequest {
            session_token: t,
            identity_key: key(&cx.other),
        }
        .encode_to_vec(),
        "RevokeKey" => proto::RevokeKeyRequest {
            session_token: t,
            identity_key: key(&cx.me),
            reason: proto::RevocationReason::Lost.into(),
        }
        .encode_to_vec(),
        "CheckRevocation" => proto::CheckRevocationRequest {
            session_token: t,
            identity_key: key(&cx.other),
        }
        .encode_to_vec(),
        "AuditKeyTransparency" => proto::AuditKeyTransparencyRequest {
            session_token: t,
            subject: Some(proto::audit_key_transparency_request::Subject::Username(
                cx.other_name.clone(),
            )),
            ..Default::default()
        }
        .encode_to_vec(),
        "UploadBlob" => {
            let chunk = vec![0x42; 512];
            proto::UploadBlobRequest {
                session_token: t,
                upload_id: Bytes::new(),
                offset: 0,
                expected_sha256: Bytes::copy_from_slice(&Sha256::digest(&chunk)),
                total_size: chunk.len() as u64,
                chunk: Bytes::from(chunk),
                finish: true,
                mime_type: "application/octet-stream".into(),
            }
            .encode_to_vec()
        }
        "DownloadBlob" => proto::DownloadBlobRequest {
            session_token: t,
            blob_id: Bytes::from(vec![7; 32]),
            offset: 0,
            length: 64,
        }
        .encode_to_vec(),
        "RegisterDevice" => proto::RegisterDeviceRequest {
            session_token: t,
            device_id: cx.device.clone(),
            name: "seed phone".into(),
            device_key: key(&cx.other),
        }
        .encode_to_vec(),
        "ListDevices" => proto::ListDevicesRequest { session_token: t }.encode_to_vec(),
        "RevokeDevice" => proto::RevokeDeviceRequest {
            session_token: t,
            device_id: cx.device.clone(),
        }
        .encode_to_vec(),
        "RegisterPushToken" => proto::RegisterPushTokenRequest {
            session_token: t,
            device_id: cx.device.clone(),
            platform: proto::PushPlatform::UnifiedPush.into(),
            token: "https://push.example/seed".into(),
        }
        .encode_to_vec(),
        "StoreRecoveryBundle" => proto::StoreRecoveryBundleRequest {
            session_token: t,
            bundle: Bytes::from(vec![0xbb; 256]),
        }
        .encode_to_vec(),
        "FetchRecoveryBundle" => {
            proto::FetchRecoveryBundleRequest { session_token: t }.encode_to_vec()
        }
        "DeleteRecoveryBundle" => {
            proto::DeleteRecoveryBundleRequest { session_token: t }.encode_to_vec()
        }
        "PublishEndpoint" => proto::PublishEndpointRequest {
            session_token: t,
            endpoint: Some(proto::P2pEndpoint {
                node_id: Bytes::from(vec![3; 32]),
                relay_url: "https://relay.example".into(),
                direct_addrs: vec!["192.0.2.1:4433".into()],
            }),
            ttl_secs: 60,
        }
        .encode_to_vec(),
        "ResolveEndpoint" => proto::ResolveEndpointRequest {
            session_token: t,
            identity_key: key(&cx.other),
        }
        .encode_to_vec(),
        "Health" => proto::HealthRequest {}.encode_to_vec(),
        "RelayEnqueue" => proto::RelayEnqueueRequest {
            message: Some(relayed(cx)),
        }
        .encode_to_vec(),
        "RelayBatchEnqueue" => proto::RelayBatchEnqueueRequest {
            messages: vec![relayed(cx), relayed(cx)],
        }
        .encode_to_vec(),
        "ProxyFetchKeyPackage" => proto::ProxyFetchKeyPackageRequest {
            session_token: t,
            target: "bob@b.example".into(),
        }
        .encode_to_vec(),
        "ProxyFetchHybridKey" => proto::ProxyFetchHybridKeyRequest {
            session_token: t,
            target: "bob@b.example".into(),
        }
        .encode_to_vec(),
        "ProxyResolveUser" => proto::ProxyResolveUserRequest {
            session_token: t,
            target: "bob@b.example".into(),
        }
        .encode_to_vec(),
        "FederationHealth" => proto::FederationHealthRequest {
            session_token: t,
            domain: "b.example".into(),
        }
        .encode_to_vec(),
        "DeleteAccount" => proto::DeleteAccountRequest { session_token: t }.encode_to_vec(),
        "ListUsers" => proto::ListUsersRequest {
            session_token: t,
            limit: 10,
            after: cx.username.clone(),
        }
        .encode_to_vec(),
        "StorageStats" => proto::StorageStatsRequest { session_token: t }.encode_to_vec(),
        "PeerFetchKeyPackage" => proto::PeerFetchKeyPackageRequest {
            target: cx.other_name.clone(),
            requester: "mallory@b.example".into(),
        }
        .encode_to_vec(),
        "PeerFetchHybridKey" => proto::PeerFetchHybridKeyRequest {
            target: cx.other_name.clone(),
            requester: "mallory@b.example".into(),
        }
        .encode_to_vec(),
        "PeerResolveUser" => proto::PeerResolveUserRequest {
            target: cx.other_name.clone(),
            requester: "mallory@b.example".into(),
        }
        .encode_to_vec(),
        _ => return None,
    })
}

/// Field 1 (`bytes session_token`) holding `token`.
pub(crate) fn token_field(token: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len() + 3);
    prost::encoding::bytes::encode(1, &Bytes::copy_from_slice(token), &mut out);
    out
}

fn relayed(cx: &SeedCtx) -> proto::RelayedMessage {
    proto::RelayedMessage {
        relay_id: Bytes::from(vec![5; 16]),
        sender: "mallory@b.example".into(),
        sender_identity_key: Bytes::from(vec![6; 32]),
        recipient: user_ref(&cx.me),
        payload: Bytes::from_static(b"relayed seed"),
        ttl_secs: 60,
        enqueued_at_unix_ms: 1,
        channel_id: Bytes::new(),
    }
}

/// How many bytes at the start of a seed are its session token field (kept intact by most
/// mutations so authentication passes and the handler is reached).
pub(crate) fn token_prefix_len(method: &MethodDescriptor, cx: &SeedCtx) -> usize {
    match method.auth {
        AuthLevel::Session | AuthLevel::Admin => token_field(&cx.token).len(),
        _ => 0,
    }
}
