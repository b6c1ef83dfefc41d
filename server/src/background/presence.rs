//! Presence: turns `live.rs`'s first-connection and last-disconnection reports into
//! PushPresence to everyone sharing a channel with the user.

use std::sync::Arc;

use bytes::Bytes;
use qpq_schema::{QpqPush, proto};

use crate::Messenger;
use crate::store::Store;

/// Pushes PushPresence for every change `live.rs` reports, to the users sharing a channel
/// with the one who came or went. Runs for the server's lifetime.
pub(crate) async fn run<S: Store>(messenger: Arc<Messenger<S>>) {
    let Some(mut changes) = messenger.live.take_presence_events() else {
        return;
    };
    while let Some(change) = changes.recv().await {
        let peers = match messenger.presence_peers(&change.identity).await {
            Ok(peers) => peers,
            Err(error) => {
                tracing::warn!(%error, "presence: could not read channel members");
                continue;
            }
        };
        let event = proto::PresenceEvent {
            identity_key: Bytes::copy_from_slice(&change.identity),
            online: change.online,
            changed_at_unix_ms: change.at_ms,
        };
        for peer in peers {
            for connection in messenger.live.connections_of(&peer) {
                let _ = connection.push().push_presence(&event);
            }
        }
    }
}
