//! Byte encoding of keys and values for the on-disk layout described in `store/fjall.rs`.
//!
//! Pure functions, no storage engine: keys are fixed-width big-endian so that byte order is
//! numeric order; values start with a format version byte so the layout can evolve.

use super::{Account, ChannelId, IdentityKey, QueuedMessage, Seq, SessionRecord, StoreError};

/// Version byte of every value written by this code.
pub(super) const V1: u8 = 1;

/// Version byte of a stored message that carries a channel id.
const V2: u8 = 2;

/// Length of a message key: identity key then big-endian seq.
pub(super) const MESSAGE_KEY_LEN: usize = 32 + 8;

/// `identity(32) ‖ seq(8, BE)`.
pub(super) fn message_key(identity: &IdentityKey, seq: Seq) -> [u8; MESSAGE_KEY_LEN] {
    let mut k = [0u8; MESSAGE_KEY_LEN];
    k[..32].copy_from_slice(identity);
    k[32..].copy_from_slice(&seq.0.to_be_bytes());
    k
}

/// The seq of a message key.
pub(super) fn seq_of_message_key(key: &[u8]) -> Result<Seq, StoreError> {
    let tail: [u8; 8] = key
        .get(32..MESSAGE_KEY_LEN)
        .and_then(|s| s.try_into().ok())
        .filter(|_| key.len() == MESSAGE_KEY_LEN)
        .ok_or_else(|| corrupt("message key has the wrong length"))?;
    Ok(Seq(u64::from_be_bytes(tail)))
}

/// `expires_at(8, BE) ‖ identity(32) ‖ seq(8, BE)`: expiry order first, so a range scan up to
/// "now" finds exactly the expired messages.
pub(super) fn message_expiry_key(expires_at_ms: u64, identity: &IdentityKey, seq: Seq) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..8].copy_from_slice(&expires_at_ms.to_be_bytes());
    k[8..40].copy_from_slice(identity);
    k[40..].copy_from_slice(&seq.0.to_be_bytes());
    k
}

/// Inverse of [`message_expiry_key`].
pub(super) fn parse_message_expiry_key(key: &[u8]) -> Result<(u64, IdentityKey, Seq), StoreError> {
    if key.len() != 48 {
        return Err(corrupt("message expiry key has the wrong length"));
    }
    let mut r = Reader::new(key);
    Ok((r.u64()?, r.array()?, Seq(r.u64()?)))
}

/// `identity(32) ‖ token_hash(32)`: the sessions of one account are one prefix.
pub(super) fn session_index_key(identity: &IdentityKey, token_hash: &[u8; 32]) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(identity);
    k[32..].copy_from_slice(token_hash);
    k
}

/// The token hash of a session index key.
pub(super) fn token_of_session_index_key(key: &[u8]) -> Result<[u8; 32], StoreError> {
    key.get(32..64)
        .filter(|_| key.len() == 64)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| corrupt("session index key has the wrong length"))
}

/// `expires_at(8, BE) ‖ token_hash(32)`.
pub(super) fn session_expiry_key(expires_at_ms: u64, token_hash: &[u8; 32]) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&expires_at_ms.to_be_bytes());
    k[8..].copy_from_slice(token_hash);
    k
}

/// Inverse of [`session_expiry_key`].
pub(super) fn parse_session_expiry_key(key: &[u8]) -> Result<(u64, [u8; 32]), StoreError> {
    if key.len() != 40 {
        return Err(corrupt("session expiry key has the wrong length"));
    }
    let mut r = Reader::new(key);
    Ok((r.u64()?, r.array()?))
}

/// Per-queue bookkeeping, updated in the same batch as the messages it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct QueueMeta {
    /// The seq the next enqueued message gets. Never decreases, so seqs are never reused.
    pub(super) next_seq: u64,
    /// Messages held.
    pub(super) messages: u64,
    /// Payload bytes held.
    pub(super) bytes: u64,
}

impl Default for QueueMeta {
    fn default() -> Self {
        QueueMeta {
            next_seq: 1,
            messages: 0,
            bytes: 0,
        }
    }
}

/// `v1 ‖ next_seq(8) ‖ messages(8) ‖ bytes(8)`.
pub(super) fn encode_queue_meta(m: &QueueMeta) -> Vec<u8> {
    let mut v = Vec::with_capacity(25);
    v.push(V1);
    v.extend_from_slice(&m.next_seq.to_be_bytes());
    v.extend_from_slice(&m.messages.to_be_bytes());
    v.extend_from_slice(&m.bytes.to_be_bytes());
    v
}

/// Inverse of [`encode_queue_meta`].
pub(super) fn decode_queue_meta(b: &[u8]) -> Result<QueueMeta, StoreError> {
    let mut r = Reader::versioned(b, "queue meta")?;
    let m = QueueMeta {
        next_seq: r.u64()?,
        messages: r.u64()?,
        bytes: r.u64()?,
    };
    r.finish()?;
    Ok(m)
}

/// `v1 ‖ identity(32) ‖ created_at(8) ‖ password_file(rest)`; the username is the key.
pub(super) fn encode_account(a: &Account) -> Vec<u8> {
    let mut v = Vec::with_capacity(41 + a.password_file.len());
    v.push(V1);
    v.extend_from_slice(&a.identity_key);
    v.extend_from_slice(&a.created_at_ms.to_be_bytes());
    v.extend_from_slice(&a.password_file);
    v
}

/// Inverse of [`encode_account`].
pub(super) fn decode_account(username: &[u8], b: &[u8]) -> Result<Account, StoreError> {
    let mut r = Reader::versioned(b, "account")?;
    let identity_key = r.array()?;
    let created_at_ms = r.u64()?;
    let password_file = r.rest().to_vec();
    let username =
        String::from_utf8(username.to_vec()).map_err(|_| corrupt("account key is not utf-8"))?;
    Ok(Account {
        username,
        identity_key,
        password_file,
        created_at_ms,
    })
}

/// `v1 ‖ identity(32) ‖ created(8) ‖ expires(8) ‖ login(8) ‖ has_device(1) ‖
/// [device_len(2) ‖ device] ‖ username(rest)`; the token hash is the key.
pub(super) fn encode_session(s: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    let mut v = Vec::with_capacity(64 + s.username.len());
    v.push(V1);
    v.extend_from_slice(&s.identity_key);
    v.extend_from_slice(&s.created_at_ms.to_be_bytes());
    v.extend_from_slice(&s.expires_at_ms.to_be_bytes());
    v.extend_from_slice(&s.login_at_ms.to_be_bytes());
    match &s.device_id {
        None => v.push(0),
        Some(d) => {
            let len = u16::try_from(d.len()).map_err(|_| {
                StoreError::InvalidArgument("device id longer than 65535 bytes".into())
            })?;
            v.push(1);
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(d);
        }
    }
    v.extend_from_slice(s.username.as_bytes());
    Ok(v)
}

/// Inverse of [`encode_session`].
pub(super) fn decode_session(token_hash: &[u8], b: &[u8]) -> Result<SessionRecord, StoreError> {
    let token_hash: [u8; 32] = token_hash
        .try_into()
        .map_err(|_| corrupt("session record key has the wrong length"))?;
    let mut r = Reader::versioned(b, "session")?;
    let identity_key = r.array()?;
    let created_at_ms = r.u64()?;
    let expires_at_ms = r.u64()?;
    let login_at_ms = r.u64()?;
    let device_id = match r.u8()? {
        0 => None,
        1 => {
            let len = usize::from(r.u16()?);
            Some(r.bytes(len)?.to_vec())
        }
        _ => return Err(corrupt("session device flag is invalid")),
    };
    let username =
        String::from_utf8(r.rest().to_vec()).map_err(|_| corrupt("session username not utf-8"))?;
    Ok(SessionRecord {
        token_hash,
        username,
        identity_key,
        device_id,
        created_at_ms,
        expires_at_ms,
        login_at_ms,
    })
}

/// `v1 ‖ enqueued_at(8) ‖ expires_at(8) ‖ sender_identity(32) ‖ sender_len(2) ‖ sender ‖
/// payload(rest)`; the seq lives in the key. A message tagged with a channel is written as
/// `v2`: the same fields with `channel_id(16)` between the sender and the payload.
pub(super) fn encode_message(
    enqueued_at_ms: u64,
    expires_at_ms: u64,
    sender_identity_key: &IdentityKey,
    sender: &str,
    channel_id: Option<&ChannelId>,
    payload: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let sender_len = u16::try_from(sender.len())
        .map_err(|_| StoreError::InvalidArgument("sender longer than 65535 bytes".into()))?;
    let mut v = Vec::with_capacity(67 + sender.len() + payload.len());
    v.push(if channel_id.is_some() { V2 } else { V1 });
    v.extend_from_slice(&enqueued_at_ms.to_be_bytes());
    v.extend_from_slice(&expires_at_ms.to_be_bytes());
    v.extend_from_slice(sender_identity_key);
    v.extend_from_slice(&sender_len.to_be_bytes());
    v.extend_from_slice(sender.as_bytes());
    if let Some(channel) = channel_id {
        v.extend_from_slice(&channel.0);
    }
    v.extend_from_slice(payload);
    Ok(v)
}

/// The fields of a stored message that bookkeeping needs, without copying the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MessageHeader {
    /// Expiry time.
    pub(super) expires_at_ms: u64,
    /// Payload length (what counts against the byte cap).
    pub(super) payload_len: u64,
}

/// Reads the header of a stored message.
pub(super) fn decode_message_header(b: &[u8]) -> Result<MessageHeader, StoreError> {
    let (mut r, tagged) = message_reader(b)?;
    let _enqueued = r.u64()?;
    let expires_at_ms = r.u64()?;
    let _sender_identity: IdentityKey = r.array()?;
    let sender_len = usize::from(r.u16()?);
    r.bytes(sender_len)?;
    if tagged {
        r.bytes(16)?;
    }
    Ok(MessageHeader {
        expires_at_ms,
        payload_len: r.rest().len() as u64,
    })
}

/// Decodes a stored message (copying the payload once, out of the engine's buffer).
pub(super) fn decode_message(seq: Seq, value: &[u8]) -> Result<QueuedMessage, StoreError> {
    let (mut r, tagged) = message_reader(value)?;
    let enqueued_at_ms = r.u64()?;
    let expires_at_ms = r.u64()?;
    let sender_identity_key = r.array()?;
    let sender_len = usize::from(r.u16()?);
    let sender = String::from_utf8(r.bytes(sender_len)?.to_vec())
        .map_err(|_| corrupt("message sender is not utf-8"))?;
    let channel_id = if tagged {
        Some(ChannelId(r.array()?))
    } else {
        None
    };
    Ok(QueuedMessage {
        seq,
        sender_identity_key,
        sender,
        channel_id,
        payload: bytes::Bytes::copy_from_slice(r.rest()),
        enqueued_at_ms,
        expires_at_ms,
    })
}

/// A reader past the version byte of a stored message, and whether it carries a channel id
/// (`v2`).
fn message_reader(b: &[u8]) -> Result<(Reader<'_>, bool), StoreError> {
    let mut r = Reader {
        buf: b,
        what: "message",
    };
    match r.u8()? {
        V1 => Ok((r, false)),
        V2 => Ok((r, true)),
        v => Err(StoreError::Corrupt(format!(
            "message has unknown format version {v}"
        ))),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// Bounds-checked cursor over stored bytes: truncation becomes `Corrupt`, never a panic.
/// The group layouts (`fjall/<group>.rs`) decode their values with it too.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, what: "key" }
    }

    /// Checks and skips the version byte.
    pub(super) fn versioned(buf: &'a [u8], what: &'static str) -> Result<Self, StoreError> {
        let mut r = Reader { buf, what };
        match r.u8()? {
            V1 => Ok(r),
            v => Err(StoreError::Corrupt(format!(
                "{what} has unknown format version {v}"
            ))),
        }
    }

    pub(super) fn bytes(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(StoreError::Corrupt(format!("{} is truncated", self.what)));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    pub(super) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, StoreError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(super) fn finish(&self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!(
                "{} has trailing bytes",
                self.what
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_sort_in_seq_order() {
        let id = [7u8; 32];
        let keys: Vec<_> = [1u64, 2, 255, 256, 65_536, u64::MAX - 1]
            .iter()
            .map(|s| message_key(&id, Seq(*s)))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(seq_of_message_key(&keys[3]).unwrap(), Seq(256));
        assert!(seq_of_message_key(&keys[3][..39]).is_err());
    }

    #[test]
    fn message_round_trip_and_truncation() {
        let v = encode_message(5, 9, &[3; 32], "alice", None, b"hello").unwrap();
        let m = decode_message(Seq(4), &v).unwrap();
        assert_eq!(m.seq, Seq(4));
        assert_eq!(m.sender, "alice");
        assert_eq!(&m.payload[..], b"hello");
        assert_eq!((m.enqueued_at_ms, m.expires_at_ms), (5, 9));
        let h = decode_message_header(&v).unwrap();
        assert_eq!(h.payload_len, 5);
        assert_eq!(h.expires_at_ms, 9);
        // Every truncation inside the fixed header is reported, never a panic.
        for cut in 0..(1 + 8 + 8 + 32 + 2 + 5) {
            assert!(matches!(
                decode_message(Seq(1), &v[..cut]),
                Err(StoreError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn channel_tagged_message_round_trip() {
        let channel = ChannelId([9; 16]);
        let v = encode_message(5, 9, &[3; 32], "bob", Some(&channel), b"commit").unwrap();
        let m = decode_message(Seq(2), &v).unwrap();
        assert_eq!(m.channel_id, Some(channel));
        assert_eq!(&m.payload[..], b"commit");
        assert_eq!(decode_message_header(&v).unwrap().payload_len, 6);
        for cut in 0..(1 + 8 + 8 + 32 + 2 + 3 + 16) {
            assert!(matches!(
                decode_message(Seq(1), &v[..cut]),
                Err(StoreError::Corrupt(_))
            ));
        }
        // Untagged messages keep the v1 layout.
        let plain = encode_message(5, 9, &[3; 32], "bob", None, b"x").unwrap();
        assert_eq!(plain[0], V1);
        assert_eq!(decode_message(Seq(1), &plain).unwrap().channel_id, None);
    }

    #[test]
    fn session_round_trip() {
        let s = SessionRecord {
            token_hash: [1; 32],
            username: "bob".into(),
            identity_key: [2; 32],
            device_id: Some(vec![9, 9]),
            created_at_ms: 1,
            expires_at_ms: 2,
            login_at_ms: 3,
        };
        let v = encode_session(&s).unwrap();
        assert_eq!(decode_session(&[1; 32], &v).unwrap(), s);
        let s2 = SessionRecord {
            device_id: None,
            ..s
        };
        let v2 = encode_session(&s2).unwrap();
        assert_eq!(decode_session(&[1; 32], &v2).unwrap(), s2);
        assert!(decode_session(&[1; 31], &v2).is_err());
    }

    #[test]
    fn meta_and_expiry_keys_round_trip() {
        let m = QueueMeta {
            next_seq: 10,
            messages: 3,
            bytes: 99,
        };
        assert_eq!(decode_queue_meta(&encode_queue_meta(&m)).unwrap(), m);
        assert!(decode_queue_meta(&[2, 0]).is_err());
        let k = message_expiry_key(77, &[4; 32], Seq(5));
        assert_eq!(parse_message_expiry_key(&k).unwrap(), (77, [4; 32], Seq(5)));
        let k = session_expiry_key(88, &[6; 32]);
        assert_eq!(parse_session_expiry_key(&k).unwrap(), (88, [6; 32]));
        assert!(
            message_expiry_key(1, &[0xff; 32], Seq(u64::MAX))
                < message_expiry_key(2, &[0; 32], Seq(0))
        );
    }
}
