//! Authentication: who a caller is, before any handler runs.
//!
//! - `authenticator.rs`: the [`Authenticator`](qpq_runtime::Authenticator) the generated
//!   dispatch calls: a request's `session_token` becomes the caller's session (or admin), a
//!   presented certificate a federation peer.
//! - [`opaque`] is the only module that names opaque-ke: cipher suite, the persisted
//!   `ServerSetup`, registration, and login with server-side state under a single-use
//!   [`LoginId`].
//! - [`limiter`] slows password guessing per username and per source address.
//! - [`tokens`] makes bearer tokens and the SHA-256 the store keeps.
//!
//! This module does not store accounts or sessions (that is `crate::store`) and does not
//! speak the wire protocol (handlers do). All its calls are synchronous and short (the server
//! side of an OPAQUE login costs well under a millisecond; Argon2 runs on the client only), so
//! handlers may call them directly from async code.
//!
//! # Expected handler flow
//!
//! 1. `OpaqueRegisterStart`: [`OpaqueServer::register_start`] (the username is the OPAQUE
//!    credential identifier, so it must be the same string at login).
//! 2. `OpaqueRegisterFinish`: [`OpaqueServer::register_finish`] gives the password file;
//!    store it with the username and identity key (`Store::create_account`).
//! 3. `OpaqueLoginStart`: [`LoginLimiter::check`] → `RateLimited` with the retry hint; then
//!    [`LoginLimiter::record_failure`] (charge the attempt now: a client that finds the password
//!    wrong detects it itself and never sends LoginFinish); look the account up and call
//!    [`OpaqueServer::login_start`] with its password file, or `None` when there is no such
//!    user, and answer exactly the same way in both cases.
//! 4. `OpaqueLoginFinish`: [`OpaqueServer::login_finish`]; on `Ok` call
//!    [`LoginLimiter::record_success`] (refunds the attempt), make a token with
//!    [`new_session_token`] and store only its hash (`Store::put_session`).
//!
//! Status mapping: [`AuthError::Malformed`] → BadRequest; [`AuthError::TooManyPendingLogins`]
//! → RateLimited; [`AuthError::Internal`] → Internal; every other error → Unauthorized with
//! the error's message (none says whether the user exists). [`RetryAfter`] → RateLimited with
//! `retry_after_ms`.

mod authenticator;
mod cost;
pub mod limiter;
pub mod opaque;
pub mod tokens;

pub(crate) use self::authenticator::identity_of;
pub use self::cost::measure_server_login_cost;
pub use self::limiter::{LimiterConfig, LoginLimiter, RetryAfter};
pub use self::opaque::{AuthError, LoginConfig, LoginId, OpaqueServer, QpqSuite, SetupError};
pub use self::tokens::{hash_token, new_session_token};
