//! The one error type of the audit crate.
//!
//! Messages are shown to DBAs and operators (in logs, CLI output and the FATAL/ERROR text a
//! refused session receives), so they say what happened to the audit log and why, and
//! never contain SQL text or parameter values.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while writing, reading or replaying the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Opening, creating or reading an audit log file failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file (or its directory) the operation was about.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },

    /// The audit log cannot be written right now; queries must not be forwarded.
    /// The text says which file and why (e.g. "No space left on device").
    #[error("audit log unavailable: {0}")]
    Unavailable(String),

    /// The writer thread has stopped (closed or crashed), so no event can be recorded.
    #[error("audit writer has stopped; no further events can be recorded")]
    WriterGone,

    /// The writer did not accept and acknowledge an event within the stall timeout
    /// (the queue stayed full or the disk is hanging).
    #[error("audit log stalled: event not acknowledged within {0:?}")]
    Stalled(Duration),

    /// A line of an audit log is not a valid audit event.
    #[error("audit log {} line {line}: not a valid audit event: {source}", path.display())]
    Parse {
        /// The file of the log set the line is in.
        path: PathBuf,
        /// 1-based physical line number in the file.
        line: u64,
        /// What serde_json found wrong with the line.
        #[source]
        source: serde_json::Error,
    },

    /// A line was written by a newer jitgate with a schema this reader does not know;
    /// reading it as if it were the old schema could misrepresent what happened.
    #[error("audit log {} line {line}: schema version {version} is newer than supported version {supported}", path.display())]
    UnsupportedVersion {
        /// The file of the log set the line is in.
        path: PathBuf,
        /// 1-based physical line number in the file.
        line: u64,
        /// The `v` found on the line.
        version: u32,
        /// [`crate::SCHEMA_VERSION`] of this reader.
        supported: u32,
    },

    /// A checkpoint signing key or public key could not be read, parsed or written.
    /// Never contains key material.
    #[error("audit signing key{}: {reason}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Key {
        /// The key file, when the problem is about one.
        path: Option<PathBuf>,
        /// What is wrong with it.
        reason: String,
    },

    /// A recorded parameter value is not in the documented encoding (hand-edited or
    /// corrupted log), so its original bytes cannot be recovered.
    #[error("invalid parameter value in audit event: {0}")]
    InvalidParam(&'static str),

    /// A redaction pattern in the configuration is not a valid regular expression.
    #[error("invalid redaction pattern {pattern:?}: {source}")]
    InvalidPattern {
        /// The pattern as configured.
        pattern: String,
        /// What the regex parser found wrong.
        #[source]
        source: regex::Error,
    },
}
