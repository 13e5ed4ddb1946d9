//! Decisions on existing records: approve, deny, cancel, review, revoke.
//!
//! Each is idempotent: repeating a decision already taken by the same person returns the
//! record unchanged. Deciding something that is no longer pending fails with
//! [`PolicyError::Conflict`] saying what happened to it and when.

use jiff::Timestamp;
use uuid::Uuid;

use super::cas::Step;
use super::sweep::ACTIVATED;
use super::transition::transition;
use super::{Action, Actor, Engine, Outcome};
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
        GrantState::Expired
            if grant.state == GrantState::Pending || grant.was_notified(super::sweep::LAPSED) =>
        {
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

fn trimmed(comment: Option<&str>) -> Option<String> {
    comment
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
}

impl Engine {
    /// Records `approver`'s approval of a pending request. When the rule's number of
    /// approvals is reached the request is approved: its window starts at
    /// `max(requested start, now)` and lasts the requested duration; an approved
    /// extension moves the extended grant's `expires_at` (live sessions follow).
    pub async fn approve(
        &self,
        id: Uuid,
        approver: &str,
        comment: Option<&str>,
    ) -> Result<Outcome, PolicyError> {
        let rules = self.rules();
        let comment = trimmed(comment);
        self.change(id, |g, parent, now| {
            let state = g.effective_state(now);
            if g.approvals.iter().any(|a| a.by == approver)
                && matches!(state, GrantState::Pending | GrantState::Approved)
            {
                return Ok(Step::Unchanged);
            }
            if state != GrantState::Pending {
                return Err(not_pending(g, now, "approved"));
            }
            let rule_name = g.rule.as_deref().ok_or_else(|| {
                PolicyError::Conflict(format!("request {} was not made under a policy rule", g.id))
            })?;
            rules.check_approver(rule_name, &g.identity, approver)?;
            let rule = rules.rule(rule_name).ok_or_else(|| {
                PolicyError::Forbidden(format!(
                    "rule {rule_name:?} no longer exists in the policy, so request {} cannot \
                     be approved; the requester can ask again under the current rules",
                    g.id
                ))
            })?;
            let required = usize::try_from(rule.approvals_required()).unwrap_or(usize::MAX);
            let mut next = g.clone();
            next.approvals.push(Decision {
                by: approver.to_owned(),
                at: now,
                comment: comment.clone(),
            });
            let have = next.human_approvals();
            if have < required {
                let note = format!(
                    "{have} of {required} approvals{}",
                    comment
                        .as_deref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                );
                let t = transition(
                    Action::ApprovalRecorded,
                    approver,
                    Some(&note),
                    Some(state),
                    &next,
                    now,
                );
                return Ok(Step::one(next, t));
            }
            next.state = GrantState::Approved;
            self.approved_step(next, parent, approver, comment.as_deref(), now)
        })
        .await
    }

    /// The write that turns `next` (already in state Approved) into access: a window for
    /// a request, a later `expires_at` for the grant an extension extends.
    pub(super) fn approved_step(
        &self,
        mut next: Grant,
        parent: Option<&Grant>,
        actor: &str,
        comment: Option<&str>,
        now: Timestamp,
    ) -> Result<Step, PolicyError> {
        let approved_action = if next.break_glass {
            Action::BreakGlass
        } else {
            Action::Approved
        };
        if let Some(parent) = parent {
            let parent_state = parent.effective_state(now);
            if parent_state != GrantState::Approved {
                return Err(PolicyError::Conflict(format!(
                    "grant {} is {parent_state}, so extension {} cannot be applied; ask for \
                     a new grant instead",
                    parent.id, next.id
                )));
            }
            let new_end = parent.expires_at.checked_add(next.duration).map_err(|e| {
                PolicyError::InvalidRequest(format!("extended end out of range: {e}"))
            })?;
            // Each extension was checked against the rule when it was asked for, from the
            // grant's end at that time; several approved one after another add up, so the
            // cap is checked again against the grant's end now.
            let rules = self.rules();
            if let Some(rule) = next.rule.as_deref().and_then(|r| rules.rule(r)) {
                let cap = now.checked_add(rule.max_duration()).map_err(|e| {
                    PolicyError::InvalidRequest(format!("maximum end out of range: {e}"))
                })?;
                if new_end > cap {
                    return Err(PolicyError::Conflict(format!(
                        "approving extension {} would make grant {} end at {new_end} (it now \
                         ends at {}, after earlier extensions, plus {:#}), more than rule {:?}'s \
                         maximum of {:#} from now (latest allowed end: {cap}); deny it, and the \
                         holder can ask for less",
                        next.id,
                        parent.id,
                        parent.expires_at,
                        next.duration,
                        rule.name(),
                        rule.max_duration()
                    )));
                }
            }
            next.expires_at = new_end;
            let mut extended = parent.clone();
            extended.expires_at = new_end;
            // The new end gets its own "expiring soon" notice.
            extended
                .notified
                .retain(|n| n != super::sweep::EXPIRING_SOON);
            let approved = transition(
                approved_action,
                actor,
                comment,
                Some(GrantState::Pending),
                &next,
                now,
            );
            let mut moved = transition(
                Action::Extended,
                actor,
                Some(&next.reason),
                Some(parent_state),
                &extended,
                now,
            );
            moved.rule = next.rule.clone();
            moved.previous_expires_at = Some(parent.expires_at);
            return Ok(Step::Write {
                grants: vec![next, extended],
                transitions: vec![approved, moved],
            });
        }
        next.not_before = next.not_before.max(now);
        next.expires_at = next
            .not_before
            .checked_add(next.duration)
            .map_err(|e| PolicyError::InvalidRequest(format!("expiry out of range: {e}")))?;
        let mut transitions = vec![transition(
            approved_action,
            actor,
            comment,
            Some(GrantState::Pending),
            &next,
            now,
        )];
        if next.not_before <= now {
            next.notified.push(ACTIVATED.to_owned());
            transitions.push(transition(
                Action::Activated,
                crate::engine::sweep::SYSTEM_ACTOR,
                None,
                Some(GrantState::Approved),
                &next,
                now,
            ));
        }
        for t in &mut transitions {
            t.grant = next.clone();
        }
        Ok(Step::Write {
            grants: vec![next],
            transitions,
        })
    }

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
        self.change(id, |g, _, now| {
            let state = g.effective_state(now);
            if state == GrantState::Denied && g.denial.as_ref().is_some_and(|d| d.by == approver) {
                return Ok(Step::Unchanged);
            }
            if state != GrantState::Pending {
                return Err(not_pending(g, now, "denied"));
            }
            let rule = g.rule.as_deref().unwrap_or_default();
            rules.check_approver(rule, &g.identity, approver)?;
            let mut next = g.clone();
            next.state = GrantState::Denied;
            next.denial = Some(Decision {
                by: approver.to_owned(),
                at: now,
                comment: Some(comment.clone()),
            });
            let t = transition(
                Action::Denied,
                approver,
                Some(&comment),
                Some(state),
                &next,
                now,
            );
            Ok(Step::one(next, t))
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
        self.change(id, |g, _, now| {
            if let Actor::Identity(who) = actor {
                if *who != g.identity {
                    return Err(PolicyError::Forbidden(format!(
                        "only the requester ({}) or an administrator can cancel request {}",
                        g.identity, g.id
                    )));
                }
            }
            let state = g.effective_state(now);
            if state == GrantState::Cancelled {
                return Ok(Step::Unchanged);
            }
            if state != GrantState::Pending {
                return Err(not_pending(g, now, "cancelled"));
            }
            let mut next = g.clone();
            next.state = GrantState::Cancelled;
            next.cancellation = Some(Decision {
                by: actor.name().to_owned(),
                at: now,
                comment: comment.clone(),
            });
            let t = transition(
                Action::Cancelled,
                actor.name(),
                comment.as_deref(),
                Some(state),
                &next,
                now,
            );
            Ok(Step::one(next, t))
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
        self.change(id, |g, _, now| {
            if !g.break_glass {
                return Err(PolicyError::Conflict(format!(
                    "grant {} was not break-glass access; only break-glass grants are reviewed",
                    g.id
                )));
            }
            if let Some(review) = &g.review {
                if review.by == reviewer {
                    return Ok(Step::Unchanged);
                }
                return Err(PolicyError::Conflict(format!(
                    "grant {} was already reviewed by {} at {}",
                    g.id, review.by, review.at
                )));
            }
            rules.check_reviewer(g.rule.as_deref().unwrap_or_default(), &g.identity, reviewer)?;
            let mut next = g.clone();
            next.review = Some(Decision {
                by: reviewer.to_owned(),
                at: now,
                comment: comment.clone(),
            });
            let state = g.effective_state(now);
            let t = transition(
                Action::Reviewed,
                reviewer,
                comment.as_deref(),
                Some(state),
                &next,
                now,
            );
            Ok(Step::one(next, t))
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
        let outcome = self
            .change(id, |g, _, now| {
                if let Actor::Identity(who) = actor {
                    if *who != g.identity {
                        return Err(PolicyError::Forbidden(format!(
                            "only an administrator or the holder ({}) can revoke grant {}",
                            g.identity, g.id
                        )));
                    }
                }
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
                let t = transition(
                    Action::Revoked,
                    &by,
                    reason.as_deref(),
                    Some(state),
                    &next,
                    now,
                );
                Ok(Step::one(next, t))
            })
            .await?;
        if !outcome.transitions.is_empty() {
            tracing::info!(grant_id = %id, revoked_by = %by, "grant revoked");
        }
        Ok(outcome)
    }
}
