//! P2P endpoints over real QUIC: publish with a TTL, resolve by identity key, expiry, one
//! endpoint per device, removal with the device.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, User, code};
use qpq_client::IdentityKey;
use qpq_runtime::StatusCode;
use qpq_schema::proto;

fn endpoint(addr: &str) -> proto::P2pEndpoint {
    proto::P2pEndpoint {
        node_id: Bytes::copy_from_slice(&IdentityKey::generate().public()),
        relay_url: "https://relay.example.org/".into(),
        direct_addrs: vec![addr.into(), "[2001:db8::1]:4433".into()],
    }
}

async fn publish(
    client: &qpq_client::QpqClient,
    token: &Bytes,
    endpoint: proto::P2pEndpoint,
    ttl_secs: u32,
) -> Result<proto::PublishEndpointResponse, qpq_runtime::RpcError> {
    client
        .publish_endpoint(proto::PublishEndpointRequest {
            session_token: token.clone(),
            endpoint: Some(endpoint),
            ttl_secs,
        })
        .await
}

async fn resolve(asker: &User, target: &User) -> Vec<proto::PublishedEndpoint> {
    asker
        .client
        .resolve_endpoint(proto::ResolveEndpointRequest {
            session_token: asker.token(),
            identity_key: Bytes::copy_from_slice(&target.identity.public()),
        })
        .await
        .unwrap()
        .endpoints
}

#[tokio::test]
async fn publish_resolve_and_expire() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    assert!(resolve(&bob, &alice).await.is_empty());

    let published = endpoint("192.0.2.1:4433");
    let answer = publish(&alice.client, &alice.token(), published.clone(), 1)
        .await
        .unwrap();
    let found = resolve(&bob, &alice).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].endpoint.as_ref(), Some(&published));
    assert_eq!(found[0].expires_at_unix_ms, answer.expires_at_unix_ms);
    assert!(found[0].device_id.is_empty(), "the session has no device");

    // Expired endpoints are not returned.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(resolve(&bob, &alice).await.is_empty());

    // Publishing again replaces; TTL 0 is the default hour, long TTLs are capped at 24 h.
    publish(&alice.client, &alice.token(), endpoint("192.0.2.2:1"), 0)
        .await
        .unwrap();
    let capped = publish(
        &alice.client,
        &alice.token(),
        endpoint("192.0.2.3:1"),
        u32::MAX,
    )
    .await
    .unwrap();
    let found = resolve(&bob, &alice).await;
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].endpoint.as_ref().unwrap().direct_addrs[0],
        "192.0.2.3:1"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(capped.expires_at_unix_ms <= now + 24 * 3_600_000);
    assert!(capped.expires_at_unix_ms > now + 23 * 3_600_000);
}

#[tokio::test]
async fn one_endpoint_per_device_newest_first_and_revocation_removes_it() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut sessions = Vec::new();
    for (i, device) in [[1u8; 16], [2u8; 16]].into_iter().enumerate() {
        let client = server.client().await;
        let session = qpq_client::login(&client, "alice", b"password of test", Some(&device))
            .await
            .unwrap();
        client
            .register_device(proto::RegisterDeviceRequest {
                session_token: session.token.clone(),
                device_id: Bytes::copy_from_slice(&device),
                name: format!("device {i}"),
                device_key: Bytes::copy_from_slice(&IdentityKey::generate().public()),
            })
            .await
            .unwrap();
        publish(
            &client,
            &session.token,
            endpoint(&format!("192.0.2.{i}:9")),
            60,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        sessions.push((device, client, session));
    }
    let found = resolve(&bob, &alice).await;
    let devices: Vec<&[u8]> = found.iter().map(|e| &e.device_id[..]).collect();
    assert_eq!(devices, [&[2u8; 16][..], &[1u8; 16][..]], "newest first");

    let (_, client, session) = &sessions[0];
    client
        .revoke_device(proto::RevokeDeviceRequest {
            session_token: session.token.clone(),
            device_id: Bytes::copy_from_slice(&[2u8; 16]),
        })
        .await
        .unwrap();
    let found = resolve(&bob, &alice).await;
    assert_eq!(found.len(), 1);
    assert_eq!(&found[0].device_id[..], &[1u8; 16]);
}

#[tokio::test]
async fn malformed_endpoints_are_refused() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let good = endpoint("192.0.2.1:1");
    let cases = [
        proto::P2pEndpoint {
            node_id: Bytes::from_static(b"short"),
            ..good.clone()
        },
        proto::P2pEndpoint {
            relay_url: "relay.example.org".into(),
            ..good.clone()
        },
        proto::P2pEndpoint {
            direct_addrs: vec!["not an address".into()],
            ..good.clone()
        },
        proto::P2pEndpoint {
            direct_addrs: vec!["192.0.2.1:1".into(); 17],
            ..good.clone()
        },
    ];
    for bad in cases {
        let result = publish(&alice.client, &alice.token(), bad, 0).await;
        assert_eq!(code(result), StatusCode::BadRequest);
    }
    let missing = alice
        .client
        .publish_endpoint(proto::PublishEndpointRequest {
            session_token: alice.token(),
            endpoint: None,
            ttl_secs: 0,
        })
        .await;
    assert_eq!(code(missing), StatusCode::BadRequest);
    let bad_key = alice
        .client
        .resolve_endpoint(proto::ResolveEndpointRequest {
            session_token: alice.token(),
            identity_key: Bytes::from_static(b"short"),
        })
        .await;
    assert_eq!(code(bad_key), StatusCode::BadRequest);
}
