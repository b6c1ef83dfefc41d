//! What operators use beside the protocol: the Prometheus `/metrics` endpoint and online
//! backup with its control socket.

pub mod backup;
pub(crate) mod metrics;
