//! Running sequences on one connection and judging the result: after the connection
//! is closed, waits until the server log shows the backend's disconnection (its log is
//! complete) and, through jitgate, until the audit has the session's `session_end`; then
//! compares the two.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::auditlog::AuditLog;
use super::compare::{compare, Mismatch};
use super::exchange::{Conn, Ending, Endpoint, Exchange};
use super::sequence::Sequence;
use super::serverlog::{errors, statements, LogError, ServerLog};
use super::stmt::Stmt;
use crate::rawclient::LIMIT;

/// Why a connection's run failed.
pub enum Failure {
    /// The audit disagrees with the server log.
    Mismatch(Mismatch),
    /// No answer and no close within the time bound, on the connection's `n`th sequence.
    Hung(usize),
    /// The server log or the audit did not complete in time.
    Incomplete(String),
}

impl Failure {
    /// The index, on its connection, of the sequence the failure belongs to.
    pub fn sequence_index(&self) -> usize {
        match self {
            Failure::Mismatch(m) => m.sequence_index(),
            Failure::Hung(n) => *n,
            Failure::Incomplete(_) => 0,
        }
    }

    /// What shrinking keeps to: the statements at the first difference of a mismatch
    /// (see [`Mismatch::signature`]), or the kind of any other failure.
    pub fn signature(&self) -> String {
        match self {
            Failure::Mismatch(m) => m.signature(),
            other => other.class().to_string(),
        }
    }

    /// A one-word class.
    pub fn class(&self) -> &'static str {
        match self {
            Failure::Mismatch(_) => "mismatch",
            Failure::Hung(_) => "hang",
            Failure::Incomplete(_) => "incomplete",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Mismatch(m) => write!(f, "the audit does not match the server log\n{m}"),
            Failure::Hung(_) => write!(f, "no answer and no close within {LIMIT:?}"),
            Failure::Incomplete(what) => write!(f, "{what} did not complete within {LIMIT:?}"),
        }
    }
}

/// What one connection did.
pub struct ConnRun {
    /// Sequences sent (fewer than given when the connection closed early).
    pub ran: usize,
    pub exchanges: Vec<Exchange>,
    /// The statements the server log shows the backend ran.
    pub logged: Vec<Stmt>,
    /// The errors the server log shows for the backend.
    pub errors: Vec<LogError>,
    pub failure: Option<Failure>,
}

/// Runs connections against one endpoint; `audit` is `None` when talking to
/// PostgreSQL directly (nothing to compare: only the exchanges are checked).
pub struct Runner {
    endpoint: Endpoint,
    log: ServerLog,
    audit: Option<AuditLog>,
}

impl Runner {
    pub fn new(endpoint: Endpoint, server_log: PathBuf, audit: Option<PathBuf>) -> Runner {
        Runner {
            endpoint,
            log: ServerLog::open_at_end(server_log),
            audit: audit.map(AuditLog::new),
        }
    }

    /// Runs `seqs` on one fresh connection (until it closes), then compares.
    pub async fn run_connection(&mut self, seqs: &[Sequence]) -> ConnRun {
        let mut conn = Conn::open(&self.endpoint).await;
        let pid = conn.pid;
        let mut exchanges = Vec::new();
        let mut open = true;
        let mut hung = None;
        for (i, seq) in seqs.iter().enumerate() {
            let ex = conn.run(seq).await;
            let ending = ex.ending.clone();
            exchanges.push(ex);
            match ending {
                Ending::Answered => {}
                Ending::Closed(_) => {
                    open = false;
                    break;
                }
                Ending::Hung => {
                    hung = Some(i);
                    break;
                }
            }
        }
        let ran = exchanges.len();
        if open && hung.is_none() {
            conn.close().await;
        } else {
            drop(conn);
        }
        let complete = self.wait_complete(pid).await;
        let (logged, errors) = self
            .log
            .backend(pid)
            .map(|b| (statements(&b.entries), errors(&b.entries)))
            .unwrap_or_default();
        let failure = match (hung, complete) {
            (Some(i), _) => Some(Failure::Hung(i)),
            (None, Err(e)) => Some(e),
            (None, Ok(())) => self.audit.as_ref().and_then(|audit| {
                let session = audit.session_of(pid).expect("waited for it");
                compare(logged.clone(), &errors, &session.queries).map(Failure::Mismatch)
            }),
        };
        self.log.forget(pid);
        if let Some(audit) = &mut self.audit {
            audit.forget(pid);
        }
        ConnRun {
            ran,
            exchanges,
            logged,
            errors,
            failure,
        }
    }

    /// Waits until the backend's log and (through jitgate) its session's audit are
    /// complete.
    async fn wait_complete(&mut self, pid: i32) -> Result<(), Failure> {
        let start = Instant::now();
        loop {
            self.log.poll();
            let log_done = self.log.backend(pid).is_some_and(|b| b.ended);
            let audit_done = match &mut self.audit {
                None => true,
                Some(a) => {
                    a.poll();
                    a.session_of(pid).is_some_and(|s| s.ended)
                }
            };
            if log_done && audit_done {
                return Ok(());
            }
            if start.elapsed() > LIMIT {
                let what = if log_done {
                    format!("the audit of the session on backend {pid}")
                } else {
                    format!("the server log of backend {pid}")
                };
                return Err(Failure::Incomplete(what));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
