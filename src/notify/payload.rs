//! The JSON body of a webhook delivery, built from a policy [`Transition`].
//!
//! The shape is a contract with receivers (documented field by field in
//! [`crate::notify`]): every key is always present (`null` when it has no value), new
//! keys may be added, existing ones never change meaning. It carries what a receiver
//! needs to act (who, what, which grant, until when) and nothing secret: no webhook
//! secret, no credentials, no SQL, no idempotency keys.

use jiff::Timestamp;
use jitgate_policy::{Action, Decision, Grant, GrantState, Transition};
use serde::Serialize;
use uuid::Uuid;

use super::events::event_name;

/// The top-level JSON object of a delivery.
#[derive(Debug, Serialize)]
pub(crate) struct Payload<'a> {
    /// The delivery id (uuid v7), also sent as `X-Jitgate-Delivery`.
    id: Uuid,
    /// The event name, also sent as `X-Jitgate-Event`.
    event: &'static str,
    /// `access` for a request or grant of access, `extension` for an extension request.
    kind: &'static str,
    /// When the step happened (not when it was delivered).
    occurred_at: Timestamp,
    actor: &'a str,
    rule: Option<&'a str>,
    comment: Option<&'a str>,
    from: Option<GrantState>,
    to: GrantState,
    grant: GrantView<'a>,
}

/// The grant (or request) the step is about, after the step.
#[derive(Debug, Serialize)]
struct GrantView<'a> {
    id: Uuid,
    identity: &'a str,
    target: &'a str,
    role: &'a str,
    not_before: Timestamp,
    expires_at: Timestamp,
    state: GrantState,
    reason: &'a str,
    ticket: Option<&'a str>,
    break_glass: bool,
    extends: Option<Uuid>,
    approvals: Vec<ApprovalView<'a>>,
    previous_expires_at: Option<Timestamp>,
}

/// One approval: who, when, and what they said.
#[derive(Debug, Serialize)]
struct ApprovalView<'a> {
    by: &'a str,
    at: Timestamp,
    comment: Option<&'a str>,
}

impl<'a> Payload<'a> {
    /// The payload of delivery `id` of `t`.
    pub(crate) fn new(id: Uuid, t: &'a Transition) -> Payload<'a> {
        let g: &'a Grant = &t.grant;
        Payload {
            id,
            event: event_name(t.action),
            kind: kind(t),
            occurred_at: t.at,
            actor: &t.actor,
            rule: t.rule.as_deref(),
            comment: t.comment.as_deref(),
            from: t.from,
            to: t.to,
            grant: GrantView {
                id: g.id,
                identity: &g.identity,
                target: &g.target,
                role: &g.role,
                not_before: g.not_before,
                expires_at: g.expires_at,
                state: g.state,
                reason: &g.reason,
                ticket: g.ticket.as_deref(),
                break_glass: g.break_glass,
                extends: g.extends,
                approvals: g.approvals.iter().map(ApprovalView::new).collect(),
                previous_expires_at: t.previous_expires_at,
            },
        }
    }

    /// The body bytes as sent (compact JSON).
    pub(crate) fn to_body(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

impl<'a> ApprovalView<'a> {
    fn new(d: &'a Decision) -> Self {
        ApprovalView {
            by: &d.by,
            at: d.at,
            comment: d.comment.as_deref(),
        }
    }
}

/// `extension` when the record is an extension request (or the step created one),
/// `access` otherwise.
fn kind(t: &Transition) -> &'static str {
    if t.action == Action::ExtensionRequested || t.grant.is_extension() {
        "extension"
    } else {
        "access"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        let t0: Timestamp = "2026-11-28T09:00:00Z".parse().expect("valid");
        Grant {
            id: Uuid::now_v7(),
            identity: "alice".into(),
            target: "prod".into(),
            role: "app_rw".into(),
            not_before: t0,
            expires_at: "2026-11-28T10:00:00Z".parse().expect("valid"),
            reason: "INC-42 fix stuck job".into(),
            issued_by: "alice".into(),
            created_at: t0,
            state: GrantState::Pending,
            approvals: Vec::new(),
            revoked_by: None,
            revoked_at: None,
            revoke_reason: None,
            rule: Some("prod-write".into()),
            ticket: Some("INC-42".into()),
            duration: jiff::SignedDuration::from_hours(1),
            pending_until: None,
            denial: None,
            cancellation: None,
            break_glass: false,
            review: None,
            extends: None,
            notified: Vec::new(),
            idempotency_key: Some("client-key-must-not-leak".into()),
            version: 1,
        }
    }

    fn transition(action: Action, grant: Grant) -> Transition {
        Transition {
            action,
            actor: "alice".into(),
            rule: grant.rule.clone(),
            comment: Some("please".into()),
            from: None,
            to: grant.state,
            at: grant.created_at,
            grant,
            previous_expires_at: None,
        }
    }

    #[test]
    fn shape() {
        let t = transition(Action::Requested, grant());
        let id = Uuid::now_v7();
        let body = Payload::new(id, &t).to_body().expect("serializes");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["id"], id.to_string());
        assert_eq!(v["event"], "request.created");
        assert_eq!(v["kind"], "access");
        assert_eq!(v["occurred_at"], "2026-11-28T09:00:00Z");
        assert_eq!(v["from"], serde_json::Value::Null);
        assert_eq!(v["to"], "pending");
        assert_eq!(v["grant"]["ticket"], "INC-42");
        assert_eq!(v["grant"]["approvals"], serde_json::json!([]));
        assert_eq!(v["grant"]["previous_expires_at"], serde_json::Value::Null);
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().expect("object").keys().cloned().collect()
        };
        // Every key always present (null when empty); serde_json sorts them.
        assert_eq!(
            keys(&v),
            [
                "actor",
                "comment",
                "event",
                "from",
                "grant",
                "id",
                "kind",
                "occurred_at",
                "rule",
                "to"
            ]
        );
        assert_eq!(
            keys(&v["grant"]),
            [
                "approvals",
                "break_glass",
                "expires_at",
                "extends",
                "id",
                "identity",
                "not_before",
                "previous_expires_at",
                "reason",
                "role",
                "state",
                "target",
                "ticket"
            ]
        );
        assert!(!String::from_utf8_lossy(&body).contains("client-key-must-not-leak"));
    }

    #[test]
    fn extension_kind() {
        let mut g = grant();
        g.extends = Some(Uuid::now_v7());
        let t = transition(Action::ExtensionRequested, g);
        let body = Payload::new(Uuid::now_v7(), &t)
            .to_body()
            .expect("serializes");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["event"], "request.created");
        assert_eq!(v["kind"], "extension");
    }
}
