//! Decisions on existing records: deny, cancel, review, revoke — and what every
//! decision, approval ([`super::approve`]) included, is made of: who decides, the record
//! it leaves ([`Decider`]), and whether a pending request can still be decided
//! ([`decidable`]).
//!
//! Each is idempotent: repeating a decision already taken by the same person returns the
//! record unchanged. Deciding something that is no longer pending fails with
//! [`PolicyError::Conflict`] saying what happened to it and when.

use jiff::Timestamp;
use uuid::Uuid;

use super::cas::Step;
use super::sweep::LAPSED;
use super::transition::transition;
use super::{Action, Actor, Engine, Outcome, Transition};
use crate::error::PolicyError;
use crate::grant::{Decision, Grant, GrantState};

/// Prefix of the `by` of automatic approvals (`policy:<rule>`); they never count as an
/// approver's sign-off.
pub(crate) const POLICY_ACTOR_PREFIX: &str = "policy:";

/// Why a record that is not pending cannot be `verb`ed, in a DBA's words.
pub(super) fn not_pending(grant: &Grant, now: Timestamp, verb: &str) -> PolicyError {
    let what = if grant.is_extension() {
        "extension request"
    } else {
        "request"
    };
    let id = grant.id;
    let why = match grant.effective_state(now) {
        GrantState::Approved => "was already approved".to_owned(),
        GrantState::Denied => match &grant.denial {
            Some(d) => format!(
                "was denied by {} at {}{}",
                d.by,
                d.at,
                d.comment
                    .as_deref()
                    .map(|c| format!(" ({c:?})"))
                    .unwrap_or_default()
            ),
            None => "was denied".to_owned(),
        },
        GrantState::Cancelled => match &grant.cancellation {
            Some(c) => format!("was cancelled by {} at {}", c.by, c.at),
            None => "was cancelled".to_owned(),
        },
        GrantState::Revoked => format!(
            "was revoked by {}",
            grant.revoked_by.as_deref().unwrap_or("an administrator")
        ),
        GrantState::Expired if grant.state == GrantState::Pending || grant.was_notified(LAPSED) => {
            format!(
                "lapsed at {} because nobody decided in time; the requester can ask again",
                grant
                    .pending_until
                    .map_or_else(|| "its deadline".to_owned(), |t| t.to_string())
            )
        }
        GrantState::Expired => format!("expired at {}", grant.expires_at),
        GrantState::Pending => "is still pending".to_owned(),
    };
    PolicyError::Conflict(format!("{what} {id} {why}, so it cannot be {verb}"))
}

impl Grant {
    /// Approvals given by people (automatic `policy:` approvals excluded).
    pub fn human_approvals(&self) -> usize {
        self.approvals
            .iter()
            .filter(|a| !a.by.starts_with(POLICY_ACTOR_PREFIX))
            .count()
    }
}

/// `text` without surrounding blanks; `None` when nothing is left.
pub(super) fn trimmed(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Who takes a decision and with what comment, and how the step is reported.
#[derive(Clone, Copy)]
pub(super) struct Decider<'a> {
    /// The step reported.
    pub(super) action: Action,
    /// Who decides.
    pub(super) by: &'a str,
    /// Their comment or reason.
    pub(super) comment: Option<&'a str>,
}

impl Decider<'_> {
    /// The record of the decision kept on the grant (an approval, a denial, a
    /// cancellation, a review).
    pub(super) fn decision(&self, at: Timestamp) -> Decision {
        Decision {
            by: self.by.to_owned(),
            at,
            comment: self.comment.map(str::to_owned),
        }
    }

    /// The step that took `next` (the record after the decision) from `from`.
    pub(super) fn transition(&self, next: &Grant, from: GrantState, at: Timestamp) -> Transition {
        transition(self.action, self.by, self.comment, Some(from), next, at)
    }

    /// Store `next` and report it as one step from `from`.
    pub(super) fn write(&self, next: Grant, from: GrantState, at: Timestamp) -> Step {
        let t = self.transition(&next, from, at);
        Step::one(next, t)
    }
}

/// Whether a decision that only a pending request can take (approve, deny, cancel) goes
/// ahead on `g` at `now`: `false` when `repeated` says, from the current state, that the
/// same decision was taken already (nothing to do); an error saying why `g` cannot be
/// `verb`ed when it is no longer pending.
pub(super) fn decidable(
    g: &Grant,
    now: Timestamp,
    verb: &str,
    repeated: impl FnOnce(GrantState) -> bool,
) -> Result<bool, PolicyError> {
    let state = g.effective_state(now);
    if repeated(state) {
        return Ok(false);
    }
    if state != GrantState::Pending {
        return Err(not_pending(g, now, verb));
    }
    Ok(true)
}

/// An identity may act only on its own records (`refusal` says so); an administrator
/// on any.
fn own_record(
    actor: &Actor,
    g: &Grant,
    refusal: impl FnOnce() -> String,
) -> Result<(), PolicyError> {
    match actor {
        Actor::Identity(who) if *who != g.identity => Err(PolicyError::Forbidden(refusal())),
        _ => Ok(()),
    }
}

impl Engine {
    /// Turns down a pending request; the comment (why) is required.
    pub async fn deny(
        &self,
        id: Uuid,
        approver: &str,
        comment: &str,
    ) -> Result<Outcome, PolicyError> {
        let comment = trimmed(Some(comment)).ok_or_else(|| {
            PolicyError::InvalidRequest(
                "a denial needs a comment: tell the requester why (--comment \"…\")".into(),
            )
        })?;
        let rules = self.rules();
        let denial = Decider {
            action: Action::Denied,
            by: approver,
            comment: Some(&comment),
        };
        self.change(id, |g, _, now| {
            let repeated = |state| {
                state == GrantState::Denied && g.denial.as_ref().is_some_and(|d| d.by == approver)
            };
            if !decidable(g, now, "denied", repeated)? {
                return Ok(Step::Unchanged);
            }
            let rule = g.rule.as_deref().unwrap_or_default();
            rules.check_approver(rule, &g.identity, approver)?;
            let mut next = g.clone();
            next.state = GrantState::Denied;
            next.denial = Some(denial.decision(now));
            Ok(denial.write(next, GrantState::Pending, now))
        })
        .await
    }

    /// Withdraws a pending request: by its requester, or by an administrator.
    pub async fn cancel(
        &self,
        id: Uuid,
        actor: &Actor,
        comment: Option<&str>,
    ) -> Result<Outcome, PolicyError> {
        let comment = trimmed(comment);
        let cancellation = Decider {
            action: Action::Cancelled,
            by: actor.name(),
            comment: comment.as_deref(),
        };
        self.change(id, |g, _, now| {
            own_record(actor, g, || {
                format!(
                    "only the requester ({}) or an administrator can cancel request {}",
                    g.identity, g.id
                )
            })?;
            if !decidable(g, now, "cancelled", |state| state == GrantState::Cancelled)? {
                return Ok(Step::Unchanged);
            }
            let mut next = g.clone();
            next.state = GrantState::Cancelled;
            next.cancellation = Some(cancellation.decision(now));
            Ok(cancellation.write(next, GrantState::Pending, now))
        })
        .await
    }

    /// Marks a break-glass grant reviewed (by a member of the rule's `review_by` groups).
    pub async fn review(
        &self,
        id: Uuid,
        reviewer: &str,
        comment: Option<&str>,
    ) -> Result<Outcome, PolicyError> {
        let rules = self.rules();
        let comment = trimmed(comment);
        let review = Decider {
            action: Action::Reviewed,
            by: reviewer,
            comment: comment.as_deref(),
        };
        self.change(id, |g, _, now| {
            if !g.break_glass {
                return Err(PolicyError::Conflict(format!(
                    "grant {} was not break-glass access; only break-glass grants are reviewed",
                    g.id
                )));
            }
            if let Some(done) = &g.review {
                if done.by == reviewer {
                    return Ok(Step::Unchanged);
                }
                return Err(PolicyError::Conflict(format!(
                    "grant {} was already reviewed by {} at {}",
                    g.id, done.by, done.at
                )));
            }
            rules.check_reviewer(g.rule.as_deref().unwrap_or_default(), &g.identity, reviewer)?;
            let mut next = g.clone();
            next.review = Some(review.decision(now));
            Ok(review.write(next, g.effective_state(now), now))
        })
        .await
    }

    /// Revokes a pending or approved, unexpired grant (an administrator, or the holder
    /// giving access back). Revoking a revoked grant again changes nothing. A blank
    /// reason is stored as none.
    pub async fn revoke(
        &self,
        id: Uuid,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<Outcome, PolicyError> {
        let by = actor.name().trim().to_owned();
        if by.is_empty() {
            return Err(PolicyError::InvalidRequest(
                "revoked_by must not be empty".into(),
            ));
        }
        let reason = trimmed(reason);
        let revocation = Decider {
            action: Action::Revoked,
            by: &by,
            comment: reason.as_deref(),
        };
        let outcome = self
            .change(id, |g, _, now| {
                own_record(actor, g, || {
                    format!(
                        "only an administrator or the holder ({}) can revoke grant {}",
                        g.identity, g.id
                    )
                })?;
                let state = g.effective_state(now);
                if state == GrantState::Revoked {
                    return Ok(Step::Unchanged);
                }
                if !matches!(state, GrantState::Approved | GrantState::Pending) {
                    return Err(PolicyError::NotRevocable { id, state });
                }
                let mut next = g.clone();
                next.state = GrantState::Revoked;
                next.revoked_by = Some(by.clone());
                next.revoked_at = Some(now);
                next.revoke_reason = reason.clone();
                Ok(revocation.write(next, state, now))
            })
            .await?;
        if !outcome.transitions.is_empty() {
            tracing::info!(grant_id = %id, revoked_by = %by, "grant revoked");
        }
        Ok(outcome)
    }
}
