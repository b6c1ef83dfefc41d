//! Recovery (750-752): one client-encrypted account recovery bundle per account.
//!
//! The bundle is opaque here (the client encrypts it, e.g. with a key derived from its OPAQUE
//! `export_key`, which the server never sees). Storing and deleting need any session of the
//! account; fetching needs a session whose OPAQUE login completed within the last
//! `--recovery-fresh-login-secs` (default 5 minutes), so a stolen long-lived session token
//! alone does not hand out the bundle: whoever fetches it has just proven the password.

use std::time::{Duration, UNIX_EPOCH};

use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{RecoveryService, proto};

use crate::auth::identity_of;
use crate::store::{Store, StoreError};
use crate::{Messenger, errors};

/// Largest bundle, in bytes (60 KiB, as the protocol states).
pub(crate) const MAX_BUNDLE: usize = 60 * 1024;

impl<S: Store> RecoveryService for Messenger<S> {
    async fn store_recovery_bundle(
        &self,
        ctx: Ctx<Session>,
        request: proto::StoreRecoveryBundleRequest,
    ) -> Result<proto::StoreRecoveryBundleResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        if request.bundle.is_empty() || request.bundle.len() > MAX_BUNDLE {
            return Err(Status::bad_request(format!(
                "bundle must be 1 to {MAX_BUNDLE} bytes, got {}",
                request.bundle.len()
            )));
        }
        let now = self.now_ms();
        match self
            .store
            .put_recovery_bundle(&identity, request.bundle, now)
            .await
        {
            Ok(()) => Ok(proto::StoreRecoveryBundleResponse {
                stored_at_unix_ms: now,
            }),
            Err(StoreError::NotFound) => Err(Status::unauthorized(
                "your account no longer exists; log in again",
            )),
            Err(other) => Err(errors::store(other)),
        }
    }

    async fn fetch_recovery_bundle(
        &self,
        ctx: Ctx<Session>,
        _request: proto::FetchRecoveryBundleRequest,
    ) -> Result<proto::FetchRecoveryBundleResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let window = Duration::from_secs(self.config.recovery_fresh_login_secs);
        let now = UNIX_EPOCH + Duration::from_millis(self.now_ms());
        let age = now
            .duration_since(ctx.auth().login_at)
            .unwrap_or(Duration::ZERO);
        if age > window {
            return Err(Status::forbidden(format!(
                "fetching the recovery bundle needs a fresh login: this session's login was {} s ago, more than the {} s allowed; log in again (OpaqueLoginStart/OpaqueLoginFinish) and fetch with the new session token",
                age.as_secs(),
                window.as_secs()
            )));
        }
        let (bundle, stored_at) = self
            .store
            .recovery_bundle(&identity)
            .await
            .map_err(errors::store)?
            .ok_or_else(|| Status::not_found("no recovery bundle is stored for this account"))?;
        Ok(proto::FetchRecoveryBundleResponse {
            bundle,
            stored_at_unix_ms: stored_at,
        })
    }

    async fn delete_recovery_bundle(
        &self,
        ctx: Ctx<Session>,
        _request: proto::DeleteRecoveryBundleRequest,
    ) -> Result<proto::DeleteRecoveryBundleResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let deleted = self
            .store
            .delete_recovery_bundle(&identity)
            .await
            .map_err(errors::store)?;
        Ok(proto::DeleteRecoveryBundleResponse { deleted })
    }
}
