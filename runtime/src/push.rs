//! Server push: one unidirectional stream per connection, frames back to back, in order.
//!
//! Push is a hint for speed; the application's queues stay the source of truth. So the
//! buffer per connection is bounded and a push that does not fit is dropped (and counted),
//! never allowed to slow down the server or grow memory without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::recv::{read_body, read_header};
use crate::wire::{self, PushFrame};

/// Why a push was not queued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The connection's push buffer is full (a slow reader); the push was dropped.
    #[error("push buffer of this connection is full; the push was dropped")]
    Full,
    /// The connection is closed.
    #[error("connection is closed")]
    Closed,
}

/// The server-side handle for pushing events to one connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PushSink {
    tx: mpsc::Sender<(u16, Bytes)>,
    dropped: Arc<AtomicU64>,
}

impl PushSink {
    /// Queues one event (already encoded) for the connection, without waiting.
    pub fn push(&self, event_type: u16, body: Bytes) -> Result<(), PushError> {
        self.tx.try_send((event_type, body)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                PushError::Full
            }
            mpsc::error::TrySendError::Closed(_) => PushError::Closed,
        })
    }

    /// How many pushes were dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether the connection behind this sink is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Creates a sink and starts the task that writes its events on one uni stream, opened when
/// the first event arrives. The task ends when the connection closes.
pub(crate) fn start_push_writer(connection: quinn::Connection, capacity: usize) -> PushSink {
    let (tx, mut rx) = mpsc::channel::<(u16, Bytes)>(capacity.max(1));
    let sink = PushSink {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    tokio::spawn(async move {
        let mut stream: Option<quinn::SendStream> = None;
        let mut buf = BytesMut::new();
        loop {
            let first = tokio::select! {
                event = rx.recv() => event,
                _ = connection.closed() => None,
            };
            let Some((event_type, body)) = first else {
                break;
            };
            buf.clear();
            if wire::encode_push(event_type, &body, &mut buf).is_err() {
                tracing::warn!(event_type, "push body too large to frame; dropped");
                continue;
            }
            // Coalesce whatever else is already waiting into the same write.
            while buf.len() < 64 * 1024 {
                match rx.try_recv() {
                    Ok((event_type, body)) => {
                        if wire::encode_push(event_type, &body, &mut buf).is_err() {
                            tracing::warn!(event_type, "push body too large to frame; dropped");
                        }
                    }
                    Err(_) => break,
                }
            }
            if stream.is_none() {
                match connection.open_uni().await {
                    Ok(opened) => stream = Some(opened),
                    Err(error) => {
                        tracing::debug!(%error, "could not open the push stream");
                        break;
                    }
                }
            }
            if let Some(send) = stream.as_mut()
                && let Err(error) = send.write_all(&buf).await
            {
                tracing::debug!(%error, "push stream closed by the peer");
                break;
            }
        }
        // Dropping `rx` marks the sink closed for the application.
    });
    sink
}

/// The client-side stream of raw push frames from the server.
#[derive(Debug)]
pub struct PushReceiver {
    rx: mpsc::Receiver<PushFrame>,
}

impl PushReceiver {
    /// The next push frame, or `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<PushFrame> {
        self.rx.recv().await
    }

    /// A push frame if one is already buffered.
    pub fn try_recv(&mut self) -> Option<PushFrame> {
        self.rx.try_recv().ok()
    }
}

/// Starts the client task that accepts the server's push stream(s) and decodes frames into a
/// bounded channel. Frames are dropped when the application does not keep up.
pub(crate) fn start_push_reader(
    connection: quinn::Connection,
    capacity: usize,
    max_event_bytes: u32,
) -> PushReceiver {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    tokio::spawn(async move {
        while let Ok(mut stream) = connection.accept_uni().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    // Any failure ends the push stream: the end of the stream (between frames
                    // or inside one), a reset, or a lost connection.
                    let Ok(header) = read_header::<wire::PushHeader>(&mut stream).await else {
                        return;
                    };
                    if let Err(error) = wire::check_len(header.len, max_event_bytes) {
                        tracing::warn!(%error, "server sent an oversized push; closing the push stream");
                        let _ = stream.stop(quinn::VarInt::from_u32(crate::CLOSE_PROTOCOL_ERROR));
                        return;
                    }
                    let Ok(body) = read_body(&mut stream, header.len).await else {
                        return;
                    };
                    let frame = PushFrame {
                        event_type: header.event_type,
                        body,
                    };
                    match tx.try_send(frame) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            });
        }
    });
    PushReceiver { rx }
}
