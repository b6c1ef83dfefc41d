//! User (500-501): looking users up by name and by identity key.

use crate::store::Store;
use crate::{Messenger, errors};
use bytes::Bytes;
use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{UserService, proto};

impl<S: Store> UserService for Messenger<S> {
    async fn resolve_user(
        &self,
        _ctx: Ctx<Session>,
        request: proto::ResolveUserRequest,
    ) -> Result<proto::ResolveUserResponse, Status> {
        let name = self.local_name(&request.username)?;
        let account = self
            .store
            .account_by_username(name)
            .await
            .map_err(errors::store)?;
        Ok(match account {
            Some(account) => proto::ResolveUserResponse {
                identity_key: Bytes::copy_from_slice(&account.identity_key),
                found: true,
            },
            None => proto::ResolveUserResponse {
                identity_key: Bytes::new(),
                found: false,
            },
        })
    }

    async fn resolve_identity(
        &self,
        _ctx: Ctx<Session>,
        request: proto::ResolveIdentityRequest,
    ) -> Result<proto::ResolveIdentityResponse, Status> {
        let identity: [u8; 32] = request.identity_key[..].try_into().map_err(|_| {
            Status::bad_request(format!(
                "identity_key must be 32 bytes, got {}",
                request.identity_key.len()
            ))
        })?;
        let account = self
            .store
            .account_by_identity(&identity)
            .await
            .map_err(errors::store)?;
        Ok(match account {
            Some(account) => proto::ResolveIdentityResponse {
                profile: Some(proto::Profile {
                    display_name: account.username.clone(),
                    avatar_blob_id: Bytes::new(),
                }),
                username: account.username,
                found: true,
            },
            None => proto::ResolveIdentityResponse::default(),
        })
    }
}
