//! Errors and notices as the client sees them: severity, SQLSTATE, message, detail, hint.
//!
//! [`PgError`] is what the proxy itself sends in an ErrorResponse or NoticeResponse (see
//! [`super::backend::error_response`]). Only vetted text belongs here: it reaches the
//! client verbatim.
//! Field meanings: <https://www.postgresql.org/docs/current/protocol-error-fields.html>.

use std::borrow::Cow;

/// Severity of an ErrorResponse/NoticeResponse, sent in both the 'S' and 'V' fields.
///
/// `Error` aborts the current query, `Fatal` ends the session, `Panic` is never sent by
/// the proxy but exists so upstream severities can be represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The current command failed; the session continues.
    Error,
    /// The session is being terminated.
    Fatal,
    /// The server is restarting all sessions.
    Panic,
    /// Advisory: something may be wrong.
    Warning,
    /// Advisory: something the user may want to know.
    Notice,
    /// Advisory: implicitly requested information.
    Info,
    /// Advisory: debugging output.
    Debug,
    /// Advisory: server log output.
    Log,
}

impl Severity {
    /// The non-localized severity name Postgres uses in the 'V' field.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Panic => "PANIC",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
            Severity::Info => "INFO",
            Severity::Debug => "DEBUG",
            Severity::Log => "LOG",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error or notice the proxy sends to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// How bad it is; `Fatal` means the proxy closes the connection after sending it.
    pub severity: Severity,
    /// The SQLSTATE (five characters), usually one of [`sqlstate`]; drivers branch on it.
    pub code: Cow<'static, str>,
    /// The primary message: one line, no trailing period, as Postgres writes them.
    pub message: String,
    /// Optional secondary detail (may span lines).
    pub detail: Option<String>,
    /// Optional advice on what to do about it — e.g. how to request a grant.
    pub hint: Option<String>,
}

impl PgError {
    /// An error of the given severity without detail or hint.
    pub fn new(
        severity: Severity,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        PgError {
            severity,
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A FATAL error: the session ends after it is sent.
    pub fn fatal(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        PgError::new(Severity::Fatal, code, message)
    }

    /// An ERROR: the current query fails, the session goes on.
    pub fn error(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        PgError::new(Severity::Error, code, message)
    }

    /// A NOTICE, e.g. to tell the user their grant is about to expire.
    pub fn notice(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        PgError::new(Severity::Notice, code, message)
    }

    /// Adds a detail line.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a hint line.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.severity, self.message, self.code)
    }
}

/// SQLSTATE codes the proxy sends. Source: Appendix A of the Postgres docs,
/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>.
pub mod sqlstate {
    /// Successful completion (used in notices).
    pub const SUCCESSFUL_COMPLETION: &str = "00000";
    /// Generic warning (used in notices, e.g. a grant about to expire).
    pub const WARNING: &str = "01000";
    /// Could not connect the session to its database.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// Unable to establish a connection (e.g. upstream refused it).
    pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
    /// The peer broke the wire protocol.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// Something the client asked for is not implemented (e.g. channel binding).
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// A parameter value is not acceptable.
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    /// The identity is not allowed, or not specified.
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
    /// Wrong password or unknown identity (the two are indistinguishable on purpose).
    pub const INVALID_PASSWORD: &str = "28P01";
    /// No active grant for this database: what policy denials use.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// The database named at startup does not exist (unknown target).
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    /// The proxy lacks a resource it needs (e.g. file descriptors).
    pub const INSUFFICIENT_RESOURCES: &str = "53000";
    /// Too many connections for this identity, target or proxy.
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// A per-session limit of the configuration (statements, portals) was exceeded.
    pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";
    /// A proxy limit (e.g. message size) was exceeded.
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    /// The query was cancelled (e.g. because the grant ended mid-query).
    pub const QUERY_CANCELED: &str = "57014";
    /// The session was terminated by an administrator (revocation, shutdown).
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// The proxy is starting up or draining and accepts no new sessions.
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    /// The session was idle for too long.
    pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
    /// An operating-system level failure (e.g. the audit log cannot be written).
    pub const SYSTEM_ERROR: &str = "58000";
    /// A bug or an unexpected state in the proxy.
    pub const INTERNAL_ERROR: &str = "XX000";
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn builders_set_fields() {
        let e = PgError::fatal(sqlstate::INSUFFICIENT_PRIVILEGE, "no active grant")
            .with_detail("detail")
            .with_hint("run jitgate request");
        assert_eq!(e.severity, Severity::Fatal);
        assert_eq!(e.code, "42501");
        assert_eq!(e.detail.as_deref(), Some("detail"));
        assert_eq!(e.hint.as_deref(), Some("run jitgate request"));
        assert_eq!(e.to_string(), "FATAL: no active grant (42501)");
        assert_eq!(PgError::error("XX000", "x").severity.as_str(), "ERROR");
        let owned: PgError = PgError::error(String::from("22023"), "x");
        assert_eq!(owned.code, sqlstate::INVALID_PARAMETER_VALUE);
    }
}
