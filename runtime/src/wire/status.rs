//! Response status codes and the error body every non-Ok response carries.
//!
//! The numbers are part of the wire protocol (see the status table in
//! `docs/protocol.md`). A peer may send a code this build does not know; it decodes to
//! [`StatusCode::Unknown`] instead of failing, so old clients keep working against new servers.

use std::fmt;

use super::pb;

/// The status byte of a response frame.
///
/// `#[non_exhaustive]`: new codes may be assigned (6 is reserved), so match with a
/// wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatusCode {
    /// 0: success; the body is the method's response message.
    Ok,
    /// 1: malformed request, a missing required field, or a request over the method's size limit.
    BadRequest,
    /// 2: missing, invalid or expired session token (or a failed login).
    Unauthorized,
    /// 3: the caller is authenticated but may not do this.
    Forbidden,
    /// 4: the requested resource does not exist.
    NotFound,
    /// 5: a rate limit or quota was hit; the error body says when to retry.
    RateLimited,
    /// 7: the request lost a race with another change (e.g. a commit for an old MLS epoch,
    /// a username that was taken); re-read the state and try again.
    Conflict,
    /// 8: the server gave up on the request after the method's timeout.
    DeadlineExceeded,
    /// 9: the server cannot serve the request right now (for example storage cannot sync).
    Unavailable,
    /// 10: an unexpected server error; details are in the server's log, never on the wire.
    Internal,
    /// 11: the method ID is not registered on this server.
    UnknownMethod,
    /// A code this build does not know, kept as received.
    Unknown(u8),
}

impl StatusCode {
    /// Maps a wire byte to a code; unknown bytes become [`StatusCode::Unknown`].
    pub fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Ok,
            1 => Self::BadRequest,
            2 => Self::Unauthorized,
            3 => Self::Forbidden,
            4 => Self::NotFound,
            5 => Self::RateLimited,
            7 => Self::Conflict,
            8 => Self::DeadlineExceeded,
            9 => Self::Unavailable,
            10 => Self::Internal,
            11 => Self::UnknownMethod,
            other => Self::Unknown(other),
        }
    }

    /// The wire byte of this code.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::BadRequest => 1,
            Self::Unauthorized => 2,
            Self::Forbidden => 3,
            Self::NotFound => 4,
            Self::RateLimited => 5,
            Self::Conflict => 7,
            Self::DeadlineExceeded => 8,
            Self::Unavailable => 9,
            Self::Internal => 10,
            Self::UnknownMethod => 11,
            Self::Unknown(other) => other,
        }
    }

    /// The code's name as written in the protocol docs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "Ok",
            Self::BadRequest => "BadRequest",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "NotFound",
            Self::RateLimited => "RateLimited",
            Self::Conflict => "Conflict",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::Unavailable => "Unavailable",
            Self::Internal => "Internal",
            Self::UnknownMethod => "UnknownMethod",
            Self::Unknown(_) => "Unknown",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(code) => write!(f, "Unknown({code})"),
            known => write!(f, "{}({})", known.name(), known.as_u8()),
        }
    }
}

/// A non-Ok outcome of a call: the code, a message for people, and an optional retry hint.
///
/// Handlers return it; the server encodes it as the `qpq.v2.Error` body. Messages say what
/// was wrong and what the limit or expectation is. They must never carry internals (storage
/// errors, panic text): log those and answer [`Status::internal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: StatusCode,
    message: String,
    retry_after_ms: Option<u32>,
}

impl Status {
    /// A status with the given code and message.
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// [`StatusCode::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BadRequest, message)
    }

    /// [`StatusCode::Unauthorized`].
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Unauthorized, message)
    }

    /// [`StatusCode::Forbidden`].
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Forbidden, message)
    }

    /// [`StatusCode::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NotFound, message)
    }

    /// [`StatusCode::RateLimited`] with a hint of when to retry.
    pub fn rate_limited(message: impl Into<String>, retry_after_ms: u32) -> Self {
        Self::new(StatusCode::RateLimited, message).with_retry_after_ms(retry_after_ms)
    }

    /// [`StatusCode::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Conflict, message)
    }

    /// [`StatusCode::DeadlineExceeded`].
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::DeadlineExceeded, message)
    }

    /// [`StatusCode::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Unavailable, message)
    }

    /// [`StatusCode::Internal`] with a generic message; log the cause before returning it.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::Internal,
            "internal server error; the server logged the cause",
        )
    }

    /// [`StatusCode::UnknownMethod`].
    pub fn unknown_method(method_id: u16) -> Self {
        Self::new(
            StatusCode::UnknownMethod,
            format!("method {method_id} is not registered on this server"),
        )
    }

    /// Sets the retry hint (meaningful for RateLimited and Unavailable).
    pub fn with_retry_after_ms(mut self, retry_after_ms: u32) -> Self {
        self.retry_after_ms = Some(retry_after_ms);
        self
    }

    /// The status code.
    pub fn code(&self) -> StatusCode {
        self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The retry hint in milliseconds, if any.
    pub fn retry_after_ms(&self) -> Option<u32> {
        self.retry_after_ms
    }

    /// Encodes the `qpq.v2.Error` body of this status.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.message.len() + 12);
        if !self.message.is_empty() {
            pb::put_len_delimited(&mut out, 1, self.message.as_bytes());
        }
        if let Some(ms) = self.retry_after_ms.filter(|ms| *ms != 0) {
            pb::put_varint_field(&mut out, 2, u64::from(ms));
        }
        out
    }

    /// Decodes a `qpq.v2.Error` body received with a non-Ok `code`.
    ///
    /// Unknown fields are skipped. A body that is not valid protobuf still yields a status,
    /// with a message saying so, because the code alone is meaningful.
    pub fn decode_body(code: StatusCode, body: &[u8]) -> Self {
        match pb::decode_error_body(body) {
            Ok((message, retry)) => Self {
                code,
                message,
                retry_after_ms: retry.filter(|ms| *ms != 0),
            },
            Err(why) => Self::new(code, format!("(undecodable error body: {why})")),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(ms) = self.retry_after_ms {
            write!(f, " (retry after {ms} ms)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        for byte in 0..=u8::MAX {
            assert_eq!(StatusCode::from_u8(byte).as_u8(), byte);
        }
        assert_eq!(StatusCode::from_u8(6), StatusCode::Unknown(6));
        assert_eq!(StatusCode::from_u8(7), StatusCode::Conflict);
        assert_eq!(StatusCode::from_u8(200), StatusCode::Unknown(200));
        assert_eq!(StatusCode::from_u8(11), StatusCode::UnknownMethod);
    }

    #[test]
    fn error_body_round_trips() {
        let status = Status::rate_limited("too many logins for this username", 1500);
        let body = status.encode_body();
        assert_eq!(Status::decode_body(StatusCode::RateLimited, &body), status);
        let plain = Status::not_found("no such user");
        assert_eq!(
            Status::decode_body(StatusCode::NotFound, &plain.encode_body()),
            plain
        );
        assert!(
            Status::decode_body(StatusCode::Internal, &[])
                .message()
                .is_empty()
        );
    }

    #[test]
    fn garbage_error_body_keeps_the_code() {
        let status = Status::decode_body(StatusCode::Forbidden, &[0x0a, 0xff]);
        assert_eq!(status.code(), StatusCode::Forbidden);
        assert!(status.message().contains("undecodable"), "{status}");
    }
}
