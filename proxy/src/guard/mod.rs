//! The statement guard: statements that change roles or the server are refused before
//! they reach it (issue 17: a grant never becomes standing access).
//!
//! A grantee on a shared upstream role could otherwise change that role — its password
//! (psql's `\password`), its settings, its memberships — and keep access after the grant
//! ends, or lock every other identity out. What is refused, and why each entry is there,
//! is in [`tree`]; how a refusal reaches the client without the server's transaction
//! state and jitgate's tracker drifting apart is in [`substitute`].
//!
//! Cost: nearly every statement is let through by [`prefilter`] (one pass of an
//! Aho-Corasick automaton over its bytes, no allocation). Only texts holding one of the
//! keywords every refused statement must contain are parsed with PostgreSQL's own parser
//! (`pg_query`, libpg_query) and their tree walked. A text that hits the prefilter but
//! cannot be parsed is refused (fail closed).
//!
//! Not seen, and documented as a limit: SQL built at run time inside `DO` blocks or
//! functions (`EXECUTE 'ALTER ROLE …'`), and functions that call `set_config` in their
//! bodies. Ephemeral per-grant roles are the real fix for those.

mod mask;
pub mod prefilter;
pub mod substitute;
mod tree;
pub mod words;

use bytes::Bytes;

pub use self::mask::mask_passwords;
pub use self::tree::max_param;

/// Whether a target's sessions may change roles and the server
/// (`targets.<t>.guard.role_changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoleChanges {
    /// Refused with SQLSTATE 42501 (the default).
    #[default]
    Refuse,
    /// Forwarded like any statement (still audited, and flagged by `setting_change`).
    Allow,
}

/// Why a statement was refused: what kind of change it makes. A fixed text, never
/// anything taken from the statement (it goes into the client's error and the server's
/// log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub what: &'static str,
    pub reason: Reason,
}

/// The rule a refused statement broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It changes a role or the server (the guard).
    RoleChange,
    /// It may define or drop prepared statements or cursors, and jitgate could not
    /// parse it to follow which (the tracker: `session/tracker/sqlnames.rs`).
    UnfollowedNames,
}

impl Refusal {
    /// A statement that changes a role or the server.
    pub const fn role_change(what: &'static str) -> Refusal {
        Refusal {
            what,
            reason: Reason::RoleChange,
        }
    }
}

/// OID of the built-in `set_config(text, text, boolean)` (pg_proc.dat), the one function
/// a fast-path FunctionCall could use to change the role or session authorization.
pub const SET_CONFIG_OID: u32 = 2078;

/// Settings whose change through `set_config` is refused.
const GUARDED_SETTINGS: [&str; 2] = ["role", "session_authorization"];

fn guarded_setting(name: &str) -> bool {
    GUARDED_SETTINGS
        .iter()
        .any(|s| name.eq_ignore_ascii_case(s))
}

/// The verdict on one SQL text (a simple Query — all of its statements — or a Parse).
/// `None`: let it through.
pub fn check_sql(sql: &[u8]) -> Option<Refusal> {
    if !prefilter::may_change_roles(sql) {
        return None;
    }
    check_parsed(sql)
}

/// The verdict on a SQL text the prefilter says must be parsed (a caller that runs the
/// prefilter's pass itself, together with others: see `session/tracker/look.rs`).
pub fn check_parsed(sql: &[u8]) -> Option<Refusal> {
    tree::check(sql)
}

/// The verdict on a fast-path FunctionCall: `set_config` of a guarded setting, or whose
/// setting name is NULL (undecidable; the server would fail it anyway), is refused.
pub fn check_function_call(oid: u32, args: &[Option<Bytes>]) -> Option<Refusal> {
    if oid != SET_CONFIG_OID {
        return None;
    }
    let refused = match args.first() {
        // Text and binary formats of `text` are both the bytes of the string.
        Some(Some(name)) => match std::str::from_utf8(name) {
            Ok(name) => guarded_setting(name),
            Err(_) => true,
        },
        _ => true,
    };
    refused.then_some(Refusal::role_change(
        "set_config of role or session_authorization (fast-path call)",
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
