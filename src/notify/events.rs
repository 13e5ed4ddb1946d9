//! Webhook event names: the mapping from policy [`Action`]s to the names receivers see,
//! and the per-webhook filter.
//!
//! The names are part of the webhook contract (the `event` field and the
//! `X-Jitgate-Event` header): `<subject>.<what happened>`, where the subject is the
//! record a receiver acts on — a `request` while someone has to decide, a `grant` once
//! access exists, `break_glass` for emergency access.

use std::collections::BTreeSet;

use jitgate_policy::Action;

/// Every webhook event name, in lifecycle order; a webhook's `events` list must name
/// only these.
pub const EVENTS: &[&str] = &[
    "request.created",
    "request.approval_recorded",
    "request.approved",
    "request.denied",
    "request.cancelled",
    "grant.activated",
    "grant.extended",
    "grant.expiring_soon",
    "grant.expired",
    "grant.revoked",
    "break_glass.used",
    "grant.reviewed",
];

/// The webhook event name of a lifecycle step. A new access request and an extension
/// request are both `request.created`; the payload's `kind` tells them apart.
pub fn event_name(action: Action) -> &'static str {
    match action {
        Action::Requested | Action::ExtensionRequested => "request.created",
        Action::ApprovalRecorded => "request.approval_recorded",
        Action::Approved => "request.approved",
        Action::Denied => "request.denied",
        Action::Cancelled => "request.cancelled",
        Action::Activated => "grant.activated",
        Action::Extended => "grant.extended",
        Action::ExpiringSoon => "grant.expiring_soon",
        Action::Expired => "grant.expired",
        Action::Revoked => "grant.revoked",
        Action::BreakGlass => "break_glass.used",
        Action::Reviewed => "grant.reviewed",
    }
}

/// Whether a webhook subscribed to `filter` (`None`: every event) receives `event`.
pub(crate) fn wants(filter: Option<&BTreeSet<String>>, event: &str) -> bool {
    match filter {
        None => true,
        Some(events) => events.contains(event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_ACTIONS: [Action; 13] = [
        Action::Requested,
        Action::ApprovalRecorded,
        Action::Approved,
        Action::Denied,
        Action::Cancelled,
        Action::Activated,
        Action::ExtensionRequested,
        Action::Extended,
        Action::ExpiringSoon,
        Action::Expired,
        Action::Revoked,
        Action::BreakGlass,
        Action::Reviewed,
    ];

    #[test]
    fn every_action_maps_to_a_listed_event_and_every_event_is_reachable() {
        let mapped: BTreeSet<&str> = ALL_ACTIONS.into_iter().map(event_name).collect();
        let listed: BTreeSet<&str> = EVENTS.iter().copied().collect();
        assert_eq!(mapped, listed);
        assert_eq!(listed.len(), EVENTS.len(), "no duplicates in EVENTS");
    }

    #[test]
    fn filter() {
        assert!(wants(None, "grant.revoked"));
        let only: BTreeSet<String> = ["grant.revoked".to_owned()].into();
        assert!(wants(Some(&only), "grant.revoked"));
        assert!(!wants(Some(&only), "request.created"));
    }
}
