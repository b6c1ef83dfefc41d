//! TLS for quicproquo: certificates, pinning, and the rustls configurations QUIC needs.
//!
//! Trust is by pinning, not by certificate authorities: a client holds the server's exact
//! certificate (`--ca-cert`) and accepts nothing else. Servers offer (never require) client
//! certificates, so a federation peer can present its own pinned certificate over the same
//! port; which presented certificates are trusted is the application's decision, made on
//! [`ConnectionInfo::peer_certificate_sha256`](crate::ConnectionInfo::peer_certificate_sha256).
//! 0-RTT is off in both directions: replayable early data has no place in an RPC protocol with
//! non-idempotent methods.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// The ALPN protocol identifier of quicproquo.
pub const ALPN: &[u8] = b"qpq";

/// Why a TLS identity or configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a certificate or key file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("could not generate a self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the configuration (for example a key that does not match the certificate).
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// A certificate and its private key (DER), used by a server or by a federating peer.
pub struct TlsIdentity {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// The private key (PKCS#8 DER).
    key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_sha256", &hex(&self.cert_sha256()))
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Generates a self-signed certificate for the given DNS names (e.g. `localhost`).
    pub fn generate(names: &[&str]) -> Result<Self, TlsError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Self {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        })
    }

    /// Builds an identity from DER bytes.
    pub fn from_der(cert: Vec<u8>, pkcs8_key: Vec<u8>) -> Self {
        Self {
            cert: CertificateDer::from(cert),
            key: PrivatePkcs8KeyDer::from(pkcs8_key),
        }
    }

    /// Loads the certificate and key (DER files), or generates and saves a new pair when
    /// neither exists. Returns the identity and whether it was generated.
    ///
    /// The key file is written with mode 0600; both files are written to a temporary name,
    /// synced and renamed, so a crash never leaves half a key behind.
    pub fn load_or_generate(
        cert_path: &Path,
        key_path: &Path,
        names: &[&str],
    ) -> Result<(Self, bool), TlsError> {
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Ok((Self::load(cert_path, key_path)?, false)),
            (false, false) => {
                let identity = Self::generate(names)?;
                identity.save(cert_path, key_path)?;
                Ok((identity, true))
            }
            (true, false) => Err(TlsError::Config(format!(
                "certificate {} exists but its key {} is missing; restore the key or remove both to generate a new pair",
                cert_path.display(),
                key_path.display()
            ))),
            (false, true) => Err(TlsError::Config(format!(
                "key {} exists but its certificate {} is missing; restore the certificate or remove both to generate a new pair",
                key_path.display(),
                cert_path.display()
            ))),
        }
    }

    /// Loads a certificate and a PKCS#8 key from DER files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert = read(cert_path, "read certificate")?;
        let key = read(key_path, "read private key")?;
        Ok(Self::from_der(cert, key))
    }

    /// Saves the certificate and key as DER files (key with mode 0600).
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
        write_atomic(cert_path, self.cert.as_ref(), 0o644)?;
        write_atomic(key_path, self.key.secret_pkcs8_der(), 0o600)
    }

    /// SHA-256 of the certificate DER: the fingerprint peers pin.
    pub fn cert_sha256(&self) -> [u8; 32] {
        cert_sha256(self.cert.as_ref())
    }

    pub(crate) fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// SHA-256 of a certificate's DER bytes.
pub fn cert_sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Lowercase hex of bytes (for fingerprints in logs and messages).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a DER certificate file (e.g. the server certificate a client pins).
pub fn load_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    Ok(CertificateDer::from(read(path, "read certificate")?))
}

fn read(path: &Path, action: &'static str) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        action,
        path: path.display().to_string(),
        source,
    })
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |action: &'static str| {
        let path = path.display().to_string();
        move |source| TlsError::Io {
            action,
            path,
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io("create directory for"))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create"))?;
    file.write_all(bytes).map_err(io("write"))?;
    file.sync_all().map_err(io("sync"))?;
    fs::rename(&tmp, path).map_err(io("rename into place"))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io("sync directory of"))?;
    }
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a client decides to trust the server's certificate.
#[derive(Clone, Debug)]
pub enum ServerTrust {
    /// Accept only these exact certificates (DER). The normal and only safe choice.
    Pinned(Vec<CertificateDer<'static>>),
    /// Accept only certificates whose DER has one of these SHA-256 fingerprints (what
    /// [`TlsIdentity::cert_sha256`] returns). As safe as [`ServerTrust::Pinned`]; for
    /// configurations that carry a fingerprint instead of the certificate file, such as
    /// federation peers.
    PinnedSha256(Vec<[u8; 32]>),
    /// Accept any certificate. For local experiments only: anyone on the path can impersonate
    /// the server.
    DangerAcceptAnyCertificate,
}

/// The server's rustls configuration: TLS 1.3 only, ALPN `qpq`, 0-RTT off, client
/// certificates offered but not required. Exposed for tools that build their own endpoint.
pub fn server_crypto(identity: &TlsIdentity) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(OptionalClientCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key_der())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.max_early_data_size = 0;
    Ok(config)
}

/// The client's rustls configuration: TLS 1.3 only, ALPN `qpq`, 0-RTT off, the server
/// certificate checked by `trust`, and `identity` presented when given.
pub fn client_crypto(
    trust: &ServerTrust,
    identity: Option<&TlsIdentity>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedServerCert {
        pinned: pins(trust),
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(vec![identity.cert.clone()], identity.key_der())
            .map_err(|e| TlsError::Config(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    Ok(config)
}

/// The fingerprints a trust setting accepts; `None` accepts any certificate.
fn pins(trust: &ServerTrust) -> Option<Vec<[u8; 32]>> {
    match trust {
        ServerTrust::Pinned(certs) => Some(certs.iter().map(|c| cert_sha256(c)).collect()),
        ServerTrust::PinnedSha256(fingerprints) => Some(fingerprints.clone()),
        ServerTrust::DangerAcceptAnyCertificate => None,
    }
}

/// Accepts the server certificate only if its SHA-256 is one of the pinned fingerprints
/// (a pinned certificate file is pinned by its fingerprint, which identifies the DER bytes
/// exactly), and still checks the handshake signature so the server proves it holds the key.
#[derive(Debug)]
struct PinnedServerCert {
    /// `None`: accept any certificate (the `danger` option).
    pinned: Option<Vec<[u8; 32]>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pinned) = &self.pinned else {
            return Ok(ServerCertVerified::assertion());
        };
        let presented = cert_sha256(end_entity.as_ref());
        if pinned.contains(&presented) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate (sha256 {}) is not the pinned certificate",
                hex(&presented)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Lets a client present a certificate (federation peers do) without requiring one, and
/// checks its handshake signature; trust in the certificate itself is decided by pinning in
/// the application.
#[derive(Debug)]
struct OptionalClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("sub/server-cert.der");
        let key = dir.path().join("sub/server-key.der");
        let (first, generated) =
            TlsIdentity::load_or_generate(&cert, &key, &["localhost"]).unwrap();
        assert!(generated);
        let (second, generated) =
            TlsIdentity::load_or_generate(&cert, &key, &["localhost"]).unwrap();
        assert!(!generated);
        assert_eq!(first.cert_sha256(), second.cert_sha256());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        server_crypto(&second).unwrap();
    }

    #[test]
    fn pinning_by_fingerprint_accepts_only_the_pinned_certificates() {
        let pinned = TlsIdentity::generate(&["peer.example"]).unwrap();
        let other = TlsIdentity::generate(&["peer.example"]).unwrap();
        let name = ServerName::try_from("peer.example").unwrap();
        let verify = |trust: &ServerTrust, cert: &CertificateDer<'_>| {
            let verifier = PinnedServerCert {
                pinned: pins(trust),
                algorithms: provider().signature_verification_algorithms,
            };
            verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        };
        let by_hash = ServerTrust::PinnedSha256(vec![[0; 32], pinned.cert_sha256()]);
        assert!(verify(&by_hash, &pinned.cert).is_ok());
        let refused = verify(&by_hash, &other.cert).unwrap_err().to_string();
        assert!(refused.contains("not the pinned certificate"), "{refused}");
        assert!(refused.contains(&hex(&other.cert_sha256())), "{refused}");
        let by_file = ServerTrust::Pinned(vec![pinned.cert.clone()]);
        assert!(verify(&by_file, &pinned.cert).is_ok());
        assert!(verify(&by_file, &other.cert).is_err());
        assert!(verify(&ServerTrust::PinnedSha256(Vec::new()), &pinned.cert).is_err());
        client_crypto(&by_hash, Some(&other)).unwrap();
    }

    #[test]
    fn half_a_pair_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.der");
        let key = dir.path().join("k.der");
        TlsIdentity::generate(&["localhost"])
            .unwrap()
            .save(&cert, &key)
            .unwrap();
        fs::remove_file(&key).unwrap();
        let err = TlsIdentity::load_or_generate(&cert, &key, &["localhost"]).unwrap_err();
        assert!(err.to_string().contains("is missing"), "{err}");
    }
}
