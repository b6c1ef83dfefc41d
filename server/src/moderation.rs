//! Moderation (420-424): reports and bans.
//!
//! Not implemented yet: every method answers Unavailable (see `service::not_yet`).

use qpq_runtime::{Admin, Ctx, Session, Status};
use qpq_schema::{MethodId, proto};

use crate::Messenger;
use crate::service::not_yet;
use crate::store::Store;

impl<S: Store> Messenger<S> {
    pub(crate) async fn report_message(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ReportMessageRequest,
    ) -> Result<proto::ReportMessageResponse, Status> {
        Err(not_yet(MethodId::ReportMessage))
    }

    pub(crate) async fn ban_user(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::BanUserRequest,
    ) -> Result<proto::BanUserResponse, Status> {
        Err(not_yet(MethodId::BanUser))
    }

    pub(crate) async fn unban_user(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::UnbanUserRequest,
    ) -> Result<proto::UnbanUserResponse, Status> {
        Err(not_yet(MethodId::UnbanUser))
    }

    pub(crate) async fn list_reports(
        &self,
        _ctx: Ctx<Admin>,
        _request: proto::ListReportsRequest,
    ) -> Result<proto::ListReportsResponse, Status> {
        Err(not_yet(MethodId::ListReports))
    }

    pub(crate) async fn list_banned(
        &self,
        _ctx: Ctx<Admin>,
        _request: proto::ListBannedRequest,
    ) -> Result<proto::ListBannedResponse, Status> {
        Err(not_yet(MethodId::ListBanned))
    }
}
