//! What the engine reports after each change: [`Transition`]s, one per lifecycle step.
//!
//! The engine only decides and stores; the caller turns each transition into an audit
//! event (in the same hash chain as the session events), a webhook, and — for
//! revocations, extensions and expiry — an effect on live sessions.

use jiff::Timestamp;
use serde::Serialize;

use crate::grant::{Grant, GrantState};

/// One lifecycle step of a grant or request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An identity asked for access (state `pending`, or `approved` at once).
    Requested,
    /// One approver signed off; more approvals are still needed.
    ApprovalRecorded,
    /// The request has every approval it needs (or was auto-approved): `approved`.
    Approved,
    /// The request was turned down.
    Denied,
    /// The requester (or an administrator) withdrew the request.
    Cancelled,
    /// The grant's window started: sessions may connect.
    Activated,
    /// The holder of a grant asked for more time (an extension request was created).
    ExtensionRequested,
    /// The grant's `expires_at` moved later; live sessions keep running to the new end.
    Extended,
    /// The grant ends soon (the configured lead time before `expires_at`).
    ExpiringSoon,
    /// The grant's window ended, or a pending request lapsed undecided.
    Expired,
    /// The grant was withdrawn; its live sessions are dropped.
    Revoked,
    /// Break-glass access was taken: approved at once, flagged for review.
    BreakGlass,
    /// A reviewer looked at a break-glass grant afterwards.
    Reviewed,
}

impl Action {
    /// The snake_case name used in audit events, webhooks and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Requested => "requested",
            Action::ApprovalRecorded => "approval_recorded",
            Action::Approved => "approved",
            Action::Denied => "denied",
            Action::Cancelled => "cancelled",
            Action::Activated => "activated",
            Action::ExtensionRequested => "extension_requested",
            Action::Extended => "extended",
            Action::ExpiringSoon => "expiring_soon",
            Action::Expired => "expired",
            Action::Revoked => "revoked",
            Action::BreakGlass => "break_glass",
            Action::Reviewed => "reviewed",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step: who did what to which grant, under which rule, and the state before/after.
#[derive(Clone, Debug, Serialize)]
pub struct Transition {
    /// What happened.
    pub action: Action,
    /// Who did it: an identity, an administrator, `policy:<rule>` for automatic approvals,
    /// or `jitgate` for time-based steps.
    pub actor: String,
    /// The policy rule involved, if any.
    pub rule: Option<String>,
    /// The actor's reason or comment.
    pub comment: Option<String>,
    /// State before the step (`None` when the record was created by it).
    pub from: Option<GrantState>,
    /// State after the step.
    pub to: GrantState,
    /// When.
    pub at: Timestamp,
    /// The record after the step. For `Extended` this is the extended grant (its new
    /// `expires_at`), with the old end in `previous_expires_at`.
    pub grant: Grant,
    /// For `Extended`: the end of the window before the extension.
    pub previous_expires_at: Option<Timestamp>,
}

/// The result of an engine operation: the record as it now is, and the steps taken
/// (empty when the call repeated one already done: calls are idempotent).
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The grant or request the call was about, after the call.
    pub grant: Grant,
    /// The lifecycle steps this call performed, in order.
    pub transitions: Vec<Transition>,
}

impl Outcome {
    /// An outcome that changed nothing.
    pub fn unchanged(grant: Grant) -> Self {
        Outcome {
            grant,
            transitions: Vec::new(),
        }
    }
}

/// A transition of `grant` (after the change) from `from`.
pub(super) fn transition(
    action: Action,
    actor: &str,
    comment: Option<&str>,
    from: Option<GrantState>,
    grant: &Grant,
    at: Timestamp,
) -> Transition {
    Transition {
        action,
        actor: actor.to_owned(),
        rule: grant.rule.clone(),
        comment: comment.map(str::to_owned),
        from,
        to: grant.state,
        at,
        grant: grant.clone(),
        previous_expires_at: None,
    }
}
