//! The commands, one module per area. Each imports only the shared modules (`args`,
//! `context`, `format`, `progress`), never another area, so an area can change or move alone.

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod blobs;
pub(crate) mod channels;
pub(crate) mod devices;
pub(crate) mod keys;
pub(crate) mod kt;
pub(crate) mod lookup;
pub(crate) mod messages;
pub(crate) mod recovery;
