//! Server configuration: command-line flags, environment variables and a TOML file.
//!
//! Precedence, highest first: a flag on the command line, its environment variable
//! (`QPQ_…`), the key in the `--config` file, the built-in default. A config file uses the
//! flag names with `_` or `-` (`data_dir = "/var/lib/qpq"`, `admin = ["alice"]`); an unknown
//! key or a bad value stops the server at start with a message naming the key.

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
    /// TOML file with any of these settings (flags and environment variables override it).
    #[arg(long, env = "QPQ_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to do instead of serving (nothing: serve).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// QUIC listen address (host:port).
    #[arg(long, env = "QPQ_LISTEN", default_value = "0.0.0.0:5001")]
    pub listen: SocketAddr,

    /// Directory for persisted state (database, keys, certificate). Created if missing.
    #[arg(long, env = "QPQ_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Where durable state lives: `embedded` (the default: a fjall database in
    /// `<data-dir>/db`) or a PostgreSQL URL, `postgres://USER:PASSWORD@HOST:PORT/DATABASE`
    /// (a socket directory as the host: `postgres://USER@%2Fvar%2Frun%2Fpostgresql/DATABASE`).
    /// The data directory still holds the certificate and the server's keys.
    #[arg(long, env = "QPQ_STORE", default_value = "embedded")]
    pub store: StoreChoice,

    /// How several instances of one domain tell each other about new messages and ended
    /// sessions: `local` (the default: one instance, nothing crosses processes) or a NATS URL,
    /// `nats://[USER:PASSWORD@]HOST:PORT`, shared by every instance (with a shared
    /// PostgreSQL `--store`). Bus messages are hints: parked waits also re-read the store.
    #[arg(long, env = "QPQ_BUS", default_value = "local")]
    pub bus: BusChoice,

    /// With a NATS `--bus`: how often (ms, 100 to 5000) a parked FetchWait re-reads its queue
    /// and session, so a lost bus message or a NATS outage delays but never loses.
    #[arg(long, env = "QPQ_BUS_RECHECK_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=5000))]
    pub bus_recheck_ms: u64,

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

    /// A federation peer: `DOMAIN=HOST:PORT=CERT_SHA256`, the peer's domain, its QUIC address
    /// and the SHA-256 of its TLS certificate in hex (the peer logs it at start as
    /// `cert_sha256`). Repeatable (comma-separated in the env var); needs --domain.
    #[arg(long = "peer", env = "QPQ_PEERS", value_delimiter = ',')]
    pub peers: Vec<PeerConfig>,

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

    /// Change a rate limit: CLASS[.account|.address|.pair]=COUNT/PERIOD (PERIOD: s, min, h,
    /// e.g. 5s; the count is also the burst) or CLASS=off; `all=off` turns every limit off.
    /// Repeatable, applied in order. Classes and defaults: docs/running.md.
    #[arg(long = "rate-limit", env = "QPQ_RATE_LIMITS", value_delimiter = ',')]
    pub rate_limit: Vec<crate::limits::RateLimitSetting>,

    /// Connections served at once; new ones beyond it are refused.
    #[arg(long, env = "QPQ_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Calls one connection may have in flight at once (its QUIC stream limit).
    #[arg(long, env = "QPQ_MAX_CALLS_PER_CONNECTION", default_value_t = 512)]
    pub max_calls_per_connection: u32,

    /// New clients a second that may handshake without first proving their address; beyond
    /// it (and up to ten seconds' worth in debt) every new client gets a stateless retry, so
    /// a flood of handshakes buys no TLS work. Raise it where many clients share one address
    /// (a large NAT) and reconnect at once.
    #[arg(long, env = "QPQ_NEW_CLIENTS_PER_SEC", default_value_t = 32)]
    pub new_clients_per_sec: u32,

    /// Sync the journal after every write instead of batching concurrent writers into one
    /// sync (group commit). Same durability, far lower throughput; for benchmarks.
    #[arg(long, env = "QPQ_SYNC_EACH_WRITE")]
    pub sync_each_write: bool,

    /// Log format: `text` for people, `json` (one object per line) for log collectors. The
    /// level comes from RUST_LOG (default `info`).
    #[arg(long, env = "QPQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve Prometheus metrics over plain HTTP at `http://<addr>/metrics` (off when unset;
    /// bind it to a private address).
    #[arg(long, env = "QPQ_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

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

/// Maintenance commands.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Copy the data directory to DIR, consistently, while the server keeps running (or
    /// directly when no server runs on --data-dir).
    ///
    /// Example: qpq-server --data-dir /var/lib/qpq backup --to /backups/qpq-2026-11-26
    Backup {
        /// An absent or empty directory to write the backup into.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into --data-dir, which must hold no database. Stop the server first.
    ///
    /// Example: qpq-server --data-dir /var/lib/qpq restore --from /backups/qpq-2026-11-26
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
    },
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A federation peer from `--peer DOMAIN=HOST:PORT=CERT_SHA256`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's domain (its users are `name@<domain>`).
    pub domain: String,
    /// Where the peer listens, `host:port` (a DNS name is resolved at each connect).
    pub address: String,
    /// SHA-256 of the peer's TLS certificate (DER): the only certificate accepted from it,
    /// both when this server connects to it and when it calls this server.
    pub cert_sha256: [u8; 32],
}

/// A domain as federation uses it: 1-253 bytes of `a-z 0-9 . -`, no empty label.
pub(crate) fn check_domain(domain: &str) -> Result<(), String> {
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{domain}` is not a valid domain: use lowercase DNS labels (a-z, 0-9, '-') separated by dots"
        ))
    }
}

/// The storage backend chosen by `--store`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// The embedded fjall database in `<data-dir>/db`.
    Embedded,
    /// A PostgreSQL database at this URL.
    Postgres(String),
}

// The URL may hold a password: never print it.
impl std::fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreChoice::Embedded => f.write_str("Embedded"),
            StoreChoice::Postgres(_) => f.write_str("Postgres(<url>)"),
        }
    }
}

impl std::str::FromStr for StoreChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "embedded" || s == "fjall" {
            return Ok(StoreChoice::Embedded);
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            crate::store::check_postgres_url(s)?;
            return Ok(StoreChoice::Postgres(s.to_owned()));
        }
        Err("--store takes `embedded` or a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)".into())
    }
}

/// The instance bus chosen by `--bus`.
#[derive(Clone, PartialEq, Eq)]
pub enum BusChoice {
    /// One instance: wake-ups and revocations stay in the process.
    Local,
    /// A NATS server at this URL, shared by the domain's instances.
    Nats(String),
}

// The URL may hold a password: never print it.
impl std::fmt::Debug for BusChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusChoice::Local => f.write_str("Local"),
            BusChoice::Nats(_) => f.write_str("Nats(<url>)"),
        }
    }
}

impl std::str::FromStr for BusChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "local" {
            return Ok(BusChoice::Local);
        }
        if let Some(rest) = s.strip_prefix("nats://") {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let host = host.split('/').next().unwrap_or_default();
            if host.is_empty() {
                return Err(
                    "--bus: the NATS URL has no HOST:PORT; use nats://[USER:PASSWORD@]HOST:PORT"
                        .into(),
                );
            }
            return Ok(BusChoice::Nats(s.to_owned()));
        }
        Err("--bus takes `local` or a NATS URL (nats://[USER:PASSWORD@]HOST:PORT)".into())
    }
}

impl std::str::FromStr for PeerConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage =
            "a peer is DOMAIN=HOST:PORT=CERT_SHA256, e.g. b.example=b.example:5001=<64 hex digits>";
        let mut parts = s.split('=');
        let (Some(domain), Some(address), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("`{s}`: {usage}"));
        };
        check_domain(domain)?;
        let port = address
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|&port| port != 0);
        if port.is_none() {
            return Err(format!(
                "peer {domain}: address `{address}` must be HOST:PORT with a port from 1 to 65535 ({usage})"
            ));
        }
        let digits: String = hash.chars().filter(|&c| c != ':').collect();
        let mut cert_sha256 = [0u8; 32];
        let valid_hex = digits.len() == 64
            && digits.is_ascii()
            && cert_sha256.iter_mut().enumerate().all(|(i, byte)| {
                u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                    .map(|b| *byte = b)
                    .is_ok()
            });
        if !valid_hex {
            return Err(format!(
                "peer {domain}: the certificate SHA-256 must be 64 hex digits, got `{hash}`"
            ));
        }
        Ok(Self {
            domain: domain.to_owned(),
            address: address.to_owned(),
            cert_sha256,
        })
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The command line or an environment variable is invalid (clap's message).
    #[error("{0}")]
    Args(#[from] clap::Error),
    /// The config file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key of the config file is unknown or its value is invalid.
    #[error("config file {path}: key `{key}`: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The key as written in the file.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Renders a TOML value as the command-line words of `--flag`.
fn flag_words(flag: &str, value: &toml::Value, takes_value: bool) -> Result<Vec<String>, String> {
    use toml::Value;
    let scalar = |v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Integer(i) => Ok(i.to_string()),
            Value::Float(f) => Ok(f.to_string()),
            Value::Boolean(b) => Ok(b.to_string()),
            other => Err(format!(
                "expected a string, number or boolean, found {}",
                other.type_str()
            )),
        }
    };
    if !takes_value {
        return match value {
            Value::Boolean(true) => Ok(vec![flag.to_owned()]),
            Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!(
                "expected true or false, found {}",
                other.type_str()
            )),
        };
    }
    match value {
        Value::Array(items) => {
            let mut words = Vec::new();
            for item in items {
                words.push(flag.to_owned());
                words.push(scalar(item)?);
            }
            Ok(words)
        }
        other => Ok(vec![flag.to_owned(), scalar(other)?]),
    }
}

impl Config {
    /// Loads the configuration from the process's arguments, environment and config file.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::args_os())
    }

    /// Loads the configuration from `args` (the first is the program name), the environment
    /// and the `--config` file they name.
    pub fn load_from<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::parser::ValueSource;
        use clap::{CommandFactory, FromArgMatches};
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let command = Self::command();
        let matches = command.clone().try_get_matches_from(&args)?;
        let config = Self::from_arg_matches(&matches)?;
        let Some(path) = config.config.clone() else {
            return Ok(config);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Toml {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut from_file: Vec<std::ffi::OsString> = Vec::new();
        for (key, value) in &table {
            let bad = |message: String| ConfigError::Key {
                path: path.clone(),
                key: key.clone(),
                message,
            };
            // A key is the flag's long name (`admin`, `data-dir`) with `-` or `_`.
            let long = key.replace('_', "-");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .filter(|a| a.get_id().as_str() != "config")
                .ok_or_else(|| {
                    bad("unknown setting; see `qpq-server --help` for the names".into())
                })?;
            if matches!(
                matches.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            let flag = format!("--{}", arg.get_long().unwrap_or_default());
            let words = flag_words(&flag, value, arg.get_action().takes_values()).map_err(bad)?;
            // Check this key alone, so an error names it.
            let mut alone: Vec<std::ffi::OsString> =
                vec![args.first().cloned().unwrap_or_default()];
            alone.extend(words.iter().map(Into::into));
            if let Err(error) = Self::command().try_get_matches_from(&alone) {
                let message = error.to_string();
                let message = message
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_owned();
                return Err(bad(message));
            }
            from_file.extend(words.into_iter().map(Into::into));
        }
        let mut merged = vec![args.first().cloned().unwrap_or_default()];
        merged.extend(from_file);
        merged.extend(args.iter().skip(1).cloned());
        let matches = Self::command().try_get_matches_from(&merged)?;
        Ok(Self::from_arg_matches(&matches)?)
    }

    /// Configuration for tests and embedding: listen on `listen`, store in `data_dir`,
    /// everything else at its default.
    pub fn for_data_dir(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::parse_from(["qpq-server"]);
        config.config = None;
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
