//! Grants an administrator issues directly: approved at once, no rule involved.

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use super::sweep::ACTIVATED;
use super::Engine;
use crate::catalog::{check_start, MAX_GRANT_DURATION};
use crate::error::PolicyError;
use crate::grant::{floor_to_micros, Grant, GrantState};

/// An administrator's request for a grant.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// Who gets access.
    pub identity: String,
    /// To which target.
    pub target: String,
    /// As which of the target's roles.
    pub role: String,
    /// How long, from `not_before` (or now); `0 < duration ≤ MAX_GRANT_DURATION`.
    pub duration: SignedDuration,
    /// When access starts; `None` = now. At most
    /// [`MAX_NOT_BEFORE_AHEAD`](crate::MAX_NOT_BEFORE_AHEAD) ahead.
    pub not_before: Option<Timestamp>,
    /// Why (ticket, incident); must not be blank.
    pub reason: String,
    /// The administrator issuing it; must not be blank.
    pub issued_by: String,
}

impl Engine {
    /// Admin-issued grant (state Approved). Validates: identity/target/role known in
    /// catalog, 0 < duration ≤ [`MAX_GRANT_DURATION`], reason and issuer non-blank,
    /// `not_before` at most [`MAX_NOT_BEFORE_AHEAD`](crate::MAX_NOT_BEFORE_AHEAD) ahead,
    /// and the grant not already over.
    /// `expires_at = (not_before or now) + duration`.
    pub async fn issue(&self, req: IssueRequest) -> Result<Grant, PolicyError> {
        self.catalog
            .check(&req.identity, &req.target, Some(&req.role))?;
        check_duration(req.duration)?;
        let reason = non_blank(
            &req.reason,
            "reason must not be empty; say why access is needed (ticket, incident)",
        )?;
        let issued_by = non_blank(&req.issued_by, "issued_by must not be empty")?;
        let now = self.now();
        let (not_before, expires_at) = window(req.not_before, req.duration, now)?;
        let grant = Grant {
            id: Uuid::now_v7(),
            identity: req.identity,
            target: req.target,
            role: req.role,
            not_before,
            expires_at,
            reason: reason.to_owned(),
            issued_by: issued_by.to_owned(),
            created_at: now,
            state: GrantState::Approved,
            approvals: Vec::new(),
            revoked_by: None,
            revoked_at: None,
            revoke_reason: None,
            rule: None,
            ticket: None,
            duration: expires_at.duration_since(not_before),
            pending_until: None,
            denial: None,
            cancellation: None,
            break_glass: false,
            review: None,
            extends: None,
            // An administrator's grant starting now needs no separate activation notice.
            notified: if not_before <= now {
                vec![ACTIVATED.to_owned()]
            } else {
                Vec::new()
            },
            idempotency_key: None,
            version: 0,
        };
        self.store.insert(&grant).await?;
        tracing::info!(
            grant_id = %grant.id,
            identity = %grant.identity,
            target = %grant.target,
            role = %grant.role,
            expires_at = %grant.expires_at,
            "grant issued"
        );
        Ok(grant)
    }
}

/// `0 < duration ≤ MAX_GRANT_DURATION`.
fn check_duration(duration: SignedDuration) -> Result<(), PolicyError> {
    if !duration.is_positive() {
        return Err(PolicyError::InvalidRequest(format!(
            "duration must be positive, got {duration:#}"
        )));
    }
    if duration > MAX_GRANT_DURATION {
        return Err(PolicyError::InvalidRequest(format!(
            "duration {duration:#} is longer than the maximum of {:#}; issue a shorter grant \
             and a new one when it ends",
            MAX_GRANT_DURATION
        )));
    }
    Ok(())
}

/// `text` trimmed; `refusal` when nothing is left.
fn non_blank<'a>(text: &'a str, refusal: &str) -> Result<&'a str, PolicyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(PolicyError::InvalidRequest(refusal.to_owned()));
    }
    Ok(text)
}

/// The window `[not_before, expires_at)` of a grant of `duration` starting at `start` (or
/// now): it starts at most [`MAX_NOT_BEFORE_AHEAD`](crate::MAX_NOT_BEFORE_AHEAD) ahead
/// and ends after now.
fn window(
    start: Option<Timestamp>,
    duration: SignedDuration,
    now: Timestamp,
) -> Result<(Timestamp, Timestamp), PolicyError> {
    let not_before = start.map_or(now, floor_to_micros);
    check_start("not_before", not_before, now)?;
    let expires_at = not_before
        .checked_add(duration)
        .map(floor_to_micros)
        .map_err(|e| PolicyError::InvalidRequest(format!("expiry out of range: {e}")))?;
    if expires_at <= now {
        return Err(PolicyError::InvalidRequest(format!(
            "the grant would already be over: not_before {not_before} + {duration:#} ends at \
             {expires_at}, which is not after now ({now})"
        )));
    }
    Ok((not_before, expires_at))
}
