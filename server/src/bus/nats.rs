//! The bus on NATS (the only module that names async-nats): every instance of a domain
//! publishes its events on one subject, `qpq.<domain>.bus`, and subscribes to it.
//!
//! Publishing goes through a bounded buffer to one task, so a handler never waits for NATS;
//! when the buffer is full (NATS slow or away) the event is dropped and counted, which the
//! re-check of parked waits covers. The NATS client reconnects by itself and subscribes again;
//! while it is away, events are lost, not queued without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Event, MAX_MESSAGE};
use crate::Messenger;
use crate::store::Store;

/// Events waiting for the publishing task; beyond this they are dropped.
const BUFFER: usize = 8192;
/// How long the first connection may take at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The publishing half, held by the messenger.
pub(crate) struct Publisher {
    events: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl Publisher {
    pub(super) fn publish(&self, event: Event) {
        if self.events.try_send(event).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "bus buffer full (NATS slow or unreachable); events dropped, parked waits re-check the store"
                );
            }
        }
    }
}

/// A connection to NATS for one instance: its publisher and its subscription.
pub(crate) struct Connection {
    pub(crate) publisher: Publisher,
    subscription: async_nats::Subscriber,
    instance: [u8; 16],
}

/// Where `url` points, for messages (never the credentials).
fn describe(url: &str) -> String {
    let rest = url.strip_prefix("nats://").unwrap_or(url);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("nats://{}", host.split('/').next().unwrap_or_default())
}

/// The subject of `domain`'s bus.
pub(crate) fn subject(domain: Option<&str>) -> String {
    format!("qpq.{}.bus", domain.unwrap_or("-"))
}

/// Connects to NATS at `url` and subscribes to the domain's subject; a clear error when NATS
/// cannot be reached at start (afterwards the client reconnects by itself).
pub(crate) async fn connect(url: &str, domain: Option<&str>) -> anyhow::Result<Connection> {
    let target = describe(url);
    let instance: [u8; 16] = rand::random();
    let client = async_nats::ConnectOptions::new()
        .name(format!("qpq-server {}", qpq_runtime::tls::hex(&instance)))
        .no_echo()
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .event_callback(move |event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("bus connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!(
                    "bus lost NATS; reconnecting (parked waits re-check the store meanwhile)"
                ),
                other => tracing::debug!(event = %other, "bus"),
            }
        })
        .connect(url)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot reach NATS at {target}: {e}; is nats-server running?")
        })?;
    let subject = subject(domain);
    let subscription = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {subject} on NATS at {target}: {e}"))?;
    let (events, rx) = mpsc::channel(BUFFER);
    tokio::spawn(publish(client, subject, instance, rx));
    tracing::info!(%target, "bus on NATS");
    Ok(Connection {
        publisher: Publisher {
            events,
            dropped: Arc::default(),
        },
        subscription,
        instance,
    })
}

impl Connection {
    /// Splits off the publisher (for the messenger) and keeps what [`run`] reads.
    pub(crate) fn split(self) -> (Publisher, Subscription) {
        (
            self.publisher,
            Subscription {
                inner: self.subscription,
                instance: self.instance,
            },
        )
    }
}

/// What [`run`] reads.
pub(crate) struct Subscription {
    inner: async_nats::Subscriber,
    instance: [u8; 16],
}

async fn publish(
    client: async_nats::Client,
    subject: String,
    instance: [u8; 16],
    mut events: mpsc::Receiver<Event>,
) {
    while let Some(event) = events.recv().await {
        if let Err(error) = client
            .publish(subject.clone(), event.encode(&instance))
            .await
        {
            tracing::debug!(%error, "bus event not published");
        }
    }
}

/// Applies the other instances' events to this instance until the server stops.
pub(crate) async fn run<S: Store>(messenger: Arc<Messenger<S>>, mut subscription: Subscription) {
    while let Some(message) = subscription.inner.next().await {
        if message.payload.len() > MAX_MESSAGE {
            tracing::debug!(
                bytes = message.payload.len(),
                "bus message too large; dropped"
            );
            continue;
        }
        match Event::decode(&message.payload) {
            Ok((from, _)) if from == subscription.instance => {}
            Ok((_, event)) => messenger.apply_remote(event),
            Err(error) => tracing::debug!(%error, "bus message dropped"),
        }
    }
    tracing::warn!(
        "bus subscription ended; other instances' events no longer arrive (parked waits still re-check the store)"
    );
}
