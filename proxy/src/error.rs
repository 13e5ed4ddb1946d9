//! The crate's error type, [`ProxyError`], and the groups it is made of.
//!
//! [`ProtocolError`] (defined with the protocol) covers bytes from the wire that do not
//! form a valid Postgres message; [`AuthError`] covers SCRAM exchanges and verifiers. Every text here may end up in a log
//! read by a DBA, so it names the message and the problem in Postgres's own words, and
//! never includes secrets (passwords, verifiers, proofs). Each error knows the SQLSTATE a
//! client should receive for it ([`ProxyError::sqlstate`]).

use crate::protocol::sqlstate;
pub use crate::protocol::ProtocolError;

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
