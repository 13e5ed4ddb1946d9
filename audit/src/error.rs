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

    /// The log ends before its last signed checkpoint (or its checkpoints are gone while
    /// it holds events): it was cut back while jitgate was stopped. The writer refuses to
    /// open it until an operator acknowledges the loss, which is itself recorded.
    #[error("{0}")]
    CutBack(Box<CutBack>),

    /// Another writer (a running `jitgate serve`, or a CLI command appending to the log)
    /// holds the log's writer lock; see [`crate::writer_lock`].
    #[error(
        "the audit log {} is in use by a running jitgate ({}); stop it first (or give this \
         one its own audit.path): two writers would corrupt its sequence and hash chain",
        path.display(),
        pid.map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}"))
    )]
    InUse {
        /// The live file.
        path: PathBuf,
        /// The holder's pid, when it left one in the lock file.
        pid: Option<u32>,
    },

    /// `acknowledge-truncation` was asked for, but the log is not cut back.
    #[error("nothing to acknowledge: {0}")]
    NothingToAcknowledge(String),

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

/// What the writer found when a log was cut back while jitgate was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutBack {
    /// The live file of the log.
    pub log: PathBuf,
    /// Where the last checkpoint was found: the checkpoints file, or a witness.
    pub checkpoints: String,
    /// `seq` of the last event still in the log (`None`: no event left).
    pub log_ends_at: Option<u64>,
    /// The last signed checkpoint's `last_seq` and when it was written (`None`: the
    /// checkpoints file is missing or holds no checkpoint).
    pub checkpoint: Option<(u64, jiff::Timestamp)>,
}

impl std::fmt::Display for CutBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = self.log_ends_at.map_or_else(
            || "holds no event".to_owned(),
            |s| format!("ends at seq {s}"),
        );
        match self.checkpoint {
            Some((seq, ts)) => write!(
                f,
                "audit log {} {end}, but its last signed checkpoint (written {}, in {}) covers up \
                 to seq {seq}: events {}..{seq} were removed while jitgate was stopped (the file \
                 was cut back, or its newest file deleted)",
                self.log.display(),
                crate::time::display_micros(&ts),
                self.checkpoints,
                self.log_ends_at.map_or(1, |s| s + 1),
            )?,
            None => write!(
                f,
                "audit log {} {end}, but a signing key is configured and {} holds no checkpoint: \
                 the checkpoints were deleted (the log may have been cut back with them), or \
                 audit.signing_key_file was just configured for an existing log",
                self.log.display(),
                self.checkpoints,
            )?,
        }
        write!(
            f,
            ". jitgate refuses to continue a log that lost events. Keep a copy of the files, \
             look at them with `jitgate audit verify`, then acknowledge the loss with `jitgate \
             audit acknowledge-truncation --reason \"…\"` (recorded in the audit log as a \
             log_cut_acknowledged event) and start jitgate again"
        )
    }
}
