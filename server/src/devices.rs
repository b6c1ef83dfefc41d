//! Devices (700-702, 710): devices of an account and their push tokens.
//!
//! Not implemented yet: every method answers Unavailable (see `service::not_yet`).

use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{MethodId, proto};

use crate::Messenger;
use crate::service::not_yet;
use crate::store::Store;

impl<S: Store> Messenger<S> {
    pub(crate) async fn register_device(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RegisterDeviceRequest,
    ) -> Result<proto::RegisterDeviceResponse, Status> {
        Err(not_yet(MethodId::RegisterDevice))
    }

    pub(crate) async fn list_devices(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ListDevicesRequest,
    ) -> Result<proto::ListDevicesResponse, Status> {
        Err(not_yet(MethodId::ListDevices))
    }

    pub(crate) async fn revoke_device(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RevokeDeviceRequest,
    ) -> Result<proto::RevokeDeviceResponse, Status> {
        Err(not_yet(MethodId::RevokeDevice))
    }

    pub(crate) async fn register_push_token(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RegisterPushTokenRequest,
    ) -> Result<proto::RegisterPushTokenResponse, Status> {
        Err(not_yet(MethodId::RegisterPushToken))
    }
}
