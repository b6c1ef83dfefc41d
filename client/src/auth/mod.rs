//! The client side of OPAQUE (the only client module that names opaque-ke).
//!
//! The cipher suite and the Argon2id parameters must match the server's exactly: OPRF over
//! Ristretto255, TripleDH over Ristretto255 with SHA-512, Argon2id with argon2's defaults
//! (m = 19456 KiB, t = 2, p = 1), no identifiers, no context. Argon2 runs here, on the client;
//! the password never leaves this process in any form.

use opaque_ke::{
    CipherSuite, ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, Identifiers, RegistrationResponse,
    Ristretto255, TripleDh,
};
use rand::rngs::OsRng;

/// The qpq OPAQUE cipher suite.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QpqSuite;

impl CipherSuite for QpqSuite {
    type OprfCs = Ristretto255;
    type KeyExchange = TripleDh<Ristretto255, sha2::Sha512>;
    type Ksf = argon2::Argon2<'static>;
}

/// Why a local OPAQUE step failed.
///
/// ```no_run
/// # async fn run(client: qpq_client::QpqClient) {
/// match qpq_client::login(&client, "alice", b"guess", None).await {
///     Err(qpq_client::ClientError::Opaque(qpq_client::OpaqueError::WrongPassword)) => {
///         eprintln!("wrong username or password")
///     }
///     _ => {}
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpaqueError {
    /// The server's answer does not parse.
    #[error("the server sent a malformed OPAQUE message")]
    Malformed,
    /// The password is wrong (or the server is not the one the account registered with).
    #[error("wrong username or password")]
    WrongPassword,
    /// The OPAQUE library refused (e.g. an empty password).
    #[error("OPAQUE failed: {0}")]
    Protocol(String),
}

fn ksf() -> argon2::Argon2<'static> {
    argon2::Argon2::default()
}

/// A registration in progress.
pub(crate) struct Registration {
    state: ClientRegistration<QpqSuite>,
}

/// Starts registration; returns the state and the request for OpaqueRegisterStart.
pub(crate) fn registration_start(password: &[u8]) -> Result<(Registration, Vec<u8>), OpaqueError> {
    let start = ClientRegistration::<QpqSuite>::start(&mut OsRng, password)
        .map_err(|e| OpaqueError::Protocol(e.to_string()))?;
    Ok((
        Registration { state: start.state },
        start.message.serialize().to_vec(),
    ))
}

/// Finishes registration; returns the upload for OpaqueRegisterFinish.
pub(crate) fn registration_finish(
    registration: Registration,
    password: &[u8],
    response: &[u8],
) -> Result<Vec<u8>, OpaqueError> {
    let response = RegistrationResponse::<QpqSuite>::deserialize(response)
        .map_err(|_| OpaqueError::Malformed)?;
    let ksf = ksf();
    let finish = registration
        .state
        .finish(
            &mut OsRng,
            password,
            response,
            ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
        )
        .map_err(|e| OpaqueError::Protocol(e.to_string()))?;
    Ok(finish.message.serialize().to_vec())
}

/// A login in progress (the OPAQUE client state between its two messages).
pub(crate) struct PendingLogin {
    state: ClientLogin<QpqSuite>,
}

/// Starts a login; returns the state and the request for OpaqueLoginStart.
pub(crate) fn login_start(password: &[u8]) -> Result<(PendingLogin, Vec<u8>), OpaqueError> {
    let start = ClientLogin::<QpqSuite>::start(&mut OsRng, password)
        .map_err(|e| OpaqueError::Protocol(e.to_string()))?;
    Ok((
        PendingLogin { state: start.state },
        start.message.serialize().to_vec(),
    ))
}

/// The outcome of a login on the client side.
pub(crate) struct LoginFinish {
    /// For OpaqueLoginFinish.
    pub(crate) finalization: Vec<u8>,
    /// A stable secret derived from the password (encrypts the recovery bundle).
    pub(crate) export_key: Vec<u8>,
}

/// Finishes a login with the server's response. A wrong password is detected here.
pub(crate) fn login_finish(
    login: PendingLogin,
    password: &[u8],
    response: &[u8],
) -> Result<LoginFinish, OpaqueError> {
    let response = CredentialResponse::<QpqSuite>::deserialize(response)
        .map_err(|_| OpaqueError::Malformed)?;
    let ksf = ksf();
    let finish = login
        .state
        .finish(
            &mut OsRng,
            password,
            response,
            ClientLoginFinishParameters::new(None, Identifiers::default(), Some(&ksf)),
        )
        .map_err(|e| match e {
            opaque_ke::errors::ProtocolError::InvalidLoginError => OpaqueError::WrongPassword,
            other => OpaqueError::Protocol(other.to_string()),
        })?;
    Ok(LoginFinish {
        finalization: finish.message.serialize().to_vec(),
        export_key: finish.export_key.to_vec(),
    })
}
