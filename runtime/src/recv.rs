//! Reading frames off a QUIC receive stream: the thin async driver over the sans-IO readers
//! of [`wire`](crate::wire) ([`HeaderReader`], [`BodyAccumulator`]). The server (request
//! header and body), the client (response header and body) and the push reader all read
//! through here, so the live path decodes with the same code the fuzz targets exercise.
//!
//! Each read asks QUIC for at most what the frame still needs, so nothing past the frame is
//! consumed, and a body that QUIC hands over in one chunk is returned without a copy.
//! Decoding decisions (limits, unknown methods, messages for the peer) are the callers'.

use bytes::Bytes;

use crate::wire::{BodyAccumulator, FrameError, FrameHeader, HeaderReader};

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum RecvError {
    /// The stream finished inside the frame ([`FrameError::Truncated`] in the header,
    /// [`FrameError::BodyTruncated`] in the body).
    Frame(FrameError),
    /// The peer reset the stream: it gave up.
    Reset,
    /// The connection failed or closed.
    Lost(quinn::ReadError),
}

impl From<quinn::ReadError> for RecvError {
    fn from(error: quinn::ReadError) -> Self {
        match error {
            quinn::ReadError::Reset(_) => RecvError::Reset,
            other => RecvError::Lost(other),
        }
    }
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Frame(error) => error.fmt(f),
            RecvError::Reset => f.write_str("the peer reset the stream"),
            RecvError::Lost(error) => error.fmt(f),
        }
    }
}

/// Reads the fixed-size header `H` of the next frame.
pub(crate) async fn read_header<H: FrameHeader>(
    recv: &mut quinn::RecvStream,
) -> Result<H, RecvError> {
    let mut reader = HeaderReader::<H>::new();
    loop {
        match recv.read_chunk(reader.remaining(), true).await? {
            Some(chunk) => {
                if let Some(header) = reader.feed(&chunk.bytes).map_err(RecvError::Frame)? {
                    return Ok(header);
                }
            }
            None => return reader.finish().map_err(RecvError::Frame),
        }
    }
}

/// Reads a body of `len` bytes (already checked against its limit).
pub(crate) async fn read_body(recv: &mut quinn::RecvStream, len: u32) -> Result<Bytes, RecvError> {
    let mut body = BodyAccumulator::new(len);
    while !body.is_complete() {
        match recv.read_chunk(body.remaining(), true).await? {
            Some(chunk) => body.feed(chunk.bytes).map_err(RecvError::Frame)?,
            None => break,
        }
    }
    body.finish().map_err(RecvError::Frame)
}
