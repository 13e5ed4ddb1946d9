//! The request/approval lifecycle through the engine, with a ManualClock and real rules:
//! N-of-M approvals, self-approval, denial, cancellation, lapsing, later starts,
//! extensions, break-glass, idempotency, concurrent approvals, and the sweep.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::{at_min, t0};
use jitgate_policy::{
    AccessRequest, Action, Actor, Catalog, Engine, ExtensionRequest, GrantState, ManualClock,
    Outcome, PolicyError, Rules, RulesSpec, SignedDuration, SqliteStore,
};
use uuid::Uuid;

const RULES: &str = r#"
groups:
  dbas: [carol, dave]
  oncall: [erin]
  security: [frank]
rules:
  - name: prod-write
    requesters: { identities: [alice] }
    targets: [prod]
    roles: [readwrite]
    max_duration: 4h
    ticket: '^(INC|CHG)-\d+$'
    approvals: { count: 2, from: [dbas] }
    pending_timeout: 1h
    break_glass: { max_duration: 1h, review_by: [security] }
  - name: prod-read
    requesters: { identities: [alice], groups: [oncall] }
    targets: [prod]
    roles: [readonly]
    max_duration: 8h
    reason: optional
  - name: stage-any
    requesters: { identities: [alice, carol] }
    targets: [stage]
    roles: ["*"]
    max_duration: 2h
    approvals: { count: 1, from: [dbas] }
"#;

fn catalog() -> Catalog {
    let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    Catalog {
        identities: set(&["alice", "bob", "carol", "dave", "erin", "frank"]),
        targets: BTreeMap::from([
            ("prod".to_string(), set(&["readonly", "readwrite", "admin"])),
            ("stage".to_string(), set(&["readonly"])),
        ]),
    }
}

fn setup() -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let spec: RulesSpec = serde_yaml::from_str(RULES).unwrap();
    let rules = Rules::from_spec(&spec, &catalog()).unwrap();
    (
        Engine::new(store, clock.clone(), catalog()).with_rules(rules),
        clock,
    )
}

fn write_request(mins: i64) -> AccessRequest {
    AccessRequest {
        identity: "alice".into(),
        target: "prod".into(),
        role: "readwrite".into(),
        duration: SignedDuration::from_mins(mins),
        start_at: None,
        reason: Some("fix the broken index".into()),
        ticket: Some("INC-42".into()),
        break_glass: false,
        idempotency_key: None,
    }
}

fn actions(outcome: &Outcome) -> Vec<Action> {
    outcome.transitions.iter().map(|t| t.action).collect()
}

#[tokio::test]
async fn two_of_m_approvals_without_self_approval_open_the_full_window() {
    let (engine, clock) = setup();
    let filed = engine.request(write_request(60)).await.unwrap();
    assert_eq!(actions(&filed), [Action::Requested]);
    let id = filed.grant.id;
    assert_eq!(filed.grant.state, GrantState::Pending);
    assert_eq!(filed.grant.rule.as_deref(), Some("prod-write"));
    assert_eq!(filed.grant.pending_until, Some(at_min(60)));
    assert!(engine.admit("alice", "prod", None).await.is_err());

    // The requester never counts, even when asking nicely.
    let own = engine.approve(id, "alice", None).await.unwrap_err();
    assert!(matches!(own, PolicyError::Forbidden(_)), "{own:?}");
    // Someone outside the approver groups is refused.
    let outsider = engine.approve(id, "erin", None).await.unwrap_err();
    assert!(
        matches!(outsider, PolicyError::Forbidden(_)),
        "{outsider:?}"
    );

    clock.advance(SignedDuration::from_mins(10));
    let first = engine
        .approve(id, "carol", Some("looks fine"))
        .await
        .unwrap();
    assert_eq!(actions(&first), [Action::ApprovalRecorded]);
    assert_eq!(first.grant.state, GrantState::Pending);
    // The same approver again counts once (idempotent).
    let again = engine.approve(id, "carol", None).await.unwrap();
    assert!(again.transitions.is_empty());
    assert_eq!(again.grant.human_approvals(), 1);

    clock.advance(SignedDuration::from_mins(5));
    let second = engine.approve(id, "dave", None).await.unwrap();
    assert_eq!(actions(&second), [Action::Approved, Action::Activated]);
    let g = second.grant;
    assert_eq!(g.state, GrantState::Approved);
    // Approved 15 minutes after the request: the full hour counts from approval.
    assert_eq!(g.not_before, at_min(15));
    assert_eq!(g.expires_at, at_min(75));
    let admitted = engine.admit("alice", "prod", None).await.unwrap();
    assert_eq!(admitted.grant.id, id);
    // Approving something approved by someone else is a conflict, not a silent success.
    let late = engine.approve(id, "frank", None).await.unwrap_err();
    assert!(
        matches!(late, PolicyError::Conflict(ref m) if m.contains("already approved")),
        "{late:?}"
    );
}

#[tokio::test]
async fn concurrent_approvals_both_count() {
    let (engine, _clock) = setup();
    for _ in 0..5 {
        let id = engine.request(write_request(30)).await.unwrap().grant.id;
        let (a, b) = tokio::join!(
            engine.approve(id, "carol", None),
            engine.approve(id, "dave", None)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let all: Vec<Action> = actions(&a).into_iter().chain(actions(&b)).collect();
        assert_eq!(
            all.iter()
                .filter(|x| **x == Action::ApprovalRecorded)
                .count(),
            1,
            "{all:?}"
        );
        assert_eq!(all.iter().filter(|x| **x == Action::Approved).count(), 1);
        let g = engine.get(id).await.unwrap();
        assert_eq!(g.state, GrantState::Approved);
        assert_eq!(g.human_approvals(), 2);
    }
}

#[tokio::test]
async fn rules_check_reason_ticket_duration_and_who() {
    let (engine, _clock) = setup();
    let mut no_ticket = write_request(30);
    no_ticket.ticket = None;
    assert!(matches!(
        engine.request(no_ticket).await,
        Err(PolicyError::InvalidRequest(_))
    ));
    let mut bad_ticket = write_request(30);
    bad_ticket.ticket = Some("JIRA-1".into());
    assert!(matches!(
        engine.request(bad_ticket).await,
        Err(PolicyError::InvalidRequest(_))
    ));
    let mut no_reason = write_request(30);
    no_reason.reason = Some("   ".into());
    assert!(matches!(
        engine.request(no_reason).await,
        Err(PolicyError::InvalidRequest(_))
    ));
    assert!(matches!(
        engine.request(write_request(5 * 60)).await,
        Err(PolicyError::InvalidRequest(_))
    ));
    let mut bob = write_request(30);
    bob.identity = "bob".into();
    assert!(matches!(
        engine.request(bob).await,
        Err(PolicyError::Forbidden(_))
    ));
    let mut admin_role = write_request(30);
    admin_role.role = "admin".into();
    assert!(matches!(
        engine.request(admin_role).await,
        Err(PolicyError::Forbidden(_))
    ));
    let mut unknown = write_request(30);
    unknown.role = "superuser".into();
    assert!(matches!(
        engine.request(unknown).await,
        Err(PolicyError::UnknownRole { .. })
    ));
}

#[tokio::test]
async fn a_rule_without_approvals_approves_at_once() {
    let (engine, _clock) = setup();
    let mut read = write_request(120);
    read.role = "readonly".into();
    read.ticket = None;
    read.reason = None;
    let outcome = engine.request(read).await.unwrap();
    assert_eq!(
        actions(&outcome),
        [Action::Requested, Action::Approved, Action::Activated]
    );
    let g = outcome.grant;
    assert_eq!(g.state, GrantState::Approved);
    assert_eq!(g.approvals.len(), 1);
    assert_eq!(g.approvals[0].by, "policy:prod-read");
    assert_eq!(g.human_approvals(), 0);
    assert!(engine
        .admit("alice", "prod", Some("readonly"))
        .await
        .is_ok());
}

#[tokio::test]
async fn denial_needs_a_comment_and_closes_the_request() {
    let (engine, _clock) = setup();
    let id = engine.request(write_request(30)).await.unwrap().grant.id;
    assert!(matches!(
        engine.deny(id, "carol", "  ").await,
        Err(PolicyError::InvalidRequest(_))
    ));
    assert!(matches!(
        engine.deny(id, "erin", "no").await,
        Err(PolicyError::Forbidden(_))
    ));
    let denied = engine
        .deny(id, "carol", "not during the freeze")
        .await
        .unwrap();
    assert_eq!(actions(&denied), [Action::Denied]);
    assert_eq!(denied.grant.state, GrantState::Denied);
    assert!(engine
        .deny(id, "carol", "again")
        .await
        .unwrap()
        .transitions
        .is_empty());
    let err = engine.approve(id, "dave", None).await.unwrap_err();
    match err {
        PolicyError::Conflict(m) => {
            assert!(m.contains("denied by carol"), "{m}");
            assert!(m.contains("not during the freeze"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cancel_by_the_requester_or_an_admin_only() {
    let (engine, _clock) = setup();
    let id = engine.request(write_request(30)).await.unwrap().grant.id;
    assert!(matches!(
        engine
            .cancel(id, &Actor::Identity("carol".into()), None)
            .await,
        Err(PolicyError::Forbidden(_))
    ));
    let cancelled = engine
        .cancel(
            id,
            &Actor::Identity("alice".into()),
            Some("fixed it myself"),
        )
        .await
        .unwrap();
    assert_eq!(actions(&cancelled), [Action::Cancelled]);
    assert_eq!(cancelled.grant.state, GrantState::Cancelled);
    assert!(engine
        .cancel(id, &Actor::Identity("alice".into()), None)
        .await
        .unwrap()
        .transitions
        .is_empty());
    let err = engine.approve(id, "carol", None).await.unwrap_err();
    assert!(
        matches!(err, PolicyError::Conflict(ref m) if m.contains("cancelled by alice")),
        "{err:?}"
    );

    let other = engine.request(write_request(30)).await.unwrap().grant.id;
    let by_admin = engine
        .cancel(other, &Actor::Admin("root".into()), None)
        .await
        .unwrap();
    assert_eq!(by_admin.grant.state, GrantState::Cancelled);
}

#[tokio::test]
async fn undecided_requests_lapse_and_the_sweep_records_it_once() {
    let (engine, clock) = setup();
    let id = engine.request(write_request(30)).await.unwrap().grant.id;
    engine.approve(id, "carol", None).await.unwrap();
    clock.set(at_min(60));
    let err = engine.approve(id, "dave", None).await.unwrap_err();
    assert!(
        matches!(err, PolicyError::Conflict(ref m) if m.contains("lapsed")),
        "{err:?}"
    );
    let lead = SignedDuration::from_mins(5);
    let swept = engine.sweep(lead).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].action, Action::Expired);
    assert_eq!(swept[0].from, Some(GrantState::Pending));
    assert_eq!(engine.get(id).await.unwrap().state, GrantState::Expired);
    assert!(engine.sweep(lead).await.unwrap().is_empty());
    // Still explained as lapsed after the sweep stored it.
    let err = engine.approve(id, "dave", None).await.unwrap_err();
    assert!(
        matches!(err, PolicyError::Conflict(ref m) if m.contains("lapsed")),
        "{err:?}"
    );
}

#[tokio::test]
async fn later_start_activation_expiring_soon_and_expiry() {
    let (engine, clock) = setup();
    let mut later = write_request(30);
    later.start_at = Some(at_min(120));
    let id = engine.request(later).await.unwrap().grant.id;
    engine.approve(id, "carol", None).await.unwrap();
    let approved = engine.approve(id, "dave", None).await.unwrap();
    assert_eq!(actions(&approved), [Action::Approved]);
    assert_eq!(approved.grant.not_before, at_min(120));
    assert_eq!(approved.grant.expires_at, at_min(150));
    assert!(engine.admit("alice", "prod", None).await.is_err());

    let lead = SignedDuration::from_mins(5);
    assert!(engine.sweep(lead).await.unwrap().is_empty());
    clock.set(at_min(120));
    let swept = engine.sweep(lead).await.unwrap();
    assert_eq!(
        swept.iter().map(|t| t.action).collect::<Vec<_>>(),
        [Action::Activated]
    );
    assert!(engine.admit("alice", "prod", None).await.is_ok());
    clock.set(at_min(146));
    let swept = engine.sweep(lead).await.unwrap();
    assert_eq!(
        swept.iter().map(|t| t.action).collect::<Vec<_>>(),
        [Action::ExpiringSoon]
    );
    assert!(engine.sweep(lead).await.unwrap().is_empty());
    clock.set(at_min(150));
    let swept = engine.sweep(lead).await.unwrap();
    assert_eq!(
        swept.iter().map(|t| t.action).collect::<Vec<_>>(),
        [Action::Expired]
    );
    assert_eq!(engine.get(id).await.unwrap().state, GrantState::Expired);
}

async fn approved_write_grant(engine: &Engine) -> Uuid {
    let id = engine.request(write_request(60)).await.unwrap().grant.id;
    engine.approve(id, "carol", None).await.unwrap();
    engine.approve(id, "dave", None).await.unwrap();
    id
}

fn extension(grant: Uuid, identity: &str, mins: i64) -> ExtensionRequest {
    ExtensionRequest {
        grant,
        identity: identity.into(),
        duration: SignedDuration::from_mins(mins),
        reason: Some("migration still running".into()),
        ticket: Some("CHG-7".into()),
        idempotency_key: None,
    }
}

#[tokio::test]
async fn extensions_go_through_the_rules_and_move_the_deadline() {
    let (engine, clock) = setup();
    let grant = approved_write_grant(&engine).await;
    clock.advance(SignedDuration::from_mins(50));
    assert!(matches!(
        engine.extend(extension(grant, "bob", 30)).await,
        Err(PolicyError::Forbidden(_))
    ));
    // 4h max from now: 60 → 50 + 240 = 290 is the latest end.
    assert!(matches!(
        engine.extend(extension(grant, "alice", 240)).await,
        Err(PolicyError::InvalidRequest(ref m)) if m.contains("latest allowed end")
    ));
    let ext = engine.extend(extension(grant, "alice", 30)).await.unwrap();
    assert_eq!(actions(&ext), [Action::ExtensionRequested]);
    let ext_id = ext.grant.id;
    assert_eq!(ext.grant.extends, Some(grant));
    // The extension record never admits by itself; the grant still ends at 60.
    assert_eq!(
        engine
            .admit("alice", "prod", None)
            .await
            .unwrap()
            .grant
            .expires_at,
        at_min(60)
    );
    engine.approve(ext_id, "carol", None).await.unwrap();
    let done = engine.approve(ext_id, "dave", None).await.unwrap();
    assert_eq!(actions(&done), [Action::Approved, Action::Extended]);
    let extended = &done.transitions[1];
    assert_eq!(extended.grant.id, grant);
    assert_eq!(extended.previous_expires_at, Some(at_min(60)));
    assert_eq!(extended.grant.expires_at, at_min(90));
    let admitted = engine.admit("alice", "prod", None).await.unwrap();
    assert_eq!(
        (admitted.grant.id, admitted.grant.expires_at),
        (grant, at_min(90))
    );

    // Extending a revoked grant is refused with why.
    engine
        .revoke(grant, &Actor::Admin("root".into()), None)
        .await
        .unwrap();
    assert!(matches!(
        engine.extend(extension(grant, "alice", 10)).await,
        Err(PolicyError::Conflict(ref m)) if m.contains("revoked")
    ));
}

#[tokio::test]
async fn approving_several_pending_extensions_cannot_exceed_max_duration() {
    let (engine, _clock) = setup();
    // Ends at 60; the rule allows at most 4h (240) from now.
    let grant = approved_write_grant(&engine).await;
    // Each alone fits (60 + 150 = 210 <= 240), both together do not (360).
    let first = engine
        .extend(extension(grant, "alice", 150))
        .await
        .unwrap()
        .grant
        .id;
    let second = engine
        .extend(extension(grant, "alice", 150))
        .await
        .unwrap()
        .grant
        .id;
    engine.approve(first, "carol", None).await.unwrap();
    engine.approve(first, "dave", None).await.unwrap();
    engine.approve(second, "carol", None).await.unwrap();
    let refused = engine.approve(second, "dave", None).await;
    assert!(
        matches!(&refused, Err(PolicyError::Conflict(m))
            if m.contains("latest allowed end") && m.contains(&at_min(240).to_string())),
        "{refused:?}"
    );
    let admitted = engine.admit("alice", "prod", None).await.unwrap();
    assert_eq!(
        admitted.grant.expires_at,
        at_min(210),
        "only the first one applied"
    );
    // The refused one is still pending and can be denied.
    let denied = engine
        .deny(second, "carol", "too long in total")
        .await
        .unwrap();
    assert_eq!(denied.grant.state, GrantState::Denied);
}

#[tokio::test]
async fn a_pending_extension_of_a_grant_revoked_meanwhile_cannot_be_applied() {
    let (engine, _clock) = setup();
    let grant = approved_write_grant(&engine).await;
    let ext = engine
        .extend(extension(grant, "alice", 30))
        .await
        .unwrap()
        .grant
        .id;
    engine.approve(ext, "carol", None).await.unwrap();
    engine
        .revoke(grant, &Actor::Admin("root".into()), Some("incident over"))
        .await
        .unwrap();
    let err = engine.approve(ext, "dave", None).await.unwrap_err();
    assert!(
        matches!(err, PolicyError::Conflict(ref m) if m.contains("revoked")),
        "{err:?}"
    );
    assert_eq!(engine.get(grant).await.unwrap().state, GrantState::Revoked);
}

#[tokio::test]
async fn break_glass_is_immediate_flagged_and_reviewed_by_someone_else() {
    let (engine, _clock) = setup();
    let mut glass = write_request(30);
    glass.break_glass = true;
    let outcome = engine.request(glass).await.unwrap();
    assert_eq!(
        actions(&outcome),
        [Action::Requested, Action::BreakGlass, Action::Activated]
    );
    let g = outcome.grant;
    assert!(g.break_glass);
    assert_eq!(g.state, GrantState::Approved);
    assert!(engine.admit("alice", "prod", None).await.is_ok());
    let mut too_long = write_request(120);
    too_long.break_glass = true;
    assert!(matches!(
        engine.request(too_long).await,
        Err(PolicyError::InvalidRequest(_))
    ));
    assert!(matches!(
        engine.review(g.id, "alice", None).await,
        Err(PolicyError::Forbidden(_))
    ));
    assert!(matches!(
        engine.review(g.id, "carol", None).await,
        Err(PolicyError::Forbidden(_))
    ));
    let reviewed = engine
        .review(g.id, "frank", Some("justified: INC-42 outage"))
        .await
        .unwrap();
    assert_eq!(actions(&reviewed), [Action::Reviewed]);
    assert_eq!(
        reviewed.grant.review.as_ref().map(|r| r.by.as_str()),
        Some("frank")
    );
    // Break-glass is only where the rule allows it.
    let mut read_glass = write_request(30);
    read_glass.role = "readonly".into();
    read_glass.break_glass = true;
    assert!(matches!(
        engine.request(read_glass).await,
        Err(PolicyError::Forbidden(_))
    ));
}

#[tokio::test]
async fn idempotency_keys_make_retries_safe() {
    let (engine, _clock) = setup();
    let mut first = write_request(30);
    first.idempotency_key = Some("req-1".into());
    let a = engine.request(first.clone()).await.unwrap();
    let b = engine.request(first.clone()).await.unwrap();
    assert_eq!(a.grant.id, b.grant.id);
    assert!(b.transitions.is_empty());
    let mut different = first.clone();
    different.target = "stage".into();
    different.role = "readonly".into();
    assert!(matches!(
        engine.request(different).await,
        Err(PolicyError::Conflict(_))
    ));
    // Keys are per requester: carol may use the same key for her own request.
    let mut carols = first;
    carols.identity = "carol".into();
    carols.target = "stage".into();
    carols.role = "readonly".into();
    let c = engine.request(carols).await.unwrap();
    assert_ne!(c.grant.id, a.grant.id);
    // Concurrent retries with one key still make one request.
    let mut racy = write_request(30);
    racy.idempotency_key = Some("race".into());
    let (x, y) = tokio::join!(engine.request(racy.clone()), engine.request(racy.clone()));
    assert_eq!(x.unwrap().grant.id, y.unwrap().grant.id);
}
