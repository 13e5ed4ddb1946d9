//! Refusing client messages that could not be audited (fail closed, without dropping
//! the session when that is safe).
//!
//! When the audit log cannot take a batch's `query` events, the batch is not forwarded.
//! The client still gets exactly the responses the protocol promises it: an ERROR for
//! each simple Query or FunctionCall, one ERROR per extended-protocol group, and a
//! ReadyForQuery where the server would have sent one. Messages after a refused
//! extended message are discarded until the next Sync, as Postgres itself does after an
//! error. Inside an open transaction refusing one statement would leave the upstream
//! transaction in a state the client does not expect (a later COMMIT could commit work
//! the client believes failed), so there the session is ended instead — the upstream
//! rolls the transaction back.

use bytes::BytesMut;

use crate::protocol::{backend, sqlstate, tags, PgError};

/// Error sent for every refused statement.
pub fn audit_unavailable(detail: &str) -> PgError {
    PgError::error(
        sqlstate::SYSTEM_ERROR,
        "the audit log is unavailable, so jitgate did not run this statement",
    )
    .with_detail(detail.to_owned())
    .with_hint(
        "jitgate never runs a statement it cannot audit; retry once the operator has fixed the audit log",
    )
}

/// What the relay remembers between batches while refusing.
#[derive(Debug)]
pub struct RefusalState {
    /// Transaction status from the server's last ReadyForQuery.
    pub tx_status: u8,
    /// An extended-protocol group was refused: drop messages until its Sync.
    pub discarding: bool,
}

impl Default for RefusalState {
    fn default() -> Self {
        RefusalState {
            tx_status: tags::TX_IDLE,
            discarding: false,
        }
    }
}

/// Writes the responses for refused messages `tags` into `out`. Returns true when the
/// client asked to Terminate.
pub fn respond(
    state: &mut RefusalState,
    frame_tags: impl Iterator<Item = u8>,
    error: &PgError,
    out: &mut BytesMut,
) -> bool {
    // Whether the current extended group still owes its one ERROR.
    let mut owe_error = !state.discarding;
    for tag in frame_tags {
        match tag {
            tags::QUERY | tags::FUNCTION_CALL if !state.discarding => {
                backend::error_response(out, error);
                backend::ready_for_query(out, state.tx_status);
            }
            tags::SYNC => {
                if owe_error {
                    backend::error_response(out, error);
                }
                backend::ready_for_query(out, state.tx_status);
                state.discarding = false;
                owe_error = true;
            }
            tags::TERMINATE => return true,
            // Flush asks for pending output; nothing is pending but the error.
            tags::FLUSH if !owe_error => {}
            // Parse, Bind, Describe, Execute, Close, Flush: one ERROR per group, then
            // nothing until Sync.
            _ => {
                if owe_error {
                    backend::error_response(out, error);
                    owe_error = false;
                }
                state.discarding = true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    fn tags_of(mut out: BytesMut) -> Vec<u8> {
        let mut v = Vec::new();
        while out.len() >= 5 {
            let tag = out[0];
            let len = i32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
            v.push(tag);
            out.advance(1 + len);
        }
        v
    }

    #[test]
    fn simple_queries_get_error_and_ready_each() {
        let mut state = RefusalState::default();
        let mut out = BytesMut::new();
        let quit = respond(
            &mut state,
            [b'Q', b'Q'].into_iter(),
            &audit_unavailable("x"),
            &mut out,
        );
        assert!(!quit);
        assert_eq!(tags_of(out), vec![b'E', b'Z', b'E', b'Z']);
    }

    #[test]
    fn an_extended_group_gets_one_error_and_discards_until_sync() {
        let mut state = RefusalState::default();
        let mut out = BytesMut::new();
        let e = audit_unavailable("x");
        respond(
            &mut state,
            [b'P', b'B', b'E', b'H'].into_iter(),
            &e,
            &mut out,
        );
        assert!(state.discarding);
        assert_eq!(tags_of(out.split()), vec![b'E']);
        // The next batch completes the group: only ReadyForQuery is owed.
        respond(&mut state, [b'B', b'E', b'S'].into_iter(), &e, &mut out);
        assert!(!state.discarding);
        assert_eq!(tags_of(out.split()), vec![b'Z']);
        // A whole pipeline of two groups in one batch.
        respond(
            &mut state,
            [b'P', b'B', b'E', b'S', b'B', b'E', b'S'].into_iter(),
            &e,
            &mut out,
        );
        assert_eq!(tags_of(out), vec![b'E', b'Z', b'E', b'Z']);
    }

    #[test]
    fn ready_for_query_keeps_the_transaction_status() {
        let mut state = RefusalState {
            tx_status: tags::TX_FAILED,
            discarding: false,
        };
        let mut out = BytesMut::new();
        respond(
            &mut state,
            [b'Q'].into_iter(),
            &audit_unavailable("x"),
            &mut out,
        );
        assert_eq!(out[out.len() - 1], tags::TX_FAILED);
    }
}
