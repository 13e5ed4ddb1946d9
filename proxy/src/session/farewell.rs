//! The FATAL errors that tell a client its grant has ended: sent by the session's own
//! teardown, or by the backstop when the session's thread has stopped running.

use jiff::Timestamp;
use uuid::Uuid;

use crate::protocol::{sqlstate, PgError};
use crate::registry::Revocation;

/// Whose grant ended: the session's grant and the names it was granted under.
pub struct GrantHolder<'a> {
    pub grant_id: Uuid,
    pub identity: &'a str,
    pub target: &'a str,
    pub role: &'a str,
}

/// The grant's deadline passed.
pub fn expired(h: &GrantHolder<'_>, deadline: Timestamp) -> PgError {
    let message = format!(
        "terminating connection: grant {} for identity \"{}\" on target \"{}\" (role \"{}\") expired at {}",
        h.grant_id, h.identity, h.target, h.role, deadline
    );
    PgError::fatal(sqlstate::ADMIN_SHUTDOWN, message).with_hint(format!(
        "ask for a new grant, e.g. jitgate grant --identity {} --target {} --role {} --for 30m --reason \"…\"",
        h.identity, h.target, h.role
    ))
}

/// The grant was revoked.
pub fn revoked(h: &GrantHolder<'_>, revocation: &Revocation) -> PgError {
    let why = revocation
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let message = format!(
        "terminating connection: grant {} for identity \"{}\" on target \"{}\" was revoked by {} at {}{}",
        h.grant_id, h.identity, h.target, revocation.by, revocation.at, why
    );
    PgError::fatal(sqlstate::ADMIN_SHUTDOWN, message)
        .with_hint("ask an administrator for a new grant if you still need access")
}
