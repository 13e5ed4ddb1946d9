//! New requests: access requests and extension requests, checked against the rules.
//!
//! A request is stored `pending`; when the rules need no approver (no approvals block,
//! auto-approval, break-glass) it is approved right after, by `policy:<rule>` (or as
//! break-glass by the requester), through the same path a human approval takes.
//! A client-chosen idempotency key makes retries of the same request return the first
//! one instead of creating a second.

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use super::cas::Step;
use super::decide::{trimmed, POLICY_ACTOR_PREFIX};
use super::transition::transition;
use super::{Action, Engine, Outcome};
use crate::catalog::check_start;
use crate::error::PolicyError;
use crate::grant::{floor_to_micros, Decision, Grant, GrantState};
use crate::rules::{RequestFacts, Verdict};
use crate::store::GrantFilter;

/// An identity asking for access.
#[derive(Clone, Debug)]
pub struct AccessRequest {
    /// The requester, who will hold the grant (an authenticated identity).
    pub identity: String,
    /// Which target.
    pub target: String,
    /// Which of the target's roles.
    pub role: String,
    /// How long the access lasts once it starts.
    pub duration: SignedDuration,
    /// A later start; `None` or a past instant = as soon as approved.
    pub start_at: Option<Timestamp>,
    /// Why access is needed.
    pub reason: Option<String>,
    /// A ticket (incident, change) the rule may require.
    pub ticket: Option<String>,
    /// Break-glass: immediate access without approvers, flagged for review.
    pub break_glass: bool,
    /// Retries with the same key return the first request.
    pub idempotency_key: Option<String>,
}

/// The holder of a grant asking for more time.
#[derive(Clone, Debug)]
pub struct ExtensionRequest {
    /// The grant to extend.
    pub grant: Uuid,
    /// Who asks (must be the grant's identity).
    pub identity: String,
    /// Time added to the grant's current end.
    pub duration: SignedDuration,
    /// Why more time is needed.
    pub reason: Option<String>,
    /// A ticket the rule may require.
    pub ticket: Option<String>,
    /// Retries with the same key return the first extension request.
    pub idempotency_key: Option<String>,
}

impl Engine {
    /// Files an access request under the first matching rule. Returns it pending, or
    /// approved at once when the rule needs no approver.
    pub async fn request(&self, req: AccessRequest) -> Result<Outcome, PolicyError> {
        self.catalog
            .check(&req.identity, &req.target, Some(&req.role))?;
        let key = trimmed(req.idempotency_key.as_deref());
        if let Some(existing) = self.find_by_key(&req.identity, key.as_deref()).await? {
            return same_request(existing, &req.target, &req.role, None);
        }
        let now = self.now();
        let reason = trimmed(req.reason.as_deref());
        let ticket = trimmed(req.ticket.as_deref());
        let rules = self.rules();
        let verdict = rules.check_request(&RequestFacts {
            identity: &req.identity,
            target: &req.target,
            role: &req.role,
            duration: req.duration,
            reason: reason.as_deref(),
            ticket: ticket.as_deref(),
            break_glass: req.break_glass,
            at: now,
        })?;
        let start = req.start_at.map_or(now, floor_to_micros).max(now);
        check_start("start_at", start, now)?;
        let grant = Grant {
            id: Uuid::now_v7(),
            identity: req.identity.clone(),
            target: req.target,
            role: req.role,
            not_before: start,
            expires_at: add(start, req.duration)?,
            reason: reason.unwrap_or_default(),
            issued_by: req.identity,
            created_at: now,
            state: GrantState::Pending,
            approvals: Vec::new(),
            revoked_by: None,
            revoked_at: None,
            revoke_reason: None,
            rule: Some(verdict.rule.clone()),
            ticket,
            duration: req.duration,
            pending_until: Some(add(now, verdict.pending_timeout)?),
            denial: None,
            cancellation: None,
            break_glass: verdict.break_glass,
            review: None,
            extends: None,
            notified: Vec::new(),
            idempotency_key: key,
            version: 0,
        };
        self.file(grant, None, &verdict, now).await
    }

    /// Asks for `duration` more on a grant the requester holds. The extension goes
    /// through the rules like a new request; the grant's new end may be at most the
    /// rule's `max_duration` from now. Once approved, live sessions keep running to the
    /// new end without reconnecting.
    pub async fn extend(&self, req: ExtensionRequest) -> Result<Outcome, PolicyError> {
        let key = trimmed(req.idempotency_key.as_deref());
        if let Some(existing) = self.find_by_key(&req.identity, key.as_deref()).await? {
            return same_request(existing, "", "", Some(req.grant));
        }
        let parent = self.get(req.grant).await?;
        let now = self.now();
        check_extendable(&parent, &req.identity, now)?;
        let reason = trimmed(req.reason.as_deref());
        let ticket = trimmed(req.ticket.as_deref());
        let rules = self.rules();
        let verdict = rules.check_request(&RequestFacts {
            identity: &parent.identity,
            target: &parent.target,
            role: &parent.role,
            duration: req.duration,
            reason: reason.as_deref(),
            ticket: ticket.as_deref(),
            break_glass: false,
            at: now,
        })?;
        let new_end = add(parent.expires_at, req.duration)?;
        let cap = add(now, verdict.max_duration)?;
        if new_end > cap {
            return Err(PolicyError::InvalidRequest(format!(
                "extending grant {} by {:#} would make it end at {new_end}, more than rule \
                 {:?}'s maximum of {:#} from now (latest allowed end: {cap}); ask for less",
                parent.id, req.duration, verdict.rule, verdict.max_duration
            )));
        }
        // An extension nobody decides on lapses when the grant ends at the latest.
        let pending_until = add(now, verdict.pending_timeout)?.min(parent.expires_at);
        let extension = Grant {
            id: Uuid::now_v7(),
            identity: parent.identity.clone(),
            target: parent.target.clone(),
            role: parent.role.clone(),
            not_before: parent.not_before,
            expires_at: new_end,
            reason: reason.unwrap_or_default(),
            issued_by: req.identity,
            created_at: now,
            state: GrantState::Pending,
            approvals: Vec::new(),
            revoked_by: None,
            revoked_at: None,
            revoke_reason: None,
            rule: Some(verdict.rule.clone()),
            ticket,
            duration: req.duration,
            pending_until: Some(pending_until),
            denial: None,
            cancellation: None,
            break_glass: false,
            review: None,
            extends: Some(parent.id),
            notified: Vec::new(),
            idempotency_key: key,
            version: 0,
        };
        self.file(extension, Some(&parent), &verdict, now).await
    }

    /// Stores a new pending request and, when the verdict needs no approver, approves it.
    async fn file(
        &self,
        request: Grant,
        parent: Option<&Grant>,
        verdict: &Verdict,
        now: Timestamp,
    ) -> Result<Outcome, PolicyError> {
        let (action, actor) = match parent {
            Some(_) => (Action::ExtensionRequested, request.identity.as_str()),
            None => (Action::Requested, request.identity.as_str()),
        };
        let mut filed = transition(action, actor, Some(&request.reason), None, &request, now);
        if let Some(parent) = parent {
            filed.previous_expires_at = Some(parent.expires_at);
        }
        match self.store.insert(&request).await {
            Ok(()) => {}
            Err(PolicyError::Conflict(why)) => {
                // Lost a race with a retry carrying the same idempotency key.
                return match self
                    .find_by_key(&request.issued_by, request.idempotency_key.as_deref())
                    .await?
                {
                    Some(existing) => Ok(Outcome::unchanged(existing)),
                    None => Err(PolicyError::Conflict(why)),
                };
            }
            Err(e) => return Err(e),
        }
        tracing::info!(id = %request.id, identity = %request.identity, target = %request.target,
            role = %request.role, rule = %verdict.rule, extends = ?request.extends, "request filed");
        if verdict.approvals_required > 0 && !verdict.break_glass {
            return Ok(Outcome {
                grant: request,
                transitions: vec![filed],
            });
        }
        let approver = if verdict.break_glass {
            request.identity.clone()
        } else {
            format!("{POLICY_ACTOR_PREFIX}{}", verdict.rule)
        };
        let why = if verdict.break_glass {
            Some("break-glass access: approved without approvers, to be reviewed".to_owned())
        } else {
            verdict.auto_approved.clone()
        };
        let auto = self
            .change(request.id, |g, parent, now| {
                if g.effective_state(now) != GrantState::Pending {
                    return Ok(Step::Unchanged);
                }
                let mut next = g.clone();
                if !next.break_glass {
                    next.approvals.push(Decision {
                        by: approver.clone(),
                        at: now,
                        comment: why.clone(),
                    });
                }
                next.state = GrantState::Approved;
                self.approved_step(next, parent, &approver, why.as_deref(), now)
            })
            .await?;
        let mut transitions = vec![filed];
        transitions.extend(auto.transitions);
        Ok(Outcome {
            grant: auto.grant,
            transitions,
        })
    }

    /// The record `issued_by` created with idempotency key `key`, if any.
    async fn find_by_key(
        &self,
        issued_by: &str,
        key: Option<&str>,
    ) -> Result<Option<Grant>, PolicyError> {
        let Some(key) = key else {
            return Ok(None);
        };
        let found = self
            .store
            .list(&GrantFilter {
                issued_by: Some(issued_by.to_owned()),
                idempotency_key: Some(key.to_owned()),
                ..GrantFilter::default()
            })
            .await?;
        Ok(found.into_iter().next())
    }
}

/// Whether `identity` may ask to extend `parent` at `now`: only the holder of an approved
/// grant that has not ended can.
fn check_extendable(parent: &Grant, identity: &str, now: Timestamp) -> Result<(), PolicyError> {
    if parent.is_extension() {
        return Err(PolicyError::InvalidRequest(format!(
            "{} is an extension request, not a grant; extend the grant it belongs to ({})",
            parent.id,
            parent.extends.map(|p| p.to_string()).unwrap_or_default()
        )));
    }
    if parent.identity != identity {
        return Err(PolicyError::Forbidden(format!(
            "grant {} belongs to {}; only its holder can ask to extend it",
            parent.id, parent.identity
        )));
    }
    let state = parent.effective_state(now);
    if state != GrantState::Approved {
        return Err(PolicyError::Conflict(format!(
            "grant {} is {state}; only an approved grant that has not ended can be \
             extended — request new access instead",
            parent.id
        )));
    }
    Ok(())
}

/// A retry with an idempotency key already used must be for the same thing.
fn same_request(
    existing: Grant,
    target: &str,
    role: &str,
    extends: Option<Uuid>,
) -> Result<Outcome, PolicyError> {
    let same = match extends {
        Some(parent) => existing.extends == Some(parent),
        None => existing.extends.is_none() && existing.target == target && existing.role == role,
    };
    if same {
        Ok(Outcome::unchanged(existing))
    } else {
        Err(PolicyError::Conflict(format!(
            "this idempotency key was already used for request {} (a different request); \
             use a new key for a new request",
            existing.id
        )))
    }
}

fn add(t: Timestamp, d: SignedDuration) -> Result<Timestamp, PolicyError> {
    t.checked_add(d)
        .map(floor_to_micros)
        .map_err(|e| PolicyError::InvalidRequest(format!("time out of range: {e}")))
}
