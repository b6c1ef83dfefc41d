//! Content-free wake-ups of offline devices through push services.
//!
//! When a message is queued for an identity none of whose devices is connected, `delivery.rs`
//! calls [`PushQueue::request`] (it never blocks and never fails the enqueue). The [`run`]
//! task takes the request, looks up the identity's devices that have push tokens and asks the
//! [`PushGateway`] to wake each one, with at most [`MAX_IN_FLIGHT`] deliveries at a time;
//! failures are logged. Requests for an identity that is already waiting are coalesced, so a
//! burst of messages costs one wake-up per device.
//!
//! A wake-up carries no message content, sender or count: it only tells the device to connect
//! and fetch. [`HttpPushGateway`] is the one implementation: it POSTs a fixed tiny body to
//! UnifiedPush endpoints and an empty body to Web Push (RFC 8030) endpoints, over plain
//! HTTP/1.1 on a TCP connection.
//!
//! What it does not do, and says so in logs rather than pretending:
//! - **`https://` endpoints** need TLS, which this sender does not have; RegisterPushToken
//!   refuses them with a message saying so (use a distributor reachable over `http://`, e.g.
//!   on the same host or LAN, with `--push-allow-private-endpoints`).
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
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qpq_runtime::tls::hex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

use crate::Messenger;
use crate::store::{IdentityKey, PushPlatform, PushToken, Store};

/// Most wake-up deliveries in flight at once.
pub(crate) const MAX_IN_FLIGHT: usize = 16;
/// Identities that may wait for their wake-ups; beyond this a request is dropped (and logged).
const QUEUE: usize = 4_096;
/// Longest a delivery may take (connect, send, read the status line).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Body of a UnifiedPush wake-up: fixed, carries nothing about the message.
pub(crate) const UNIFIED_PUSH_BODY: &[u8] = b"qpq:wake";
/// Longest push service answer head we read.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

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

/// A parsed `http://` endpoint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HttpEndpoint {
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    target: String,
}

/// Parses a push endpoint URL; the error is a sentence for the person registering it.
pub(crate) fn parse_endpoint(url: &str) -> Result<HttpEndpoint, String> {
    if url.len() >= 8 && url[..8].eq_ignore_ascii_case("https://") {
        return Err(
            "https:// push endpoints need TLS, which this server's push sender does not support; use an http:// endpoint (for example a UnifiedPush distributor on the server's host or network)"
                .into(),
        );
    }
    let rest = match url.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &url[7..],
        _ => return Err("push endpoint must be an http:// URL".into()),
    };
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
            "" => 80,
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
            None => (authority.to_owned(), 80),
        }
    };
    if host.is_empty() {
        return Err("push endpoint URL has no host".into());
    }
    Ok(HttpEndpoint { host, port, target })
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
}

impl HttpPushGateway {
    pub(crate) fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    async fn post(&self, url: &str, body: &[u8]) -> Result<(), PushError> {
        let endpoint = parse_endpoint(url).map_err(PushError::Endpoint)?;
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| PushError::Io(format!("cannot resolve {}: {e}", endpoint.host)))?
                .filter(|a| self.allow_private || !is_private(a.ip()))
                .collect();
        let Some(addr) = addrs.first() else {
            return Err(PushError::Endpoint(format!(
                "{} resolves to no address this server posts to",
                endpoint.host
            )));
        };
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| PushError::Io(e.to_string()))?;
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
        stream
            .write_all(&request)
            .await
            .map_err(|e| PushError::Io(e.to_string()))?;
        let mut response = Vec::with_capacity(256);
        let mut buf = [0u8; 1024];
        while !response.windows(2).any(|w| w == b"\r\n") && response.len() < MAX_RESPONSE_HEAD {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| PushError::Io(e.to_string()))?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
        }
        let status = parse_status(&response)
            .ok_or_else(|| PushError::Io("push endpoint sent no HTTP status line".into()))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(PushError::Status(status))
        }
    }
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
    while let Some(identity) = requests.recv().await {
        messenger.push.pending().remove(&identity);
        // A device may have connected meanwhile; it fetches by itself then.
        if !messenger.live.connections_of(&identity).is_empty() {
            continue;
        }
        let targets = match messenger.store.push_targets(&identity).await {
            Ok(targets) => targets,
            Err(error) => {
                tracing::warn!(%error, "could not read push tokens; no wake-up sent");
                continue;
            }
        };
        for (device, token) in targets {
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
            parse_endpoint("HTTP://127.0.0.1:8080"),
            Ok(ep("127.0.0.1", 8080, "/"))
        );
        assert_eq!(
            parse_endpoint("http://[::1]:9000/p"),
            Ok(ep("::1", 9000, "/p"))
        );
        assert_eq!(parse_endpoint("http://h?q"), Ok(ep("h", 80, "/?q")));
        for bad in [
            "https://push.example.org/x",
            "ftp://x",
            "http://",
            "http://h:99999/",
            "http://u:p@h/",
            "http://h/a b",
            "http://[::1/x",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        assert!(
            parse_endpoint("https://x/")
                .unwrap_err()
                .contains("need TLS")
        );
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
