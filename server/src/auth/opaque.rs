//! OPAQUE (RFC 9807) server side on opaque-ke 4.0 — the only module that names opaque-ke.
//!
//! # Cipher suite ([`QpqSuite`])
//!
//! - OPRF: Ristretto255 (SHA-512).
//! - Key exchange: 3DH over Ristretto255 with SHA-512.
//! - KSF: Argon2id, version 0x13, **m = 19456 KiB, t = 2, p = 1** (argon2 0.5's
//!   `Argon2::default()`), output length = the OPRF hash length (64 bytes), the all-zero
//!   16-byte salt opaque-ke uses. The KSF runs on the *client* only (the server never sees the
//!   password or its hash), so these are the parameters clients must use: a client with other
//!   parameters derives other keys, and its logins fail. Changing them means re-registering
//!   every password.
//! - Identifiers: none (opaque-ke then binds both parties' public keys); context: none. The
//!   credential identifier is the username, exactly as registered.
//!
//! # Server state
//!
//! [`OpaqueServer::load_or_create`] keeps the `ServerSetup` (OPRF seed and server key pair —
//! a secret: with it, stolen password files can be attacked offline) in
//! `<data_dir>/opaque-server-setup.bin`, mode 0600, created once. Losing it invalidates every
//! registration.
//!
//! Between LoginStart and LoginFinish the server's login state lives in memory under a random
//! single-use [`LoginId`] with a short TTL ([`LoginConfig`]); the table is bounded. The state
//! is kept as opaque-ke's `ServerLogin` value rather than its serialization: it is wiped on
//! drop, and needs no re-parsing. A restart forgets pending logins (clients start over).
//!
//! # No user enumeration
//!
//! For an unknown username, [`OpaqueServer::login_start`] is given no password file and
//! opaque-ke answers with a fake response of the same length, whose OPRF evaluation is keyed
//! by the username exactly like a real one. LoginFinish for such a login fails with the same
//! [`AuthError::InvalidCredentials`] as a wrong password.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use opaque_ke::{
    CipherSuite, CredentialFinalization, CredentialRequest, RegistrationRequest,
    RegistrationUpload, Ristretto255, ServerLogin, ServerLoginParameters, ServerRegistration,
    ServerSetup, TripleDh,
};
use rand::RngCore;
use rand::rngs::OsRng;

use qpq_runtime::limits::Clock;

use crate::secret_file::{self, Created, SecretFileError};

/// The qpq OPAQUE cipher suite (see the module doc for the parameters).
#[derive(Debug, Clone, Copy)]
pub struct QpqSuite;

impl CipherSuite for QpqSuite {
    type OprfCs = Ristretto255;
    type KeyExchange = TripleDh<Ristretto255, sha2::Sha512>;
    type Ksf = argon2::Argon2<'static>;
}

/// Argon2id memory cost clients must use, in KiB (argon2 0.5 default).
pub const KSF_M_COST_KIB: u32 = argon2::Params::DEFAULT_M_COST;
/// Argon2id iterations clients must use (argon2 0.5 default).
pub const KSF_T_COST: u32 = argon2::Params::DEFAULT_T_COST;
/// Argon2id parallelism clients must use (argon2 0.5 default).
pub const KSF_P_COST: u32 = argon2::Params::DEFAULT_P_COST;

/// File name of the persisted `ServerSetup` inside the data directory.
pub const SETUP_FILE_NAME: &str = "opaque-server-setup.bin";

/// Authentication failures. Messages are lowercase and safe to show a client, except
/// [`AuthError::Internal`], which handlers answer as `Internal` (details are logged here).
/// No variant tells an unknown user from a wrong password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Wrong password or unknown user (deliberately indistinguishable).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The client sent bytes that are not a valid OPAQUE message of the expected kind.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// No login in progress under this id (never issued, already finished, or evicted).
    #[error("unknown or already used login id")]
    UnknownLogin,
    /// The login id was issued, but LoginFinish came after its TTL.
    #[error("login attempt expired; start the login again")]
    LoginExpired,
    /// LoginFinish named another username than the LoginStart it continues.
    #[error("login id does not belong to this username")]
    UsernameMismatch,
    /// Too many logins are between start and finish; the cap protects memory.
    #[error("too many logins in progress; retry shortly")]
    TooManyPendingLogins,
    /// A server-side failure (corrupt stored password file, ...); logged where it happened.
    #[error("internal authentication error")]
    Internal,
}

/// Failure to load or create the persisted `ServerSetup`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// Reading or writing the setup file failed.
    #[error("cannot access opaque server setup {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file exists but is not a valid setup (refusing to replace it: that would
    /// invalidate every registration).
    #[error("opaque server setup {path} is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
}

/// The id of a login between LoginStart and LoginFinish: 16 random bytes, single use.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginId(pub [u8; 16]);

impl LoginId {
    /// Parses an id received from a client.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, AuthError> {
        bytes
            .try_into()
            .map(LoginId)
            .map_err(|_| AuthError::Malformed("login id (expected 16 bytes)"))
    }

    /// The bytes to send to the client.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    fn random() -> Self {
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        LoginId(id)
    }
}

// The id is a bearer capability for a few seconds; keep it out of logs.
impl std::fmt::Debug for LoginId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginId(..)")
    }
}

/// Longest login TTL accepted; longer configured values are clamped (a login id is meant to
/// live for one round trip plus the client's Argon2 run).
pub const MAX_LOGIN_TTL: Duration = Duration::from_secs(3600);

/// Limits on logins in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginConfig {
    /// How long a login id stays valid (default 60 s, at most [`MAX_LOGIN_TTL`]).
    pub ttl: Duration,
    /// Most logins in progress at once (default 10 000).
    pub max_pending: usize,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            ttl: Duration::from_secs(60),
            max_pending: 10_000,
        }
    }
}

struct PendingLogin {
    username: String,
    state: ServerLogin<QpqSuite>,
    /// `false` when LoginStart ran with a fake record (unknown user).
    real: bool,
    expires_at: Instant,
}

/// The OPAQUE server: the persisted setup plus the table of logins in progress.
pub struct OpaqueServer {
    setup: ServerSetup<QpqSuite>,
    config: LoginConfig,
    clock: Clock,
    pending: Mutex<HashMap<LoginId, PendingLogin>>,
}

impl std::fmt::Debug for OpaqueServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpaqueServer")
            .field("config", &self.config)
            .field("pending", &self.pending_logins())
            .finish_non_exhaustive()
    }
}

/// Deserializes a client message and insists on its exact length: opaque-ke ignores trailing
/// bytes, and a message with junk appended is not the message the client meant.
fn parse<T>(
    bytes: &[u8],
    what: &'static str,
    deserialize: impl FnOnce(&[u8]) -> Result<T, opaque_ke::errors::ProtocolError>,
    serialized_len: impl FnOnce(&T) -> usize,
) -> Result<T, AuthError> {
    let value = deserialize(bytes).map_err(|_| AuthError::Malformed(what))?;
    if serialized_len(&value) != bytes.len() {
        return Err(AuthError::Malformed(what));
    }
    Ok(value)
}

impl OpaqueServer {
    /// Loads the setup from `data_dir`, creating it on first run; default login limits and
    /// the system clock.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, SetupError> {
        Self::load_or_create_with(data_dir, LoginConfig::default(), Clock::system())
    }

    /// Like [`OpaqueServer::load_or_create`], with explicit limits and clock.
    pub fn load_or_create_with(
        data_dir: &Path,
        config: LoginConfig,
        clock: Clock,
    ) -> Result<Self, SetupError> {
        let config = LoginConfig {
            ttl: config.ttl.min(MAX_LOGIN_TTL),
            ..config
        };
        Ok(OpaqueServer {
            setup: load_or_create_setup(data_dir)?,
            config,
            clock,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// A fingerprint of the setup (domain-separated SHA-256 of its bytes; reveals nothing of
    /// it): instances serving one store must have the same (see `Store::bind_secrets`).
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"qpq opaque server setup fingerprint v1\0");
        h.update(self.setup.serialize());
        h.finalize().into()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<LoginId, PendingLogin>> {
        // Nothing panics while the lock is held; a poisoned map is still consistent.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// RegisterStart: evaluates the client's blinded password under the key derived for
    /// `username`. Returns the `RegistrationResponse` bytes. Stateless.
    pub fn register_start(&self, username: &str, request: &[u8]) -> Result<Vec<u8>, AuthError> {
        let request = parse(
            request,
            "registration request",
            RegistrationRequest::<QpqSuite>::deserialize,
            |m| m.serialize().len(),
        )?;
        let result =
            ServerRegistration::<QpqSuite>::start(&self.setup, request, username.as_bytes())
                .map_err(|_| AuthError::Malformed("registration request"))?;
        Ok(result.message.serialize().to_vec())
    }

    /// RegisterFinish: validates the client's upload and returns the password file to store
    /// with the account (the serialized `ServerRegistration`).
    pub fn register_finish(&self, upload: &[u8]) -> Result<Vec<u8>, AuthError> {
        let upload = parse(
            upload,
            "registration upload",
            RegistrationUpload::<QpqSuite>::deserialize,
            |m| m.serialize().len(),
        )?;
        Ok(ServerRegistration::finish(upload).serialize().to_vec())
    }

    /// LoginStart: answers the client's `CredentialRequest` and parks the server state under
    /// a fresh [`LoginId`]. Pass the account's password file, or `None` when there is no such
    /// user — the response then is a fake of the same length and the login cannot succeed.
    pub fn login_start(
        &self,
        username: &str,
        password_file: Option<&[u8]>,
        request: &[u8],
    ) -> Result<(LoginId, Vec<u8>), AuthError> {
        // Cheap early refusal under a flood, before spending the crypto (re-checked on insert).
        if self.pending().len() >= self.config.max_pending {
            self.evict_expired();
        }
        let request = parse(
            request,
            "login request",
            CredentialRequest::<QpqSuite>::deserialize,
            |m| m.serialize().len(),
        )?;
        let record = match password_file {
            Some(bytes) => Some(ServerRegistration::<QpqSuite>::deserialize(bytes).map_err(
                |e| {
                    tracing::error!(error = ?e, "stored opaque password file does not parse");
                    AuthError::Internal
                },
            )?),
            None => None,
        };
        let real = record.is_some();
        let result = ServerLogin::start(
            &mut OsRng,
            &self.setup,
            record,
            request,
            username.as_bytes(),
            ServerLoginParameters::default(),
        )
        .map_err(|_| AuthError::Malformed("login request"))?;
        let response = result.message.serialize().to_vec();

        let id = LoginId::random();
        let entry = PendingLogin {
            username: username.to_owned(),
            state: result.state,
            real,
            // Cannot overflow: the TTL is clamped to an hour and `now` is a real instant.
            expires_at: self.clock.now() + self.config.ttl,
        };
        let mut pending = self.pending();
        if pending.len() >= self.config.max_pending {
            let now = self.clock.now();
            pending.retain(|_, p| p.expires_at > now);
            if pending.len() >= self.config.max_pending {
                return Err(AuthError::TooManyPendingLogins);
            }
        }
        pending.insert(id, entry);
        Ok((id, response))
    }

    /// LoginFinish: checks the client's `CredentialFinalization` against the login parked
    /// under `login_id`. The id is consumed first, whatever the outcome, so it can never be
    /// tried twice. `Ok` means the client proved knowledge of the password of `username`.
    pub fn login_finish(
        &self,
        login_id: &LoginId,
        username: &str,
        finalization: &[u8],
    ) -> Result<(), AuthError> {
        let entry = self
            .pending()
            .remove(login_id)
            .ok_or(AuthError::UnknownLogin)?;
        if self.clock.now() >= entry.expires_at {
            return Err(AuthError::LoginExpired);
        }
        if entry.username != username {
            return Err(AuthError::UsernameMismatch);
        }
        let finalization = parse(
            finalization,
            "login finalization",
            CredentialFinalization::<QpqSuite>::deserialize,
            |m| m.serialize().len(),
        )?;
        // Run the check for fake logins too, so both paths cost the same.
        let verified = entry
            .state
            .finish(finalization, ServerLoginParameters::default())
            .is_ok();
        if verified && entry.real {
            Ok(())
        } else {
            Err(AuthError::InvalidCredentials)
        }
    }

    /// Drops logins past their TTL. `login_start` does this when the table is full; a
    /// periodic sweeper may call it too.
    pub fn evict_expired(&self) {
        let now = self.clock.now();
        self.pending().retain(|_, p| p.expires_at > now);
    }

    /// Logins in progress (including expired ones not yet evicted).
    pub fn pending_logins(&self) -> usize {
        self.pending().len()
    }

    /// The login limits in force.
    pub fn login_config(&self) -> LoginConfig {
        self.config
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn load_setup(path: &Path, bytes: &[u8]) -> Result<ServerSetup<QpqSuite>, SetupError> {
    let corrupt = || SetupError::Corrupt {
        path: path.to_owned(),
    };
    let setup = ServerSetup::<QpqSuite>::deserialize(bytes).map_err(|_| corrupt())?;
    if setup.serialize().len() != bytes.len() {
        return Err(corrupt());
    }
    Ok(setup)
}

/// Loads `data_dir/opaque-server-setup.bin`, or creates it (mode 0600, atomically:
/// `secret_file`) if it is missing.
fn load_or_create_setup(data_dir: &Path) -> Result<ServerSetup<QpqSuite>, SetupError> {
    let path = data_dir.join(SETUP_FILE_NAME);
    if let Some(bytes) = secret_file::read(&path, "opaque server setup")? {
        return load_setup(&path, &bytes);
    }
    fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let setup = ServerSetup::<QpqSuite>::new(&mut OsRng);
    match secret_file::create(&path, &setup.serialize())? {
        Created::New => {
            tracing::info!(path = %path.display(), "created opaque server setup");
            Ok(setup)
        }
        // Another process created one meanwhile: load theirs.
        Created::Existing => {
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            load_setup(&path, &bytes)
        }
    }
}

impl From<SecretFileError> for SetupError {
    fn from(e: SecretFileError) -> Self {
        SetupError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use opaque_ke::{
        ClientLogin, ClientLoginFinishParameters, ClientRegistration,
        ClientRegistrationFinishParameters, CredentialResponse, Identifiers, RegistrationResponse,
    };
    use qpq_runtime::limits::ManualClock;

    /// Cheap Argon2id for most tests (the server never runs the KSF, so this only changes the
    /// client's cost); `real_argon2_defaults_work` uses the production parameters.
    fn fast_ksf() -> argon2::Argon2<'static> {
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8, 1, 1, None).unwrap(),
        )
    }

    fn server(dir: &Path) -> (OpaqueServer, ManualClock) {
        let (clock, hand) = Clock::manual(1_700_000_000_000);
        let s = OpaqueServer::load_or_create_with(dir, LoginConfig::default(), clock).unwrap();
        (s, hand)
    }

    fn register(
        s: &OpaqueServer,
        ksf: &argon2::Argon2<'static>,
        user: &str,
        password: &[u8],
    ) -> Vec<u8> {
        let start = ClientRegistration::<QpqSuite>::start(&mut OsRng, password).unwrap();
        let response = s.register_start(user, &start.message.serialize()).unwrap();
        let response = RegistrationResponse::<QpqSuite>::deserialize(&response).unwrap();
        let finish = start
            .state
            .finish(
                &mut OsRng,
                password,
                response,
                ClientRegistrationFinishParameters::new(Identifiers::default(), Some(ksf)),
            )
            .unwrap();
        s.register_finish(&finish.message.serialize()).unwrap()
    }

    /// What a client gets out of a login attempt.
    struct Attempt {
        id: LoginId,
        response_len: usize,
        /// The finalization, when the client could open the envelope (right password).
        finalization: Option<Vec<u8>>,
    }

    fn login(
        s: &OpaqueServer,
        ksf: &argon2::Argon2<'static>,
        user: &str,
        file: Option<&[u8]>,
        password: &[u8],
    ) -> Attempt {
        let start = ClientLogin::<QpqSuite>::start(&mut OsRng, password).unwrap();
        let (id, response) = s
            .login_start(user, file, &start.message.serialize())
            .unwrap();
        let response_len = response.len();
        let response = CredentialResponse::<QpqSuite>::deserialize(&response).unwrap();
        let finalization = start
            .state
            .finish(
                &mut OsRng,
                password,
                response,
                ClientLoginFinishParameters::new(None, Identifiers::default(), Some(ksf)),
            )
            .ok()
            .map(|f| f.message.serialize().to_vec());
        Attempt {
            id,
            response_len,
            finalization,
        }
    }

    #[test]
    fn server_and_limiter_are_shareable_across_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<OpaqueServer>();
        assert_send_sync::<crate::auth::LoginLimiter>();
    }

    #[test]
    fn register_then_login() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = server(dir.path());
        let ksf = fast_ksf();
        let file = register(&s, &ksf, "alice", b"correct horse");
        let a = login(&s, &ksf, "alice", Some(&file), b"correct horse");
        let fin = a.finalization.expect("right password opens the envelope");
        assert_eq!(s.login_finish(&a.id, "alice", &fin), Ok(()));
        assert_eq!(s.pending_logins(), 0);
    }

    #[test]
    fn wrong_password_and_unknown_user_look_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = server(dir.path());
        let ksf = fast_ksf();
        let file = register(&s, &ksf, "alice", b"correct horse");

        // A valid-looking finalization from another, successful login: what a client that
        // insists on finishing would send.
        let ok = login(&s, &ksf, "alice", Some(&file), b"correct horse");
        let foreign_fin = ok.finalization.unwrap();

        let wrong = login(&s, &ksf, "alice", Some(&file), b"battery staple");
        assert!(
            wrong.finalization.is_none(),
            "client detects a wrong password itself"
        );
        let unknown = login(&s, &ksf, "mallory", None, b"battery staple");
        assert!(unknown.finalization.is_none());
        assert_eq!(
            wrong.response_len, unknown.response_len,
            "fake response has the real size"
        );
        assert_eq!(wrong.response_len, ok.response_len);

        let e1 = s
            .login_finish(&wrong.id, "alice", &foreign_fin)
            .unwrap_err();
        let e2 = s
            .login_finish(&unknown.id, "mallory", &foreign_fin)
            .unwrap_err();
        assert_eq!(e1, AuthError::InvalidCredentials);
        assert_eq!(e1, e2);
        assert_eq!(e1.to_string(), e2.to_string());

        // Arbitrary bytes of the right length fail the same way.
        let unknown2 = login(&s, &ksf, "mallory", None, b"x");
        let zeros = vec![0u8; foreign_fin.len()];
        assert_eq!(
            s.login_finish(&unknown2.id, "mallory", &zeros),
            Err(AuthError::InvalidCredentials)
        );
    }

    #[test]
    fn login_id_is_single_use_and_bound_to_the_username() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = server(dir.path());
        let ksf = fast_ksf();
        let file = register(&s, &ksf, "alice", b"pw");
        let a = login(&s, &ksf, "alice", Some(&file), b"pw");
        let fin = a.finalization.unwrap();
        assert_eq!(s.login_finish(&a.id, "alice", &fin), Ok(()));
        assert_eq!(
            s.login_finish(&a.id, "alice", &fin),
            Err(AuthError::UnknownLogin)
        );

        let b = login(&s, &ksf, "alice", Some(&file), b"pw");
        let fin = b.finalization.unwrap();
        assert_eq!(
            s.login_finish(&b.id, "bob", &fin),
            Err(AuthError::UsernameMismatch)
        );
        // The id was consumed by the failed attempt too.
        assert_eq!(
            s.login_finish(&b.id, "alice", &fin),
            Err(AuthError::UnknownLogin)
        );
        assert_eq!(
            s.login_finish(&LoginId([7; 16]), "alice", &fin),
            Err(AuthError::UnknownLogin)
        );
    }

    #[test]
    fn expired_login_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (s, clock) = server(dir.path());
        let ksf = fast_ksf();
        let file = register(&s, &ksf, "alice", b"pw");
        let a = login(&s, &ksf, "alice", Some(&file), b"pw");
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            s.login_finish(&a.id, "alice", &a.finalization.unwrap()),
            Err(AuthError::LoginExpired)
        );
    }

    #[test]
    fn pending_logins_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (clock, hand) = Clock::manual(1_700_000_000_000);
        let config = LoginConfig {
            ttl: Duration::from_secs(5),
            max_pending: 2,
        };
        let s = OpaqueServer::load_or_create_with(dir.path(), config, clock).unwrap();
        let request = || {
            ClientLogin::<QpqSuite>::start(&mut OsRng, b"pw")
                .unwrap()
                .message
                .serialize()
                .to_vec()
        };
        s.login_start("a", None, &request()).unwrap();
        s.login_start("b", None, &request()).unwrap();
        assert_eq!(
            s.login_start("c", None, &request()).unwrap_err(),
            AuthError::TooManyPendingLogins
        );
        hand.advance(Duration::from_secs(5));
        s.login_start("c", None, &request()).unwrap();
        assert_eq!(s.pending_logins(), 1, "expired entries were evicted");
    }

    #[test]
    fn malformed_messages_are_rejected_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = server(dir.path());
        let good = ClientLogin::<QpqSuite>::start(&mut OsRng, b"pw")
            .unwrap()
            .message
            .serialize()
            .to_vec();
        let mut long = good.clone();
        long.push(0);
        for bad in [
            &[][..],
            &[0u8; 3][..],
            &good[..good.len() - 1],
            &long[..],
            &[0xff; 96][..],
        ] {
            assert!(matches!(
                s.login_start("a", None, bad),
                Err(AuthError::Malformed(_))
            ));
            assert!(matches!(
                s.register_start("a", bad),
                Err(AuthError::Malformed(_))
            ));
            assert!(matches!(
                s.register_finish(bad),
                Err(AuthError::Malformed(_))
            ));
        }
        // A corrupt stored password file is an internal error, not the client's fault.
        assert_eq!(
            s.login_start("a", Some(&[1, 2, 3]), &good).unwrap_err(),
            AuthError::Internal
        );
        let (id, _) = s.login_start("a", None, &good).unwrap();
        assert!(matches!(
            s.login_finish(&id, "a", &[1, 2]),
            Err(AuthError::Malformed(_))
        ));
        assert!(LoginId::from_slice(&[0; 15]).is_err());
        assert_eq!(LoginId::from_slice(&[3; 16]).unwrap(), LoginId([3; 16]));
    }

    #[test]
    fn setup_persists_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ksf = fast_ksf();
        let first = OpaqueServer::load_or_create(&data).unwrap();
        let path = data.join(SETUP_FILE_NAME);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let file = register(&first, &ksf, "alice", b"pw");
        drop(first);

        let second = OpaqueServer::load_or_create(&data).unwrap();
        let a = login(&second, &ksf, "alice", Some(&file), b"pw");
        let fin = a
            .finalization
            .expect("same setup: the registration still opens");
        assert_eq!(second.login_finish(&a.id, "alice", &fin), Ok(()));
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SETUP_FILE_NAME)]);

        fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            OpaqueServer::load_or_create(&data),
            Err(SetupError::Corrupt { .. })
        ));
    }

    #[test]
    fn real_argon2_defaults_work() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = server(dir.path());
        let ksf = argon2::Argon2::default();
        let params = ksf.params();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (KSF_M_COST_KIB, KSF_T_COST, KSF_P_COST)
        );
        assert_eq!((KSF_M_COST_KIB, KSF_T_COST, KSF_P_COST), (19_456, 2, 1));
        let file = register(&s, &ksf, "alice", b"pw");
        let a = login(&s, &ksf, "alice", Some(&file), b"pw");
        assert_eq!(
            s.login_finish(&a.id, "alice", &a.finalization.unwrap()),
            Ok(())
        );
        // A client with other KSF parameters derives other keys: its login fails.
        let b = login(&s, &fast_ksf(), "alice", Some(&file), b"pw");
        assert!(b.finalization.is_none());
    }
}
