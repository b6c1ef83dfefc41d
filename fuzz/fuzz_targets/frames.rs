//! The frame decoders on arbitrary bytes, fed in arbitrary splits, both ways in: the buffer
//! decoders (`decode_request`, `decode_response`, `decode_push`) and the chunk readers
//! (`HeaderReader`, `BodyAccumulator`) that the live server, client and push reader use.
//! They must never panic, never reserve memory for a length over the limit, agree with the
//! encoders, and agree with each other: the same frames, then the same end (clean, truncated
//! after the same number of bytes, or the same refusal).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use qpq_runtime::wire::{
    self, BodyAccumulator, FrameError, FrameHeader, HeaderReader, PushHeader, RequestHeader,
    ResponseHeader,
};

const LIMIT: u32 = 64 * 1024;

/// One decoded frame: its first header field (method ID, status or event type), its
/// `req_id` (0 for pushes) and its body.
type Decoded = (u16, u32, Bytes);

/// How decoding the whole input ended.
#[derive(Debug, PartialEq)]
enum End {
    /// At a frame boundary.
    Clean,
    /// Inside a frame, after this many bytes of it.
    Truncated(usize),
    /// A header was refused (unknown method, length over the limit).
    Refused(FrameError),
}

#[derive(Clone, Copy)]
enum Kind {
    Request,
    Response,
    Push,
}

fn request_limit(id: u16) -> Result<u32, FrameError> {
    if id % 7 == 0 {
        Err(FrameError::UnknownMethod(id))
    } else {
        Ok(LIMIT)
    }
}

fn decode_buffered(kind: Kind, selector: u8, rest: &[u8]) -> (Vec<Decoded>, End) {
    let mut frames = Vec::new();
    // Feed the bytes in two parts, split where the selector says.
    let split = usize::from(selector) % (rest.len() + 1);
    let mut buf = BytesMut::new();
    for part in [&rest[..split], &rest[split..]] {
        buf.extend_from_slice(part);
        loop {
            let before = buf.len();
            let decoded = match kind {
                Kind::Request => wire::decode_request(&mut buf, request_limit).map(|frame| {
                    frame.map(|frame| {
                        let mut again = BytesMut::new();
                        wire::encode_request(
                            frame.method_id,
                            frame.req_id,
                            &frame.body,
                            &mut again,
                        )
                        .unwrap();
                        assert_eq!(again.len(), wire::REQUEST_HEADER_LEN + frame.body.len());
                        (frame.method_id, frame.req_id, frame.body)
                    })
                }),
                Kind::Response => wire::decode_response(&mut buf, LIMIT).map(|frame| {
                    frame.map(|frame| {
                        if frame.status != wire::StatusCode::Ok {
                            let _ = wire::Status::decode_body(frame.status, &frame.body);
                        }
                        (u16::from(frame.status.as_u8()), frame.req_id, frame.body)
                    })
                }),
                Kind::Push => wire::decode_push(&mut buf, LIMIT)
                    .map(|frame| frame.map(|frame| (frame.event_type, 0, frame.body))),
            };
            assert!(buf.capacity() <= (LIMIT as usize + 64) * 4 + rest.len());
            match decoded {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "nothing consumed without a frame");
                    break;
                }
                Err(error) => return (frames, End::Refused(error)),
            }
        }
    }
    let end = match wire::finish(&buf) {
        Ok(()) => End::Clean,
        Err(FrameError::Truncated { received }) => End::Truncated(received),
        Err(other) => panic!("finish returned {other:?}"),
    };
    (frames, end)
}

/// A stream that hands out its bytes in chunks of sizes chosen by the input, never more than
/// asked for (as QUIC's `read_chunk(max)`).
struct Chunks {
    bytes: Bytes,
    state: u32,
}

impl Chunks {
    fn next(&mut self, max: usize) -> Option<Bytes> {
        if self.bytes.is_empty() {
            return None;
        }
        self.state = self.state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = match (self.state >> 16) % 4 {
            0 => 1,
            1 => 1 + (self.state >> 20) as usize % 16,
            _ => usize::MAX,
        };
        let size = size.min(max).min(self.bytes.len());
        Some(self.bytes.split_to(size))
    }
}

/// The live path: a header reader, the limit check, a body accumulator, frame after frame.
fn decode_chunked<H: FrameHeader + std::fmt::Debug>(
    selector: u8,
    rest: &[u8],
    limit: impl Fn(&H) -> Result<u32, FrameError>,
    fields: impl Fn(&H) -> (u16, u32),
) -> (Vec<Decoded>, End) {
    let mut stream = Chunks {
        bytes: Bytes::copy_from_slice(rest),
        state: u32::from(selector) | ((rest.len() as u32) << 8),
    };
    let mut frames = Vec::new();
    loop {
        let mut reader = HeaderReader::<H>::new();
        let header = loop {
            let Some(chunk) = stream.next(reader.remaining()) else {
                return match reader.finish() {
                    Err(FrameError::Truncated { received: 0 }) => (frames, End::Clean),
                    Err(FrameError::Truncated { received }) => (frames, End::Truncated(received)),
                    other => panic!("a header reader short of bytes finished with {other:?}"),
                };
            };
            if let Some(header) = reader.feed(&chunk).unwrap() {
                break header;
            }
        };
        let max = match limit(&header) {
            Ok(max) => max,
            Err(error) => return (frames, End::Refused(error)),
        };
        if let Err(error) = wire::check_len(header.body_len(), max) {
            return (frames, End::Refused(error));
        }
        let mut body = BodyAccumulator::new(header.body_len());
        let mut chunks = 0;
        let mut first_ptr = None;
        while !body.is_complete() {
            let Some(chunk) = stream.next(body.remaining()) else {
                break;
            };
            chunks += 1;
            first_ptr.get_or_insert(chunk.as_ptr());
            // More than the body has left is refused, and takes nothing.
            if body.remaining() < 256 {
                let over = Bytes::from(vec![0; body.remaining() + 1]);
                assert!(matches!(body.feed(over), Err(FrameError::Overrun { .. })));
            }
            body.feed(chunk).unwrap();
        }
        let received = body.received();
        match body.finish() {
            Ok(bytes) => {
                if chunks == 1 {
                    assert_eq!(first_ptr, Some(bytes.as_ptr()), "one chunk is not copied");
                }
                let (first, req_id) = fields(&header);
                frames.push((first, req_id, bytes));
            }
            Err(FrameError::BodyTruncated { received: r, len }) => {
                assert_eq!((r, len), (received, header.body_len()));
                return (frames, End::Truncated(H::LEN + received));
            }
            Err(other) => panic!("a body accumulator finished with {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let kind = match selector % 3 {
        0 => Kind::Request,
        1 => Kind::Response,
        _ => Kind::Push,
    };
    let buffered = decode_buffered(kind, selector, rest);
    let chunked = match kind {
        Kind::Request => decode_chunked::<RequestHeader>(
            selector,
            rest,
            |h| request_limit(h.method_id),
            |h| (h.method_id, h.req_id),
        ),
        Kind::Response => decode_chunked::<ResponseHeader>(
            selector,
            rest,
            |_| Ok(LIMIT),
            |h| (u16::from(h.status.as_u8()), h.req_id),
        ),
        Kind::Push => {
            decode_chunked::<PushHeader>(selector, rest, |_| Ok(LIMIT), |h| (h.event_type, 0))
        }
    };
    assert_eq!(
        buffered, chunked,
        "buffer decoders and chunk readers disagree"
    );
});
