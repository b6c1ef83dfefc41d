//! Runnable examples of quicproquo. Each program in `src/bin/` starts with a comment that
//! says what it shows and how to run it; `tests/examples.rs` runs each to completion.
//!
//! [`notes`] holds the API generated from `custom-service/methods.toml` by `build.rs`.

/// The note board API generated from `custom-service/methods.toml` (see `build.rs`).
pub mod notes {
    include!(concat!(env!("OUT_DIR"), "/qpq_generated.rs"));
}
