//! Health (802): liveness and readiness, uptime, version.

use qpq_runtime::Status;
use qpq_schema::proto::{HealthRequest, HealthResponse, ServingStatus};

use crate::Messenger;
use crate::clock::now_ms;
use crate::store::Store;

pub(crate) async fn health<S: Store>(
    messenger: &Messenger<S>,
    _request: HealthRequest,
) -> Result<HealthResponse, Status> {
    let status = if messenger.is_serving() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    Ok(HealthResponse {
        status: status as i32,
        uptime_secs: messenger.started.elapsed().as_secs(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        server_time_unix_ms: now_ms(),
        domain: messenger.config.domain.clone().unwrap_or_default(),
    })
}
