//! Blobs (600-601): content-addressed attachments.
//!
//! Not implemented yet: every method answers Unavailable (see `service::not_yet`).

use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{MethodId, proto};

use crate::Messenger;
use crate::service::not_yet;
use crate::store::Store;

impl<S: Store> Messenger<S> {
    pub(crate) async fn upload_blob(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::UploadBlobRequest,
    ) -> Result<proto::UploadBlobResponse, Status> {
        Err(not_yet(MethodId::UploadBlob))
    }

    pub(crate) async fn download_blob(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::DownloadBlobRequest,
    ) -> Result<proto::DownloadBlobResponse, Status> {
        Err(not_yet(MethodId::DownloadBlob))
    }
}
