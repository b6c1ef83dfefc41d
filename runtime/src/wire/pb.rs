//! The few protobuf encoding rules the wire layer needs for `qpq.v2.Error`, written out so
//! that `wire` stays free of a protobuf library. Everything else is encoded by generated code.

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn put_varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    put_varint(out, (u64::from(field) << 3) | u64::from(WIRE_VARINT));
    put_varint(out, value);
}

pub(crate) fn put_len_delimited(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | u64::from(WIRE_LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes")
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Result<&'a [u8], &'static str> {
    if buf.len() < len {
        return Err("field runs past the end of the body");
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Ok(head)
}

/// Decodes `Error { string message = 1; uint32 retry_after_ms = 2; }`, skipping unknown fields.
pub(crate) fn decode_error_body(mut buf: &[u8]) -> Result<(String, Option<u32>), &'static str> {
    let mut message = String::new();
    let mut retry = None;
    while !buf.is_empty() {
        let key = get_varint(&mut buf)?;
        let field = key >> 3;
        match (field, (key & 7) as u8) {
            (1, WIRE_LEN) => {
                let len = usize::try_from(get_varint(&mut buf)?).map_err(|_| "length overflow")?;
                let bytes = take(&mut buf, len)?;
                message = String::from_utf8_lossy(bytes).into_owned();
            }
            (2, WIRE_VARINT) => {
                // proto3 uint32 decoding truncates to the low 32 bits.
                retry = Some(get_varint(&mut buf)? as u32);
            }
            (0, _) => return Err("field number 0"),
            (_, WIRE_VARINT) => {
                get_varint(&mut buf)?;
            }
            (_, WIRE_FIXED64) => {
                take(&mut buf, 8)?;
            }
            (_, WIRE_LEN) => {
                let len = usize::try_from(get_varint(&mut buf)?).map_err(|_| "length overflow")?;
                take(&mut buf, len)?;
            }
            (_, WIRE_FIXED32) => {
                take(&mut buf, 4)?;
            }
            _ => return Err("unsupported wire type"),
        }
    }
    Ok((message, retry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_unknown_fields() {
        let mut body = Vec::new();
        put_varint_field(&mut body, 9, 300);
        put_len_delimited(&mut body, 7, b"ignored");
        put_len_delimited(&mut body, 1, b"hello");
        body.extend_from_slice(&[(3 << 3) | WIRE_FIXED32, 1, 2, 3, 4]);
        put_varint_field(&mut body, 2, 42);
        assert_eq!(decode_error_body(&body), Ok(("hello".to_owned(), Some(42))));
    }

    #[test]
    fn rejects_truncation() {
        let mut body = Vec::new();
        put_len_delimited(&mut body, 1, b"hello");
        for cut in 1..body.len() {
            assert!(decode_error_body(&body[..cut]).is_err(), "cut at {cut}");
        }
    }
}
