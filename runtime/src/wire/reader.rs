//! Reading one frame from the chunks a stream hands over, for transports that deliver bytes
//! in pieces (QUIC's `read_chunk`) rather than into one buffer.
//!
//! Two steps, with the caller deciding in between (method lookup, length limit):
//! [`HeaderReader`] collects the fixed-size header, then a [`BodyAccumulator`] created from
//! the declared length (checked against the limit first, with [`check_len`](super::check_len))
//! collects the body.
//!
//! Contract (the spirit of `tokio_util::codec::Decoder`, for chunks): each reader says how
//! many bytes it still needs (`remaining`); the caller asks its stream for at most that many
//! and feeds what it gets, in any split. A chunk longer than `remaining` is refused with
//! [`FrameError::Overrun`] and nothing of it is taken, so a reader never holds more than its
//! frame. At the end of the stream, `finish` says whether the frame was whole:
//! [`FrameError::Truncated`] for a partial header, [`FrameError::BodyTruncated`] (received
//! `n` of `len`) for a partial body.
//!
//! A body that arrives in one chunk (the usual case) is returned as that chunk: no copy and no
//! allocation. Several chunks are joined once, into a buffer of exactly the declared length.

use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};

use super::FrameError;
use super::frame::FrameHeader;

/// The longest header of the protocol (the request header).
const MAX_HEADER_LEN: usize = 10;

/// Collects the fixed-size header `H` of one frame from chunks.
///
/// ```
/// use qpq_runtime::wire::{HeaderReader, RequestHeader};
///
/// let bytes = RequestHeader { method_id: 200, req_id: 7, len: 3 }.to_bytes();
/// let mut reader = HeaderReader::<RequestHeader>::new();
/// assert_eq!(reader.feed(&bytes[..4]), Ok(None));
/// assert_eq!(reader.remaining(), 6);
/// let header = reader.feed(&bytes[4..]).unwrap().unwrap();
/// assert_eq!((header.method_id, header.req_id, header.len), (200, 7, 3));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct HeaderReader<H> {
    bytes: [u8; MAX_HEADER_LEN],
    // Small integers: a reader lives in the future of every stream, which is kept small.
    received: u8,
    header: PhantomData<H>,
}

impl<H: FrameHeader> Default for HeaderReader<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: FrameHeader> HeaderReader<H> {
    /// A reader that has received nothing.
    pub const fn new() -> Self {
        const { assert!(H::LEN <= MAX_HEADER_LEN) };
        Self {
            bytes: [0; MAX_HEADER_LEN],
            received: 0,
            header: PhantomData,
        }
    }

    /// Header bytes still missing: the most to ask the stream for next.
    pub fn remaining(&self) -> usize {
        H::LEN - self.received()
    }

    /// Header bytes received so far.
    pub fn received(&self) -> usize {
        usize::from(self.received)
    }

    /// Takes the next bytes of the header. `Ok(None)`: more are needed; `Ok(Some(header))`:
    /// the header is complete (and stays so). A chunk longer than [`remaining`](Self::remaining)
    /// is refused whole with [`FrameError::Overrun`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Option<H>, FrameError> {
        let remaining = self.remaining();
        if chunk.len() > remaining {
            return Err(FrameError::Overrun {
                expected: remaining,
                got: chunk.len(),
            });
        }
        let received = self.received();
        self.bytes[received..received + chunk.len()].copy_from_slice(chunk);
        // At most `MAX_HEADER_LEN`: the length was checked against `remaining` above.
        self.received += chunk.len() as u8;
        Ok(self.header())
    }

    /// Call when the stream has ended: the header if it is complete, otherwise
    /// [`FrameError::Truncated`] with the bytes received (0 when the stream ended before the
    /// frame began, a clean end for a stream of frames back to back).
    pub fn finish(&self) -> Result<H, FrameError> {
        self.header().ok_or(FrameError::Truncated {
            received: self.received(),
        })
    }

    fn header(&self) -> Option<H> {
        H::peek(&self.bytes[..self.received()])
    }
}

/// Collects the body of one frame, of a declared length already checked against its limit,
/// from the chunks a stream hands over.
///
/// ```
/// use bytes::Bytes;
/// use qpq_runtime::wire::{BodyAccumulator, FrameError};
///
/// let mut body = BodyAccumulator::new(5);
/// body.feed(Bytes::from_static(b"hel")).unwrap();
/// assert_eq!(body.remaining(), 2);
/// body.feed(Bytes::from_static(b"lo")).unwrap();
/// assert_eq!(body.finish().unwrap(), Bytes::from_static(b"hello"));
///
/// let mut short = BodyAccumulator::new(5);
/// short.feed(Bytes::from_static(b"hel")).unwrap();
/// assert_eq!(short.finish(), Err(FrameError::BodyTruncated { received: 3, len: 5 }));
/// ```
#[derive(Clone, Debug)]
pub struct BodyAccumulator {
    len: u32,
    /// At most `len`, so a `u32` too (this lives in the future of every call).
    received: u32,
    /// The first chunk, taken as is: the whole body when it came in one.
    first: Bytes,
    /// From the second chunk on: everything so far, in one buffer of the declared length.
    joined: Option<BytesMut>,
}

impl BodyAccumulator {
    /// An accumulator for a body of `len` bytes. Allocates nothing: memory is reserved only if
    /// the body arrives in more than one chunk, and then exactly `len` bytes, so `len` must
    /// have been checked against the frame's limit.
    pub fn new(len: u32) -> Self {
        Self {
            len,
            received: 0,
            first: Bytes::new(),
            joined: None,
        }
    }

    /// The declared length.
    pub fn declared(&self) -> u32 {
        self.len
    }

    /// Body bytes received so far.
    pub fn received(&self) -> usize {
        self.received as usize
    }

    /// Body bytes still missing: the most to ask the stream for next.
    pub fn remaining(&self) -> usize {
        (self.len - self.received) as usize
    }

    /// Whether the whole body is there.
    pub fn is_complete(&self) -> bool {
        self.remaining() == 0
    }

    /// Takes the next chunk of the body. A chunk longer than [`remaining`](Self::remaining)
    /// (more bytes than the header declared) is refused whole with [`FrameError::Overrun`].
    pub fn feed(&mut self, chunk: Bytes) -> Result<(), FrameError> {
        let remaining = self.remaining();
        if chunk.len() > remaining {
            return Err(FrameError::Overrun {
                expected: remaining,
                got: chunk.len(),
            });
        }
        if chunk.is_empty() {
            return Ok(());
        }
        // At most `len`: the length was checked against `remaining` above.
        self.received += chunk.len() as u32;
        if let Some(joined) = &mut self.joined {
            joined.extend_from_slice(&chunk);
        } else if self.first.is_empty() {
            self.first = chunk;
        } else {
            let mut joined = BytesMut::with_capacity(self.len as usize);
            joined.extend_from_slice(&self.first);
            joined.extend_from_slice(&chunk);
            self.first = Bytes::new();
            self.joined = Some(joined);
        }
        Ok(())
    }

    /// The body once complete; before that (the stream ended early),
    /// [`FrameError::BodyTruncated`] with the bytes received and the declared length.
    pub fn finish(self) -> Result<Bytes, FrameError> {
        if !self.is_complete() {
            return Err(FrameError::BodyTruncated {
                received: self.received(),
                len: self.len,
            });
        }
        Ok(match self.joined {
            Some(joined) => joined.freeze(),
            None => self.first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{PushHeader, RequestHeader, ResponseHeader, StatusCode};

    fn body(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i * 7 + 3) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    #[test]
    fn a_body_split_at_every_byte_arrives_whole() {
        let whole = body(300);
        for split in 0..=whole.len() {
            let mut accumulator = BodyAccumulator::new(300);
            accumulator.feed(whole.slice(..split)).unwrap();
            assert_eq!(accumulator.received(), split);
            assert_eq!(accumulator.remaining(), 300 - split);
            accumulator.feed(whole.slice(split..)).unwrap();
            assert!(accumulator.is_complete());
            assert_eq!(accumulator.finish().unwrap(), whole, "split at {split}");
        }
        // And split everywhere at once: one byte a chunk.
        let mut accumulator = BodyAccumulator::new(300);
        for i in 0..whole.len() {
            accumulator.feed(whole.slice(i..=i)).unwrap();
        }
        assert_eq!(accumulator.finish().unwrap(), whole);
    }

    #[test]
    fn a_body_in_one_chunk_is_that_chunk() {
        let whole = body(64);
        let mut accumulator = BodyAccumulator::new(64);
        accumulator.feed(Bytes::new()).unwrap();
        accumulator.feed(whole.clone()).unwrap();
        let out = accumulator.finish().unwrap();
        assert_eq!(out.as_ptr(), whole.as_ptr(), "no copy");
        // An empty body needs no chunk at all.
        assert_eq!(BodyAccumulator::new(0).finish().unwrap(), Bytes::new());
    }

    #[test]
    fn a_joined_body_is_held_in_exactly_its_declared_length() {
        let whole = body(1000);
        let mut accumulator = BodyAccumulator::new(1000);
        accumulator.feed(whole.slice(..1)).unwrap();
        accumulator.feed(whole.slice(1..500)).unwrap();
        assert_eq!(accumulator.joined.as_ref().unwrap().capacity(), 1000);
        accumulator.feed(whole.slice(500..)).unwrap();
        assert_eq!(accumulator.finish().unwrap(), whole);
    }

    #[test]
    fn a_body_cut_short_reports_what_arrived() {
        let whole = body(40);
        for cut in 0..whole.len() {
            let mut accumulator = BodyAccumulator::new(40);
            // In two chunks where there are bytes for two.
            let half = cut / 2;
            accumulator.feed(whole.slice(..half)).unwrap();
            accumulator.feed(whole.slice(half..cut)).unwrap();
            assert_eq!(
                accumulator.finish(),
                Err(FrameError::BodyTruncated {
                    received: cut,
                    len: 40
                })
            );
        }
        assert_eq!(
            FrameError::BodyTruncated {
                received: 3,
                len: 100
            }
            .to_string(),
            "stream ended after 3 of the 100 body bytes the header announced"
        );
    }

    #[test]
    fn more_body_than_declared_is_refused_and_nothing_is_taken() {
        let whole = body(10);
        for split in 0..=10 {
            let mut accumulator = BodyAccumulator::new(10);
            accumulator.feed(whole.slice(..split)).unwrap();
            let extra = Bytes::from(vec![0xEE; 10 - split + 1]);
            assert_eq!(
                accumulator.feed(extra),
                Err(FrameError::Overrun {
                    expected: 10 - split,
                    got: 10 - split + 1
                })
            );
            assert_eq!(accumulator.received(), split);
            accumulator.feed(whole.slice(split..)).unwrap();
            assert_eq!(accumulator.finish().unwrap(), whole);
        }
    }

    #[test]
    fn headers_split_at_every_byte_parse_the_same() {
        let request = RequestHeader {
            method_id: 0x0102,
            req_id: 0x0304_0506,
            len: 0x0708_090A,
        };
        let bytes = request.to_bytes();
        for split in 0..=bytes.len() {
            let mut reader = HeaderReader::<RequestHeader>::new();
            let first = reader.feed(&bytes[..split]).unwrap();
            assert_eq!(first.is_some(), split == bytes.len());
            assert_eq!(reader.received(), split);
            assert_eq!(reader.feed(&bytes[split..]), Ok(Some(request)));
            assert_eq!(reader.finish(), Ok(request));
            assert_eq!(reader.remaining(), 0);
        }
        let response = ResponseHeader {
            status: StatusCode::Unknown(200),
            req_id: 9,
            len: 1,
        };
        let bytes = response.to_bytes();
        let mut reader = HeaderReader::<ResponseHeader>::new();
        for byte in &bytes[..bytes.len() - 1] {
            assert_eq!(reader.feed(std::slice::from_ref(byte)), Ok(None));
        }
        assert_eq!(reader.feed(&bytes[bytes.len() - 1..]), Ok(Some(response)));
        let push = PushHeader {
            event_type: 1003,
            len: 258,
        };
        let mut reader = HeaderReader::<PushHeader>::default();
        assert_eq!(reader.feed(&push.to_bytes()), Ok(Some(push)));
    }

    #[test]
    fn a_header_cut_short_or_overfed_is_reported() {
        let bytes = RequestHeader {
            method_id: 1,
            req_id: 2,
            len: 3,
        }
        .to_bytes();
        for cut in 0..bytes.len() {
            let mut reader = HeaderReader::<RequestHeader>::new();
            reader.feed(&bytes[..cut]).unwrap();
            assert_eq!(
                reader.finish(),
                Err(FrameError::Truncated { received: cut })
            );
            // The header plus one body byte is more than the header reader takes.
            let mut overfed = bytes.to_vec();
            overfed.push(0);
            assert_eq!(
                reader.feed(&overfed[cut..]),
                Err(FrameError::Overrun {
                    expected: bytes.len() - cut,
                    got: bytes.len() - cut + 1
                })
            );
            assert_eq!(reader.received(), cut, "nothing taken");
        }
    }
}
