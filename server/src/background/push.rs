//! Content-free wake-ups of offline devices through push services.
//!
//! When a message is queued for an identity none of whose devices is connected, `api/delivery.rs`
//! calls [`PushQueue::request`] (it never blocks and never fails the enqueue). The [`run`]
//! task takes the request, looks up the identity's devices that have push tokens and asks the
//! [`PushGateway`] to wake each one, with at most [`MAX_IN_FLIGHT`] deliveries at a time;
//! failures are logged. Requests for an identity that is already waiting are coalesced, so a
//! burst of messages costs one wake-up per device.
//!
//! A wake-up carries no message content, sender or count: it only tells the device to connect
//! and fetch. [`HttpPushGateway`] is the one implementation: it POSTs a fixed tiny body to
//! UnifiedPush endpoints and an empty body to Web Push (RFC 8030) endpoints, as one HTTP/1.1
//! request per wake-up, over TCP for `http://` and over TLS (rustls, the server's own TLS
//! library, driven on a blocking thread) for `https://`. The certificate authorities trusted
//! for `https://` come from `--push-ca-file`, else from the system bundle; without any, the
//! server logs at start that https wake-ups cannot be delivered, and each failure is logged.
//!
//! What it does not do, and says so in logs rather than pretending:
//! - **APNs and FCM** need credentials issued by Apple and Google, which this server has no
//!   way to hold: such tokens are stored (clients can register them), and each wake-up that
//!   would need one is logged as not delivered.
//! - Web Push services that demand VAPID authentication refuse the unauthenticated request;
//!   the refusal is logged.
//!
//! Endpoints on loopback, private, link-local and similar addresses are refused unless
//! `--push-allow-private-endpoints` is set, so a user cannot make the server POST to
//! services on its own network.

use std::collections::HashSet;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use qpq_runtime::tls::hex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

use crate::store::{IdentityKey, PushPlatform, PushToken, Store};
use crate::{Config, Messenger};

/// Most wake-up deliveries in flight at once.
pub(crate) const MAX_IN_FLIGHT: usize = 16;
/// Identities that may wait for their wake-ups; beyond this a request is dropped (and logged).
const QUEUE: usize = 4_096;
/// Most accounts whose push tokens are read at once (one store read for a burst).
const LOOKUP_BATCH: usize = 256;
/// Longest a delivery may take (connect, send, read the status line).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Body of a UnifiedPush wake-up: fixed, carries nothing about the message.
pub(crate) const UNIFIED_PUSH_BODY: &[u8] = b"qpq:wake";
/// Longest push service answer head we read.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;
/// Where Linux distributions keep the system's trusted certificate authorities.
const SYSTEM_CA_FILES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Why a wake-up was not delivered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    /// The platform needs credentials this server does not have.
    #[error("delivery through {0} needs credentials this server does not have; device not woken")]
    NoCredentials(&'static str),
    /// The endpoint URL cannot be used.
    #[error("unusable endpoint: {0}")]
    Endpoint(String),
    /// Network failure.
    #[error("could not reach the push endpoint: {0}")]
    Io(String),
    /// The push service answered with a non-2xx status.
    #[error("push endpoint answered HTTP {0}")]
    Status(u16),
}

/// Sends one content-free wake-up to one device.
pub(crate) trait PushGateway: Send + Sync + 'static {
    /// Wakes the device behind `target`.
    fn wake(&self, target: &PushToken) -> impl Future<Output = Result<(), PushError>> + Send;
}

/// A parsed `http://` or `https://` endpoint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HttpEndpoint {
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    target: String,
}

/// Parses a push endpoint URL; the error is a sentence for the person registering it.
pub(crate) fn parse_endpoint(url: &str) -> Result<HttpEndpoint, String> {
    let (tls, rest) = match (url.get(..8), url.get(..7)) {
        (Some(scheme), _) if scheme.eq_ignore_ascii_case("https://") => (true, &url[8..]),
        (_, Some(scheme)) if scheme.eq_ignore_ascii_case("http://") => (false, &url[7..]),
        _ => return Err("push endpoint must be an https:// or http:// URL".into()),
    };
    let default_port = if tls { 443 } else { 80 };
    if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("push endpoint URL must not contain spaces or control characters".into());
    }
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.contains('@') {
        return Err("push endpoint URL must not contain user information".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("push endpoint has an unterminated [IPv6] host")?;
        let port = match after {
            "" => default_port,
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or("push endpoint has an invalid port")?,
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (
                host.to_owned(),
                port.parse()
                    .map_err(|_| "push endpoint has an invalid port")?,
            ),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return Err("push endpoint URL has no host".into());
    }
    Ok(HttpEndpoint {
        tls,
        host,
        port,
        target,
    })
}

/// Whether an address is one a user must not point the server at (loopback, private,
/// link-local, unspecified, multicast, shared or documentation ranges).
pub(crate) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Checks an endpoint URL at registration: parseable, and not a literal private address
/// unless allowed. (Names are checked again after resolution at delivery.)
pub(crate) fn check_endpoint(url: &str, allow_private: bool) -> Result<(), String> {
    let endpoint = parse_endpoint(url)?;
    if !allow_private {
        let literal = endpoint.host.parse::<IpAddr>().ok();
        if literal.is_some_and(is_private) || endpoint.host.eq_ignore_ascii_case("localhost") {
            return Err(
                "push endpoint is a loopback or private address, which this server does not post to (an operator can allow it with --push-allow-private-endpoints)"
                    .into(),
            );
        }
    }
    Ok(())
}

/// The one real [`PushGateway`]: HTTP/1.1 POST to UnifiedPush and Web Push endpoints.
pub(crate) struct HttpPushGateway {
    allow_private: bool,
    /// Client TLS settings for `https://` endpoints; `None` when no CA could be loaded.
    tls: Option<Arc<ClientConfig>>,
}

/// Loads the certificate authorities of a PEM file.
fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .filter_map(Result::ok);
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(format!("{} holds no usable certificates", path.display()));
    }
    Ok(roots)
}

/// TLS client settings trusting `ca_file`, or the first system bundle found.
fn client_tls(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca_file {
        Some(path) => load_roots(path)?,
        None => SYSTEM_CA_FILES
            .iter()
            .find_map(|p| load_roots(Path::new(p)).ok())
            .ok_or_else(|| {
                format!(
                    "no system CA bundle found (looked at {})",
                    SYSTEM_CA_FILES.join(", ")
                )
            })?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl HttpPushGateway {
    /// Builds the gateway from the server configuration (`--push-allow-private-endpoints`,
    /// `--push-ca-file`); logs when https endpoints cannot be served.
    pub(crate) fn new(config: &Config) -> Self {
        Self::with_ca_file(
            config.push_allow_private_endpoints,
            config.push_ca_file.as_deref(),
        )
    }

    fn with_ca_file(allow_private: bool, ca_file: Option<&Path>) -> Self {
        let tls = match client_tls(ca_file) {
            Ok(tls) => Some(tls),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "no trusted certificate authorities for https push endpoints: wake-ups to https:// endpoints will not be delivered (set --push-ca-file)"
                );
                None
            }
        };
        Self { allow_private, tls }
    }

    async fn post(&self, url: &str, body: &[u8]) -> Result<(), PushError> {
        let endpoint = parse_endpoint(url).map_err(PushError::Endpoint)?;
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| PushError::Io(format!("cannot resolve {}: {e}", endpoint.host)))?
                .filter(|a| self.allow_private || !is_private(a.ip()))
                .collect();
        if addrs.is_empty() {
            return Err(PushError::Endpoint(format!(
                "{} resolves to no address this server posts to",
                endpoint.host
            )));
        }
        let host_header = if endpoint.host.contains(':') {
            format!("[{}]:{}", endpoint.host, endpoint.port)
        } else {
            format!("{}:{}", endpoint.host, endpoint.port)
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {host_header}\r\nTTL: 86400\r\nUrgency: high\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            endpoint.target,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let status = if endpoint.tls {
            let tls = self.tls.clone().ok_or_else(|| {
                PushError::Endpoint(
                    "no trusted certificate authorities are configured for https endpoints (--push-ca-file)".into(),
                )
            })?;
            let host = endpoint.host.clone();
            tokio::task::spawn_blocking(move || post_tls(tls, host, &addrs, &request))
                .await
                .map_err(|e| PushError::Io(format!("TLS task failed: {e}")))??
        } else {
            post_plain(&addrs, &request).await?
        };
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(PushError::Status(status))
        }
    }
}

/// Sends `request` over plain TCP to the first address that accepts; returns the status.
async fn post_plain(addrs: &[SocketAddr], request: &[u8]) -> Result<u16, PushError> {
    let mut last = None;
    let mut connected = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = connected.ok_or_else(|| {
        PushError::Io(last.map_or_else(|| "no address".into(), |e| e.to_string()))
    })?;
    stream
        .write_all(request)
        .await
        .map_err(|e| PushError::Io(e.to_string()))?;
    let mut response = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !has_line(&response) {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| PushError::Io(e.to_string()))?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    parse_status(&response)
        .ok_or_else(|| PushError::Io("push endpoint sent no HTTP status line".into()))
}

/// Sends `request` over TLS (blocking; run it on the blocking pool); returns the status.
fn post_tls(
    tls: Arc<ClientConfig>,
    host: String,
    addrs: &[SocketAddr],
    request: &[u8],
) -> Result<u16, PushError> {
    let name = ServerName::try_from(host.clone())
        .map_err(|_| PushError::Endpoint(format!("`{host}` is not a valid TLS server name")))?;
    let mut last = None;
    let mut connected = None;
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(addr, DELIVERY_TIMEOUT) {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let socket = connected.ok_or_else(|| {
        PushError::Io(last.map_or_else(|| "no address".into(), |e| e.to_string()))
    })?;
    let io = |e: std::io::Error| PushError::Io(e.to_string());
    socket
        .set_read_timeout(Some(DELIVERY_TIMEOUT))
        .map_err(io)?;
    socket
        .set_write_timeout(Some(DELIVERY_TIMEOUT))
        .map_err(io)?;
    let connection =
        ClientConnection::new(tls, name).map_err(|e| PushError::Io(format!("TLS: {e}")))?;
    let mut stream = StreamOwned::new(connection, socket);
    stream.write_all(request).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut response = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !has_line(&response) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            // Some servers close without a TLS close_notify; what arrived still counts.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io(e)),
        }
    }
    parse_status(&response)
        .ok_or_else(|| PushError::Io("push endpoint sent no HTTP status line".into()))
}

/// Whether the status line has arrived (or the head grew past what we read).
fn has_line(response: &[u8]) -> bool {
    response.windows(2).any(|w| w == b"\r\n") || response.len() >= MAX_RESPONSE_HEAD
}

/// The status code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

impl PushGateway for HttpPushGateway {
    async fn wake(&self, target: &PushToken) -> Result<(), PushError> {
        let delivery = async {
            match target.platform {
                PushPlatform::UnifiedPush => self.post(&target.token, UNIFIED_PUSH_BODY).await,
                // A Web Push payload must be encrypted for the browser (RFC 8291); an empty
                // push needs no encryption and still wakes the service worker.
                PushPlatform::WebPush => self.post(&target.token, b"").await,
                PushPlatform::Apns => Err(PushError::NoCredentials("APNs")),
                PushPlatform::Fcm => Err(PushError::NoCredentials("FCM")),
            }
        };
        tokio::time::timeout(DELIVERY_TIMEOUT, delivery)
            .await
            .unwrap_or_else(|_| Err(PushError::Io("timed out".into())))
    }
}

/// Wake-up requests from delivery to the [`run`] task.
pub(crate) struct PushQueue {
    tx: mpsc::Sender<IdentityKey>,
    rx: Mutex<Option<mpsc::Receiver<IdentityKey>>>,
    /// Identities with a request in the channel (coalescing).
    pending: Mutex<HashSet<IdentityKey>>,
}

impl Default for PushQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            pending: Mutex::new(HashSet::new()),
        }
    }
}

impl PushQueue {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashSet<IdentityKey>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a wake-up of `identity`'s devices. Never blocks: when the queue is full the
    /// request is dropped and logged (the message itself is safe in the queue).
    pub(crate) fn request(&self, identity: IdentityKey) {
        if !self.pending().insert(identity) {
            return;
        }
        if self.tx.try_send(identity).is_err() {
            self.pending().remove(&identity);
            tracing::warn!("push wake-up queue is full; a wake-up was dropped");
        }
    }
}

/// Delivers wake-up requests until the server stops.
pub(crate) async fn run<S: Store, G: PushGateway>(messenger: Arc<Messenger<S>>, gateway: G) {
    let receiver = messenger
        .push
        .rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(mut requests) = receiver else {
        tracing::error!("push worker started twice; wake-ups are handled by the first");
        return;
    };
    let gateway = Arc::new(gateway);
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut batch = Vec::with_capacity(LOOKUP_BATCH);
    while requests.recv_many(&mut batch, LOOKUP_BATCH).await > 0 {
        let mut identities = Vec::with_capacity(batch.len());
        for identity in batch.drain(..) {
            messenger.push.pending().remove(&identity);
            // A device may have connected meanwhile; it fetches by itself then.
            if messenger.live.connections_of(&identity).is_empty() {
                identities.push(identity);
            }
        }
        if identities.is_empty() {
            continue;
        }
        let targets = match messenger.store.push_targets(&identities).await {
            Ok(targets) => targets,
            Err(error) => {
                tracing::warn!(%error, accounts = identities.len(), "could not read push tokens; no wake-up sent");
                continue;
            }
        };
        for (_, device, token) in targets {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let gateway = Arc::clone(&gateway);
            tokio::spawn(async move {
                let _slot = slot;
                match gateway.wake(&token).await {
                    Ok(()) => tracing::debug!(device = %hex(&device), "push wake-up delivered"),
                    Err(error) => tracing::warn!(
                        device = %hex(&device),
                        platform = ?token.platform,
                        %error,
                        "push wake-up not delivered"
                    ),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16, target: &str) -> HttpEndpoint {
        HttpEndpoint {
            tls: false,
            host: host.into(),
            port,
            target: target.into(),
        }
    }

    #[test]
    fn parses_http_endpoints() {
        assert_eq!(
            parse_endpoint("http://push.example.org/up/abc?x=1"),
            Ok(ep("push.example.org", 80, "/up/abc?x=1"))
        );
        assert_eq!(
            parse_endpoint("https://ntfy.example.org/upABC?up=1"),
            Ok(HttpEndpoint {
                tls: true,
                ..ep("ntfy.example.org", 443, "/upABC?up=1")
            })
        );
        assert_eq!(
            parse_endpoint("HTTP://127.0.0.1:8080"),
            Ok(ep("127.0.0.1", 8080, "/"))
        );
        assert_eq!(
            parse_endpoint("http://[::1]:9000/p"),
            Ok(ep("::1", 9000, "/p"))
        );
        assert_eq!(parse_endpoint("http://h?q"), Ok(ep("h", 80, "/?q")));
        for bad in [
            "https://",
            "ftp://x",
            "http://",
            "http://h:99999/",
            "http://u:p@h/",
            "http://h/a b",
            "http://[::1/x",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn private_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
        assert!(check_endpoint("http://127.0.0.1:1/", false).is_err());
        assert!(check_endpoint("http://localhost/", false).is_err());
        assert!(check_endpoint("http://127.0.0.1:1/", true).is_ok());
        assert!(check_endpoint("http://push.example.org/", false).is_ok());
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 201 Created\r\n"), Some(201));
        assert_eq!(parse_status(b"HTTP/1.0 410 Gone\r\n"), Some(410));
        assert_eq!(parse_status(b"SSH-2.0\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }
}
