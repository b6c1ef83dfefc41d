//! The three frame decoders on arbitrary bytes, fed in arbitrary splits: they must never
//! panic, never reserve memory for a length over the limit, and agree with the encoders.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use qpq_runtime::wire::{self, FrameError};

const LIMIT: u32 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // Feed the bytes in two parts, split where the selector says.
    let split = usize::from(selector) % (rest.len() + 1);
    let mut buf = BytesMut::new();
    for part in [&rest[..split], &rest[split..]] {
        buf.extend_from_slice(part);
        loop {
            let before = buf.len();
            let progressed = match selector % 3 {
                0 => match wire::decode_request(&mut buf, |id| {
                    if id % 7 == 0 {
                        Err(FrameError::UnknownMethod(id))
                    } else {
                        Ok(LIMIT)
                    }
                }) {
                    Ok(Some(frame)) => {
                        let mut again = BytesMut::new();
                        wire::encode_request(frame.method_id, frame.req_id, &frame.body, &mut again)
                            .unwrap();
                        assert_eq!(again.len(), wire::REQUEST_HEADER_LEN + frame.body.len());
                        true
                    }
                    Ok(None) => false,
                    Err(_) => return,
                },
                1 => match wire::decode_response(&mut buf, LIMIT) {
                    Ok(Some(frame)) => {
                        if frame.status != wire::StatusCode::Ok {
                            let _ = wire::Status::decode_body(frame.status, &frame.body);
                        }
                        true
                    }
                    Ok(None) => false,
                    Err(_) => return,
                },
                _ => match wire::decode_push(&mut buf, LIMIT) {
                    Ok(Some(_)) => true,
                    Ok(None) => false,
                    Err(_) => return,
                },
            };
            assert!(buf.capacity() <= (LIMIT as usize + 64) * 4 + rest.len());
            if !progressed {
                assert_eq!(buf.len(), before, "nothing consumed without a frame");
                break;
            }
        }
    }
    let _ = wire::finish(&buf);
});
