//! Work the server does on its own, beside the calls: tasks started once by
//! [`start`](crate::start) that run for the server's lifetime.
//!
//! - `sweeper.rs`: expiry of messages, sessions, uploads, endpoints, logins and relay ids.
//! - `push.rs`: the push gateway, content-free wake-ups of devices that have no connection.
//! - `presence.rs`: PushPresence when a user's first connection comes or last one goes.
//!
//! Federation relay workers (one per peer) live with the rest of federation in
//! `crate::federation`.

pub(crate) mod presence;
pub(crate) mod push;
pub(crate) mod sweeper;
