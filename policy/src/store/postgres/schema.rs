//! The PostgreSQL schema and its migrations, versioned in the table `jitgate_schema`.
//!
//! Migration `n` (1-based) takes a database from version `n - 1` to `n`. A connection
//! that finds the current version does nothing more (no lock, no DDL: replicas may run as
//! a role without `CREATE`). Otherwise it takes a session-level advisory lock
//! ([`MIGRATION_LOCK`]), looks again, and runs all pending migrations in one transaction,
//! so replicas starting together migrate once — the others wait, then see the new
//! version — and a failed migration leaves the old schema intact (PostgreSQL DDL is
//! transactional).
//!
//! The schema means the same as SQLite's version 2; version numbers are this store's own.

use tokio_postgres::Client;

use super::describe::describe;
use crate::error::PolicyError;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i32 = 1;

/// Key of the advisory lock held while migrating (`pg_advisory_xact_lock(bigint)`): the
/// ASCII bytes of "jitgate1". Advisory locks are per database, like the schema.
pub const MIGRATION_LOCK: i64 = 0x6a69_7467_6174_6531;

/// The version table: one row (`singleton` is always true).
const VERSION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS jitgate_schema (
    singleton   boolean     NOT NULL PRIMARY KEY DEFAULT true CHECK (singleton),
    version     integer     NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now()
);
";

/// Version 1: the grants table, with the request/approval workflow columns.
///
/// Instants are `timestamptz` (microsecond precision, exact round trip through the binary
/// format). `approvals` is a JSON array of decisions; `details` a JSON object with the
/// denial, cancellation, review, break-glass flag and notifications sent. `version` is
/// the compare-and-swap counter. The idempotency key is unique per requester.
const V1: &str = "
CREATE TABLE jitgate_grants (
    id              uuid        NOT NULL PRIMARY KEY,
    identity        text        NOT NULL,
    target          text        NOT NULL,
    role            text        NOT NULL,
    not_before      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    reason          text        NOT NULL,
    issued_by       text        NOT NULL,
    created_at      timestamptz NOT NULL,
    state           text        NOT NULL
        CHECK (state IN ('pending', 'approved', 'denied', 'cancelled', 'revoked', 'expired')),
    approvals       jsonb       NOT NULL DEFAULT '[]',
    revoked_by      text,
    revoked_at      timestamptz,
    revoke_reason   text,
    rule            text,
    ticket          text,
    duration_us     bigint      NOT NULL,
    pending_until   timestamptz,
    extends         uuid,
    idempotency_key text,
    details         jsonb       NOT NULL DEFAULT '{}',
    version         bigint      NOT NULL DEFAULT 0 CHECK (version >= 0)
);
CREATE INDEX jitgate_grants_identity_target_expires
    ON jitgate_grants (identity, target, expires_at);
CREATE INDEX jitgate_grants_created ON jitgate_grants (created_at, id);
CREATE INDEX jitgate_grants_state ON jitgate_grants (state);
CREATE INDEX jitgate_grants_extends ON jitgate_grants (extends) WHERE extends IS NOT NULL;
CREATE UNIQUE INDEX jitgate_grants_idempotency ON jitgate_grants (issued_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
";

/// Every migration in order; `MIGRATIONS.len()` must equal [`SCHEMA_VERSION`].
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1];

/// The recorded schema version, 0 when the store was never migrated. Looks the table up
/// before reading it: inside the migration transaction an error would abort it.
async fn current_version(client: &Client) -> Result<i32, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('jitgate_schema') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    match client
        .query_opt("SELECT version FROM jitgate_schema", &[])
        .await?
    {
        Some(row) => row.try_get(0),
        None => Ok(0),
    }
}

/// Refuses a version this build does not know.
fn check_known(current: i32) -> Result<usize, PolicyError> {
    usize::try_from(current)
        .ok()
        .filter(|&v| v <= MIGRATIONS.len())
        .ok_or_else(|| {
            PolicyError::Store(format!(
                "the grant store has schema version {current}, but this jitgate knows \
                 versions up to {SCHEMA_VERSION}; run a jitgate at least as new as the one \
                 that wrote it"
            ))
        })
}

/// Brings the database to [`SCHEMA_VERSION`]; refuses a database from a newer jitgate.
pub(super) async fn migrate(client: &mut Client) -> Result<(), PolicyError> {
    let err = |e: tokio_postgres::Error| PolicyError::store("migrate schema", describe(&e));
    let current = current_version(client).await.map_err(err)?;
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    check_known(current)?;
    // A session-level lock, taken outside the migration transaction: the transaction
    // that follows starts after the lock is ours, so it sees (and its catalog caches
    // know of) whatever the replica that held the lock before us committed. The server
    // releases it if the connection dies; a failed migration discards the connection.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    let migrated = migrate_locked(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err);
    migrated?;
    unlocked.map(drop)
}

/// The migration proper, under [`MIGRATION_LOCK`].
async fn migrate_locked(client: &mut Client) -> Result<(), PolicyError> {
    let err = |e: tokio_postgres::Error| PolicyError::store("migrate schema", describe(&e));
    // Another replica may have migrated while we waited for the lock.
    let current = current_version(client).await.map_err(err)?;
    let applied = check_known(current)?;
    if applied == MIGRATIONS.len() {
        return Ok(());
    }
    let tx = client.transaction().await.map_err(err)?;
    tx.batch_execute(VERSION_TABLE).await.map_err(err)?;
    for sql in &MIGRATIONS[applied..] {
        tx.batch_execute(sql).await.map_err(err)?;
    }
    tx.execute(
        "INSERT INTO jitgate_schema (singleton, version) VALUES (true, $1) \
         ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, migrated_at = now()",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)?;
    tracing::info!(
        from = current,
        to = SCHEMA_VERSION,
        "migrated grant store schema"
    );
    Ok(())
}
