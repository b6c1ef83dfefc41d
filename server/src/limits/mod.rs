//! Rate limits the server applies to callers: the buckets per `rate_class` of
//! `schema/methods.toml` (checked by the authenticator's rate-limit hook before any handler,
//! and per sender→recipient pair in delivery), and KeyPackage fetches per requester.
//!
//! The failed-login limiter lives with the rest of authentication in `crate::auth`.

pub(crate) mod classes;
pub(crate) mod key_fetches;

pub use self::classes::{Rate, RateLimitSetting, Scope};
