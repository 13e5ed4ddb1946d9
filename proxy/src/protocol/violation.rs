//! Bytes from the wire that do not form a valid Postgres message ([`ProtocolError`]),
//! in PostgreSQL's own words, each with the SQLSTATE the client gets.

use super::error::sqlstate;

/// A message from the wire that does not follow the Postgres frontend/backend protocol.
///
/// `message` fields name the Postgres message type ("Bind", "startup packet", …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The startup packet's length word is outside what any valid packet can have.
    #[error("invalid length of startup packet: {len} bytes (must be between 8 and {max})")]
    StartupLength { len: i64, max: usize },
    /// The startup packet carries a request code we do not know.
    #[error("unsupported startup request code {0}")]
    UnknownStartupCode(u32),
    /// The client wants a protocol major version other than 3.
    #[error("unsupported frontend protocol {major}.{minor}: the proxy supports protocol 3")]
    UnsupportedVersion { major: u16, minor: u16 },
    /// The startup packet names no (or an empty) `user`.
    #[error("no PostgreSQL user name specified in startup packet")]
    MissingUser,
    /// A startup parameter is given twice; which one wins would be ambiguous.
    #[error("startup parameter \"{0}\" is given more than once")]
    DuplicateParameter(String),
    /// A message header's length word is smaller than the length word itself.
    #[error("invalid message length {len} in message of type {tag:?}")]
    FrameLength { tag: char, len: i64 },
    /// A message is larger than the limit configured for this direction.
    #[error("message of type {tag:?} is {len} bytes long, over the limit of {max} bytes")]
    FrameTooLong { tag: char, len: usize, max: usize },
    /// A message ends before all of its fields were read.
    #[error("malformed {message} message: it ends before all of its fields")]
    Truncated { message: &'static str },
    /// A string field has no terminating NUL byte.
    #[error("malformed {message} message: a string field is not NUL-terminated")]
    MissingNul { message: &'static str },
    /// A string field that must be UTF-8 is not.
    #[error("malformed {message} message: a string field is not valid UTF-8")]
    InvalidUtf8 { message: &'static str },
    /// A message has bytes after its last field.
    #[error("malformed {message} message: {count} unexpected bytes after the last field")]
    TrailingBytes { message: &'static str, count: usize },
    /// A count field is negative or larger than the message can hold.
    #[error("malformed {message} message: invalid {what} count {count}")]
    InvalidCount {
        message: &'static str,
        what: &'static str,
        count: i64,
    },
    /// A length-prefixed value has a negative length other than -1 (NULL).
    #[error("malformed {message} message: invalid value length {len}")]
    InvalidValueLength { message: &'static str, len: i32 },
    /// Bytes arrived after SSLRequest before the TLS handshake (CVE-2021-23214 class):
    /// they would be taken as if they had come over TLS.
    #[error("received unencrypted data after SSL request")]
    UnencryptedDataAfterSslRequest,
    /// A direct TLS connection (no SSLRequest) whose client did not negotiate ALPN
    /// `postgresql` (PostgreSQL 17's words).
    #[error("received direct SSL connection request without ALPN protocol negotiation extension")]
    DirectTlsWithoutAlpn,
    /// SSLRequest/GSSENCRequest after encryption was already negotiated or refused.
    #[error("encryption was already negotiated on this connection")]
    RepeatedEncryptionRequest,
    /// A message of another type arrived where the protocol requires a specific one.
    #[error("expected {expected} message, got message of type {got:?}")]
    UnexpectedMessage { expected: &'static str, got: char },
    /// During COPY FROM STDIN data the client sent something other than CopyData,
    /// CopyDone, CopyFail, Sync or Flush (PostgreSQL's own words; it ends the session too).
    #[error("unexpected message type 0x{tag:02X} during COPY from stdin")]
    UnexpectedDuringCopy { tag: u8 },
    /// A Close/Describe message names something that is neither a statement nor a portal.
    #[error("malformed {message} message: invalid target type {kind:?} (expected 'S' or 'P')")]
    InvalidKind { message: &'static str, kind: char },
}

impl ProtocolError {
    /// The SQLSTATE the client gets: a protocol violation (08P01), but for an
    /// unsupported version or a missing user.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ProtocolError::UnsupportedVersion { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
            ProtocolError::MissingUser => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            _ => sqlstate::PROTOCOL_VIOLATION,
        }
    }
}
