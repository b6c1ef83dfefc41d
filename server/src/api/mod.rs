//! The handlers: one file per method group of `schema/methods.toml`, each implementing that
//! group's generated trait for [`Messenger`](crate::Messenger) (`auth.rs` implements
//! `AuthService`, `delivery.rs` `DeliveryService`, and so on). The generated `QpqService`
//! is their composition, so nothing else is needed to serve a group.
//!
//! A handler validates its request, asks the store, and turns the answer into a response or
//! a [`Status`](qpq_runtime::Status) (`crate::errors` maps store errors). It never
//! authenticates (the generated dispatch did, through `crate::auth`) and never names a
//! storage engine. Checks shared between groups are `pub(crate)` functions of the group they
//! belong to (e.g. `channel::optional_channel_id`, `keys::identity_field`).

pub(crate) mod account;
pub(crate) mod auth;
pub(crate) mod blob;
pub(crate) mod channel;
pub(crate) mod delivery;
pub(crate) mod device;
pub(crate) mod federation;
pub(crate) mod group;
pub(crate) mod keys;
pub(crate) mod kt;
pub(crate) mod moderation;
pub(crate) mod p2p;
pub(crate) mod recovery;
pub(crate) mod user;
