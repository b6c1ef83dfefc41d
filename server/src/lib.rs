//! The quicproquo messenger server: implements the generated [`QpqService`] over a local
//! data directory.
//!
//! - [`Config`]: flags and environment; [`start`]: the composition root (opens the store,
//!   binds QUIC, starts the background tasks); [`RunningServer`] is the handle tests and the
//!   binary use.
//! - `api/`: the handlers, one file per method group, each implementing its group's
//!   generated trait (`QpqService` is their composition).
//! - [`auth`]: the [`Authenticator`](qpq_runtime::Authenticator) that turns session tokens
//!   into callers before any handler runs, OPAQUE (the only module that names opaque-ke),
//!   session tokens and the failed-login limiter.
//! - `limits/`: rate limits per rate class and per KeyPackage requester.
//! - `background/`: the sweeper, the push gateway, presence.
//! - [`ops`]: metrics and backup. `federation/`: links, outboxes and relays to peer servers.
//! - [`store`]: durable state (the only module that names fjall); `live.rs`: connections and
//!   waiters in memory.
//! - `kt.rs`: the transparency log above the store (audits, the log key);
//!   `secret_file.rs`: the one writer of secret files in the data directory.
//!
//! The server never sees plaintext: message payloads are MLS ciphertext, opaque bytes here.
//!
//! [`QpqService`]: qpq_schema::QpqService

pub mod auth;
pub mod ops;
pub mod store;
pub mod testing;

mod api;
mod background;
mod bus;
mod config;
mod errors;
mod federation;
mod kt;
mod limits;
mod live;
mod secret_file;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use qpq_runtime::limits::Clock;
use qpq_runtime::{Server, ServerHandle, ServerOptions, TlsIdentity};
use qpq_schema::QpqServer;

use crate::auth::{LimiterConfig, LoginConfig, LoginLimiter, OpaqueServer};
use crate::live::Live;
use crate::store::{
    Durability, FjallStore, PgOptions, PgStore, QueueLimits, StorageEngine, Store, StoreOptions,
};

pub use config::{BusChoice, Command, Config, ConfigError, LogFormat, PeerConfig, StoreChoice};
pub use limits::{Rate, RateLimitSetting, Scope};

/// The server's state, shared by every call. `S` is the storage backend.
pub struct Messenger<S: Store> {
    config: Config,
    started: Instant,
    store: S,
    opaque: OpaqueServer,
    limiter: LoginLimiter,
    live: Arc<Live>,
    /// Wake-up requests for offline devices (see `background/push.rs`).
    push: background::push::PushQueue,
    /// Last calls of devices, until the sweeper records them.
    seen: api::device::SeenDevices,
    /// FetchKeyPackage calls per requester.
    key_fetches: limits::key_fetches::FetchLimiter,
    /// Signs key transparency tree heads.
    kt_log: kt::LogKey,
    /// Token buckets per rate class (see `limits/classes.rs`).
    rate_limits: limits::classes::RateLimiter,
    /// Federation peers and the links to them (see `federation/`).
    federation: federation::Federation,
    /// Where wake-ups and revocations go to the other instances (see `bus`).
    bus: bus::Bus,
    /// The one clock of the server.
    clock: Clock,
}

impl<S: Store> Messenger<S> {
    /// Builds the state over an open store and OPAQUE setup, loading (or creating) the key
    /// transparency log key in the data directory. `clock` is the time of every limit,
    /// expiry and timestamp the server keeps (the store and OPAQUE setup use the same).
    pub fn new(
        config: Config,
        store: S,
        opaque: OpaqueServer,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let kt_log = kt::LogKey::load_or_create(&config.data_dir)
            .context("could not load or create the key transparency log key")?;
        Ok(Self {
            key_fetches: limits::key_fetches::FetchLimiter::new(
                config.key_package_fetches_per_minute,
                clock.clone(),
            ),
            kt_log,
            rate_limits: limits::classes::RateLimiter::new(&config.rate_limit, clock.clone()),
            federation: federation::Federation::new(&config, None)?,
            config,
            started: Instant::now(),
            store,
            opaque,
            limiter: LoginLimiter::with_clock(LimiterConfig::default(), clock.clone()),
            live: Arc::new(Live::new(clock.clone())),
            push: background::push::PushQueue::default(),
            seen: api::device::SeenDevices::default(),
            bus: bus::Bus::Local,
            clock,
        })
    }

    fn is_serving(&self) -> bool {
        true
    }

    /// Now, Unix ms, on the server's clock.
    fn now_ms(&self) -> u64 {
        self.clock.unix_ms()
    }

    fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.config.session_ttl_secs)
    }
}

/// A server that is accepting connections.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The server's TLS identity (clients pin `identity.cert`).
    pub identity: TlsIdentity,
    /// Where `/metrics` is served, when `--metrics-listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    handle: ServerHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    engine: Option<Arc<dyn StorageEngine>>,
}

impl RunningServer {
    /// Stops accepting, closes connections and waits for the serve loop to end.
    pub async fn shutdown(self) {
        self.handle.shutdown();
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// The storage engine's own figures (commits, disk use), when the backend has them.
    pub fn engine(&self) -> Option<Arc<dyn StorageEngine>> {
        self.engine.clone()
    }

    /// A handle to stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Fault injection for tests: the next durable commit fails as if the engine's sync had,
    /// and the store refuses everything after it (Unavailable).
    ///
    /// # Panics
    ///
    /// When the store has no [`StorageEngine`] to inject into (a test of such a backend must
    /// not pass without the fault it asked for).
    #[doc(hidden)]
    pub fn inject_sync_failure_for_tests(&self) {
        self.engine
            .as_ref()
            .expect("this store has no engine to inject a fault into")
            .inject_commit_failure_for_tests();
    }
}

/// Opens the data directory, loads or generates the certificate, opens the store and starts
/// serving.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "could not create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let names: Vec<&str> = config.cert_names.iter().map(String::as_str).collect();
    let (identity, generated) =
        TlsIdentity::load_or_generate(&config.tls_cert_path(), &config.tls_key_path(), &names)
            .context("could not load or generate the TLS certificate")?;
    if generated {
        tracing::info!(
            cert = %config.tls_cert_path().display(),
            "generated a self-signed TLS certificate; clients pin this file"
        );
    }
    let login = LoginConfig {
        ttl: Duration::from_millis(config.login_ttl_ms),
        ..LoginConfig::default()
    };
    let clock = Clock::system();
    let opaque = OpaqueServer::load_or_create_with(&config.data_dir, login, clock.clone())
        .context("could not load or create the OPAQUE server setup")?;
    if matches!(config.bus, BusChoice::Nats(_)) && config.store == StoreChoice::Embedded {
        anyhow::bail!(
            "--bus nats://… joins instances that share one store, but --store is the embedded \
             one (its own directory per instance): give every instance the same --store postgres://…"
        );
    }
    match &config.store {
        StoreChoice::Embedded => {
            let store = open_embedded_store(&config, clock.clone()).await?;
            serve(config, identity, opaque, store, clock).await
        }
        StoreChoice::Postgres(url) => {
            let options = PgOptions {
                limits: queue_limits(&config),
                clock: clock.clone(),
                ..PgOptions::default()
            };
            let store = PgStore::connect(url, options)
                .await
                .context("could not open the PostgreSQL store")?;
            serve(config, identity, opaque, store, clock).await
        }
    }
}

/// The configured queue caps (TTLs keep their defaults).
fn queue_limits(config: &Config) -> QueueLimits {
    QueueLimits {
        max_messages: config.queue_max_messages,
        max_bytes: config.queue_max_bytes,
        ..QueueLimits::default()
    }
}

/// The embedded default store in `<data-dir>/db`, with the configured durability and queue
/// limits.
async fn open_embedded_store(config: &Config, clock: Clock) -> anyhow::Result<FjallStore> {
    let store_dir = config.data_dir.join(ops::backup::DB_DIR);
    let options = StoreOptions {
        durability: if config.sync_each_write {
            Durability::SyncEachWrite
        } else {
            Durability::GroupCommit
        },
        limits: queue_limits(config),
        clock,
    };
    let dir = store_dir.clone();
    tokio::task::spawn_blocking(move || FjallStore::open(&dir, options))
        .await
        .context("store open task failed")?
        .with_context(|| format!("could not open the database in {}", store_dir.display()))
}

/// Refuses to serve with an OPAQUE setup or KT log key other than the ones the store was
/// first served with: every existing account's login, or every client's log pin, would fail.
async fn bind_secrets<S: Store>(store: &S, opaque: [u8; 32], kt: [u8; 32]) -> anyhow::Result<()> {
    let differ = store
        .bind_secrets(vec![(SECRET_OPAQUE.into(), opaque), (SECRET_KT.into(), kt)])
        .await
        .context("could not check this instance's secrets against the store")?;
    if differ.is_empty() {
        return Ok(());
    }
    let files: Vec<String> = differ
        .iter()
        .map(|name| match name.as_str() {
            SECRET_OPAQUE => format!(
                "{} (logins of existing accounts would fail)",
                auth::opaque::SETUP_FILE_NAME
            ),
            SECRET_KT => format!(
                "{} (clients' pinned log key would not match)",
                kt::LOG_KEY_FILE
            ),
            other => other.to_string(),
        })
        .collect();
    anyhow::bail!(
        "this instance's {} differ from the ones this store was first served with: copy them \
         from the data directory of an instance that serves this store (docs/instances.md), or \
         restore the original files",
        files.join(" and ")
    )
}

/// Files of the data directory that every instance of one domain must hold the same copy of
/// (default names): certificate and key, OPAQUE setup, KT log key (docs/instances.md).
pub const INSTANCE_FILES: [&str; 4] = [
    "server-cert.der",
    "server-key.der",
    auth::opaque::SETUP_FILE_NAME,
    kt::LOG_KEY_FILE,
];

/// Names under which [`Store::bind_secrets`] keeps the fingerprints.
const SECRET_OPAQUE: &str = "opaque-server-setup";
const SECRET_KT: &str = "kt-log-key";

/// Serves on any store: builds the messenger, binds QUIC and starts the background tasks.
/// The store is held as the [`Store`] trait from here on; its engine's figures and backup
/// are reached through [`Store::engine`].
async fn serve<S: Store>(
    config: Config,
    identity: TlsIdentity,
    opaque: OpaqueServer,
    store: S,
    clock: Clock,
) -> anyhow::Result<RunningServer> {
    let engine = store.engine();
    let opaque_fingerprint = opaque.fingerprint();
    let metrics = Arc::new(ops::metrics::Metrics::new(ops::metrics::gauges(
        store.clone(),
    )));
    let (bus, subscription) = match &config.bus {
        BusChoice::Local => (bus::Bus::Local, None),
        BusChoice::Nats(url) => {
            let (publisher, subscription) = bus::nats::connect(url, config.domain.as_deref())
                .await
                .context("could not start the instance bus")?
                .split();
            (bus::Bus::Nats(publisher), Some(subscription))
        }
    };
    let messenger = Arc::new(
        Messenger::new(config.clone(), store, opaque, clock)?
            .with_federation_identity(&identity)?
            .with_bus(bus),
    );
    bind_secrets(
        &messenger.store,
        opaque_fingerprint,
        messenger.kt_log.fingerprint(),
    )
    .await?;
    let dispatch = QpqServer::new(messenger.clone(), messenger.clone()).into_dispatch();
    let mut options = ServerOptions::default();
    options.observer = Some(metrics.clone());
    options.max_connections = config.max_connections;
    options.max_concurrent_streams = config.max_calls_per_connection;
    options.unvalidated_handshakes_per_sec = config.new_clients_per_sec;
    let server = Server::bind(config.listen, &identity, dispatch, options)
        .with_context(|| format!("could not listen on {}", config.listen))?;
    let addr = server.local_addr()?;
    let handle = server.handle();
    let mut tasks = Vec::new();
    let mut metrics_addr = None;
    if let Some(listen) = config.metrics_listen {
        let listener = ops::metrics::bind(listen)
            .await
            .with_context(|| format!("could not listen for metrics on {listen}"))?;
        metrics_addr = Some(listener.local_addr()?);
        tracing::info!(addr = %listen, "serving Prometheus metrics at /metrics");
        tasks.push(tokio::spawn(ops::metrics::serve(listener, metrics)));
    }
    if let Some(subscription) = subscription {
        tasks.push(tokio::spawn(bus::nats::run(
            messenger.clone(),
            subscription,
        )));
    }
    tasks.push(tokio::spawn(background::presence::run(messenger.clone())));
    if let Some(engine) = &engine {
        let control = ops::backup::bind_control(&config.data_dir)?;
        tasks.push(tokio::spawn(ops::backup::serve_control(
            control,
            Arc::clone(engine),
            config.data_dir.clone(),
        )));
    }
    tasks.push(tokio::spawn(background::push::run(
        messenger.clone(),
        background::push::HttpPushGateway::new(&config),
    )));
    tasks.extend(messenger.spawn_relays());
    tasks.push(tokio::spawn(background::sweeper::run(messenger)));
    tasks.push(tokio::spawn(server.serve()));
    tracing::info!(
        %addr,
        cert_sha256 = %qpq_runtime::tls::hex(&identity.cert_sha256()),
        "qpq-server listening"
    );
    Ok(RunningServer {
        addr,
        metrics_addr,
        identity,
        handle,
        tasks,
        engine,
    })
}
