//! Helpers shared by the integration tests: fixed instants and a grant builder.
#![allow(dead_code)]

use jitgate_policy::{Approval, Grant, GrantState, SignedDuration, Timestamp};
use uuid::Uuid;

/// A fixed, whole-microsecond instant the tests start from.
pub fn t0() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

/// `t0() + mins`.
pub fn at_min(mins: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_mins(mins)).unwrap()
}

/// An approved grant of `identity` on `target` as `role` for `[nb, exp)`.
pub fn grant(identity: &str, target: &str, role: &str, nb: Timestamp, exp: Timestamp) -> Grant {
    Grant {
        id: Uuid::now_v7(),
        identity: identity.into(),
        target: target.into(),
        role: role.into(),
        not_before: nb,
        expires_at: exp,
        reason: "INC-1".into(),
        issued_by: "admin".into(),
        created_at: nb,
        state: GrantState::Approved,
        approvals: Vec::new(),
        revoked_by: None,
        revoked_at: None,
        revoke_reason: None,
        rule: None,
        ticket: None,
        duration: exp.duration_since(nb),
        pending_until: None,
        denial: None,
        cancellation: None,
        break_glass: false,
        review: None,
        extends: None,
        notified: Vec::new(),
        idempotency_key: None,
        version: 0,
    }
}

/// A grant with every optional field filled and odd-but-valid values, for round trips.
pub fn full_grant() -> Grant {
    Grant {
        id: Uuid::now_v7(),
        identity: "alice@example.com".into(),
        target: "prod-db".into(),
        role: "readwrite".into(),
        not_before: "2030-01-01T00:00:00.123456Z".parse().unwrap(),
        expires_at: "2030-01-01T00:30:00.000001Z".parse().unwrap(),
        reason: "INC-42: fix \"broken\" index; ünïcødé ✓".into(),
        issued_by: "bob".into(),
        created_at: "2029-12-31T23:59:59.999999Z".parse().unwrap(),
        state: GrantState::Revoked,
        approvals: vec![
            Approval {
                by: "carol".into(),
                // Approvals are JSON: full nanosecond precision survives.
                at: "2029-12-31T23:59:00.123456789Z".parse().unwrap(),
                comment: Some("ok, ticket checked".into()),
            },
            Approval {
                by: "dave".into(),
                at: "2029-12-31T23:59:30Z".parse().unwrap(),
                comment: None,
            },
        ],
        revoked_by: Some("erin".into()),
        revoked_at: Some("2030-01-01T00:10:00.5Z".parse().unwrap()),
        revoke_reason: Some("done early".into()),
        rule: Some("prod-write".into()),
        ticket: Some("INC-42".into()),
        duration: SignedDuration::from_mins(30),
        pending_until: Some("2030-01-01T01:00:00.000001Z".parse().unwrap()),
        denial: Some(Approval {
            by: "frank".into(),
            at: "2030-01-01T00:05:00Z".parse().unwrap(),
            comment: Some("not during the freeze".into()),
        }),
        cancellation: None,
        break_glass: true,
        review: Some(Approval {
            by: "grace".into(),
            at: "2030-01-02T00:00:00Z".parse().unwrap(),
            comment: None,
        }),
        extends: Some(Uuid::now_v7()),
        notified: vec!["activated".into(), "expiring_soon".into()],
        idempotency_key: Some("retry-key-1".into()),
        version: 3,
    }
}
