//! How a refused message reaches the client: not as an error jitgate writes itself, but
//! as a message the *server* fails with jitgate's error.
//!
//! An error answered by jitgate would leave the server's transaction untouched: inside a
//! transaction block the client would believe it aborted while the server would still
//! commit its earlier work at the next COMMIT (see `session/refuse.rs`). So the refused
//! message is replaced, in place, by one the server fails with SQLSTATE 42501:
//! - a simple Query → a Query running `DO $jitgate$ BEGIN RAISE EXCEPTION … END $jitgate$`;
//! - a fast-path FunctionCall → the same Query (both are answered ErrorResponse +
//!   ReadyForQuery, and both are skipped alike during an extended-protocol error);
//! - a Parse → a Parse of the same name and parameter types whose statement is that `DO`:
//!   it is prepared, can be described and bound, and each Execute fails with 42501.
//!
//! The server then applies its own rules — the transaction block fails (a later COMMIT
//! answers ROLLBACK), an extended group is skipped until Sync, a multi-statement Query
//! fails whole — and the tracker, which follows the server's answers, stays in step.
//! The text is fixed: nothing of the client's statement is echoed into it.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Reason, Refusal};
use crate::protocol::tags;

/// Type OID `text`: declared for parameters the client left to the server to infer (a
/// `DO` statement refers to none, so the server cannot infer them, and an undeclared
/// type would fail the Bind with an internal error instead of the refusal).
const TEXT_OID: u32 = 25;

/// The SQL the server runs instead of a refused statement (the error's text says which
/// rule it broke).
pub fn refusal_sql(refusal: Refusal) -> String {
    let (message, hint) = match refusal.reason {
        Reason::RoleChange => (
            format!(
                "jitgate refused this statement: it changes a role or the server ({})",
                refusal.what
            ),
            "Grants through jitgate cannot change roles, role membership, server or database settings. Ask a database administrator to make this change outside jitgate.",
        ),
        Reason::UnfollowedNames => (
            format!(
                "jitgate refused this statement: it may define or drop prepared statements or cursors, and jitgate could not parse it to audit what they run ({})",
                refusal.what
            ),
            "Check the statement's syntax; send statement and cursor names as UTF-8 text.",
        ),
    };
    format!(
        "DO $jitgate$ BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = {}, HINT = {}; END $jitgate$",
        literal(&message),
        literal(hint),
    )
}

/// A PL/pgSQL string literal: quotes doubled; backslashes are not special in a standard
/// literal, and `E` is not used, so `standard_conforming_strings` does not matter (the
/// texts are jitgate's own and hold no backslash or `$jitgate$`).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The Query frame (tag, length, body) that replaces a refused Query or FunctionCall.
pub fn query_frame(refusal: Refusal) -> Bytes {
    let sql = refusal_sql(refusal);
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    out.put_u8(tags::QUERY);
    put_len(&mut out, 4 + sql.len() + 1);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
    out.freeze()
}

/// The Parse frame that replaces a refused Parse: same statement name, `params`
/// parameters (the client's declared types, unspecified ones as `text`).
pub fn parse_frame(refusal: Refusal, name: &[u8], declared: &[u32], params: usize) -> Bytes {
    let sql = refusal_sql(refusal);
    let count = params.max(declared.len()).min(usize::from(u16::MAX));
    let mut out = BytesMut::with_capacity(sql.len() + name.len() + 16 + 4 * count);
    out.put_u8(tags::PARSE);
    put_len(&mut out, 4 + name.len() + 1 + sql.len() + 1 + 2 + 4 * count);
    out.put_slice(name);
    out.put_u8(0);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
    // Bounded by u16::MAX above.
    out.put_u16(u16::try_from(count).unwrap_or(u16::MAX));
    for i in 0..count {
        let oid = declared
            .get(i)
            .copied()
            .filter(|o| *o != 0)
            .unwrap_or(TEXT_OID);
        out.put_u32(oid);
    }
    out.freeze()
}

/// The statement name of [`aborted_parse_frame`]'s Parse (it never gets defined).
const SHIELD_STATEMENT: &[u8] = b"jitgate: not run";

/// A Parse that the server fails with 25P02 — "current transaction is aborted" — without
/// any other effect, sent in place of a message the server must not get while its
/// transaction is aborted (see `session/tracker/shield.rs`). In an aborted transaction
/// the server refuses any Parse but of COMMIT or ROLLBACK after parsing it, before it
/// looks at the name, so nothing is defined and no name in use is touched; the error
/// makes the server skip to the next Sync, as the replaced message's error would have.
pub fn aborted_parse_frame() -> Bytes {
    let sql = b"SELECT NULL";
    let mut out = BytesMut::with_capacity(SHIELD_STATEMENT.len() + sql.len() + 9);
    out.put_u8(tags::PARSE);
    put_len(&mut out, 4 + SHIELD_STATEMENT.len() + 1 + sql.len() + 1 + 2);
    out.put_slice(SHIELD_STATEMENT);
    out.put_u8(0);
    out.put_slice(sql);
    out.put_u8(0);
    out.put_u16(0);
    out.freeze()
}

fn put_len(out: &mut BytesMut, len: usize) {
    // Our frames are small (a fixed text, a name and at most 65535 types): within i32.
    out.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
}
