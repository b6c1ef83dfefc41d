//! Login over the wire: wrong passwords and unknown users look the same, login ids are single
//! use and short-lived, and guessing is rate limited.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, code};
use opaque_ke::{ClientLogin, ClientLoginFinishParameters, CredentialResponse, Identifiers};
use qpq_runtime::{RpcError, StatusCode};
use qpq_schema::{QpqClient, proto};
use qpq_server::auth::QpqSuite;
use rand::rngs::OsRng;

/// The raw outcome of one login attempt, as the wire shows it.
struct Attempt {
    start_response_len: usize,
    login_id: Bytes,
    credential_response: Bytes,
    finish: Result<proto::OpaqueLoginFinishResponse, RpcError>,
}

/// Runs LoginStart with a real OPAQUE request, then LoginFinish with what a client that does
/// not know the password can send: a finalization of the right size that it cannot compute.
async fn attempt(client: &QpqClient, username: &str, password: &[u8]) -> Attempt {
    let start = ClientLogin::<QpqSuite>::start(&mut OsRng, password).unwrap();
    let request = proto::OpaqueLoginStartRequest {
        username: username.into(),
        credential_request: Bytes::copy_from_slice(&start.message.serialize()),
    };
    let response = client.opaque_login_start(request).await.unwrap();
    let start_response_len = prost::Message::encoded_len(&response);
    let ksf = argon2::Argon2::default();
    let finalization = start
        .state
        .finish(
            &mut OsRng,
            password,
            CredentialResponse::<QpqSuite>::deserialize(&response.credential_response).unwrap(),
            ClientLoginFinishParameters::new(None, Identifiers::default(), Some(&ksf)),
        )
        .map(|f| f.message.serialize().to_vec())
        .unwrap_or_else(|_| vec![0x5a; 64]);
    let finish = client
        .opaque_login_finish(proto::OpaqueLoginFinishRequest {
            username: username.into(),
            login_id: response.login_id.clone(),
            credential_finalization: Bytes::from(finalization),
            identity_key: Bytes::new(),
            device_id: Bytes::new(),
        })
        .await;
    Attempt {
        start_response_len,
        login_id: response.login_id,
        credential_response: response.credential_response,
        finish,
    }
}

fn error_body_len(result: &Result<proto::OpaqueLoginFinishResponse, RpcError>) -> usize {
    result
        .as_ref()
        .unwrap_err()
        .status()
        .expect("a server status")
        .encode_body()
        .len()
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_indistinguishable() {
    let server = TestServer::start().await;
    let _alice = server.user("alice").await;
    let client = server.client().await;

    let right = attempt(&client, "alice", b"password of test").await;
    assert!(right.finish.is_ok(), "{:?}", right.finish.err());

    let wrong = attempt(&client, "alice", b"not the password").await;
    let unknown = attempt(&client, "mallory", b"not the password").await;
    assert_eq!(code(wrong.finish.clone()), StatusCode::Unauthorized);
    assert_eq!(code(unknown.finish.clone()), StatusCode::Unauthorized);
    // Same sizes at every step, and the same error text.
    assert_eq!(wrong.start_response_len, unknown.start_response_len);
    assert_eq!(wrong.start_response_len, right.start_response_len);
    assert_eq!(
        wrong.credential_response.len(),
        unknown.credential_response.len()
    );
    assert_eq!(wrong.login_id.len(), unknown.login_id.len());
    assert_eq!(
        error_body_len(&wrong.finish),
        error_body_len(&unknown.finish)
    );
    println!(
        "wrong password vs unknown user: {} vs {}; LoginStart answers {} vs {} bytes, error bodies {} vs {} bytes",
        code(wrong.finish.clone()).name(),
        code(unknown.finish.clone()).name(),
        wrong.start_response_len,
        unknown.start_response_len,
        error_body_len(&wrong.finish),
        error_body_len(&unknown.finish)
    );
    assert_eq!(
        wrong.finish.unwrap_err().to_string(),
        unknown.finish.unwrap_err().to_string()
    );
}

#[tokio::test]
async fn the_client_library_reports_a_wrong_password() {
    let server = TestServer::start().await;
    let _alice = server.user("alice").await;
    let client = server.client().await;
    let result = qpq_client::login(&client, "alice", b"guess", None).await;
    assert!(
        matches!(
            result,
            Err(qpq_client::ClientError::Opaque(
                qpq_client::OpaqueError::WrongPassword
            ))
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_login_id_is_single_use() {
    let server = TestServer::start().await;
    let _alice = server.user("alice").await;
    let client = server.client().await;
    let password = b"password of test";
    let start = ClientLogin::<QpqSuite>::start(&mut OsRng, password).unwrap();
    let response = client
        .opaque_login_start(proto::OpaqueLoginStartRequest {
            username: "alice".into(),
            credential_request: Bytes::copy_from_slice(&start.message.serialize()),
        })
        .await
        .unwrap();
    let ksf = argon2::Argon2::default();
    let finalization = start
        .state
        .finish(
            &mut OsRng,
            password,
            CredentialResponse::<QpqSuite>::deserialize(&response.credential_response).unwrap(),
            ClientLoginFinishParameters::new(None, Identifiers::default(), Some(&ksf)),
        )
        .unwrap()
        .message
        .serialize()
        .to_vec();
    let finish = proto::OpaqueLoginFinishRequest {
        username: "alice".into(),
        login_id: response.login_id,
        credential_finalization: Bytes::from(finalization),
        identity_key: Bytes::new(),
        device_id: Bytes::new(),
    };
    client.opaque_login_finish(finish.clone()).await.unwrap();
    let replay = client.opaque_login_finish(finish).await;
    assert_eq!(code(replay), StatusCode::Unauthorized);
}

#[tokio::test]
async fn an_expired_login_id_is_refused() {
    let server = TestServer::start_with(|c| c.login_ttl_ms = 300).await;
    let _alice = server.user("alice").await;
    let client = server.client().await;
    let password = b"password of test";
    let start = ClientLogin::<QpqSuite>::start(&mut OsRng, password).unwrap();
    let response = client
        .opaque_login_start(proto::OpaqueLoginStartRequest {
            username: "alice".into(),
            credential_request: Bytes::copy_from_slice(&start.message.serialize()),
        })
        .await
        .unwrap();
    let ksf = argon2::Argon2::default();
    let finalization = start
        .state
        .finish(
            &mut OsRng,
            password,
            CredentialResponse::<QpqSuite>::deserialize(&response.credential_response).unwrap(),
            ClientLoginFinishParameters::new(None, Identifiers::default(), Some(&ksf)),
        )
        .unwrap()
        .message
        .serialize()
        .to_vec();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let result = client
        .opaque_login_finish(proto::OpaqueLoginFinishRequest {
            username: "alice".into(),
            login_id: response.login_id,
            credential_finalization: Bytes::from(finalization),
            identity_key: Bytes::new(),
            device_id: Bytes::new(),
        })
        .await;
    let status = result.unwrap_err().status().cloned().unwrap();
    assert_eq!(status.code(), StatusCode::Unauthorized);
    assert!(status.message().contains("expired"), "{status}");
}

#[tokio::test]
async fn repeated_failed_logins_are_rate_limited() {
    let server = TestServer::start().await;
    let _alice = server.user("alice").await;
    let client = server.client().await;
    let mut limited = None;
    for _ in 0..10 {
        let start = ClientLogin::<QpqSuite>::start(&mut OsRng, b"guess").unwrap();
        let result = client
            .opaque_login_start(proto::OpaqueLoginStartRequest {
                username: "alice".into(),
                credential_request: Bytes::copy_from_slice(&start.message.serialize()),
            })
            .await;
        if let Err(RpcError::Status(status)) = result {
            limited = Some(status);
            break;
        }
    }
    let status = limited.expect("guessing was throttled within 10 attempts");
    assert_eq!(status.code(), StatusCode::RateLimited);
    assert!(status.retry_after_ms().unwrap_or(0) > 0);
}

#[tokio::test]
async fn registration_rejects_taken_names_and_bad_input() {
    let server = TestServer::start().await;
    let _alice = server.user("alice").await;
    let client = server.client().await;
    let identity = qpq_client::IdentityKey::generate();
    let taken = qpq_client::register(&client, "alice", b"another", &identity.public()).await;
    match taken {
        Err(qpq_client::ClientError::Rpc(error)) => {
            assert_eq!(error.code(), Some(StatusCode::Conflict));
            assert!(error.to_string().contains("already taken"), "{error}");
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let bad = qpq_client::register(&client, "Not Valid!", b"pw", &identity.public()).await;
    match bad {
        Err(qpq_client::ClientError::Rpc(error)) => {
            assert_eq!(error.code(), Some(StatusCode::BadRequest));
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    let bad_key = qpq_client::register(&client, "carol", b"pw", &[0u8; 32]).await;
    match bad_key {
        Err(qpq_client::ClientError::Rpc(error)) => {
            assert_eq!(error.code(), Some(StatusCode::BadRequest), "{error}");
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
}
