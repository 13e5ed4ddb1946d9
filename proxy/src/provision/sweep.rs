//! Keeping per-grant roles in line with their grants, on every ephemeral target:
//! a role whose grant ended (expired, revoked, finished) or is unknown is retired
//! ([`admin::retire`]); a role whose grant was extended gets the new `VALID UNTIL`.
//!
//! [`run`] sweeps at startup (leftovers of a crash), whenever a grant changes
//! ([`Provisioner::grant_changed`], from the grant lifecycle and the store's change
//! feed), when the earliest live grant ends, and every [`SWEEP_INTERVAL`]. It works from
//! the server's list of marked roles and the grant store, so a grant end is acted on
//! with no session live and on a replica that did not create the role. One replica at a
//! time sweeps a target (an advisory lock on the target itself); failures are logged
//! and retried after [`RETRY`].
//!
//! A grant that just ended may still have sessions of this process in their teardown
//! (which says why to the client and audits what was stopped); their role is retired
//! once they are gone, or [`END_GRACE`] after the end at the latest.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use jitgate_policy::{Engine, Grant, PolicyError};
use tokio_util::sync::CancellationToken;

use super::{admin, Provisioner};
use crate::registry::SessionRegistry;
use crate::session::error::UpstreamError;
use crate::settings::{EphemeralSettings, Provisioning, ProxySettings, TargetSettings};

/// The longest time between two sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// When a sweep failed, the next one is this much later.
pub const RETRY: Duration = Duration::from_secs(5);

/// How long retiring a role waits for this process's own sessions of the ended grant.
pub const END_GRACE: SignedDuration = SignedDuration::from_secs(10);

/// How soon to look again while those sessions end.
const TEARDOWN_POLL: Duration = Duration::from_millis(200);

/// Sweeps until `shutdown` (see the module doc).
pub async fn run(
    provisioner: Arc<Provisioner>,
    settings: Arc<ProxySettings>,
    engine: Engine,
    registry: Arc<SessionRegistry>,
    shutdown: CancellationToken,
) {
    if !settings
        .targets
        .values()
        .any(|t| matches!(t.provisioning, Provisioning::Ephemeral(_)))
    {
        return;
    }
    provisioner.warm_up(&settings.targets).await;
    loop {
        let mut wait = SWEEP_INTERVAL;
        for target in settings.targets.values() {
            let Provisioning::Ephemeral(eph) = &target.provisioning else {
                continue;
            };
            let sweeper = Sweeper {
                provisioner: &provisioner,
                engine: &engine,
                registry: &registry,
                target,
                eph,
            };
            match sweeper.sweep().await {
                Ok(next) => wait = wait.min(next),
                Err(e) => {
                    tracing::error!(target = %target.name, error = %e,
                        "sweeping per-grant roles failed; retrying");
                    wait = wait.min(RETRY);
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = provisioner.changed.notified() => {}
        }
    }
}

/// One target's sweep.
struct Sweeper<'a> {
    provisioner: &'a Provisioner,
    engine: &'a Engine,
    registry: &'a SessionRegistry,
    target: &'a TargetSettings,
    eph: &'a EphemeralSettings,
}

/// What to do with one role.
enum Verdict {
    /// Its grant is live: `VALID UNTIL` must be this.
    Keep(Timestamp),
    /// Its grant ended (or is unknown: `None`).
    Retire(Option<Box<Grant>>),
    /// The store could not say; look again later.
    Unknown,
}

impl Sweeper<'_> {
    /// Sweeps the target; returns how soon to sweep again.
    async fn sweep(&self) -> Result<Duration, UpstreamError> {
        // A connection of its own: retiring waits for backends to exit, which must not
        // hold up logins on the kept one. Closing it releases the lock.
        let client = admin::connect(
            self.target,
            &self.eph.admin,
            "jitgate: sweeping per-grant roles",
        )
        .await?;
        if !admin::try_lock(&client).await? {
            // Another replica is sweeping; look again soon, for changes it listed too early.
            return Ok(Duration::from_secs(1));
        }
        let mut next = SWEEP_INTERVAL;
        for role in admin::list(&client, &self.eph.admin.user).await? {
            let now = self.engine.now();
            let verdict = match self.engine.get(role.grant_id).await {
                Ok(g) if g.is_active(now) => Verdict::Keep(g.expires_at),
                Ok(g) => Verdict::Retire(Some(Box::new(g))),
                Err(PolicyError::NotFound(_)) => Verdict::Retire(None),
                Err(e) => {
                    tracing::warn!(grant_id = %role.grant_id, error = %e,
                        "cannot read the grant of a per-grant role; looking again later");
                    Verdict::Unknown
                }
            };
            let result = match verdict {
                Verdict::Unknown => {
                    next = next.min(RETRY);
                    continue;
                }
                Verdict::Keep(until) => {
                    next = next.min(until_then(now, until));
                    if role.valid_until == Some(until.as_microsecond()) {
                        continue;
                    }
                    tracing::info!(role = %role.name, grant_id = %role.grant_id, valid_until = %until,
                        "grant extended: moving the per-grant role's VALID UNTIL");
                    admin::set_valid_until(&client, &role.name, until).await
                }
                Verdict::Retire(grant) => {
                    if let Some(g) = &grant {
                        if self.ending_here(g, now) {
                            next = next.min(TEARDOWN_POLL);
                            continue;
                        }
                    }
                    let granted = grant
                        .as_ref()
                        .and_then(|g| self.target.roles.get(&g.role))
                        .map(|c| c.user.as_str())
                        .or(role.granted.as_deref());
                    let retired = admin::retire(&client, &role.name, granted).await;
                    if retired.is_ok() {
                        self.provisioner.forget(role.grant_id);
                        self.registry.parked().close_grant(role.grant_id);
                        tracing::info!(role = %role.name, grant_id = %role.grant_id,
                            "grant ended: per-grant role dropped");
                    }
                    retired
                }
            };
            if let Err(e) = result {
                tracing::error!(role = %role.name, grant_id = %role.grant_id, error = %e,
                    "could not bring a per-grant role in line with its grant; retrying");
                next = next.min(RETRY);
            }
        }
        Ok(next)
    }

    /// Whether sessions of this process under the ended `grant` are still in their
    /// teardown (and the grace after its end has not run out).
    fn ending_here(&self, grant: &Grant, now: Timestamp) -> bool {
        let ended = grant.revoked_at.unwrap_or(grant.expires_at).min(now);
        now < ended + END_GRACE && self.registry.list().iter().any(|s| s.grant_id == grant.id)
    }
}

/// From `now` until `then`, at least a millisecond (a sweep right at the end).
fn until_then(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now))
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_millis(1))
}
