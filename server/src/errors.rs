//! Storage and auth errors as wire statuses. Internal detail is logged here and never sent.

use qpq_runtime::Status;

use crate::auth::AuthError;
use crate::store::StoreError;

/// Maps a storage error for a call that has no more specific meaning for it.
pub(crate) fn store(error: StoreError) -> Status {
    match error {
        StoreError::Unavailable(detail) => {
            tracing::error!(%detail, "storage unavailable");
            // A write whose sync failed may still reach the disk: do not promise otherwise.
            let message = "storage is unavailable; a change made by this call was not confirmed durable and may or may not be kept. Retry later";
            Status::unavailable(message).with_retry_after_ms(5_000)
        }
        StoreError::InvalidArgument(detail) => Status::bad_request(detail),
        StoreError::NotFound => Status::not_found("not found"),
        StoreError::QueueFull { limit } => Status::rate_limited(
            format!("the recipient's queue is full ({limit}); retry after they fetch"),
            60_000,
        ),
        StoreError::UsernameTaken => Status::conflict("username is already taken"),
        StoreError::IdentityTaken => {
            Status::conflict("identity key is already registered to another account")
        }
        StoreError::Banned { until_ms } => banned(until_ms),
        other => {
            tracing::error!(error = %other, "storage error");
            Status::internal()
        }
    }
}

/// The answer to a user who is banned from this server.
pub(crate) fn banned(until_ms: u64) -> Status {
    if until_ms == 0 {
        Status::forbidden("this account is banned from this server")
    } else {
        Status::forbidden(format!(
            "this account is banned from this server until {until_ms} (Unix ms)"
        ))
    }
}

/// Maps an OPAQUE error. Every credential failure is the same Unauthorized, so answers never
/// tell an unknown user from a wrong password.
pub(crate) fn auth(error: AuthError) -> Status {
    match error {
        AuthError::Malformed(what) => {
            Status::bad_request(format!("malformed OPAQUE message: {what}"))
        }
        AuthError::TooManyPendingLogins => Status::rate_limited(
            "too many logins in progress on this server; retry shortly",
            1_000,
        ),
        AuthError::Internal => Status::internal(),
        other => Status::unauthorized(format!("login failed: {other}")),
    }
}
