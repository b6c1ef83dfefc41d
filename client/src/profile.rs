//! The profile directory: who this client is and its session, kept between runs.
//!
//! Layout (every file written atomically: temporary file, fsync, rename):
//! - `profile.toml` (0600): username, server address, pinned certificate path.
//! - `identity.key` (0600): the 32-byte Ed25519 secret of the identity key.
//! - `session.toml` (0600): the session token and its expiry.
//!
//! The directory itself is created with mode 0700.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::IdentityKey;

/// Why the profile could not be read or written.
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
    pub fn token(&self) -> Result<Vec<u8>, ProfileError> {
        from_hex(&self.token_hex).ok_or_else(|| ProfileError::Damaged {
            path: PathBuf::from("session.toml"),
            why: "token is not hex".into(),
        })
    }
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    qpq_runtime::tls::hex(bytes)
}

/// Parses lowercase or uppercase hex.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A profile directory.
#[derive(Clone, Debug)]
pub struct Profile {
    dir: PathBuf,
}

impl Profile {
    /// Opens (creating with mode 0700) the profile in `dir`.
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
    pub fn settings(&self) -> Result<Settings, ProfileError> {
        Ok(self.read_toml("profile.toml")?.unwrap_or_default())
    }

    /// Saves the settings.
    pub fn save_settings(&self, settings: &Settings) -> Result<(), ProfileError> {
        self.write_toml("profile.toml", settings)
    }

    /// The identity key, if one was generated.
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
    pub fn save_identity(&self, identity: &IdentityKey) -> Result<(), ProfileError> {
        self.write("identity.key", &identity.secret())
    }

    /// The saved session, if any.
    pub fn session(&self) -> Result<Option<SavedSession>, ProfileError> {
        self.read_toml("session.toml")
    }

    /// Saves the session (mode 0600).
    pub fn save_session(&self, session: &SavedSession) -> Result<(), ProfileError> {
        self.write_toml("session.toml", session)
    }

    /// Forgets the session.
    pub fn clear_session(&self) -> Result<(), ProfileError> {
        let path = self.dir.join("session.toml");
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ProfileError::Io { path, source }),
        }
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
