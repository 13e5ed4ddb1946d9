//! What happens after the engine changes a grant: the audit event, the effect on live
//! sessions, the webhook.
//!
//! [`Lifecycle::record`] takes the [`Transition`]s an engine call returned and, for each:
//! 1. applies it to this process's live sessions — a revocation drops them at once, an
//!    extension moves their deadline (removing access never waits on the disk);
//! 2. writes its audit event (`grant_revoked`, or `grant_transition` with actor, rule,
//!    comment and before/after state) into the same hash chain as the session events;
//! 3. hands it to the webhook [`Notifier`].
//!
//! Other replicas sharing the grant store learn of the change through the store's change
//! feed and apply step 1 themselves ([`sync`]); only the replica that made a change
//! records and notifies it, so each transition is logged and sent once. The feed brings
//! a replica its own changes back too, possibly before `record` has run; while a change
//! of this process is under way ([`Lifecycle::changing`]) the feed leaves that grant to
//! `record`, which then reports every session the change dropped.

pub mod sync;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use jitgate_audit::{AuditError, AuditWriter, Event, EventBody};
use jitgate_policy::{Action, Engine, Grant, GrantState, Transition};
use jitgate_proxy::provision::Provisioner;
use jitgate_proxy::registry::{Revocation, SessionRegistry};
use uuid::Uuid;

use crate::notify::Notifier;

/// Who automatic corrections are attributed to.
pub const SYSTEM_ACTOR: &str = "jitgate";

/// The engine plus everything a grant change must reach.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    pub engine: Engine,
    pub registry: Arc<SessionRegistry>,
    pub audit: AuditWriter,
    pub notifier: Notifier,
    /// Grants this process is changing right now (see the module doc).
    pub own_changes: OwnChanges,
    /// Per-grant upstream roles: told of every grant end and extension, so the role
    /// goes (or its `VALID UNTIL` moves) at once.
    pub provisioner: Arc<Provisioner>,
}

/// The grants this process is changing right now; shared by clones of a [`Lifecycle`].
#[derive(Clone, Debug, Default)]
pub struct OwnChanges(Arc<Mutex<HashSet<Uuid>>>);

/// Marks a grant as being changed by this process until dropped.
pub struct Changing {
    set: OwnChanges,
    id: Uuid,
}

impl Drop for Changing {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}

impl OwnChanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this process is changing `id` right now.
    pub fn contains(&self, id: Uuid) -> bool {
        self.lock().contains(&id)
    }
}

/// The audit event of one transition.
pub fn transition_event(t: &Transition) -> Event {
    let g = &t.grant;
    let body = match t.action {
        Action::Revoked => EventBody::GrantRevoked {
            revoked_by: t.actor.clone(),
            reason: t.comment.clone(),
            from: t.from.map(|s| s.as_str().to_owned()),
            rule: t.rule.clone(),
        },
        _ => EventBody::GrantTransition {
            action: t.action.as_str().to_owned(),
            actor: t.actor.clone(),
            rule: t.rule.clone(),
            comment: t.comment.clone(),
            from: t.from.map(|s| s.as_str().to_owned()),
            to: t.to.as_str().to_owned(),
            not_before: g.not_before,
            expires_at: g.expires_at,
            previous_expires_at: t.previous_expires_at,
            ticket: g.ticket.clone(),
            extends: g.extends,
            break_glass: g.break_glass,
        },
    };
    Event::new(body)
        .with_identity(g.identity.as_str())
        .with_target(g.target.as_str())
        .with_role(g.role.as_str())
        .with_grant(g.id)
}

impl Lifecycle {
    /// Marks `id` as changed by this process until the guard is dropped: hold it from
    /// before the engine call until after [`Lifecycle::record`].
    pub fn changing(&self, id: Uuid) -> Changing {
        self.own_changes.lock().insert(id);
        Changing {
            set: self.own_changes.clone(),
            id,
        }
    }

    /// Applies, audits and notifies every transition, in order. Returns how many live
    /// sessions were dropped, or the first audit failure (after still applying and
    /// notifying everything: the change already happened in the store).
    pub async fn record(&self, transitions: &[Transition]) -> Result<usize, AuditError> {
        let mut dropped = 0;
        let mut failure = None;
        for t in transitions {
            dropped += self.apply(t);
            if let Err(e) = self.audit.write(transition_event(t)).await {
                tracing::error!(grant_id = %t.grant.id, action = %t.action, error = %e,
                    "grant change made but its audit event could not be written");
                failure.get_or_insert(e);
            }
            self.notifier.notify(t);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(dropped),
        }
    }

    /// The effect of one transition on this process's live sessions.
    fn apply(&self, t: &Transition) -> usize {
        if matches!(
            t.action,
            Action::Revoked | Action::Extended | Action::Expired
        ) {
            self.provisioner.grant_changed(t.grant.id);
        }
        match t.action {
            Action::Revoked => self.registry.revoke_grant(
                t.grant.id,
                Revocation {
                    by: t.actor.clone(),
                    reason: t.comment.clone(),
                    at: t.at,
                },
            ),
            Action::Extended => {
                self.registry
                    .set_grant_deadline(t.grant.id, t.grant.expires_at);
                0
            }
            _ => 0,
        }
    }

    /// Brings this process's live sessions in line with `grant` as stored (a change made
    /// elsewhere): revoked or otherwise ended → dropped; a new `expires_at` → new deadline.
    pub fn reconcile(&self, grant: &Grant) -> usize {
        let now = self.engine.now();
        match grant.effective_state(now) {
            GrantState::Approved => {
                self.registry.set_grant_deadline(grant.id, grant.expires_at);
                0
            }
            GrantState::Revoked => self.registry.revoke_grant(
                grant.id,
                Revocation {
                    by: grant
                        .revoked_by
                        .clone()
                        .unwrap_or_else(|| SYSTEM_ACTOR.to_owned()),
                    reason: grant.revoke_reason.clone(),
                    at: grant.revoked_at.unwrap_or(now),
                },
            ),
            // Expired: sessions end at their deadline by themselves; make sure the
            // deadline is the stored one.
            _ => {
                self.registry.set_grant_deadline(grant.id, grant.expires_at);
                0
            }
        }
    }

    /// Takes back access whose approval could not be audited (fail closed: no usable
    /// grant without its record). Returns a message for the caller.
    pub async fn undo_unaudited(&self, grant: &Grant, audit_error: &AuditError) -> String {
        let reason = "audit log unavailable when access was approved";
        let actor = jitgate_policy::Actor::Admin(SYSTEM_ACTOR.to_owned());
        match self.engine.revoke(grant.id, &actor, Some(reason)).await {
            Ok(outcome) => {
                for t in &outcome.transitions {
                    self.apply(t);
                    self.notifier.notify(t);
                }
                format!(
                    "access was not granted: the audit log cannot be written ({audit_error}); \
                     fix the audit log and ask again"
                )
            }
            Err(err) => {
                tracing::error!(grant_id = %grant.id, error = %err,
                    "could not revoke a grant whose approval was not audited");
                format!(
                    "the audit log cannot be written ({audit_error}) and grant {} could not be \
                     revoked again ({}); revoke it with `jitgate revoke {}` once the store works",
                    grant.id,
                    err.client_message(),
                    grant.id
                )
            }
        }
    }
}
