//! The three frames of the protocol and their sans-IO codec.
//!
//! ```text
//! request:  method_id: u16 | req_id: u32 | len: u32 | len bytes of protobuf
//! response: status: u8     | req_id: u32 | len: u32 | len bytes of protobuf
//! push:     event_type: u16 |              len: u32 | len bytes of protobuf
//! ```
//! All integers are big-endian.
//!
//! Decoder contract (the same as `tokio_util::codec::Decoder`): `decode_*` looks at the front
//! of the buffer; `Ok(None)` means more bytes are needed and nothing was consumed; `Ok(Some)`
//! consumes exactly one frame. The declared length is checked against the caller's limit
//! **before** any buffer space is reserved, so a hostile length costs nothing. At the end of a
//! stream, [`finish`] reports leftover bytes as a truncated frame.
//!
//! Every header is parsed by one function, [`FrameHeader::peek`]: the buffer decoders here
//! and the chunk readers of `reader.rs` (what the QUIC transport uses) share it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::FrameError;
use super::status::StatusCode;

/// Length of a request header: `u16 + u32 + u32`.
pub const REQUEST_HEADER_LEN: usize = 10;
/// Length of a response header: `u8 + u32 + u32`.
pub const RESPONSE_HEADER_LEN: usize = 9;
/// Length of a push header: `u16 + u32`.
pub const PUSH_HEADER_LEN: usize = 6;

/// The fixed part of a frame: [`RequestHeader`], [`ResponseHeader`] or [`PushHeader`].
pub trait FrameHeader: Copy + Sized {
    /// Its length on the wire.
    const LEN: usize;

    /// Parses the header from the first [`LEN`](Self::LEN) bytes of `bytes`, or `None` when
    /// fewer are there. Bytes after the header are not looked at.
    fn peek(bytes: &[u8]) -> Option<Self>;

    /// The declared length of the body that follows (to check against a limit before
    /// anything is reserved for it).
    fn body_len(&self) -> u32;
}

/// The fixed part of a request frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// Method to call.
    pub method_id: u16,
    /// Chosen by the client, echoed in the response; for correlation and logs only.
    pub req_id: u32,
    /// Length of the protobuf body that follows.
    pub len: u32,
}

impl RequestHeader {
    /// Parses the header bytes.
    pub fn parse(bytes: &[u8; REQUEST_HEADER_LEN]) -> Self {
        let mut buf = &bytes[..];
        Self {
            method_id: buf.get_u16(),
            req_id: buf.get_u32(),
            len: buf.get_u32(),
        }
    }

    /// The header bytes.
    pub fn to_bytes(self) -> [u8; REQUEST_HEADER_LEN] {
        let mut out = [0u8; REQUEST_HEADER_LEN];
        let mut buf = &mut out[..];
        buf.put_u16(self.method_id);
        buf.put_u32(self.req_id);
        buf.put_u32(self.len);
        out
    }
}

impl FrameHeader for RequestHeader {
    const LEN: usize = REQUEST_HEADER_LEN;

    fn peek(bytes: &[u8]) -> Option<Self> {
        let header = bytes.get(..Self::LEN)?;
        Some(Self::parse(header.try_into().ok()?))
    }

    fn body_len(&self) -> u32 {
        self.len
    }
}

/// The fixed part of a response frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    /// Outcome of the call.
    pub status: StatusCode,
    /// The request's `req_id`, unchanged.
    pub req_id: u32,
    /// Length of the protobuf body that follows.
    pub len: u32,
}

impl ResponseHeader {
    /// Parses the header bytes.
    pub fn parse(bytes: &[u8; RESPONSE_HEADER_LEN]) -> Self {
        let mut buf = &bytes[..];
        Self {
            status: StatusCode::from_u8(buf.get_u8()),
            req_id: buf.get_u32(),
            len: buf.get_u32(),
        }
    }

    /// The header bytes.
    pub fn to_bytes(self) -> [u8; RESPONSE_HEADER_LEN] {
        let mut out = [0u8; RESPONSE_HEADER_LEN];
        let mut buf = &mut out[..];
        buf.put_u8(self.status.as_u8());
        buf.put_u32(self.req_id);
        buf.put_u32(self.len);
        out
    }
}

impl FrameHeader for ResponseHeader {
    const LEN: usize = RESPONSE_HEADER_LEN;

    fn peek(bytes: &[u8]) -> Option<Self> {
        let header = bytes.get(..Self::LEN)?;
        Some(Self::parse(header.try_into().ok()?))
    }

    fn body_len(&self) -> u32 {
        self.len
    }
}

/// The fixed part of a push frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushHeader {
    /// Event type (1000 and up).
    pub event_type: u16,
    /// Length of the protobuf body that follows.
    pub len: u32,
}

impl PushHeader {
    /// Parses the header bytes.
    pub fn parse(bytes: &[u8; PUSH_HEADER_LEN]) -> Self {
        let mut buf = &bytes[..];
        Self {
            event_type: buf.get_u16(),
            len: buf.get_u32(),
        }
    }

    /// The header bytes.
    pub fn to_bytes(self) -> [u8; PUSH_HEADER_LEN] {
        let mut out = [0u8; PUSH_HEADER_LEN];
        let mut buf = &mut out[..];
        buf.put_u16(self.event_type);
        buf.put_u32(self.len);
        out
    }
}

impl FrameHeader for PushHeader {
    const LEN: usize = PUSH_HEADER_LEN;

    fn peek(bytes: &[u8]) -> Option<Self> {
        let header = bytes.get(..Self::LEN)?;
        Some(Self::parse(header.try_into().ok()?))
    }

    fn body_len(&self) -> u32 {
        self.len
    }
}

/// A whole request frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFrame {
    /// Method to call.
    pub method_id: u16,
    /// Correlation id chosen by the client.
    pub req_id: u32,
    /// Protobuf body.
    pub body: Bytes,
}

/// A whole response frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseFrame {
    /// Outcome of the call.
    pub status: StatusCode,
    /// The request's `req_id`.
    pub req_id: u32,
    /// Protobuf body: the response message when Ok, `qpq.v2.Error` otherwise.
    pub body: Bytes,
}

/// A whole push frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushFrame {
    /// Event type.
    pub event_type: u16,
    /// Protobuf body of the event.
    pub body: Bytes,
}

fn body_len(len: usize) -> Result<u32, FrameError> {
    u32::try_from(len).map_err(|_| FrameError::BodyTooLong { len })
}

/// Appends a request frame to `dst`.
pub fn encode_request(
    method_id: u16,
    req_id: u32,
    body: &[u8],
    dst: &mut BytesMut,
) -> Result<(), FrameError> {
    let len = body_len(body.len())?;
    dst.reserve(REQUEST_HEADER_LEN + body.len());
    dst.put_slice(
        &RequestHeader {
            method_id,
            req_id,
            len,
        }
        .to_bytes(),
    );
    dst.put_slice(body);
    Ok(())
}

/// Appends a response frame to `dst`.
pub fn encode_response(
    status: StatusCode,
    req_id: u32,
    body: &[u8],
    dst: &mut BytesMut,
) -> Result<(), FrameError> {
    let len = body_len(body.len())?;
    dst.reserve(RESPONSE_HEADER_LEN + body.len());
    dst.put_slice(
        &ResponseHeader {
            status,
            req_id,
            len,
        }
        .to_bytes(),
    );
    dst.put_slice(body);
    Ok(())
}

/// Appends a push frame to `dst`.
pub fn encode_push(event_type: u16, body: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
    let len = body_len(body.len())?;
    dst.reserve(PUSH_HEADER_LEN + body.len());
    dst.put_slice(&PushHeader { event_type, len }.to_bytes());
    dst.put_slice(body);
    Ok(())
}

/// Checks a declared length against a limit without allocating.
pub fn check_len(len: u32, max: u32) -> Result<(), FrameError> {
    if len > max {
        Err(FrameError::TooLarge { len, max })
    } else {
        Ok(())
    }
}

/// Takes `header_len + len` bytes off the front once they are all there.
fn split_frame(buf: &mut BytesMut, header_len: usize, len: u32) -> Option<Bytes> {
    let total = header_len + len as usize;
    if buf.len() < total {
        // Only now, with the length accepted, is space reserved for the rest of the frame.
        buf.reserve(total - buf.len());
        return None;
    }
    let mut frame = buf.split_to(total);
    frame.advance(header_len);
    Some(frame.freeze())
}

/// Decodes one request frame from the front of `buf`.
///
/// `limit` maps a method ID to its maximum body length; it is called as soon as the header is
/// complete and may refuse the method (e.g. [`FrameError::UnknownMethod`]) before the body is
/// buffered.
pub fn decode_request(
    buf: &mut BytesMut,
    limit: impl FnOnce(u16) -> Result<u32, FrameError>,
) -> Result<Option<RequestFrame>, FrameError> {
    let Some(header) = RequestHeader::peek(buf) else {
        return Ok(None);
    };
    check_len(header.len, limit(header.method_id)?)?;
    Ok(
        split_frame(buf, REQUEST_HEADER_LEN, header.len).map(|body| RequestFrame {
            method_id: header.method_id,
            req_id: header.req_id,
            body,
        }),
    )
}

/// Decodes one response frame from the front of `buf`, refusing bodies over `max_len`.
pub fn decode_response(
    buf: &mut BytesMut,
    max_len: u32,
) -> Result<Option<ResponseFrame>, FrameError> {
    let Some(header) = ResponseHeader::peek(buf) else {
        return Ok(None);
    };
    check_len(header.len, max_len)?;
    Ok(
        split_frame(buf, RESPONSE_HEADER_LEN, header.len).map(|body| ResponseFrame {
            status: header.status,
            req_id: header.req_id,
            body,
        }),
    )
}

/// Decodes one push frame from the front of `buf`, refusing bodies over `max_len`.
pub fn decode_push(buf: &mut BytesMut, max_len: u32) -> Result<Option<PushFrame>, FrameError> {
    let Some(header) = PushHeader::peek(buf) else {
        return Ok(None);
    };
    check_len(header.len, max_len)?;
    Ok(
        split_frame(buf, PUSH_HEADER_LEN, header.len).map(|body| PushFrame {
            event_type: header.event_type,
            body,
        }),
    )
}

/// Call at the end of a stream: bytes left over are a truncated frame.
pub fn finish(buf: &BytesMut) -> Result<(), FrameError> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(FrameError::Truncated {
            received: buf.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_method(_: u16) -> Result<u32, FrameError> {
        Ok(1 << 20)
    }

    fn sample_bodies() -> Vec<Vec<u8>> {
        vec![Vec::new(), vec![7], (0..=255u8).collect(), vec![0xAB; 5000]]
    }

    #[test]
    fn request_round_trip() {
        for body in sample_bodies() {
            let mut buf = BytesMut::new();
            encode_request(802, 0xDEAD_BEEF, &body, &mut buf).unwrap();
            assert_eq!(buf.len(), REQUEST_HEADER_LEN + body.len());
            let frame = decode_request(&mut buf, any_method).unwrap().unwrap();
            assert_eq!(frame.method_id, 802);
            assert_eq!(frame.req_id, 0xDEAD_BEEF);
            assert_eq!(&frame.body[..], &body[..]);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn response_round_trip_including_unknown_status() {
        for status in [
            StatusCode::Ok,
            StatusCode::Internal,
            StatusCode::Unknown(77),
        ] {
            for body in sample_bodies() {
                let mut buf = BytesMut::new();
                encode_response(status, 9, &body, &mut buf).unwrap();
                let frame = decode_response(&mut buf, 1 << 20).unwrap().unwrap();
                assert_eq!(frame.status, status);
                assert_eq!(frame.req_id, 9);
                assert_eq!(&frame.body[..], &body[..]);
            }
        }
    }

    #[test]
    fn push_frames_back_to_back_round_trip() {
        let mut buf = BytesMut::new();
        for (i, body) in sample_bodies().iter().enumerate() {
            encode_push(1000 + i as u16, body, &mut buf).unwrap();
        }
        for (i, body) in sample_bodies().iter().enumerate() {
            let frame = decode_push(&mut buf, 1 << 20).unwrap().unwrap();
            assert_eq!(frame.event_type, 1000 + i as u16);
            assert_eq!(&frame.body[..], &body[..]);
        }
        assert_eq!(decode_push(&mut buf, 1 << 20).unwrap(), None);
        finish(&buf).unwrap();
    }

    /// Feeding a stream of frames split at every byte boundary yields the same frames.
    #[test]
    fn decoding_split_at_every_byte() {
        let mut wire = BytesMut::new();
        encode_request(200, 1, b"first", &mut wire).unwrap();
        encode_request(201, 2, b"", &mut wire).unwrap();
        encode_request(202, 3, &[0x55; 300], &mut wire).unwrap();
        let wire = wire.freeze();
        for split in 0..=wire.len() {
            let mut buf = BytesMut::new();
            let mut frames = Vec::new();
            for chunk in [&wire[..split], &wire[split..]] {
                for &byte in chunk {
                    buf.put_u8(byte);
                    while let Some(frame) = decode_request(&mut buf, any_method).unwrap() {
                        frames.push(frame);
                    }
                }
            }
            finish(&buf).unwrap();
            let ids: Vec<_> = frames.iter().map(|f| (f.method_id, f.req_id)).collect();
            assert_eq!(ids, [(200, 1), (201, 2), (202, 3)], "split at {split}");
            assert_eq!(&frames[2].body[..], &[0x55; 300][..]);
        }
        for split in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..split]);
            let mut count = 0;
            while decode_request(&mut buf, any_method).unwrap().is_some() {
                count += 1;
            }
            buf.extend_from_slice(&wire[split..]);
            while decode_request(&mut buf, any_method).unwrap().is_some() {
                count += 1;
            }
            assert_eq!(count, 3, "split at {split}");
        }
    }

    #[test]
    fn oversized_length_rejected_without_allocating() {
        let header = RequestHeader {
            method_id: 200,
            req_id: 1,
            len: u32::MAX,
        };
        let mut buf = BytesMut::from(&header.to_bytes()[..]);
        let capacity_before = buf.capacity();
        let err = decode_request(&mut buf, |_| Ok(1024)).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: u32::MAX,
                max: 1024
            }
        );
        assert_eq!(buf.capacity(), capacity_before, "no space reserved");

        let mut buf = BytesMut::from(
            &PushHeader {
                event_type: 1000,
                len: 1 << 30,
            }
            .to_bytes()[..],
        );
        let capacity_before = buf.capacity();
        assert!(matches!(
            decode_push(&mut buf, 4096),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(buf.capacity(), capacity_before);

        let mut buf = BytesMut::from(
            &ResponseHeader {
                status: StatusCode::Ok,
                req_id: 1,
                len: 1 << 31,
            }
            .to_bytes()[..],
        );
        assert!(matches!(
            decode_response(&mut buf, 4096),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn limit_can_refuse_a_method_before_the_body() {
        let mut buf = BytesMut::new();
        encode_request(4242, 1, b"body", &mut buf).unwrap();
        buf.truncate(REQUEST_HEADER_LEN);
        assert_eq!(
            decode_request(&mut buf, |id| Err(FrameError::UnknownMethod(id))),
            Err(FrameError::UnknownMethod(4242))
        );
    }

    #[test]
    fn truncated_header_and_body_are_reported() {
        let mut full = BytesMut::new();
        encode_request(200, 5, b"hello world", &mut full).unwrap();
        for cut in 1..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(decode_request(&mut buf, any_method).unwrap(), None);
            assert_eq!(
                finish(&buf),
                Err(FrameError::Truncated { received: cut }),
                "cut at {cut}"
            );
        }
        let mut full = BytesMut::new();
        encode_response(StatusCode::Ok, 5, b"hello", &mut full).unwrap();
        for cut in 1..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(decode_response(&mut buf, 100).unwrap(), None);
            assert!(finish(&buf).is_err());
        }
    }

    #[test]
    fn headers_are_big_endian() {
        let bytes = RequestHeader {
            method_id: 0x0102,
            req_id: 0x0304_0506,
            len: 0x0708_090A,
        }
        .to_bytes();
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let bytes = ResponseHeader {
            status: StatusCode::NotFound,
            req_id: 1,
            len: 2,
        }
        .to_bytes();
        assert_eq!(bytes, [4, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(
            PushHeader {
                event_type: 1003,
                len: 258
            }
            .to_bytes(),
            [0x03, 0xEB, 0, 0, 1, 2]
        );
    }
}
