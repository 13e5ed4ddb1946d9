//! The crate's error type, [`ProxyError`], and the groups it is made of.
//!
//! [`ProtocolError`] covers bytes from the wire that do not form a valid Postgres message;
//! [`AuthError`] covers SCRAM exchanges and verifiers. Every text here may end up in a log
//! read by a DBA, so it names the message and the problem in Postgres's own words, and
//! never includes secrets (passwords, verifiers, proofs). Each error knows the SQLSTATE a
//! client should receive for it ([`ProxyError::sqlstate`]).

use crate::protocol::sqlstate;

/// Everything that can go wrong inside jitgate-proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The peer sent bytes that are not a valid Postgres protocol message.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Authentication of the client failed or could not be carried out.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl ProxyError {
    /// The SQLSTATE to send the client when this error ends its session.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ProxyError::Protocol(e) => e.sqlstate(),
            ProxyError::Auth(e) => e.sqlstate(),
        }
    }
}

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
    /// Not malformed, but over a per-session limit (prepared statements, portals): the
    /// session ends with 53400 (see `session/limits.rs`).
    #[error("{0}")]
    SessionLimit(crate::session::limits::LimitExceeded),
    /// The server's answers to SQL that defines or drops statement and cursor names
    /// disagreed with jitgate's parse of it: jitgate no longer knows what those names
    /// hold, so it cannot audit what they run, and ends the session (fail closed).
    #[error("jitgate lost track of the prepared statements and cursors this session defined with SQL, so it could not audit what they run; the session was ended (reconnect; if this repeats, report the statements to the jitgate operator)")]
    UnfollowedNames,
    /// A Close/Describe message names something that is neither a statement nor a portal.
    #[error("malformed {message} message: invalid target type {kind:?} (expected 'S' or 'P')")]
    InvalidKind { message: &'static str, kind: char },
}

impl ProtocolError {
    /// Every protocol error is a protocol violation (08P01) for the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ProtocolError::UnsupportedVersion { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
            ProtocolError::MissingUser => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            ProtocolError::SessionLimit(_) => sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
            ProtocolError::UnfollowedNames => sqlstate::INTERNAL_ERROR,
            _ => sqlstate::PROTOCOL_VIOLATION,
        }
    }
}

/// Client authentication (SCRAM-SHA-256) errors and invalid stored verifiers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The client's proof did not verify: wrong password, or an unknown identity.
    ///
    /// Both cases deliberately produce this same variant so the client cannot tell them
    /// apart.
    #[error("password authentication failed")]
    AuthFailed,
    /// A SCRAM message from the client does not follow RFC 5802.
    #[error("malformed SCRAM message: {0}")]
    MalformedScram(&'static str),
    /// The client selected a SASL mechanism we did not offer.
    #[error("client selected an invalid SASL authentication mechanism")]
    UnsupportedMechanism,
    /// The client asked for channel binding (SCRAM-SHA-256-PLUS), which we do not offer.
    #[error("client requested SCRAM channel binding, but the proxy only offers SCRAM-SHA-256")]
    ChannelBindingNotOffered,
    /// The client-final-message's channel binding does not repeat the client-first header.
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    /// The client sent an authorization identity (`a=`), which Postgres does not support.
    #[error("client uses authorization identity, but it is not supported")]
    AuthzidNotSupported,
    /// The client requires a SCRAM extension (`m=`) we do not implement.
    #[error("client requires an unsupported SCRAM extension")]
    UnsupportedExtension,
    /// The nonce in client-final-message is not the one the exchange agreed on.
    #[error("invalid SCRAM response (nonce mismatch)")]
    NonceMismatch,
    /// A SCRAM message arrived when the exchange expected another one.
    #[error("SCRAM message received out of order")]
    OutOfOrder,
    /// A stored verifier is not in `SCRAM-SHA-256$iter:salt$StoredKey:ServerKey` form.
    #[error("invalid SCRAM-SHA-256 verifier: {0}")]
    InvalidVerifier(&'static str),
}

impl AuthError {
    /// SQLSTATE for the client: 28P01 for failed credentials, 08P01 for broken exchanges.
    ///
    /// An invalid stored verifier also maps to 28P01: to the client it must look exactly
    /// like a wrong password (Postgres logs the broken secret and fails the same way).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::AuthFailed | AuthError::InvalidVerifier(_) => sqlstate::INVALID_PASSWORD,
            AuthError::AuthzidNotSupported | AuthError::UnsupportedExtension => {
                sqlstate::FEATURE_NOT_SUPPORTED
            }
            _ => sqlstate::PROTOCOL_VIOLATION,
        }
    }
}
