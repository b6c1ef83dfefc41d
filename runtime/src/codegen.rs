//! The facade that generated code imports. Everything generated code names from the runtime
//! is re-exported here, so the runtime's internals can move without breaking generated code.
//!
//! API boundary: items here are used by `qpq-codegen` output; changing them is a breaking
//! change for every generated crate.

pub use bytes::Bytes;

pub use crate::client::{Connection, RpcError};
pub use crate::dispatch::{Caller, TokenField, call_unary, malformed_request, no_token, unary};
pub use crate::push::{PushError, PushReceiver, PushSink};
pub use crate::service::{
    Admin, Anonymous, AuthLevel, Authenticator, BoxFuture, CallInfo, Ctx, Dispatch,
    EventDescriptor, FederationPeer, MethodDescriptor, Principal, Session,
};
pub use crate::wire::{PushFrame, Status, StatusCode};

/// The client-side default timeout for a method: the server's timeout plus a grace period,
/// so that the server's DeadlineExceeded normally arrives before the client gives up.
pub fn client_timeout(method: &MethodDescriptor) -> std::time::Duration {
    method.timeout() + std::time::Duration::from_secs(1)
}
