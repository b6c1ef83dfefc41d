//! The committed output of `qpq-codegen` for `codegen/tests/fixtures/demo`.
//!
//! `generated.rs` is compared byte for byte with fresh output by `qpq-codegen`'s golden test
//! (`QPQ_BLESS=1 cargo test -p qpq-codegen` rewrites it), and compiling this crate proves the
//! generated code type-checks. The tests in `tests/` run the runtime over real loopback QUIC
//! through this generated API.

#[rustfmt::skip]
mod generated;

pub use generated::*;
