//! The sans-IO core of the protocol: frame codec, status codes and the error body.
//!
//! This module performs no I/O and keeps no clock: it turns bytes into frames and frames into
//! bytes. It depends on `bytes` and `thiserror` only. **Architecture invariant:** nothing in
//! here names quinn or tokio (a test in `runtime/tests/invariants.rs` checks), so it can be
//! fuzzed and reused by other transports.
//!
//! Two ways in, one parser: the buffer decoders (`decode_request`, `decode_response`,
//! `decode_push`) for bytes gathered in one buffer, and the chunk readers ([`HeaderReader`],
//! [`BodyAccumulator`]) that the QUIC server, client and push reader feed as chunks arrive.
//! Both parse headers with [`FrameHeader::peek`] and check lengths with [`check_len`]; the
//! fuzz targets in `fuzz/` drive both and check that they agree.

mod frame;
mod pb;
mod reader;
mod status;

pub use frame::{
    FrameHeader, PUSH_HEADER_LEN, PushFrame, PushHeader, REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN,
    RequestFrame, RequestHeader, ResponseFrame, ResponseHeader, check_len, decode_push,
    decode_request, decode_response, encode_push, encode_request, encode_response, finish,
};
pub use reader::{BodyAccumulator, HeaderReader};
pub use status::{Status, StatusCode};

/// Why bytes could not be turned into a frame (or a frame into bytes).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared body length is over the limit for this frame.
    #[error("frame body of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: u32,
        /// The limit that applied.
        max: u32,
    },
    /// The method ID is not registered.
    #[error("method {0} is not registered")]
    UnknownMethod(u16),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame after {received} bytes")]
    Truncated {
        /// Bytes of the partial frame that did arrive.
        received: usize,
    },
    /// The stream ended inside a frame's body.
    #[error("stream ended after {received} of the {len} body bytes the header announced")]
    BodyTruncated {
        /// Body bytes that did arrive.
        received: usize,
        /// The length the header declared.
        len: u32,
    },
    /// A reader was offered more bytes than its frame has left (more than the header
    /// declared); it took none of them.
    #[error("{got} bytes offered where the frame has only {expected} left")]
    Overrun {
        /// Bytes the frame still needed.
        expected: usize,
        /// Bytes offered.
        got: usize,
    },
    /// A body too long to describe with a `u32` length.
    #[error("frame body of {len} bytes cannot be described by a u32 length")]
    BodyTooLong {
        /// Actual length.
        len: usize,
    },
}
