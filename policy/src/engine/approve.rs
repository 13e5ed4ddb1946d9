//! Approval: an approver's sign-off, and the write that turns an approved request into
//! access — a window for an access request, a later end for the grant an extension
//! extends. Automatic approvals ([`super::workflow`]) take the same path.

use jiff::Timestamp;
use uuid::Uuid;

use super::cas::Step;
use super::decide::{decidable, trimmed, Decider};
use super::sweep::{ACTIVATED, EXPIRING_SOON, SYSTEM_ACTOR};
use super::transition::transition;
use super::{Action, Engine, Outcome};
use crate::error::PolicyError;
use crate::grant::{Grant, GrantState};
use crate::rules::Rules;

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
        let approval = Decider {
            action: Action::ApprovalRecorded,
            by: approver,
            comment: comment.as_deref(),
        };
        self.change(id, |g, parent, now| {
            let repeated = |state| {
                g.approvals.iter().any(|a| a.by == approver)
                    && matches!(state, GrantState::Pending | GrantState::Approved)
            };
            if !decidable(g, now, "approved", repeated)? {
                return Ok(Step::Unchanged);
            }
            let required = approvals_required(&rules, g, approver)?;
            let mut next = g.clone();
            next.approvals.push(approval.decision(now));
            let have = next.human_approvals();
            if have < required {
                let note = format!(
                    "{have} of {required} approvals{}",
                    comment
                        .as_deref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                );
                let recorded = Decider {
                    comment: Some(&note),
                    ..approval
                };
                return Ok(recorded.write(next, GrantState::Pending, now));
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
        next: Grant,
        parent: Option<&Grant>,
        by: &str,
        comment: Option<&str>,
        now: Timestamp,
    ) -> Result<Step, PolicyError> {
        let approved = Decider {
            action: if next.break_glass {
                Action::BreakGlass
            } else {
                Action::Approved
            },
            by,
            comment,
        };
        match parent {
            Some(parent) => self.extension_applied(next, parent, &approved, now),
            None => window_opened(next, &approved, now),
        }
    }

    /// An approved extension `next` of `parent`: the grant's end moves by the extension's
    /// duration, and both records are written.
    fn extension_applied(
        &self,
        mut next: Grant,
        parent: &Grant,
        approved: &Decider<'_>,
        now: Timestamp,
    ) -> Result<Step, PolicyError> {
        let parent_state = parent.effective_state(now);
        if parent_state != GrantState::Approved {
            return Err(PolicyError::Conflict(format!(
                "grant {} is {parent_state}, so extension {} cannot be applied; ask for \
                 a new grant instead",
                parent.id, next.id
            )));
        }
        let new_end = parent
            .expires_at
            .checked_add(next.duration)
            .map_err(|e| PolicyError::InvalidRequest(format!("extended end out of range: {e}")))?;
        self.check_extended_end(&next, parent, new_end, now)?;
        next.expires_at = new_end;
        let mut extended = parent.clone();
        extended.expires_at = new_end;
        // The new end gets its own "expiring soon" notice.
        extended.notified.retain(|n| n != EXPIRING_SOON);
        let approval = approved.transition(&next, GrantState::Pending, now);
        let mut moved = transition(
            Action::Extended,
            approved.by,
            Some(&next.reason),
            Some(parent_state),
            &extended,
            now,
        );
        moved.rule = next.rule.clone();
        moved.previous_expires_at = Some(parent.expires_at);
        Ok(Step::Write {
            grants: vec![next, extended],
            transitions: vec![approval, moved],
        })
    }

    /// Each extension was checked against the rule when it was asked for, from the
    /// grant's end at that time; several approved one after another add up, so the cap
    /// is checked again against the grant's end now.
    fn check_extended_end(
        &self,
        extension: &Grant,
        parent: &Grant,
        new_end: Timestamp,
        now: Timestamp,
    ) -> Result<(), PolicyError> {
        let rules = self.rules();
        let Some(rule) = extension.rule.as_deref().and_then(|r| rules.rule(r)) else {
            return Ok(());
        };
        let cap = now
            .checked_add(rule.max_duration())
            .map_err(|e| PolicyError::InvalidRequest(format!("maximum end out of range: {e}")))?;
        if new_end > cap {
            return Err(PolicyError::Conflict(format!(
                "approving extension {} would make grant {} end at {new_end} (it now \
                 ends at {}, after earlier extensions, plus {:#}), more than rule {:?}'s \
                 maximum of {:#} from now (latest allowed end: {cap}); deny it, and the \
                 holder can ask for less",
                extension.id,
                parent.id,
                parent.expires_at,
                extension.duration,
                rule.name(),
                rule.max_duration()
            )));
        }
        Ok(())
    }
}

/// How many approvals by people the rule of request `g` needs, once `approver` is known
/// to be one of its approvers.
fn approvals_required(rules: &Rules, g: &Grant, approver: &str) -> Result<usize, PolicyError> {
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
    Ok(usize::try_from(rule.approvals_required()).unwrap_or(usize::MAX))
}

/// An approved access request `next`: its window starts at `max(requested start, now)`
/// and lasts the requested duration; a window open already is reported as activated.
fn window_opened(
    mut next: Grant,
    approved: &Decider<'_>,
    now: Timestamp,
) -> Result<Step, PolicyError> {
    next.not_before = next.not_before.max(now);
    next.expires_at = next
        .not_before
        .checked_add(next.duration)
        .map_err(|e| PolicyError::InvalidRequest(format!("expiry out of range: {e}")))?;
    let mut transitions = vec![approved.transition(&next, GrantState::Pending, now)];
    if next.not_before <= now {
        next.notified.push(ACTIVATED.to_owned());
        transitions.push(transition(
            Action::Activated,
            SYSTEM_ACTOR,
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
