//! Server configuration: the command-line flags, each also settable by environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The quicproquo messenger server.
///
/// Serves the qpq protocol over QUIC (ALPN `qpq`) with state in a local data directory. On
/// first start it creates the directory and a self-signed TLS certificate; give clients the
/// certificate file (`<data-dir>/server-cert.der`) to pin.
///
/// Example: qpq-server --listen 0.0.0.0:5001 --data-dir /var/lib/qpq
#[derive(Clone, Debug, Parser)]
#[command(name = "qpq-server", version)]
pub struct Config {
    /// QUIC listen address (host:port).
    #[arg(long, env = "QPQ_LISTEN", default_value = "0.0.0.0:5001")]
    pub listen: SocketAddr,

    /// Directory for persisted state (database, keys, certificate). Created if missing.
    #[arg(long, env = "QPQ_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// TLS certificate (DER). Generated with its key when both are missing.
    /// [default: <data-dir>/server-cert.der]
    #[arg(long, env = "QPQ_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PKCS#8 DER, kept with mode 0600). [default: <data-dir>/server-key.der]
    #[arg(long, env = "QPQ_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// This server's federation domain (users here are `name@<domain>`).
    #[arg(long, env = "QPQ_DOMAIN")]
    pub domain: Option<String>,

    /// Usernames of server administrators (repeatable, or comma-separated in the env var).
    #[arg(long = "admin", env = "QPQ_ADMINS", value_delimiter = ',')]
    pub admins: Vec<String>,

    /// How long a session token from a login stays valid, in seconds (default 30 days).
    #[arg(long, env = "QPQ_SESSION_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub session_ttl_secs: u64,

    /// How long a login may take between OpaqueLoginStart and OpaqueLoginFinish, in
    /// milliseconds (at most one hour).
    #[arg(long, env = "QPQ_LOGIN_TTL_MS", default_value_t = 60_000)]
    pub login_ttl_ms: u64,

    /// Most messages a recipient's queue may hold.
    #[arg(long, env = "QPQ_QUEUE_MAX_MESSAGES", default_value_t = 10_000)]
    pub queue_max_messages: u64,

    /// Most payload bytes a recipient's queue may hold.
    #[arg(long, env = "QPQ_QUEUE_MAX_BYTES", default_value_t = 256 << 20)]
    pub queue_max_bytes: u64,

    /// FetchKeyPackage calls one caller may make per minute (a burst of this many, then
    /// spread out), so nobody drains another user's KeyPackages.
    #[arg(long, env = "QPQ_KEY_PACKAGE_FETCHES_PER_MINUTE", default_value_t = 60)]
    pub key_package_fetches_per_minute: u32,

    /// Sync the journal after every write instead of batching concurrent writers into one
    /// sync (group commit). Same durability, far lower throughput; for benchmarks.
    #[arg(long, env = "QPQ_SYNC_EACH_WRITE")]
    pub sync_each_write: bool,

    /// Largest blob (attachment) an upload may declare, in bytes.
    #[arg(long, env = "QPQ_BLOB_MAX_BYTES", default_value_t = 256 << 20)]
    pub blob_max_bytes: u64,

    /// Blob storage per account, in bytes: the size of every blob the account uploaded (each
    /// account is charged for its own uploads, even when identical content is stored once)
    /// plus its unfinished uploads.
    #[arg(long, env = "QPQ_BLOB_QUOTA_BYTES", default_value_t = 1 << 30)]
    pub blob_quota_bytes: u64,

    /// How recent the OPAQUE login of a session must be to fetch the account's recovery
    /// bundle, in seconds.
    #[arg(long, env = "QPQ_RECOVERY_FRESH_LOGIN_SECS", default_value_t = 300)]
    pub recovery_fresh_login_secs: u64,

    /// Allow push endpoints on loopback, private and link-local addresses. Off by default,
    /// so users cannot make the server post to services on its own network; turn it on for
    /// a UnifiedPush distributor on the same host or LAN.
    #[arg(long, env = "QPQ_PUSH_ALLOW_PRIVATE_ENDPOINTS")]
    pub push_allow_private_endpoints: bool,

    /// PEM file of the certificate authorities trusted for https:// push endpoints.
    /// [default: the system bundle, e.g. /etc/ssl/certs/ca-certificates.crt]
    #[arg(long, env = "QPQ_PUSH_CA_FILE")]
    pub push_ca_file: Option<PathBuf>,

    /// DNS names put in a generated certificate (comma-separated).
    #[arg(
        long,
        env = "QPQ_CERT_NAMES",
        value_delimiter = ',',
        default_value = "localhost"
    )]
    pub cert_names: Vec<String>,
}

impl Config {
    /// Configuration for tests and embedding: listen on `listen`, store in `data_dir`,
    /// everything else at its default.
    pub fn for_data_dir(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::parse_from(["qpq-server"]);
        config.listen = listen;
        config.data_dir = data_dir.into();
        config
    }

    /// The certificate path in effect.
    pub fn tls_cert_path(&self) -> PathBuf {
        self.tls_cert
            .clone()
            .unwrap_or_else(|| self.data_dir.join("server-cert.der"))
    }

    /// The key path in effect.
    pub fn tls_key_path(&self) -> PathBuf {
        self.tls_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("server-key.der"))
    }
}
