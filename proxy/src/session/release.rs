//! The upstream connection after a session's clean end: reset and parked for the next
//! session of the same grant, or closed. See [`crate::reuse`] for why parking is safe.

use jiff::Timestamp;
use uuid::Uuid;

use super::teardown::close_upstream;
use super::upstream::Upstream;
use super::ProxyContext;
use crate::registry::SessionControl;
use crate::reuse::{self, ParkKey};

/// What the session knew about its upstream when it ended.
pub struct EndState {
    /// The teardown left the connection open (the client quit with Terminate).
    pub upstream_open: bool,
    /// The server's last ReadyForQuery said `I`: no transaction is open.
    pub tx_idle: bool,
    /// A request or COPY was still unanswered, or an extended group was being refused.
    pub busy: bool,
}

/// Parks the connection when that is safe, else closes it. Returns whether it was parked.
/// `control` is the session's grant state; it is read again after parking, so a
/// revocation that raced the reset still closes the connection.
pub async fn release(
    ctx: &ProxyContext,
    mut upstream: Upstream,
    key: ParkKey,
    grant_id: Uuid,
    state: EndState,
    control: &tokio::sync::watch::Receiver<SessionControl>,
) -> bool {
    if !state.upstream_open {
        return false;
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
        close_upstream(&mut upstream.stream).await;
        return false;
    }
    if let Err(e) = reuse::reset(&mut upstream).await {
        tracing::info!(error = %e, "upstream connection not reusable; closing it");
        close_upstream(&mut upstream.stream).await;
        return false;
    }
    let deadline = control.borrow().deadline;
    let parked = ctx.registry.parked();
    if !parked.put(key, upstream, deadline, reuse) {
        return false;
    }
    let now = control.borrow().clone();
    if !grant_valid(&now) {
        parked.close_grant(grant_id);
        return false;
    }
    parked.set_grant_deadline(grant_id, now.deadline);
    true
}
