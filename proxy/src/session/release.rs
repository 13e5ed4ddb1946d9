//! The upstream connection after a session's clean end: reset and parked for the next
//! session of the same grant, or closed (and the backend seen gone, see
//! [`crate::stop::finish`]). See [`crate::reuse`] for why parking is safe.

use jiff::Timestamp;
use jitgate_audit::Stopped;
use uuid::Uuid;

use super::upstream::Upstream;
use super::ProxyContext;
use crate::registry::SessionControl;
use crate::reuse::{self, ParkKey};
use crate::stop::{self, StopTarget};

/// What the session knew about its upstream when it ended.
pub struct UpstreamAtEnd {
    /// The teardown left the connection open (the client quit with Terminate).
    pub upstream_open: bool,
    /// The server's last ReadyForQuery said `I`: no transaction is open.
    pub tx_idle: bool,
    /// A request or COPY was still unanswered, or an extended group was being refused.
    pub busy: bool,
}

/// What became of the connection.
#[derive(Default)]
pub struct Released {
    pub parked: bool,
    /// The idle backend did not leave on Terminate and had to be terminated.
    pub stopped: Option<Stopped>,
}

/// Closes the connection, making sure the backend leaves.
async fn close(upstream: &mut Upstream, stop_target: &StopTarget) -> Released {
    Released {
        parked: false,
        stopped: stop::finish(&mut upstream.stream, false, stop_target).await,
    }
}

/// Parks the connection when that is safe, else closes it. `control` is the session's
/// grant state; it is read again after parking, so a revocation that raced the reset
/// still closes the connection.
pub async fn release(
    ctx: &ProxyContext,
    mut upstream: Upstream,
    key: ParkKey,
    grant_id: Uuid,
    state: UpstreamAtEnd,
    control: &tokio::sync::watch::Receiver<SessionControl>,
    stop_target: &StopTarget,
) -> Released {
    if !state.upstream_open {
        return Released::default();
    }
    let reuse = &ctx.settings.reuse;
    let grant_valid = |c: &SessionControl| c.revoked.is_none() && Timestamp::now() < c.deadline;
    let eligible = reuse.enabled
        && reuse.max_idle_per_grant > 0
        && state.tx_idle
        && !state.busy
        && !ctx.draining.is_cancelled()
        && grant_valid(&control.borrow());
    if !eligible {
        return close(&mut upstream, stop_target).await;
    }
    if let Err(e) = reuse::reset(&mut upstream).await {
        tracing::info!(error = %e, "upstream connection not reusable; closing it");
        return close(&mut upstream, stop_target).await;
    }
    let deadline = control.borrow().deadline;
    let parked = ctx.registry.parked();
    if !parked.put(key, upstream, deadline, reuse) {
        return Released::default();
    }
    let now = control.borrow().clone();
    if !grant_valid(&now) {
        parked.close_grant(grant_id);
        return Released::default();
    }
    parked.set_grant_deadline(grant_id, now.deadline);
    Released {
        parked: true,
        stopped: None,
    }
}
