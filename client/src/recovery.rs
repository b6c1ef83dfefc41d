//! Client-side encryption of the recovery bundle.
//!
//! The server stores one opaque bundle per account (StoreRecoveryBundle) and hands it back
//! only to a session with a fresh login (FetchRecoveryBundle). What makes it safe to keep
//! there is that it is encrypted here, with a key only the password can recreate: the OPAQUE
//! `export_key` of a login ([`Login::export_key`](crate::Login)), which the
//! server never learns. The bundle format is
//! `"qpq-recovery-v1" ‖ nonce (12) ‖ ChaCha20-Poly1305 ciphertext`, with the key
//! `HKDF-SHA256(ikm = export_key, info = "qpq-recovery-bundle-v1")` and the prefix as
//! associated data. Pure functions: no I/O.
//!
//! ```no_run
//! # async fn run(client: qpq_client::QpqClient) -> Result<(), Box<dyn std::error::Error>> {
//! let session = qpq_client::login(&client, "alice", b"correct horse", None).await?;
//! let bundle = qpq_client::recovery::seal(&session.export_key, b"my secrets")?;
//! client
//!     .store_recovery_bundle(qpq_client::proto::StoreRecoveryBundleRequest {
//!         session_token: session.token.clone(),
//!         bundle: bundle.into(),
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// The format prefix, also the associated data.
const MAGIC: &[u8] = b"qpq-recovery-v1";
/// HKDF info string of the bundle key.
const KEY_INFO: &[u8] = b"qpq-recovery-bundle-v1";
/// Nonce size.
const NONCE_LEN: usize = 12;
/// Tag size.
const TAG_LEN: usize = 16;
/// Largest bundle the server stores (recovery.proto).
///
/// ```
/// let bundle = qpq_client::recovery::seal(b"k", &[0; 10]).unwrap();
/// assert!(bundle.len() <= qpq_client::recovery::MAX_BUNDLE);
/// ```
pub const MAX_BUNDLE: usize = 60 * 1024;
/// Largest plaintext that fits in a bundle.
///
/// ```
/// use qpq_client::recovery::{MAX_PLAINTEXT, seal};
/// assert!(seal(b"k", &vec![0; MAX_PLAINTEXT]).is_ok());
/// assert!(seal(b"k", &vec![0; MAX_PLAINTEXT + 1]).is_err());
/// ```
pub const MAX_PLAINTEXT: usize = MAX_BUNDLE - MAGIC.len() - NONCE_LEN - TAG_LEN;

/// Why a bundle could not be sealed or opened.
///
/// ```
/// let error = qpq_client::recovery::open(b"export key", b"not a bundle").unwrap_err();
/// assert!(error.to_string().contains("not a qpq recovery bundle"));
/// ```
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The plaintext does not fit in the server's limit.
    #[error("the recovery data is {0} bytes; at most {MAX_PLAINTEXT} fit in a bundle")]
    TooLarge(usize),
    /// The bytes do not start with the bundle prefix.
    #[error("this is not a qpq recovery bundle (wrong format or version)")]
    Format,
    /// Decryption failed: another password's key, or the bundle was altered.
    #[error(
        "the recovery bundle does not decrypt with this password's key (another password, or the bundle was altered)"
    )]
    Decrypt,
    /// The export key is empty.
    #[error("the export key is empty")]
    NoKey,
}

fn cipher(export_key: &[u8]) -> Result<ChaCha20Poly1305, RecoveryError> {
    if export_key.is_empty() {
        return Err(RecoveryError::NoKey);
    }
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, export_key)
        .expand(KEY_INFO, &mut key)
        .map_err(|_| RecoveryError::NoKey)?;
    Ok(ChaCha20Poly1305::new(Key::from_slice(&key)))
}

/// Encrypts `plaintext` into a bundle with a key derived from `export_key` and a random nonce.
///
/// ```
/// use qpq_client::recovery::{open, seal};
/// let bundle = seal(b"an export key", b"secret").unwrap();
/// assert_eq!(open(b"an export key", &bundle).unwrap(), b"secret");
/// assert!(open(b"another key", &bundle).is_err());
/// ```
pub fn seal(export_key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, RecoveryError> {
    use rand::RngCore;
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(RecoveryError::TooLarge(plaintext.len()));
    }
    let cipher = cipher(export_key)?;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: MAGIC,
            },
        )
        .map_err(|_| RecoveryError::TooLarge(plaintext.len()))?;
    let mut bundle = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ciphertext.len());
    bundle.extend_from_slice(MAGIC);
    bundle.extend_from_slice(&nonce);
    bundle.extend_from_slice(&ciphertext);
    Ok(bundle)
}

/// Decrypts a bundle made by [`seal`] with the same `export_key`.
///
/// ```
/// let bundle = qpq_client::recovery::seal(b"k", b"data").unwrap();
/// assert_eq!(qpq_client::recovery::open(b"k", &bundle).unwrap(), b"data");
/// ```
pub fn open(export_key: &[u8], bundle: &[u8]) -> Result<Vec<u8>, RecoveryError> {
    let rest = bundle.strip_prefix(MAGIC).ok_or(RecoveryError::Format)?;
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(RecoveryError::Format);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    cipher(export_key)?
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: MAGIC,
            },
        )
        .map_err(|_| RecoveryError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_alteration_is_refused() {
        let bundle = seal(b"key", b"hello").unwrap();
        assert_eq!(open(b"key", &bundle).unwrap(), b"hello");
        // Fresh nonce each time.
        assert_ne!(seal(b"key", b"hello").unwrap(), bundle);
        for i in 0..bundle.len() {
            let mut altered = bundle.clone();
            altered[i] ^= 1;
            assert!(open(b"key", &altered).is_err(), "byte {i}");
        }
        assert_eq!(open(b"kez", &bundle), Err(RecoveryError::Decrypt));
        assert_eq!(open(b"key", &bundle[..20]), Err(RecoveryError::Format));
    }

    #[test]
    fn limits() {
        let largest = seal(b"key", &vec![0; MAX_PLAINTEXT]).unwrap();
        assert_eq!(largest.len(), MAX_BUNDLE);
        assert_eq!(
            seal(b"key", &vec![0; MAX_PLAINTEXT + 1]),
            Err(RecoveryError::TooLarge(MAX_PLAINTEXT + 1))
        );
        assert_eq!(seal(b"", b"x"), Err(RecoveryError::NoKey));
    }
}
