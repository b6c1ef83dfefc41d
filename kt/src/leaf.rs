//! The leaf data: the bytes a leaf hash covers, stored by the server and rebuilt by clients.

/// Prefix of the leaf data (`kt.proto`).
const LEAF_PREFIX: &[u8] = b"qpq-kt-leaf-v1";

/// Kind of a leaf; the numbers are the protocol's `KtLeafKind` and the leaf data's byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafKind {
    /// username → identity key, at registration.
    Binding = 1,
    /// The identity key is revoked.
    Revocation = 2,
}

impl LeafKind {
    /// The kind with this protocol number, if any.
    ///
    /// ```
    /// assert_eq!(qpq_kt::LeafKind::from_u8(2), Some(qpq_kt::LeafKind::Revocation));
    /// assert_eq!(qpq_kt::LeafKind::from_u8(0), None);
    /// ```
    pub fn from_u8(kind: u8) -> Option<Self> {
        match kind {
            1 => Some(Self::Binding),
            2 => Some(Self::Revocation),
            _ => None,
        }
    }
}

/// One log entry.
///
/// ```
/// use qpq_kt::{Leaf, LeafKind};
/// let leaf = Leaf {
///     kind: LeafKind::Binding,
///     username: "bob".into(),
///     identity: [7; 32],
///     timestamp_ms: 1,
///     reason: 0,
/// };
/// let data = leaf.to_bytes().unwrap();
/// assert_eq!(data.len(), 14 + 44 + 3);
/// assert_eq!(Leaf::from_bytes(&data).unwrap(), leaf);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Binding or revocation.
    pub kind: LeafKind,
    /// The bare username the key is (or was) bound to.
    pub username: String,
    /// The Ed25519 identity key.
    pub identity: [u8; 32],
    /// When the leaf was appended, Unix ms.
    pub timestamp_ms: u64,
    /// The protocol's `RevocationReason` value; 0 for bindings.
    pub reason: u8,
}

/// Why leaf data cannot be made or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeafError {
    /// The username does not fit the 2-byte length.
    #[error("username longer than 65535 bytes")]
    UsernameTooLong,
    /// The bytes are not leaf data.
    #[error("transparency log leaf is malformed")]
    Malformed,
}

impl Leaf {
    /// The leaf data exactly as `kt.proto` documents it (what the leaf hash covers):
    /// `"qpq-kt-leaf-v1" ‖ kind(1) ‖ timestamp(8) ‖ identity(32) ‖ reason(1) ‖
    /// username_len(2) ‖ username`, integers big-endian. Usernames longer than 65535 bytes
    /// are refused.
    pub fn to_bytes(&self) -> Result<Vec<u8>, LeafError> {
        let len = u16::try_from(self.username.len()).map_err(|_| LeafError::UsernameTooLong)?;
        let mut v = Vec::with_capacity(LEAF_PREFIX.len() + 44 + self.username.len());
        v.extend_from_slice(LEAF_PREFIX);
        v.push(self.kind as u8);
        v.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        v.extend_from_slice(&self.identity);
        v.push(self.reason);
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(self.username.as_bytes());
        Ok(v)
    }

    /// Inverse of [`Leaf::to_bytes`]; refuses anything else, trailing bytes included.
    pub fn from_bytes(data: &[u8]) -> Result<Self, LeafError> {
        let rest = data.strip_prefix(LEAF_PREFIX).ok_or(LeafError::Malformed)?;
        if rest.len() < 44 {
            return Err(LeafError::Malformed);
        }
        let kind = LeafKind::from_u8(rest[0]).ok_or(LeafError::Malformed)?;
        let timestamp_ms =
            u64::from_be_bytes(rest[1..9].try_into().map_err(|_| LeafError::Malformed)?);
        let identity: [u8; 32] = rest[9..41].try_into().map_err(|_| LeafError::Malformed)?;
        let reason = rest[41];
        let len = usize::from(u16::from_be_bytes([rest[42], rest[43]]));
        let name = rest
            .get(44..)
            .filter(|n| n.len() == len)
            .ok_or(LeafError::Malformed)?;
        let username = String::from_utf8(name.to_vec()).map_err(|_| LeafError::Malformed)?;
        Ok(Leaf {
            kind,
            username,
            identity,
            timestamp_ms,
            reason,
        })
    }

    /// The leaf hash of [`Leaf::to_bytes`].
    ///
    /// ```
    /// # let leaf = qpq_kt::Leaf { kind: qpq_kt::LeafKind::Binding, username: "a".into(),
    /// #     identity: [0; 32], timestamp_ms: 0, reason: 0 };
    /// assert_eq!(leaf.hash().unwrap(), qpq_kt::leaf_hash(&leaf.to_bytes().unwrap()));
    /// ```
    pub fn hash(&self) -> Result<crate::Hash, LeafError> {
        Ok(crate::leaf_hash(&self.to_bytes()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_data_layout_and_round_trip() {
        let leaf = Leaf {
            kind: LeafKind::Revocation,
            username: "alice".into(),
            identity: [7; 32],
            timestamp_ms: 0x0102,
            reason: 3,
        };
        let data = leaf.to_bytes().unwrap();
        assert_eq!(data.len(), 14 + 1 + 8 + 32 + 1 + 2 + 5);
        assert_eq!(&data[..14], b"qpq-kt-leaf-v1");
        assert_eq!(data[14], 2);
        assert_eq!(&data[15..23], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(data[55], 3);
        assert_eq!(&data[56..58], &[0, 5]);
        assert_eq!(Leaf::from_bytes(&data).unwrap(), leaf);
        for cut in 0..data.len() {
            assert!(Leaf::from_bytes(&data[..cut]).is_err());
        }
    }

    #[test]
    fn known_bytes_of_a_binding() {
        // The exact bytes stored logs and clients in the field rely on.
        let leaf = Leaf {
            kind: LeafKind::Binding,
            username: "bob".into(),
            identity: [0xab; 32],
            timestamp_ms: 1_700_000_000_000,
            reason: 0,
        };
        let mut expected = b"qpq-kt-leaf-v1".to_vec();
        expected.push(1);
        expected.extend_from_slice(&[0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00]);
        expected.extend_from_slice(&[0xab; 32]);
        expected.extend_from_slice(&[0, 0, 3]);
        expected.extend_from_slice(b"bob");
        assert_eq!(leaf.to_bytes().unwrap(), expected);
    }

    #[test]
    fn refuses_what_is_not_leaf_data() {
        let leaf = Leaf {
            kind: LeafKind::Binding,
            username: "bob".into(),
            identity: [1; 32],
            timestamp_ms: 5,
            reason: 0,
        };
        let data = leaf.to_bytes().unwrap();
        let mut longer = data.clone();
        longer.push(b'x');
        assert_eq!(Leaf::from_bytes(&longer), Err(LeafError::Malformed));
        let mut kind = data.clone();
        kind[14] = 3;
        assert_eq!(Leaf::from_bytes(&kind), Err(LeafError::Malformed));
        let mut utf8 = data.clone();
        *utf8.last_mut().unwrap() = 0xff;
        assert_eq!(Leaf::from_bytes(&utf8), Err(LeafError::Malformed));
        let long = Leaf {
            username: "x".repeat(65_536),
            ..leaf
        };
        assert_eq!(long.to_bytes(), Err(LeafError::UsernameTooLong));
    }
}
