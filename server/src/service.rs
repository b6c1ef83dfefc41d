//! The one `impl QpqService`: each method delegates to its group's module, so this file
//! stays a table of contents. Methods whose work has not landed answer Unavailable with
//! "<Name> (<id>) is not implemented yet", never a fake success.

use qpq_runtime::{Admin, Anonymous, Ctx, FederationPeer, Session, Status};
use qpq_schema::{MethodId, QpqService, proto};

use crate::Messenger;
use crate::health;
use crate::store::Store;

/// The answer of a method that is not implemented yet.
fn not_yet(method: MethodId) -> Status {
    Status::unavailable(format!(
        "{} ({}) is not implemented yet",
        method.name(),
        method.id()
    ))
}

impl<S: Store> QpqService for Messenger<S> {
    async fn opaque_register_start(
        &self,
        ctx: Ctx<Anonymous>,
        request: proto::OpaqueRegisterStartRequest,
    ) -> Result<proto::OpaqueRegisterStartResponse, Status> {
        Messenger::opaque_register_start(self, ctx, request).await
    }

    async fn opaque_register_finish(
        &self,
        ctx: Ctx<Anonymous>,
        request: proto::OpaqueRegisterFinishRequest,
    ) -> Result<proto::OpaqueRegisterFinishResponse, Status> {
        Messenger::opaque_register_finish(self, ctx, request).await
    }

    async fn opaque_login_start(
        &self,
        ctx: Ctx<Anonymous>,
        request: proto::OpaqueLoginStartRequest,
    ) -> Result<proto::OpaqueLoginStartResponse, Status> {
        Messenger::opaque_login_start(self, ctx, request).await
    }

    async fn opaque_login_finish(
        &self,
        ctx: Ctx<Anonymous>,
        request: proto::OpaqueLoginFinishRequest,
    ) -> Result<proto::OpaqueLoginFinishResponse, Status> {
        Messenger::opaque_login_finish(self, ctx, request).await
    }

    async fn enqueue(
        &self,
        ctx: Ctx<Session>,
        request: proto::EnqueueRequest,
    ) -> Result<proto::EnqueueResponse, Status> {
        Messenger::enqueue(self, ctx, request).await
    }

    async fn fetch(
        &self,
        ctx: Ctx<Session>,
        request: proto::FetchRequest,
    ) -> Result<proto::FetchResponse, Status> {
        Messenger::fetch(self, ctx, request).await
    }

    async fn fetch_wait(
        &self,
        ctx: Ctx<Session>,
        request: proto::FetchWaitRequest,
    ) -> Result<proto::FetchWaitResponse, Status> {
        Messenger::fetch_wait(self, ctx, request).await
    }

    async fn peek(
        &self,
        ctx: Ctx<Session>,
        request: proto::PeekRequest,
    ) -> Result<proto::PeekResponse, Status> {
        Messenger::peek(self, ctx, request).await
    }

    async fn ack(
        &self,
        ctx: Ctx<Session>,
        request: proto::AckRequest,
    ) -> Result<proto::AckResponse, Status> {
        Messenger::ack(self, ctx, request).await
    }

    async fn batch_enqueue(
        &self,
        ctx: Ctx<Session>,
        request: proto::BatchEnqueueRequest,
    ) -> Result<proto::BatchEnqueueResponse, Status> {
        Messenger::batch_enqueue(self, ctx, request).await
    }

    async fn upload_key_package(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::UploadKeyPackageRequest,
    ) -> Result<proto::UploadKeyPackageResponse, Status> {
        Err(not_yet(MethodId::UploadKeyPackage))
    }

    async fn fetch_key_package(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::FetchKeyPackageRequest,
    ) -> Result<proto::FetchKeyPackageResponse, Status> {
        Err(not_yet(MethodId::FetchKeyPackage))
    }

    async fn upload_hybrid_key(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::UploadHybridKeyRequest,
    ) -> Result<proto::UploadHybridKeyResponse, Status> {
        Err(not_yet(MethodId::UploadHybridKey))
    }

    async fn fetch_hybrid_key(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::FetchHybridKeyRequest,
    ) -> Result<proto::FetchHybridKeyResponse, Status> {
        Err(not_yet(MethodId::FetchHybridKey))
    }

    async fn fetch_hybrid_keys(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::FetchHybridKeysRequest,
    ) -> Result<proto::FetchHybridKeysResponse, Status> {
        Err(not_yet(MethodId::FetchHybridKeys))
    }

    async fn create_channel(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::CreateChannelRequest,
    ) -> Result<proto::CreateChannelResponse, Status> {
        Err(not_yet(MethodId::CreateChannel))
    }

    async fn remove_member(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RemoveMemberRequest,
    ) -> Result<proto::RemoveMemberResponse, Status> {
        Err(not_yet(MethodId::RemoveMember))
    }

    async fn update_group_metadata(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::UpdateGroupMetadataRequest,
    ) -> Result<proto::UpdateGroupMetadataResponse, Status> {
        Err(not_yet(MethodId::UpdateGroupMetadata))
    }

    async fn list_group_members(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ListGroupMembersRequest,
    ) -> Result<proto::ListGroupMembersResponse, Status> {
        Err(not_yet(MethodId::ListGroupMembers))
    }

    async fn rotate_keys(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RotateKeysRequest,
    ) -> Result<proto::RotateKeysResponse, Status> {
        Err(not_yet(MethodId::RotateKeys))
    }

    async fn report_message(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ReportMessageRequest,
    ) -> Result<proto::ReportMessageResponse, Status> {
        Err(not_yet(MethodId::ReportMessage))
    }

    async fn ban_user(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::BanUserRequest,
    ) -> Result<proto::BanUserResponse, Status> {
        Err(not_yet(MethodId::BanUser))
    }

    async fn unban_user(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::UnbanUserRequest,
    ) -> Result<proto::UnbanUserResponse, Status> {
        Err(not_yet(MethodId::UnbanUser))
    }

    async fn list_reports(
        &self,
        _ctx: Ctx<Admin>,
        _request: proto::ListReportsRequest,
    ) -> Result<proto::ListReportsResponse, Status> {
        Err(not_yet(MethodId::ListReports))
    }

    async fn list_banned(
        &self,
        _ctx: Ctx<Admin>,
        _request: proto::ListBannedRequest,
    ) -> Result<proto::ListBannedResponse, Status> {
        Err(not_yet(MethodId::ListBanned))
    }

    async fn resolve_user(
        &self,
        ctx: Ctx<Session>,
        request: proto::ResolveUserRequest,
    ) -> Result<proto::ResolveUserResponse, Status> {
        Messenger::resolve_user(self, ctx, request).await
    }

    async fn resolve_identity(
        &self,
        ctx: Ctx<Session>,
        request: proto::ResolveIdentityRequest,
    ) -> Result<proto::ResolveIdentityResponse, Status> {
        Messenger::resolve_identity(self, ctx, request).await
    }

    async fn revoke_key(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RevokeKeyRequest,
    ) -> Result<proto::RevokeKeyResponse, Status> {
        Err(not_yet(MethodId::RevokeKey))
    }

    async fn check_revocation(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::CheckRevocationRequest,
    ) -> Result<proto::CheckRevocationResponse, Status> {
        Err(not_yet(MethodId::CheckRevocation))
    }

    async fn audit_key_transparency(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::AuditKeyTransparencyRequest,
    ) -> Result<proto::AuditKeyTransparencyResponse, Status> {
        Err(not_yet(MethodId::AuditKeyTransparency))
    }

    async fn upload_blob(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::UploadBlobRequest,
    ) -> Result<proto::UploadBlobResponse, Status> {
        Err(not_yet(MethodId::UploadBlob))
    }

    async fn download_blob(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::DownloadBlobRequest,
    ) -> Result<proto::DownloadBlobResponse, Status> {
        Err(not_yet(MethodId::DownloadBlob))
    }

    async fn register_device(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RegisterDeviceRequest,
    ) -> Result<proto::RegisterDeviceResponse, Status> {
        Err(not_yet(MethodId::RegisterDevice))
    }

    async fn list_devices(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ListDevicesRequest,
    ) -> Result<proto::ListDevicesResponse, Status> {
        Err(not_yet(MethodId::ListDevices))
    }

    async fn revoke_device(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RevokeDeviceRequest,
    ) -> Result<proto::RevokeDeviceResponse, Status> {
        Err(not_yet(MethodId::RevokeDevice))
    }

    async fn register_push_token(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RegisterPushTokenRequest,
    ) -> Result<proto::RegisterPushTokenResponse, Status> {
        Err(not_yet(MethodId::RegisterPushToken))
    }

    async fn store_recovery_bundle(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::StoreRecoveryBundleRequest,
    ) -> Result<proto::StoreRecoveryBundleResponse, Status> {
        Err(not_yet(MethodId::StoreRecoveryBundle))
    }

    async fn fetch_recovery_bundle(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::FetchRecoveryBundleRequest,
    ) -> Result<proto::FetchRecoveryBundleResponse, Status> {
        Err(not_yet(MethodId::FetchRecoveryBundle))
    }

    async fn delete_recovery_bundle(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::DeleteRecoveryBundleRequest,
    ) -> Result<proto::DeleteRecoveryBundleResponse, Status> {
        Err(not_yet(MethodId::DeleteRecoveryBundle))
    }

    async fn publish_endpoint(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::PublishEndpointRequest,
    ) -> Result<proto::PublishEndpointResponse, Status> {
        Err(not_yet(MethodId::PublishEndpoint))
    }

    async fn resolve_endpoint(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ResolveEndpointRequest,
    ) -> Result<proto::ResolveEndpointResponse, Status> {
        Err(not_yet(MethodId::ResolveEndpoint))
    }

    async fn health(
        &self,
        _ctx: Ctx<Anonymous>,
        request: proto::HealthRequest,
    ) -> Result<proto::HealthResponse, Status> {
        health::health(self, request).await
    }

    async fn relay_enqueue(
        &self,
        _ctx: Ctx<FederationPeer>,
        _request: proto::RelayEnqueueRequest,
    ) -> Result<proto::RelayEnqueueResponse, Status> {
        Err(not_yet(MethodId::RelayEnqueue))
    }

    async fn relay_batch_enqueue(
        &self,
        _ctx: Ctx<FederationPeer>,
        _request: proto::RelayBatchEnqueueRequest,
    ) -> Result<proto::RelayBatchEnqueueResponse, Status> {
        Err(not_yet(MethodId::RelayBatchEnqueue))
    }

    async fn proxy_fetch_key_package(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ProxyFetchKeyPackageRequest,
    ) -> Result<proto::ProxyFetchKeyPackageResponse, Status> {
        Err(not_yet(MethodId::ProxyFetchKeyPackage))
    }

    async fn proxy_fetch_hybrid_key(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ProxyFetchHybridKeyRequest,
    ) -> Result<proto::ProxyFetchHybridKeyResponse, Status> {
        Err(not_yet(MethodId::ProxyFetchHybridKey))
    }

    async fn proxy_resolve_user(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ProxyResolveUserRequest,
    ) -> Result<proto::ProxyResolveUserResponse, Status> {
        Err(not_yet(MethodId::ProxyResolveUser))
    }

    async fn federation_health(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::FederationHealthRequest,
    ) -> Result<proto::FederationHealthResponse, Status> {
        Err(not_yet(MethodId::FederationHealth))
    }

    async fn delete_account(
        &self,
        ctx: Ctx<Session>,
        request: proto::DeleteAccountRequest,
    ) -> Result<proto::DeleteAccountResponse, Status> {
        Messenger::delete_account(self, ctx, request).await
    }
}
