//! The profile directory: who this client is and its session, kept between runs.
//!
//! Layout (every file written atomically: temporary file, fsync, rename):
//! - `profile.toml` (0600): username, server address, pinned certificate path.
//! - `identity.key` (0600): the 32-byte Ed25519 secret of the identity key.
//! - `session.toml` (0600): the session token and its expiry.
//! - `hybrid.key` (0600): creation time (u64 big-endian, Unix ms) ‖ the 96-byte
//!   [`HybridSecret`].
//! - `device.toml` (0600): this profile's device id and name, once registered; `device.key`
//!   (0600) the device's 32-byte Ed25519 secret.
//! - `kt.toml` (0600): the pinned key-transparency log key and the last verified tree head.
//!
//! The directory itself is created with mode 0700.
//!
//! ```no_run
//! # fn run() -> Result<(), qpq_client::ProfileError> {
//! let profile = qpq_client::Profile::open("/home/alice/.qpq".as_ref())?;
//! if let Some(session) = profile.session()? {
//!     println!("logged in as {}", session.username);
//! }
//! # Ok(())
//! # }
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::IdentityKey;
use crate::keys::{HYBRID_SECRET_LEN, HybridSecret};
use crate::kt::TreeHead;

/// Why the profile could not be read or written.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("identity.key"), b"short").unwrap();
/// let profile = qpq_client::Profile::open(dir.path()).unwrap();
/// let error = profile.identity().unwrap_err();
/// assert!(error.to_string().contains("damaged"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// A file operation failed.
    #[error("profile file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file does not parse.
    #[error("profile file {path} is damaged: {why}; remove it and log in again")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Non-secret settings of a profile.
///
/// ```
/// let settings = qpq_client::Settings {
///     username: Some("alice".into()),
///     server: Some("127.0.0.1:5001".into()),
///     ca_cert: Some("data/server-cert.der".into()),
/// };
/// # let dir = tempfile::tempdir().unwrap();
/// let profile = qpq_client::Profile::open(dir.path()).unwrap();
/// profile.save_settings(&settings).unwrap();
/// assert_eq!(profile.settings().unwrap(), settings);
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    /// The account's username.
    pub username: Option<String>,
    /// The server (host:port) this profile talks to.
    pub server: Option<String>,
    /// The pinned server certificate (DER file).
    pub ca_cert: Option<PathBuf>,
}

/// A saved session.
///
/// ```
/// let saved = qpq_client::SavedSession {
///     username: "alice".into(),
///     token_hex: "00ff".into(),
///     expires_at_unix_ms: 0,
/// };
/// assert_eq!(saved.token().unwrap(), [0, 255]);
/// ```
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedSession {
    /// The account's username.
    pub username: String,
    /// The session token, hex.
    pub token_hex: String,
    /// Expiry, Unix ms.
    pub expires_at_unix_ms: u64,
}

impl std::fmt::Debug for SavedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedSession")
            .field("username", &self.username)
            .field("expires_at_unix_ms", &self.expires_at_unix_ms)
            .finish_non_exhaustive()
    }
}

impl SavedSession {
    /// The token bytes.
    ///
    /// ```
    /// # let saved = qpq_client::SavedSession { username: "a".into(), token_hex: "zz".into(), expires_at_unix_ms: 0 };
    /// assert!(saved.token().is_err()); // not hex
    /// ```
    pub fn token(&self) -> Result<Vec<u8>, ProfileError> {
        from_hex(&self.token_hex).ok_or_else(|| ProfileError::Damaged {
            path: PathBuf::from("session.toml"),
            why: "token is not hex".into(),
        })
    }
}

/// Lowercase hex.
///
/// ```
/// assert_eq!(qpq_client::profile::to_hex(&[0, 171]), "00ab");
/// ```
pub fn to_hex(bytes: &[u8]) -> String {
    qpq_runtime::tls::hex(bytes)
}

/// Parses lowercase or uppercase hex.
///
/// ```
/// assert_eq!(qpq_client::profile::from_hex("00AB"), Some(vec![0, 171]));
/// assert_eq!(qpq_client::profile::from_hex("0"), None);
/// ```
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// This profile's registered device.
///
/// ```
/// let device = qpq_client::profile::DeviceInfo { id_hex: "00".repeat(16), name: "laptop".into() };
/// assert_eq!(device.id().unwrap(), [0u8; 16]);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The 16-byte device id, hex.
    pub id_hex: String,
    /// Its name.
    pub name: String,
}

impl DeviceInfo {
    /// The device id bytes.
    ///
    /// ```
    /// let device = qpq_client::profile::DeviceInfo { id_hex: "xyz".into(), name: "x".into() };
    /// assert!(device.id().is_err());
    /// ```
    pub fn id(&self) -> Result<[u8; 16], ProfileError> {
        from_hex(&self.id_hex)
            .and_then(|id| id.try_into().ok())
            .ok_or_else(|| ProfileError::Damaged {
                path: PathBuf::from("device.toml"),
                why: "id_hex is not 16 bytes of hex".into(),
            })
    }
}

/// What `kt.toml` keeps: the log key pinned on first use and the newest verified tree head.
///
/// ```
/// let state = qpq_client::profile::KtState { log_key_hex: "ab".repeat(32), last: None };
/// assert_eq!(state.log_key().unwrap(), [0xab; 32]);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KtState {
    /// The pinned 32-byte Ed25519 log key, hex.
    pub log_key_hex: String,
    /// The newest tree head verified with it.
    pub last: Option<SavedTreeHead>,
}

/// A verified tree head as saved in `kt.toml`.
///
/// ```
/// use qpq_client::kt::TreeHead;
/// let head = TreeHead { tree_size: 3, root_hash: [1; 32], timestamp_unix_ms: 9 };
/// let saved = qpq_client::profile::SavedTreeHead::from(&head);
/// assert_eq!(saved.head().unwrap(), head);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedTreeHead {
    /// Number of leaves.
    pub tree_size: u64,
    /// Root hash, hex.
    pub root_hex: String,
    /// When the server signed it, Unix ms.
    pub timestamp_unix_ms: u64,
}

impl From<&TreeHead> for SavedTreeHead {
    fn from(head: &TreeHead) -> Self {
        Self {
            tree_size: head.tree_size,
            root_hex: to_hex(&head.root_hash),
            timestamp_unix_ms: head.timestamp_unix_ms,
        }
    }
}

impl SavedTreeHead {
    /// The head, parsed.
    ///
    /// ```
    /// let saved = qpq_client::profile::SavedTreeHead { tree_size: 1, root_hex: "00".into(), timestamp_unix_ms: 0 };
    /// assert!(saved.head().is_err()); // the root is not 32 bytes
    /// ```
    pub fn head(&self) -> Result<TreeHead, ProfileError> {
        let root_hash = from_hex(&self.root_hex)
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| ProfileError::Damaged {
                path: PathBuf::from("kt.toml"),
                why: "root_hex is not 32 bytes of hex".into(),
            })?;
        Ok(TreeHead {
            tree_size: self.tree_size,
            root_hash,
            timestamp_unix_ms: self.timestamp_unix_ms,
        })
    }
}

impl KtState {
    /// The pinned log key.
    ///
    /// ```
    /// let state = qpq_client::profile::KtState { log_key_hex: "00".into(), last: None };
    /// assert!(state.log_key().is_err());
    /// ```
    pub fn log_key(&self) -> Result<[u8; 32], ProfileError> {
        from_hex(&self.log_key_hex)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| ProfileError::Damaged {
                path: PathBuf::from("kt.toml"),
                why: "log_key_hex is not 32 bytes of hex".into(),
            })
    }
}

/// A profile directory.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let profile = qpq_client::Profile::open(&dir.path().join("alice")).unwrap();
/// let identity = qpq_client::IdentityKey::generate();
/// profile.save_identity(&identity).unwrap();
/// assert_eq!(profile.identity().unwrap().unwrap().public(), identity.public());
/// ```
#[derive(Clone, Debug)]
pub struct Profile {
    dir: PathBuf,
}

impl Profile {
    /// Opens (creating with mode 0700) the profile in `dir`.
    ///
    /// ```no_run
    /// let profile = qpq_client::Profile::open("/home/alice/.qpq".as_ref()).unwrap();
    /// ```
    pub fn open(dir: &Path) -> Result<Self, ProfileError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ProfileError::Io {
                path: dir.to_owned(),
                source,
            })?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// assert_eq!(profile.dir(), dir.path());
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, ProfileError> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ProfileError::Io { path, source }),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), ProfileError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let io = |source| ProfileError::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        // An existing temporary file keeps its old mode; force 0600.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    fn read_toml<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, ProfileError> {
        let Some(bytes) = self.read(name)? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|_| ProfileError::Damaged {
            path: self.dir.join(name),
            why: "not UTF-8".into(),
        })?;
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| ProfileError::Damaged {
                path: self.dir.join(name),
                why: e.to_string(),
            })
    }

    fn write_toml<T: Serialize>(&self, name: &str, value: &T) -> Result<(), ProfileError> {
        let text = toml::to_string(value).map_err(|e| ProfileError::Damaged {
            path: self.dir.join(name),
            why: e.to_string(),
        })?;
        self.write(name, text.as_bytes())
    }

    /// The settings (defaults when none are saved).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// assert_eq!(profile.settings().unwrap().username, None);
    /// ```
    pub fn settings(&self) -> Result<Settings, ProfileError> {
        Ok(self.read_toml("profile.toml")?.unwrap_or_default())
    }

    /// Saves the settings.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// let mut settings = profile.settings().unwrap();
    /// settings.username = Some("alice".into());
    /// profile.save_settings(&settings).unwrap();
    /// ```
    pub fn save_settings(&self, settings: &Settings) -> Result<(), ProfileError> {
        self.write_toml("profile.toml", settings)
    }

    /// The identity key, if one was generated.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// assert!(profile.identity().unwrap().is_none());
    /// ```
    pub fn identity(&self) -> Result<Option<IdentityKey>, ProfileError> {
        let Some(bytes) = self.read("identity.key")? else {
            return Ok(None);
        };
        let secret: [u8; 32] = bytes.try_into().map_err(|_| ProfileError::Damaged {
            path: self.dir.join("identity.key"),
            why: "not 32 bytes".into(),
        })?;
        Ok(Some(IdentityKey::from_secret(&secret)))
    }

    /// Saves the identity key (mode 0600).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// profile.save_identity(&qpq_client::IdentityKey::generate()).unwrap();
    /// ```
    pub fn save_identity(&self, identity: &IdentityKey) -> Result<(), ProfileError> {
        self.write("identity.key", &identity.secret())
    }

    /// The saved session, if any.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// assert!(profile.session().unwrap().is_none());
    /// ```
    pub fn session(&self) -> Result<Option<SavedSession>, ProfileError> {
        self.read_toml("session.toml")
    }

    /// Saves the session (mode 0600).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// profile.save_session(&qpq_client::SavedSession {
    ///     username: "alice".into(),
    ///     token_hex: "0102".into(),
    ///     expires_at_unix_ms: 0,
    /// }).unwrap();
    /// ```
    pub fn save_session(&self, session: &SavedSession) -> Result<(), ProfileError> {
        self.write_toml("session.toml", session)
    }

    /// Forgets the session.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// profile.clear_session().unwrap(); // no session is fine too
    /// ```
    pub fn clear_session(&self) -> Result<(), ProfileError> {
        let path = self.dir.join("session.toml");
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ProfileError::Io { path, source }),
        }
    }

    /// The hybrid key and when it was created (Unix ms), if one was generated.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// assert!(profile.hybrid_key().unwrap().is_none());
    /// ```
    pub fn hybrid_key(&self) -> Result<Option<(HybridSecret, u64)>, ProfileError> {
        let Some(bytes) = self.read("hybrid.key")? else {
            return Ok(None);
        };
        let damaged = || ProfileError::Damaged {
            path: self.dir.join("hybrid.key"),
            why: format!("not {} bytes", 8 + HYBRID_SECRET_LEN),
        };
        if bytes.len() != 8 + HYBRID_SECRET_LEN {
            return Err(damaged());
        }
        let (created, secret) = bytes.split_at(8);
        let created = u64::from_be_bytes(created.try_into().map_err(|_| damaged())?);
        let secret = HybridSecret::from_bytes(secret).ok_or_else(damaged)?;
        Ok(Some((secret, created)))
    }

    /// Saves the hybrid key with its creation time (mode 0600).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// let secret = qpq_client::keys::HybridSecret::generate();
    /// profile.save_hybrid_key(&secret, 1_700_000_000_000).unwrap();
    /// let (loaded, created) = profile.hybrid_key().unwrap().unwrap();
    /// assert_eq!((loaded.x25519_public(), created), (secret.x25519_public(), 1_700_000_000_000));
    /// ```
    pub fn save_hybrid_key(
        &self,
        secret: &HybridSecret,
        created_at_unix_ms: u64,
    ) -> Result<(), ProfileError> {
        let mut bytes = Vec::with_capacity(8 + HYBRID_SECRET_LEN);
        bytes.extend_from_slice(&created_at_unix_ms.to_be_bytes());
        bytes.extend_from_slice(&secret.to_bytes());
        self.write("hybrid.key", &bytes)
    }

    /// This profile's device and its key, once registered.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// assert!(profile.device().unwrap().is_none());
    /// ```
    pub fn device(&self) -> Result<Option<(DeviceInfo, IdentityKey)>, ProfileError> {
        let Some(info) = self.read_toml::<DeviceInfo>("device.toml")? else {
            return Ok(None);
        };
        info.id()?;
        let key = self
            .read("device.key")?
            .ok_or_else(|| ProfileError::Damaged {
                path: self.dir.join("device.key"),
                why: "missing while device.toml exists".into(),
            })?;
        let secret: [u8; 32] = key.try_into().map_err(|_| ProfileError::Damaged {
            path: self.dir.join("device.key"),
            why: "not 32 bytes".into(),
        })?;
        Ok(Some((info, IdentityKey::from_secret(&secret))))
    }

    /// Saves this profile's device and its Ed25519 key (both mode 0600).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use qpq_client::profile::DeviceInfo;
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// let info = DeviceInfo { id_hex: "01".repeat(16), name: "phone".into() };
    /// profile.save_device(&info, &qpq_client::IdentityKey::generate()).unwrap();
    /// assert_eq!(profile.device().unwrap().unwrap().0, info);
    /// ```
    pub fn save_device(&self, info: &DeviceInfo, key: &IdentityKey) -> Result<(), ProfileError> {
        self.write("device.key", &key.secret())?;
        self.write_toml("device.toml", info)
    }

    /// Forgets this profile's device (after it was revoked).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// profile.clear_device().unwrap();
    /// ```
    pub fn clear_device(&self) -> Result<(), ProfileError> {
        for name in ["device.toml", "device.key"] {
            let path = self.dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ProfileError::Io { path, source }),
            }
        }
        Ok(())
    }

    /// The key-transparency state, if a log key was pinned.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// assert!(profile.kt_state().unwrap().is_none());
    /// ```
    pub fn kt_state(&self) -> Result<Option<KtState>, ProfileError> {
        self.read_toml("kt.toml")
    }

    /// Saves the key-transparency state (mode 0600).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let profile = qpq_client::Profile::open(dir.path()).unwrap();
    /// let state = qpq_client::profile::KtState { log_key_hex: "11".repeat(32), last: None };
    /// profile.save_kt_state(&state).unwrap();
    /// assert_eq!(profile.kt_state().unwrap(), Some(state));
    /// ```
    pub fn save_kt_state(&self, state: &KtState) -> Result<(), ProfileError> {
        self.write_toml("kt.toml", state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::open(&dir.path().join("p")).unwrap();
        assert_eq!(profile.settings().unwrap(), Settings::default());
        assert!(profile.identity().unwrap().is_none());
        let identity = IdentityKey::generate();
        profile.save_identity(&identity).unwrap();
        assert_eq!(
            profile.identity().unwrap().unwrap().public(),
            identity.public()
        );
        let session = SavedSession {
            username: "alice".into(),
            token_hex: to_hex(&[1, 2, 255]),
            expires_at_unix_ms: 5,
        };
        profile.save_session(&session).unwrap();
        assert_eq!(profile.session().unwrap(), Some(session.clone()));
        assert_eq!(session.token().unwrap(), [1, 2, 255]);
        for name in ["identity.key", "session.toml"] {
            let mode = fs::metadata(profile.dir().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let mode = fs::metadata(profile.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        profile.clear_session().unwrap();
        assert!(profile.session().unwrap().is_none());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex(&to_hex(&[0, 9, 171])), Some(vec![0, 9, 171]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
