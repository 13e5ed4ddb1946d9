//! `session_end.stopped`: what jitgate did, when a session ended, about work the database
//! server might still have been doing for it.
//!
//! A session can end while the server is still answering it — the client hung up or sent
//! Terminate behind a long statement, the grant ended, a protocol or audit failure. A
//! CancelRequest stops only the statement running at that instant: statements the client
//! pipelined behind it are already in the server's input buffer and would run next. So
//! jitgate ends the backend itself and waits to see it gone before it writes
//! `session_end`, and records here how (AUDIT.md, `session_end`).

use serde::{Deserialize, Serialize};

/// How a session's remaining server work was stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    /// What was still going on upstream.
    pub work: StoppedWork,
    /// How it was stopped.
    pub how: StopMethod,
    /// The backend was seen to exit (its connection closed, or it left
    /// `pg_stat_activity`) before `session_end` was written.
    pub backend_gone: bool,
    /// Milliseconds from the start of the stop to the backend's exit (or to giving up).
    pub ms: f64,
    /// Why jitgate had to fall back, or why the exit was not seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What was still going on upstream when the session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoppedWork {
    /// Requests the server had not finished answering: the running statement and any
    /// the client pipelined behind it (or a COPY in progress).
    Statements,
    /// Nothing was in flight, but the backend did not leave after Terminate.
    Backend,
}

/// How the work was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMethod {
    /// `pg_terminate_backend` from a connection of jitgate's own under the same brokered
    /// role: the running statement and everything behind it, any open transaction
    /// rolled back.
    Terminate,
    /// A CancelRequest, then the connection closed — jitgate could not open its own
    /// connection to terminate the backend (`detail` says why). The running statement
    /// was cancelled; statements pipelined behind it may have run.
    Cancel,
}

impl StoppedWork {
    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            StoppedWork::Statements => "statements",
            StoppedWork::Backend => "backend",
        }
    }
}

impl StopMethod {
    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            StopMethod::Terminate => "terminate",
            StopMethod::Cancel => "cancel",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde() {
        for w in [StoppedWork::Statements, StoppedWork::Backend] {
            assert_eq!(serde_json::to_value(w).unwrap(), w.as_str());
        }
        for h in [StopMethod::Terminate, StopMethod::Cancel] {
            assert_eq!(serde_json::to_value(h).unwrap(), h.as_str());
        }
    }
}
