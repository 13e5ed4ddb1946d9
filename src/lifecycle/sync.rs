//! Background duties of a serving jitgate: time-based grant steps, and keeping live
//! sessions in line with changes other replicas make.
//!
//! - [`run_sweeper`]: every second, [`Engine::sweep`](jitgate_policy::Engine::sweep) —
//!   lapsed requests, activations, "expiring soon", expiry — recorded like any change.
//!   Steps are claimed in the store, so with several replicas each is recorded once.
//! - [`run_sync`]: applies the store's change feed (PostgreSQL LISTEN/NOTIFY: a revoke or
//!   an extension made through another replica reaches this one's sessions at once), and
//!   every `reconcile_interval` re-reads the grant of every live session as a safety net
//!   for anything the feed missed. The nil id on the feed means "changes may have been
//!   missed" (the listener reconnected): everything is reconciled at once.

use std::time::Duration;

use jitgate_policy::SignedDuration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Lifecycle;

/// How often time-based steps are looked for.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Runs time-based steps until `shutdown`.
pub async fn run_sweeper(
    lifecycle: Lifecycle,
    expiring_lead: SignedDuration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match lifecycle.engine.sweep(expiring_lead).await {
            Ok(transitions) if !transitions.is_empty() => {
                if let Err(e) = lifecycle.record(&transitions).await {
                    tracing::error!(error = %e, "time-based grant steps not fully audited");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "grant sweep failed; retrying"),
        }
    }
}

/// Applies remote changes and reconciles live sessions until `shutdown`.
pub async fn run_sync(
    lifecycle: Lifecycle,
    reconcile_interval: Duration,
    shutdown: CancellationToken,
) {
    let mut feed = lifecycle.engine.store().changes();
    let mut tick = tokio::time::interval(reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed = async {
            match feed.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => reconcile_all(&lifecycle).await,
            received = changed => match received {
                Ok(id) if id.is_nil() => reconcile_all(&lifecycle).await,
                Ok(id) => reconcile_one(&lifecycle, id).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "grant change feed lagged; reconciling every session");
                    reconcile_all(&lifecycle).await;
                }
                Err(RecvError::Closed) => {
                    tracing::error!("grant change feed closed; relying on periodic reconcile");
                    feed = None;
                }
            },
        }
    }
}

/// Re-reads one changed grant and applies it to the sessions bound to it.
///
/// A grant no session here holds is skipped — unless a login is between its grant-store
/// read and its registration: it may be under this grant, and it learns of the change
/// only if the registry applies (and counts) it (`SessionRegistry::admission`).
async fn reconcile_one(lifecycle: &Lifecycle, id: Uuid) {
    // Per-grant roles are kept in line whether or not a session of the grant is here.
    lifecycle.provisioner.grant_changed(id);
    let held =
        lifecycle.registry.grant_ids().contains(&id) || lifecycle.registry.admissions_in_progress();
    if !held || lifecycle.own_changes.contains(id) {
        // No session of it here, or a change of this process that `record` applies.
        return;
    }
    match lifecycle.engine.get(id).await {
        Ok(grant) => {
            let dropped = lifecycle.reconcile(&grant);
            if dropped > 0 {
                tracing::info!(grant_id = %id, dropped, "grant changed elsewhere; sessions dropped");
            }
        }
        Err(e) => tracing::warn!(grant_id = %id, error = %e, "cannot re-read a changed grant"),
    }
}

/// Re-reads the grant of every live session and parked upstream connection.
async fn reconcile_all(lifecycle: &Lifecycle) {
    for id in lifecycle.registry.grant_ids() {
        reconcile_one(lifecycle, id).await;
    }
}
