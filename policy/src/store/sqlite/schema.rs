//! The SQLite schema and its migrations, versioned with `PRAGMA user_version`.
//!
//! Migration `n` (1-based) takes a database from version `n - 1` to `n`. All pending
//! migrations run in one IMMEDIATE transaction, so two processes opening the same file at
//! once cannot both migrate, and a failed migration leaves the old schema intact.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::PolicyError;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 2;

/// Timestamps are integer microseconds since the Unix epoch (UTC), so comparisons in the
/// index are plain integer comparisons and the round trip is exact. `approvals` is a JSON
/// array of `Approval`. The id is the hyphenated UUID text, readable with the sqlite3 CLI.
const V1: &str = "
CREATE TABLE grants (
    id            TEXT    NOT NULL PRIMARY KEY,
    identity      TEXT    NOT NULL,
    target        TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    not_before    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    issued_by     TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    state         TEXT    NOT NULL
        CHECK (state IN ('pending', 'approved', 'denied', 'revoked', 'expired')),
    approvals     TEXT    NOT NULL DEFAULT '[]',
    revoked_by    TEXT,
    revoked_at    INTEGER,
    revoke_reason TEXT
) STRICT;
CREATE INDEX grants_identity_target_expires ON grants (identity, target, expires_at);
CREATE INDEX grants_created ON grants (created_at);
";

/// Version 2: the request/approval workflow. The table is rebuilt because SQLite cannot
/// change a CHECK constraint (`cancelled` is a new state). New columns: the rule, ticket
/// and requested duration (µs), when a pending request lapses, the extended grant, the
/// idempotency key (unique per requester), the compare-and-swap `version`, and `details`
/// — a JSON object with the decisions (denial, cancellation, review), the break-glass
/// flag and the notifications already sent. Existing grants get `duration_us =
/// expires_at - not_before`.
const V2: &str = "
CREATE TABLE grants_v2 (
    id              TEXT    NOT NULL PRIMARY KEY,
    identity        TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    role            TEXT    NOT NULL,
    not_before      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    reason          TEXT    NOT NULL,
    issued_by       TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    state           TEXT    NOT NULL
        CHECK (state IN ('pending', 'approved', 'denied', 'cancelled', 'revoked', 'expired')),
    approvals       TEXT    NOT NULL DEFAULT '[]',
    revoked_by      TEXT,
    revoked_at      INTEGER,
    revoke_reason   TEXT,
    rule            TEXT,
    ticket          TEXT,
    duration_us     INTEGER NOT NULL,
    pending_until   INTEGER,
    extends         TEXT,
    idempotency_key TEXT,
    details         TEXT    NOT NULL DEFAULT '{}',
    version         INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO grants_v2 (id, identity, target, role, not_before, expires_at, reason, issued_by,
    created_at, state, approvals, revoked_by, revoked_at, revoke_reason, duration_us)
SELECT id, identity, target, role, not_before, expires_at, reason, issued_by,
    created_at, state, approvals, revoked_by, revoked_at, revoke_reason, expires_at - not_before
FROM grants;
DROP TABLE grants;
ALTER TABLE grants_v2 RENAME TO grants;
CREATE INDEX grants_identity_target_expires ON grants (identity, target, expires_at);
CREATE INDEX grants_created ON grants (created_at);
CREATE INDEX grants_state ON grants (state);
CREATE INDEX grants_extends ON grants (extends) WHERE extends IS NOT NULL;
CREATE UNIQUE INDEX grants_idempotency ON grants (issued_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
";

/// Every migration in order; `MIGRATIONS.len()` must equal [`SCHEMA_VERSION`].
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1, V2];

/// Brings the database to [`SCHEMA_VERSION`]; refuses a database from a newer jitgate.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), PolicyError> {
    let err = |e: rusqlite::Error| PolicyError::store("migrate schema", e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let current: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(err)?;
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    let applied = usize::try_from(current)
        .ok()
        .filter(|&v| v <= MIGRATIONS.len())
        .ok_or_else(|| {
            PolicyError::Store(format!(
                "the grant store has schema version {current}, but this jitgate knows \
                 versions up to {SCHEMA_VERSION}; run a jitgate at least as new as the one \
                 that wrote it"
            ))
        })?;
    for sql in &MIGRATIONS[applied..] {
        tx.execute_batch(sql).map_err(err)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(err)?;
    tx.commit().map_err(err)?;
    tracing::info!(
        from = current,
        to = SCHEMA_VERSION,
        "migrated grant store schema"
    );
    Ok(())
}
