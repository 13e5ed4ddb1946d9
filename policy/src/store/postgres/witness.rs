//! The grant store as a witness of the audit log: copies of the log's signed checkpoints,
//! kept in PostgreSQL off the log's host, so a tail cut together with the local
//! checkpoints file is still caught (`jitgate audit verify --witness`).
//!
//! One table, `jitgate_audit_checkpoints`, one row per checkpoint line and log (`log`
//! names the log: several replicas, each with its own log, share one store). It is made
//! on first use, outside the versioned grant schema: the witness is optional, and a
//! replica whose role may not create tables still serves grants (its witness calls fail
//! and are logged). Rows are only ever added.

use tokio::time::timeout_at;
use tokio_postgres::error::SqlState;

use super::pool::{Conn, OpError};
use super::PostgresStore;
use crate::error::PolicyError;

/// The witness table.
pub const WITNESS_TABLE: &str = "jitgate_audit_checkpoints";

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS jitgate_audit_checkpoints (
    log       text        NOT NULL,
    last_seq  bigint      NOT NULL,
    line      text        NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (log, last_seq, line)
);
";

const INSERT: &str = "INSERT INTO jitgate_audit_checkpoints (log, last_seq, line) \
     SELECT $1, s, l FROM unnest($2::bigint[], $3::text[]) AS t(s, l) \
     ON CONFLICT DO NOTHING";

const SELECT: &str = "SELECT line FROM jitgate_audit_checkpoints WHERE log = $1 \
     ORDER BY last_seq, stored_at";

/// Makes the table when it is missing (a concurrent replica making it too is fine).
async fn ensure_table(conn: &mut Conn) -> Result<(), OpError> {
    let exists: bool = conn
        .client
        .query_one(
            "SELECT to_regclass('jitgate_audit_checkpoints') IS NOT NULL",
            &[],
        )
        .await?
        .try_get(0)?;
    if exists {
        return Ok(());
    }
    match conn.client.batch_execute(CREATE).await {
        Ok(()) => Ok(()),
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_TABLE)
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

impl PostgresStore {
    /// Stores checkpoint lines (`last_seq`, line) of the audit log named `log`; lines
    /// already stored are ignored. Bounded by the store's call timeout.
    pub async fn witness_checkpoints(
        &self,
        log: &str,
        lines: &[(u64, String)],
    ) -> Result<(), PolicyError> {
        let seqs = lines
            .iter()
            .map(|(s, _)| {
                i64::try_from(*s).map_err(|_| {
                    PolicyError::InvalidRequest(format!("checkpoint seq {s} out of range"))
                })
            })
            .collect::<Result<Vec<i64>, _>>()?;
        let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        let mut lease = self.pool.lease("store audit checkpoints").await?;
        let deadline = lease.deadline();
        let outcome = timeout_at(deadline, async {
            let conn = lease.conn();
            ensure_table(conn).await?;
            conn.client.execute(INSERT, &[&log, &seqs, &texts]).await?;
            Ok(())
        })
        .await;
        lease.settle(outcome)
    }

    /// Every checkpoint line stored for the audit log named `log`, by `last_seq`.
    pub async fn witnessed_checkpoints(&self, log: &str) -> Result<Vec<String>, PolicyError> {
        let mut lease = self.pool.lease("read audit checkpoints").await?;
        let deadline = lease.deadline();
        let outcome = timeout_at(deadline, async {
            let conn = lease.conn();
            ensure_table(conn).await?;
            let rows = conn.client.query(SELECT, &[&log]).await?;
            rows.iter()
                .map(|r| r.try_get::<_, String>(0).map_err(OpError::from))
                .collect()
        })
        .await;
        lease.settle(outcome)
    }
}
