//! The PostgreSQL grant store as the audit log's witness: [`StoreWitness`] implements
//! [`jitgate_audit::Witness`] with the store's `jitgate_audit_checkpoints` table
//! (policy/src/store/postgres/witness.rs), and [`checkpoints`] reads them back for
//! `jitgate audit verify --witness`.
//!
//! The audit writer's witness thread calls [`StoreWitness::store`]; the query itself runs
//! on the tokio runtime (the pool's connections live there) and the thread waits for
//! its answer, bounded by the store's call timeout. Nothing here is on the path of an
//! event.

use std::sync::Arc;

use jitgate_audit::{
    AuditWriter, PublicKey, Witness, WitnessCheckpoints, WitnessLine, WitnessedCheckpoint,
};
use jitgate_policy::store::postgres::{PostgresStore, PostgresStoreOptions, WITNESS_TABLE};
use tokio::runtime::Handle;

use crate::config::{StoreSettings, WitnessSettings};
use crate::error::Error;

/// Checkpoints of the log named `log`, copied to the grant store.
pub struct StoreWitness {
    store: Arc<PostgresStore>,
    log: String,
    runtime: Handle,
}

impl Witness for StoreWitness {
    fn name(&self) -> String {
        format!("grant store table {WITNESS_TABLE}, log {}", self.log)
    }

    fn store(&self, lines: &[WitnessLine]) -> Result<(), String> {
        let lines: Vec<(u64, String)> = lines
            .iter()
            .map(|l| (l.last_seq, String::from_utf8_lossy(&l.line).into_owned()))
            .collect();
        let store = Arc::clone(&self.store);
        let log = self.log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(store.witness_checkpoints(&log, &lines).await);
        });
        match rx.recv() {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the runtime is shutting down".to_owned()),
        }
    }
}

/// Starts copying `audit`'s checkpoints to the grant store under `log`. Must be called
/// within the tokio runtime.
pub fn attach(audit: &AuditWriter, store: Arc<PostgresStore>, log: String) -> Result<(), Error> {
    let witness = StoreWitness {
        store,
        log,
        runtime: Handle::current(),
    };
    tracing::info!(witness = %witness.name(), "audit checkpoints are copied to the witness");
    audit.attach_witness(Arc::new(witness))?;
    Ok(())
}

/// The checkpoints the grant store holds for the log named `log`.
pub async fn checkpoints(store: &PostgresStore, log: &str) -> Result<WitnessCheckpoints, Error> {
    let lines = store.witnessed_checkpoints(log).await?;
    Ok(WitnessCheckpoints {
        source: format!("grant store table {WITNESS_TABLE}, log {log}"),
        lines: lines.into_iter().map(String::into_bytes).collect(),
    })
}

/// Connects to the PostgreSQL grant store of `store` with one pooled connection (for the
/// CLI and the check before the audit log opens).
pub async fn connect(store: &StoreSettings) -> Result<Option<PostgresStore>, Error> {
    let StoreSettings::Postgres {
        conninfo,
        connect_timeout,
        tls,
        ..
    } = store
    else {
        return Ok(None);
    };
    let options = PostgresStoreOptions {
        connect_timeout: *connect_timeout,
        pool_size: 1,
        tls: tls.clone(),
        ..PostgresStoreOptions::default()
    };
    Ok(Some(
        PostgresStore::connect(conninfo.expose(), options).await?,
    ))
}

/// The newest checkpoint the witness holds for the log, signed by `key`: what the audit
/// writer checks the log's end against before it opens it. A witness that cannot be
/// reached, or holds nothing valid, yields `None` (logged): it is not needed to run.
pub async fn newest(
    store: &StoreSettings,
    witness: &WitnessSettings,
    key: &PublicKey,
) -> Option<WitnessedCheckpoint> {
    let read = async {
        let Some(pg) = connect(store).await? else {
            return Ok(None);
        };
        checkpoints(&pg, &witness.log).await.map(Some)
    };
    let held = match read.await {
        Ok(Some(held)) => held,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, log = %witness.log,
                "audit witness unreachable: the log's end is checked against the local checkpoints only");
            return None;
        }
    };
    let mut newest: Option<WitnessedCheckpoint> = None;
    for line in &held.lines {
        match jitgate_audit::checkpoint::parse_and_check(line, Some(key)) {
            Ok(cp) if newest.as_ref().is_none_or(|n| cp.last_seq > n.last_seq) => {
                newest = Some(WitnessedCheckpoint {
                    last_seq: cp.last_seq,
                    ts: cp.ts,
                    source: format!("the witness, {}", held.source),
                });
            }
            Ok(_) => {}
            Err(defect) => tracing::warn!(?defect, log = %witness.log,
                "audit witness holds a checkpoint that is not signed by this log's key; ignored"),
        }
    }
    newest
}
