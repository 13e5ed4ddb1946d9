//! A shield for a crash of the server that any client can cause (found by the
//! differential test on PostgreSQL 15.18): after a simple Query fails inside a
//! transaction block, the server keeps the failed statement's unnamed portal until the
//! transaction ends, but the text that portal points to lived in the memory of that one
//! Query message, which the next message reuses. An Execute of the unnamed portal
//! without a Bind before it reads that text to log it — `execute <unnamed>: …` — and,
//! once a longer message has overwritten it, the backend dies with SIGSEGV, and the
//! postmaster restarts every backend of the server: one grantee ends everyone's work.
//!
//! The server would refuse that Execute anyway (25P02: the transaction is aborted), so
//! jitgate sends a Parse in its place that the server refuses with the same 25P02 and no
//! other effect (`guard/substitute.rs :: aborted_parse_frame`). The Execute is recorded
//! as not run, with the reason.
//!
//! When jitgate cannot yet know whether the portal is such a one (a simple Query is still
//! unanswered, or in an aborted transaction a Bind or Close of the unnamed portal is),
//! the Execute waits for the server's answers ([`Step::Wait`]). Outside an aborted
//! transaction, drivers always Bind before they Execute the unnamed portal, so they
//! never meet either.

use super::{Op, Step, Tracker};
use crate::guard::substitute;

/// Why a shielded Execute did not run.
pub(super) const SHIELDED: &str = "not executed: jitgate did not forward this Execute of the unnamed portal of a failed simple query in an aborted transaction (PostgreSQL 15 can crash on it); the server refused the transaction's commands with 25P02 as it would have";

impl Tracker {
    /// For an Execute of `portal` that the server will take: `Some(step)` when it must
    /// wait or be replaced (see the module doc).
    pub(super) fn shield_execute(&self, portal: &[u8]) -> Option<Step> {
        if !portal.is_empty() {
            return None;
        }
        // Bound or closed earlier in this group: if that failed, the server skips this
        // Execute; if it ran, the portal is no longer the failed query's.
        for r in self.pending.iter().rev() {
            match &r.op {
                Op::Bind { portal, .. }
                | Op::Close {
                    statement: false,
                    name: portal,
                } if portal.is_empty() => return None,
                Op::Sync | Op::Query { .. } => break,
                _ => {}
            }
        }
        let query_pending = self
            .pending
            .iter()
            .any(|r| matches!(r.op, Op::Query { .. }));
        if !self.dangling_unnamed && !query_pending {
            return None;
        }
        // The unnamed portal may be a failed query's, and only the server's answers can
        // tell whether what is in flight (that Query; a Bind or Close of the portal,
        // which fails in an aborted transaction unless it is ROLLBACK's) changed that.
        if self.in_flight() {
            return Some(Step::Wait);
        }
        Some(Step::Replace(substitute::aborted_parse_frame()))
    }
}
