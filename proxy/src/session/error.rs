//! Errors of one session's flow, and what the client is told about each.
//!
//! Only vetted text reaches the client: every variant maps to a SQLSTATE and a message a
//! DBA understands. Upstream credentials never appear in any of them.

use std::time::Duration;

use thiserror::Error;

/// Why opening an upstream session, or running jitgate's own statement on one, failed.
#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("could not connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connection error: {0}")]
    Io(#[source] std::io::Error),
    #[error("the server refused TLS, which this target requires")]
    TlsRefused,
    #[error("invalid TLS server name {0:?}")]
    TlsName(String),
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("the server closed the connection during startup")]
    Closed,
    #[error("the server refused the session: {message} (SQLSTATE {code})")]
    Refused { code: String, message: String },
    #[error("the server asked for an authentication method jitgate does not support ({0})")]
    UnsupportedAuth(&'static str),
    /// The server asked for a method `targets.<t>.auth_methods` does not allow; it was
    /// sent nothing derived from the password.
    #[error(
        "target \"{target}\" asked for {asked} authentication, which jitgate does not answer \
         unless targets.{target}.auth_methods allows it (allowed now: {allowed}); \
         configure the server for scram-sha-256 (pg_hba.conf and password_encryption)"
    )]
    AuthMethodNotAllowed {
        target: String,
        asked: &'static str,
        allowed: String,
    },
    /// The server asked for more SCRAM iterations than `max_scram_iterations` allows.
    #[error(
        "target \"{target}\" asked for a SCRAM iteration count of {asked}, over the \
         limit of {max} (targets.{target}.max_scram_iterations); set the role's password \
         again with fewer iterations (scram_iterations) or raise the limit"
    )]
    ScramIterations {
        target: String,
        asked: u32,
        max: u32,
    },
    #[error("the server's SCRAM signature did not verify")]
    ServerSignature,
    #[error("unexpected {0} from the server")]
    Unexpected(&'static str),
    #[error("malformed message from the server: {0}")]
    Protocol(#[source] std::io::Error),
    #[error("could not encode a message: {0}")]
    Encode(#[source] std::io::Error),
    /// A statement jitgate ran on a connection of its own failed (see `crate::stop`).
    #[error("the server refused jitgate's statement: {message} (SQLSTATE {code})")]
    Statement { code: String, message: String },
    /// The target or role of a session is no longer in the settings it was started with.
    #[error("target {target:?} has no credentials for role {role:?}")]
    NoCredentials { target: String, role: String },
    /// A statement on the target's admin connection (creating, changing or dropping a
    /// per-grant role, see `crate::provision`) failed, or the connection did.
    #[error("could not {what}: {message}{}", code.as_deref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    Provision {
        what: &'static str,
        code: Option<String>,
        message: String,
    },
}
