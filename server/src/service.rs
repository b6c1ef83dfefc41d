//! The one `impl QpqService`: each method delegates to its group's module, so this file
//! stays a table of contents.

use qpq_runtime::{Admin, Anonymous, Ctx, FederationPeer, Session, Status};
use qpq_schema::{QpqService, proto};

use crate::Messenger;
use crate::health;
use crate::store::Store;

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

    async fn send_typing(
        &self,
        ctx: Ctx<Session>,
        request: proto::SendTypingRequest,
    ) -> Result<proto::SendTypingResponse, Status> {
        Messenger::send_typing(self, ctx, request).await
    }

    async fn upload_key_package(
        &self,
        ctx: Ctx<Session>,
        request: proto::UploadKeyPackageRequest,
    ) -> Result<proto::UploadKeyPackageResponse, Status> {
        Messenger::upload_key_package(self, ctx, request).await
    }

    async fn fetch_key_package(
        &self,
        ctx: Ctx<Session>,
        request: proto::FetchKeyPackageRequest,
    ) -> Result<proto::FetchKeyPackageResponse, Status> {
        Messenger::fetch_key_package(self, ctx, request).await
    }

    async fn upload_hybrid_key(
        &self,
        ctx: Ctx<Session>,
        request: proto::UploadHybridKeyRequest,
    ) -> Result<proto::UploadHybridKeyResponse, Status> {
        Messenger::upload_hybrid_key(self, ctx, request).await
    }

    async fn fetch_hybrid_key(
        &self,
        ctx: Ctx<Session>,
        request: proto::FetchHybridKeyRequest,
    ) -> Result<proto::FetchHybridKeyResponse, Status> {
        Messenger::fetch_hybrid_key(self, ctx, request).await
    }

    async fn fetch_hybrid_keys(
        &self,
        ctx: Ctx<Session>,
        request: proto::FetchHybridKeysRequest,
    ) -> Result<proto::FetchHybridKeysResponse, Status> {
        Messenger::fetch_hybrid_keys(self, ctx, request).await
    }

    async fn create_channel(
        &self,
        ctx: Ctx<Session>,
        request: proto::CreateChannelRequest,
    ) -> Result<proto::CreateChannelResponse, Status> {
        Messenger::create_channel(self, ctx, request).await
    }

    async fn remove_member(
        &self,
        ctx: Ctx<Session>,
        request: proto::RemoveMemberRequest,
    ) -> Result<proto::RemoveMemberResponse, Status> {
        Messenger::remove_member(self, ctx, request).await
    }

    async fn update_group_metadata(
        &self,
        ctx: Ctx<Session>,
        request: proto::UpdateGroupMetadataRequest,
    ) -> Result<proto::UpdateGroupMetadataResponse, Status> {
        Messenger::update_group_metadata(self, ctx, request).await
    }

    async fn list_group_members(
        &self,
        ctx: Ctx<Session>,
        request: proto::ListGroupMembersRequest,
    ) -> Result<proto::ListGroupMembersResponse, Status> {
        Messenger::list_group_members(self, ctx, request).await
    }

    async fn rotate_keys(
        &self,
        ctx: Ctx<Session>,
        request: proto::RotateKeysRequest,
    ) -> Result<proto::RotateKeysResponse, Status> {
        Messenger::rotate_keys(self, ctx, request).await
    }

    async fn report_message(
        &self,
        ctx: Ctx<Session>,
        request: proto::ReportMessageRequest,
    ) -> Result<proto::ReportMessageResponse, Status> {
        Messenger::report_message(self, ctx, request).await
    }

    async fn ban_user(
        &self,
        ctx: Ctx<Session>,
        request: proto::BanUserRequest,
    ) -> Result<proto::BanUserResponse, Status> {
        Messenger::ban_user(self, ctx, request).await
    }

    async fn unban_user(
        &self,
        ctx: Ctx<Session>,
        request: proto::UnbanUserRequest,
    ) -> Result<proto::UnbanUserResponse, Status> {
        Messenger::unban_user(self, ctx, request).await
    }

    async fn list_reports(
        &self,
        ctx: Ctx<Admin>,
        request: proto::ListReportsRequest,
    ) -> Result<proto::ListReportsResponse, Status> {
        Messenger::list_reports(self, ctx, request).await
    }

    async fn list_banned(
        &self,
        ctx: Ctx<Admin>,
        request: proto::ListBannedRequest,
    ) -> Result<proto::ListBannedResponse, Status> {
        Messenger::list_banned(self, ctx, request).await
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
        ctx: Ctx<Session>,
        request: proto::RevokeKeyRequest,
    ) -> Result<proto::RevokeKeyResponse, Status> {
        Messenger::revoke_key(self, ctx, request).await
    }

    async fn check_revocation(
        &self,
        ctx: Ctx<Session>,
        request: proto::CheckRevocationRequest,
    ) -> Result<proto::CheckRevocationResponse, Status> {
        Messenger::check_revocation(self, ctx, request).await
    }

    async fn audit_key_transparency(
        &self,
        ctx: Ctx<Session>,
        request: proto::AuditKeyTransparencyRequest,
    ) -> Result<proto::AuditKeyTransparencyResponse, Status> {
        Messenger::audit_key_transparency(self, ctx, request).await
    }

    async fn upload_blob(
        &self,
        ctx: Ctx<Session>,
        request: proto::UploadBlobRequest,
    ) -> Result<proto::UploadBlobResponse, Status> {
        Messenger::upload_blob(self, ctx, request).await
    }

    async fn download_blob(
        &self,
        ctx: Ctx<Session>,
        request: proto::DownloadBlobRequest,
    ) -> Result<proto::DownloadBlobResponse, Status> {
        Messenger::download_blob(self, ctx, request).await
    }

    async fn register_device(
        &self,
        ctx: Ctx<Session>,
        request: proto::RegisterDeviceRequest,
    ) -> Result<proto::RegisterDeviceResponse, Status> {
        Messenger::register_device(self, ctx, request).await
    }

    async fn list_devices(
        &self,
        ctx: Ctx<Session>,
        request: proto::ListDevicesRequest,
    ) -> Result<proto::ListDevicesResponse, Status> {
        Messenger::list_devices(self, ctx, request).await
    }

    async fn revoke_device(
        &self,
        ctx: Ctx<Session>,
        request: proto::RevokeDeviceRequest,
    ) -> Result<proto::RevokeDeviceResponse, Status> {
        Messenger::revoke_device(self, ctx, request).await
    }

    async fn register_push_token(
        &self,
        ctx: Ctx<Session>,
        request: proto::RegisterPushTokenRequest,
    ) -> Result<proto::RegisterPushTokenResponse, Status> {
        Messenger::register_push_token(self, ctx, request).await
    }

    async fn store_recovery_bundle(
        &self,
        ctx: Ctx<Session>,
        request: proto::StoreRecoveryBundleRequest,
    ) -> Result<proto::StoreRecoveryBundleResponse, Status> {
        Messenger::store_recovery_bundle(self, ctx, request).await
    }

    async fn fetch_recovery_bundle(
        &self,
        ctx: Ctx<Session>,
        request: proto::FetchRecoveryBundleRequest,
    ) -> Result<proto::FetchRecoveryBundleResponse, Status> {
        Messenger::fetch_recovery_bundle(self, ctx, request).await
    }

    async fn delete_recovery_bundle(
        &self,
        ctx: Ctx<Session>,
        request: proto::DeleteRecoveryBundleRequest,
    ) -> Result<proto::DeleteRecoveryBundleResponse, Status> {
        Messenger::delete_recovery_bundle(self, ctx, request).await
    }

    async fn publish_endpoint(
        &self,
        ctx: Ctx<Session>,
        request: proto::PublishEndpointRequest,
    ) -> Result<proto::PublishEndpointResponse, Status> {
        Messenger::publish_endpoint(self, ctx, request).await
    }

    async fn resolve_endpoint(
        &self,
        ctx: Ctx<Session>,
        request: proto::ResolveEndpointRequest,
    ) -> Result<proto::ResolveEndpointResponse, Status> {
        Messenger::resolve_endpoint(self, ctx, request).await
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
        ctx: Ctx<FederationPeer>,
        request: proto::RelayEnqueueRequest,
    ) -> Result<proto::RelayEnqueueResponse, Status> {
        Messenger::relay_enqueue(self, ctx, request).await
    }

    async fn relay_batch_enqueue(
        &self,
        ctx: Ctx<FederationPeer>,
        request: proto::RelayBatchEnqueueRequest,
    ) -> Result<proto::RelayBatchEnqueueResponse, Status> {
        Messenger::relay_batch_enqueue(self, ctx, request).await
    }

    async fn proxy_fetch_key_package(
        &self,
        ctx: Ctx<Session>,
        request: proto::ProxyFetchKeyPackageRequest,
    ) -> Result<proto::ProxyFetchKeyPackageResponse, Status> {
        Messenger::proxy_fetch_key_package(self, ctx, request).await
    }

    async fn proxy_fetch_hybrid_key(
        &self,
        ctx: Ctx<Session>,
        request: proto::ProxyFetchHybridKeyRequest,
    ) -> Result<proto::ProxyFetchHybridKeyResponse, Status> {
        Messenger::proxy_fetch_hybrid_key(self, ctx, request).await
    }

    async fn proxy_resolve_user(
        &self,
        ctx: Ctx<Session>,
        request: proto::ProxyResolveUserRequest,
    ) -> Result<proto::ProxyResolveUserResponse, Status> {
        Messenger::proxy_resolve_user(self, ctx, request).await
    }

    async fn federation_health(
        &self,
        ctx: Ctx<Session>,
        request: proto::FederationHealthRequest,
    ) -> Result<proto::FederationHealthResponse, Status> {
        Messenger::federation_health(self, ctx, request).await
    }

    async fn peer_fetch_key_package(
        &self,
        ctx: Ctx<FederationPeer>,
        request: proto::PeerFetchKeyPackageRequest,
    ) -> Result<proto::PeerFetchKeyPackageResponse, Status> {
        Messenger::peer_fetch_key_package(self, ctx, request).await
    }

    async fn peer_fetch_hybrid_key(
        &self,
        ctx: Ctx<FederationPeer>,
        request: proto::PeerFetchHybridKeyRequest,
    ) -> Result<proto::PeerFetchHybridKeyResponse, Status> {
        Messenger::peer_fetch_hybrid_key(self, ctx, request).await
    }

    async fn peer_resolve_user(
        &self,
        ctx: Ctx<FederationPeer>,
        request: proto::PeerResolveUserRequest,
    ) -> Result<proto::PeerResolveUserResponse, Status> {
        Messenger::peer_resolve_user(self, ctx, request).await
    }

    async fn delete_account(
        &self,
        ctx: Ctx<Session>,
        request: proto::DeleteAccountRequest,
    ) -> Result<proto::DeleteAccountResponse, Status> {
        Messenger::delete_account(self, ctx, request).await
    }

    async fn list_users(
        &self,
        ctx: Ctx<Admin>,
        request: proto::ListUsersRequest,
    ) -> Result<proto::ListUsersResponse, Status> {
        Messenger::list_users(self, ctx, request).await
    }

    async fn storage_stats(
        &self,
        ctx: Ctx<Admin>,
        request: proto::StorageStatsRequest,
    ) -> Result<proto::StorageStatsResponse, Status> {
        Messenger::storage_stats(self, ctx, request).await
    }
}
