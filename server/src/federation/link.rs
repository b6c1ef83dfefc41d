//! Links to federation peers: one QUIC connection per configured peer, opened on first use,
//! re-opened after it fails, with mutual TLS (this server presents its own certificate and
//! accepts only the peer's pinned fingerprint), plus what the last calls taught about the
//! peer's health.
//!
//! Not here: what is sent over a link (the relay worker in `relay.rs`, the proxies in
//! `crate::api::federation`), or who may call this server (the authenticator in `crate::auth` asks
//! [`Federation::domain_of_certificate`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::bail;
use qpq_runtime::{ClientOptions, RpcError, ServerTrust, Status, TlsIdentity};
use qpq_schema::{QpqClient, proto};
use tokio::sync::Notify;

use crate::config::{Config, PeerConfig};

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The configured peers of this server.
pub(crate) struct Federation {
    /// This server's domain (`None` only when no peer is configured).
    pub(crate) domain: Option<String>,
    peers: BTreeMap<String, Arc<PeerLink>>,
    by_certificate: HashMap<[u8; 32], String>,
}

impl Federation {
    /// The peers of `config`. `identity` is the certificate this server presents to them
    /// (`None`: peers are known, so they may call here, but this server cannot call them).
    pub(crate) fn new(config: &Config, identity: Option<TlsIdentity>) -> anyhow::Result<Self> {
        if let Some(domain) = &config.domain {
            crate::config::check_domain(domain).map_err(anyhow::Error::msg)?;
        }
        if !config.peers.is_empty() && config.domain.is_none() {
            bail!(
                "federation peers are configured but this server has no --domain: set it, since peers accept only senders of the domain they know this server by"
            );
        }
        let mut peers = BTreeMap::new();
        let mut by_certificate = HashMap::new();
        for peer in &config.peers {
            if config.domain.as_deref() == Some(peer.domain.as_str()) {
                bail!("--peer {}: that is this server's own domain", peer.domain);
            }
            if let Some(other) = by_certificate.insert(peer.cert_sha256, peer.domain.clone()) {
                bail!(
                    "--peer {} and --peer {other} pin the same certificate; each peer needs its own",
                    peer.domain
                );
            }
            let link = Arc::new(PeerLink::new(peer, identity.clone()));
            if peers.insert(peer.domain.clone(), link).is_some() {
                bail!("--peer {} is configured twice", peer.domain);
            }
        }
        Ok(Self {
            domain: config.domain.clone(),
            peers,
            by_certificate,
        })
    }

    /// The link to the peer of `domain`, when it is configured.
    pub(crate) fn peer(&self, domain: &str) -> Option<&Arc<PeerLink>> {
        self.peers.get(domain)
    }

    /// Every peer, ordered by domain.
    pub(crate) fn peers(&self) -> impl Iterator<Item = &Arc<PeerLink>> {
        self.peers.values()
    }

    /// The peer domain whose pinned certificate has this SHA-256.
    pub(crate) fn domain_of_certificate(&self, sha256: &[u8; 32]) -> Option<&str> {
        self.by_certificate.get(sha256).map(String::as_str)
    }
}

/// Why a call to a peer got no answer from it.
#[derive(Debug)]
pub(crate) enum PeerError {
    /// No connection, or it failed during the call (for people; no internals of ours).
    Unreachable(String),
    /// The peer answered with this status.
    Refused(Status),
}

impl PeerError {
    /// The status for a local client whose request needed the peer.
    pub(crate) fn to_status(&self, domain: &str) -> Status {
        use qpq_runtime::StatusCode;
        match self {
            PeerError::Unreachable(why) => {
                Status::unavailable(format!("could not reach {domain}: {why}; retry later"))
                    .with_retry_after_ms(5_000)
            }
            PeerError::Refused(status) => {
                let message = format!("{domain} answered: {}", status.message());
                match status.code() {
                    StatusCode::BadRequest => Status::bad_request(message),
                    StatusCode::NotFound => Status::not_found(message),
                    StatusCode::RateLimited => {
                        Status::rate_limited(message, status.retry_after_ms().unwrap_or(1_000))
                    }
                    // Unauthorized or Forbidden here is about the two servers' trust, not the
                    // client's session; anything else is the peer's trouble.
                    _ => Status::unavailable(message).with_retry_after_ms(5_000),
                }
            }
        }
    }
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Unreachable(why) => write!(f, "unreachable: {why}"),
            PeerError::Refused(status) => {
                write!(
                    f,
                    "refused with {}: {}",
                    status.code().name(),
                    status.message()
                )
            }
        }
    }
}

/// What this server last learned about a peer.
#[derive(Clone, Debug, Default)]
pub(crate) struct LinkHealth {
    /// The last attempt reached the peer.
    pub(crate) reachable: bool,
    /// Round trip of the last Health probe, ms (0 = unknown).
    pub(crate) latency_ms: u32,
    /// Why the last attempt failed; empty when it succeeded.
    pub(crate) last_error: String,
    /// Last successful call, Unix ms (0 = never).
    pub(crate) last_success_ms: u64,
}

/// One peer: its address and pin, the connection, and its health.
pub(crate) struct PeerLink {
    /// The peer's domain.
    pub(crate) domain: String,
    address: String,
    /// `None` when this server has no certificate to present.
    options: Option<ClientOptions>,
    client: tokio::sync::Mutex<Option<QpqClient>>,
    health: Mutex<LinkHealth>,
    /// Wakes the relay worker when the outbox gets a message for this peer.
    pub(crate) wake: Notify,
}

impl PeerLink {
    fn new(peer: &PeerConfig, identity: Option<TlsIdentity>) -> Self {
        let options = identity.map(|identity| {
            let mut options =
                ClientOptions::with_trust(ServerTrust::PinnedSha256(vec![peer.cert_sha256]))
                    .with_identity(identity);
            options.server_name = peer.domain.clone();
            options.connect_timeout = CONNECT_TIMEOUT;
            options
        });
        Self {
            domain: peer.domain.clone(),
            address: peer.address.clone(),
            options,
            client: tokio::sync::Mutex::new(None),
            health: Mutex::new(LinkHealth::default()),
            wake: Notify::new(),
        }
    }

    /// A snapshot of the peer's health.
    pub(crate) fn health(&self) -> LinkHealth {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, update: impl FnOnce(&mut LinkHealth)) {
        update(&mut self.health.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The open connection, or a new one.
    async fn client(&self) -> Result<QpqClient, String> {
        let Some(options) = &self.options else {
            return Err("this server has no TLS identity to present to peers".into());
        };
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            if client.connection().close_reason().is_none() {
                return Ok(client.clone());
            }
            *slot = None;
        }
        let addrs = tokio::net::lookup_host(self.address.as_str())
            .await
            .map_err(|e| format!("could not resolve {}: {e}", self.address))?;
        let mut last = format!("{} resolved to no address", self.address);
        for addr in addrs {
            match qpq_runtime::connect(addr, options).await {
                Ok(connection) => {
                    tracing::info!(peer = %self.domain, %addr, "connected to federation peer");
                    let client = QpqClient::new(connection);
                    *slot = Some(client.clone());
                    return Ok(client);
                }
                Err(error) => last = error.to_string(),
            }
        }
        Err(last)
    }

    /// Closes the connection so the next call opens a new one.
    async fn reset(&self) {
        if let Some(client) = self.client.lock().await.take() {
            client.connection().close();
        }
    }

    /// Runs `call` on the peer's connection and records the outcome in the link's health.
    pub(crate) async fn call<T, F, Fut>(&self, call: F) -> Result<T, PeerError>
    where
        F: FnOnce(QpqClient) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        let client = match self.client().await {
            Ok(client) => client,
            Err(why) => {
                self.failed(&why);
                return Err(PeerError::Unreachable(why));
            }
        };
        match call(client).await {
            Ok(value) => {
                self.record(|h| {
                    h.reachable = true;
                    h.last_error.clear();
                    h.last_success_ms = qpq_runtime::limits::Clock::system().unix_ms();
                });
                Ok(value)
            }
            Err(RpcError::Status(status)) => {
                self.record(|h| {
                    h.reachable = true;
                    h.last_error = format!(
                        "{} answered {}: {}",
                        self.domain,
                        status.code().name(),
                        status.message()
                    );
                });
                Err(PeerError::Refused(status))
            }
            Err(other) => {
                // Whatever broke, the next call starts from a fresh connection.
                self.reset().await;
                let why = other.to_string();
                self.failed(&why);
                Err(PeerError::Unreachable(why))
            }
        }
    }

    fn failed(&self, why: &str) {
        tracing::debug!(peer = %self.domain, error = %why, "federation peer unreachable");
        self.record(|h| {
            h.reachable = false;
            h.last_error = why.to_owned();
        });
    }

    /// Calls the peer's Health and records the round trip as its latency.
    pub(crate) async fn probe(&self) -> Result<(), PeerError> {
        let started = Instant::now();
        let answer = self
            .call(|client| async move { client.health(proto::HealthRequest {}).await })
            .await?;
        let latency = u32::try_from(started.elapsed().as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        if answer.domain != self.domain {
            tracing::warn!(
                peer = %self.domain,
                reported = %answer.domain,
                "federation peer reports another domain in Health"
            );
        }
        self.record(|h| h.latency_ms = latency);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn peer_flag_parses_and_names_what_is_wrong() {
        let peer: PeerConfig = format!("b.example=127.0.0.1:5001={HASH}").parse().unwrap();
        assert_eq!(peer.domain, "b.example");
        assert_eq!(peer.address, "127.0.0.1:5001");
        assert_eq!(peer.cert_sha256[1], 0x11);
        let colons: String = HASH
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        let peer: PeerConfig = format!("b.example=[::1]:5001={colons}").parse().unwrap();
        assert_eq!(peer.address, "[::1]:5001");
        assert_eq!(peer.cert_sha256[31], 0xff);

        for (bad, says) in [
            ("b.example", "DOMAIN=HOST:PORT=CERT_SHA256"),
            ("B.example=h:1=00", "not a valid domain"),
            ("b..example=h:1=00", "not a valid domain"),
            ("b.example=h=00", "HOST:PORT"),
            ("b.example=h:0=00", "HOST:PORT"),
            ("b.example=:5=00", "HOST:PORT"),
            ("b.example=h:5=00", "64 hex digits"),
            ("b.example=h:5=a=b", "DOMAIN=HOST:PORT=CERT_SHA256"),
        ] {
            let error = bad.parse::<PeerConfig>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
        let not_hex = format!("b.example=h:5={}", "g".repeat(64));
        assert!(not_hex.parse::<PeerConfig>().is_err());
    }

    fn config(domain: Option<&str>, peers: &[&str]) -> Config {
        let mut config = Config::for_data_dir("127.0.0.1:0".parse().unwrap(), "/nonexistent");
        config.domain = domain.map(str::to_owned);
        config.peers = peers.iter().map(|p| p.parse().unwrap()).collect();
        config
    }

    #[test]
    fn configuration_mistakes_stop_the_server() {
        let b = format!("b.example=h:5={HASH}");
        let c_same_cert = format!("c.example=h:6={HASH}");
        let own = format!("a.example=h:5={}", "1".repeat(64));
        for (config, says) in [
            (config(None, &[&b]), "no --domain"),
            (config(Some("a.example"), &[&own]), "own domain"),
            (
                config(Some("a.example"), &[&b, &c_same_cert]),
                "same certificate",
            ),
            (config(Some("A"), &[]), "not a valid domain"),
        ] {
            let error = Federation::new(&config, None).err().unwrap().to_string();
            assert!(error.contains(says), "{error}");
        }
        let federation = Federation::new(&config(Some("a.example"), &[&b]), None).unwrap();
        let pinned = b.parse::<PeerConfig>().unwrap().cert_sha256;
        assert_eq!(federation.domain_of_certificate(&pinned), Some("b.example"));
        assert_eq!(federation.domain_of_certificate(&[0; 32]), None);
        assert!(federation.peer("b.example").is_some());
        assert!(federation.peer("c.example").is_none());
    }
}
