//! Small helpers to encode and decode the values of the group keyspaces (blobs, devices,
//! recovery, P2P): a version byte, then fixed-width big-endian integers and length-prefixed
//! byte strings. Decoding never panics: short or malformed input is [`StoreError::Corrupt`].

use crate::store::StoreError;

/// Version byte of every value written by the group modules.
pub(super) const V1: u8 = 1;

/// Appends to a value under construction.
pub(super) struct Writer(Vec<u8>);

impl Writer {
    /// A value starting with the version byte.
    pub(super) fn new(capacity: usize) -> Self {
        let mut v = Vec::with_capacity(capacity + 1);
        v.push(V1);
        Writer(v)
    }

    pub(super) fn u8(&mut self, x: u8) -> &mut Self {
        self.0.push(x);
        self
    }

    pub(super) fn u64(&mut self, x: u64) -> &mut Self {
        self.0.extend_from_slice(&x.to_be_bytes());
        self
    }

    pub(super) fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// A byte string with a 2-byte length; callers bound lengths well below 64 KiB.
    pub(super) fn bytes16(&mut self, b: &[u8]) -> Result<&mut Self, StoreError> {
        let len = u16::try_from(b.len())
            .map_err(|_| StoreError::InvalidArgument("field longer than 65535 bytes".into()))?;
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(b);
        Ok(self)
    }

    pub(super) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Reads a value written by [`Writer`].
pub(super) struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Checks the version byte; `what` names the record in errors.
    pub(super) fn new(value: &'a [u8], what: &'static str) -> Result<Self, StoreError> {
        match value.split_first() {
            Some((&V1, rest)) => Ok(Reader { rest, what }),
            Some((v, _)) => Err(StoreError::Corrupt(format!(
                "{what}: unknown format version {v}"
            ))),
            None => Err(StoreError::Corrupt(format!("{what}: empty value"))),
        }
    }

    fn corrupt(&self) -> StoreError {
        StoreError::Corrupt(format!("{}: value is truncated or malformed", self.what))
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.rest.len() < n {
            return Err(self.corrupt());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let b = self.take(N)?;
        b.try_into().map_err(|_| self.corrupt())
    }

    pub(super) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn bytes16(&mut self) -> Result<&'a [u8], StoreError> {
        let len = u16::from_be_bytes(self.array()?);
        self.take(len.into())
    }

    pub(super) fn string16(&mut self) -> Result<String, StoreError> {
        let b = self.bytes16()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.corrupt())
    }

    /// Everything left.
    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Fails unless everything was read.
    pub(super) fn end(&self) -> Result<(), StoreError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut w = Writer::new(16);
        w.u8(7).u64(42).raw(&[1, 2]);
        w.bytes16(b"hey").unwrap();
        let v = w.finish();
        let mut r = Reader::new(&v, "test").unwrap();
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), 42);
        assert_eq!(r.array::<2>().unwrap(), [1, 2]);
        assert_eq!(r.string16().unwrap(), "hey");
        r.end().unwrap();
        for cut in 0..v.len() {
            let parsed = Reader::new(&v[..cut], "test").and_then(|mut r| {
                r.u8()?;
                r.u64()?;
                r.array::<2>()?;
                r.string16()?;
                r.end()
            });
            assert!(parsed.is_err(), "cut at {cut}");
        }
        assert!(Reader::new(&[9], "test").is_err());
    }
}
