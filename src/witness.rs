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

use jitgate_audit::{AuditWriter, Witness, WitnessCheckpoints, WitnessLine};
use jitgate_policy::store::postgres::{PostgresStore, WITNESS_TABLE};
use tokio::runtime::Handle;

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
