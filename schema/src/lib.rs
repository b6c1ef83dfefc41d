//! The quicproquo protocol, generated from `schema/methods.toml` and `schema/proto/`.
//!
//! - [`proto`]: every protobuf message (package `qpq.v2`).
//! - [`MethodId`], [`METHODS`], [`EVENTS`]: the method and event tables.
//! - [`QpqService`]: the trait a server implements; [`QpqServer`] connects it to the runtime.
//! - [`QpqClient`]: the typed client; [`QpqEvents`]: its push event stream.
//! - [`Event`] and [`QpqPush`]: push events, decoded and typed for sending.
//!
//! The method reference is `docs/methods.md`; to add a method see ARCHITECTURE.md.

include!(concat!(env!("OUT_DIR"), "/qpq_generated.rs"));
