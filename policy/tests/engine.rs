//! The engine with a ManualClock: issuing, admission choices, expiry, fail-closed.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::{at_min, grant, t0};
use jitgate_policy::{
    Actor, Catalog, Engine, Grant, GrantFilter, GrantState, GrantStore, IssueRequest, ManualClock,
    PolicyError, SignedDuration, SqliteStore, Timestamp, MAX_GRANT_DURATION,
};

fn admin(name: &str) -> Actor {
    Actor::Admin(name.into())
}
use uuid::Uuid;

fn catalog() -> Catalog {
    let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    Catalog {
        identities: set(&["alice", "bob"]),
        targets: BTreeMap::from([
            ("prod".to_string(), set(&["readonly", "readwrite", "admin"])),
            ("stage".to_string(), set(&["readonly"])),
        ]),
    }
}

fn setup() -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    (Engine::new(store, clock.clone(), catalog()), clock)
}

fn req(identity: &str, target: &str, role: &str, mins: i64) -> IssueRequest {
    IssueRequest {
        identity: identity.into(),
        target: target.into(),
        role: role.into(),
        duration: SignedDuration::from_mins(mins),
        not_before: None,
        reason: "INC-7 investigate slow queries".into(),
        issued_by: "root".into(),
    }
}

fn invalid(err: PolicyError, needle: &str) {
    match err {
        PolicyError::InvalidRequest(ref m) if m.contains(needle) => {
            assert_eq!(err.sqlstate(), "22023");
        }
        other => panic!("expected InvalidRequest mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn issue_stores_an_approved_grant_with_absolute_expiry() {
    let (engine, _clock) = setup();
    let g = engine
        .issue(req("alice", "prod", "readonly", 30))
        .await
        .unwrap();
    assert_eq!(g.state, GrantState::Approved);
    assert_eq!(
        (g.not_before, g.created_at, g.expires_at),
        (t0(), t0(), at_min(30))
    );
    assert_eq!(g.reason, "INC-7 investigate slow queries");
    assert_eq!(g.id.get_version_num(), 7);
    assert_eq!(engine.get(g.id).await.unwrap(), g);

    let mut later = req("bob", "stage", "readonly", 60);
    later.not_before = Some(at_min(120));
    let g = engine.issue(later).await.unwrap();
    assert_eq!((g.not_before, g.expires_at), (at_min(120), at_min(180)));
}

#[tokio::test]
async fn issue_rejects_invalid_requests() {
    let (engine, _clock) = setup();
    let err = engine
        .issue(req("mallory", "prod", "readonly", 30))
        .await
        .unwrap_err();
    assert_eq!(err, PolicyError::UnknownIdentity("mallory".into()));
    let err = engine
        .issue(req("alice", "nope", "readonly", 30))
        .await
        .unwrap_err();
    assert_eq!(err, PolicyError::UnknownTarget("nope".into()));
    let err = engine
        .issue(req("alice", "stage", "admin", 30))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::UnknownRole {
            target: "stage".into(),
            role: "admin".into()
        }
    );

    invalid(
        engine
            .issue(req("alice", "prod", "readonly", 0))
            .await
            .unwrap_err(),
        "positive",
    );
    invalid(
        engine
            .issue(req("alice", "prod", "readonly", -5))
            .await
            .unwrap_err(),
        "positive",
    );
    let mut too_long = req("alice", "prod", "readonly", 0);
    too_long.duration = MAX_GRANT_DURATION + SignedDuration::from_secs(1);
    invalid(engine.issue(too_long).await.unwrap_err(), "maximum");
    let mut max = req("alice", "prod", "readonly", 0);
    max.duration = MAX_GRANT_DURATION;
    engine.issue(max).await.unwrap();

    let mut blank = req("alice", "prod", "readonly", 30);
    blank.reason = " \t\n".into();
    invalid(engine.issue(blank).await.unwrap_err(), "reason");
    let mut nobody = req("alice", "prod", "readonly", 30);
    nobody.issued_by = "".into();
    invalid(engine.issue(nobody).await.unwrap_err(), "issued_by");

    let mut far = req("alice", "prod", "readonly", 30);
    far.not_before = Some(
        t0().checked_add(SignedDuration::from_hours(30 * 24 + 1))
            .unwrap(),
    );
    invalid(engine.issue(far).await.unwrap_err(), "ahead");
    let mut edge = req("alice", "prod", "readonly", 30);
    edge.not_before = Some(
        t0().checked_add(SignedDuration::from_hours(30 * 24))
            .unwrap(),
    );
    engine.issue(edge).await.unwrap();

    let mut over = req("alice", "prod", "readonly", 30);
    over.not_before = Some(at_min(-30));
    invalid(engine.issue(over).await.unwrap_err(), "already be over");

    // Only the two valid grants were stored.
    assert_eq!(engine.list(&GrantFilter::default()).await.unwrap().len(), 2);
}

#[tokio::test]
async fn admit_picks_the_only_role_and_honours_a_requested_one() {
    let (engine, _clock) = setup();
    let g = engine
        .issue(req("alice", "prod", "readonly", 30))
        .await
        .unwrap();
    assert_eq!(engine.admit("alice", "prod", None).await.unwrap().grant, g);
    assert_eq!(
        engine
            .admit("alice", "prod", Some("readonly"))
            .await
            .unwrap()
            .grant,
        g
    );

    let err = engine
        .admit("alice", "prod", Some("readwrite"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::RoleNotGranted {
            identity: "alice".into(),
            target: "prod".into(),
            role: "readwrite".into(),
            granted: vec!["readonly".into()],
        }
    );
    assert_eq!(err.sqlstate(), "42501");
    assert!(err.to_string().contains("jitgate.role"), "{err}");
}

#[tokio::test]
async fn admit_requires_a_role_when_several_are_granted() {
    let (engine, _clock) = setup();
    let ro = engine
        .issue(req("alice", "prod", "readonly", 30))
        .await
        .unwrap();
    let rw = engine
        .issue(req("alice", "prod", "readwrite", 10))
        .await
        .unwrap();
    let err = engine.admit("alice", "prod", None).await.unwrap_err();
    assert_eq!(
        err,
        PolicyError::AmbiguousRole {
            identity: "alice".into(),
            target: "prod".into(),
            roles: vec!["readonly".into(), "readwrite".into()],
        }
    );
    assert!(err.is_denial());
    let msg = err.to_string();
    assert!(
        msg.contains("readonly, readwrite") && msg.contains("-c jitgate.role="),
        "{msg}"
    );
    assert!(msg.contains("PGOPTIONS"), "{msg}");

    assert_eq!(
        engine
            .admit("alice", "prod", Some("readwrite"))
            .await
            .unwrap()
            .grant,
        rw
    );
    assert_eq!(
        engine
            .admit("alice", "prod", Some("readonly"))
            .await
            .unwrap()
            .grant,
        ro
    );
}

#[tokio::test]
async fn admit_chooses_the_latest_expiry_and_expires_exactly_at_it() {
    let (engine, clock) = setup();
    let short = engine
        .issue(req("alice", "prod", "readonly", 10))
        .await
        .unwrap();
    let long = engine
        .issue(req("alice", "prod", "readonly", 45))
        .await
        .unwrap();
    let mid = engine
        .issue(req("alice", "prod", "readonly", 20))
        .await
        .unwrap();
    assert_eq!(
        engine.admit("alice", "prod", None).await.unwrap().grant.id,
        long.id
    );

    engine
        .revoke(long.id, &admin("root"), Some("not needed"))
        .await
        .unwrap();
    assert_eq!(
        engine.admit("alice", "prod", None).await.unwrap().grant.id,
        mid.id
    );

    clock.set(
        at_min(20)
            .checked_sub(SignedDuration::from_micros(1))
            .unwrap(),
    );
    assert_eq!(
        engine.admit("alice", "prod", None).await.unwrap().grant.id,
        mid.id
    );
    clock.set(at_min(20));
    let err = engine.admit("alice", "prod", None).await.unwrap_err();
    assert_eq!(
        err,
        PolicyError::NoActiveGrant {
            identity: "alice".into(),
            target: "prod".into()
        }
    );
    assert!(
        err.to_string()
            .contains("jitgate grant --identity alice --target prod"),
        "{err}"
    );
    assert_eq!(
        engine
            .get(short.id)
            .await
            .unwrap()
            .effective_state(engine.now()),
        GrantState::Expired
    );
}

#[tokio::test]
async fn admit_waits_for_not_before_and_ignores_other_pairs() {
    let (engine, clock) = setup();
    let mut scheduled = req("alice", "prod", "readonly", 30);
    scheduled.not_before = Some(at_min(60));
    let g = engine.issue(scheduled).await.unwrap();
    engine
        .issue(req("bob", "prod", "readonly", 30))
        .await
        .unwrap();
    engine
        .issue(req("alice", "stage", "readonly", 30))
        .await
        .unwrap();

    assert!(matches!(
        engine.admit("alice", "prod", None).await,
        Err(PolicyError::NoActiveGrant { .. })
    ));
    clock.advance(SignedDuration::from_mins(60));
    assert_eq!(engine.admit("alice", "prod", None).await.unwrap().grant, g);
}

#[tokio::test]
async fn admit_rejects_unknown_names_before_looking_at_grants() {
    let (engine, _clock) = setup();
    engine
        .issue(req("alice", "prod", "readonly", 30))
        .await
        .unwrap();
    assert_eq!(
        engine.admit("mallory", "prod", None).await.unwrap_err(),
        PolicyError::UnknownIdentity("mallory".into())
    );
    assert_eq!(
        engine.admit("alice", "prd", None).await.unwrap_err(),
        PolicyError::UnknownTarget("prd".into())
    );
    let err = engine
        .admit("alice", "prod", Some("superuser"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::UnknownRole {
            target: "prod".into(),
            role: "superuser".into()
        }
    );
    assert_eq!(err.sqlstate(), "42501");
}

#[tokio::test]
async fn revoke_and_get_through_the_engine() {
    let (engine, clock) = setup();
    let g = engine
        .issue(req("alice", "prod", "readonly", 30))
        .await
        .unwrap();
    clock.advance(SignedDuration::from_mins(5));
    let outcome = engine
        .revoke(g.id, &admin(" root "), Some("   "))
        .await
        .unwrap();
    assert_eq!(outcome.transitions.len(), 1);
    let r = outcome.grant;
    assert_eq!(
        (r.revoked_by.as_deref(), r.revoked_at, r.revoke_reason),
        (Some("root"), Some(at_min(5)), None)
    );
    // Revoking again is idempotent: the same record, no new step.
    let again = engine.revoke(g.id, &admin("root"), None).await.unwrap();
    assert!(again.transitions.is_empty());
    assert_eq!(again.grant.revoked_at, Some(at_min(5)));
    invalid(
        engine.revoke(g.id, &admin("  "), None).await.unwrap_err(),
        "revoked_by",
    );
    // An identity may give back its own grant, not someone else's.
    let other = engine
        .issue(req("alice", "prod", "readonly", 30))
        .await
        .unwrap();
    assert!(matches!(
        engine
            .revoke(other.id, &Actor::Identity("bob".into()), None)
            .await,
        Err(PolicyError::Forbidden(_))
    ));
    engine
        .revoke(other.id, &Actor::Identity("alice".into()), None)
        .await
        .unwrap();
    let missing = Uuid::now_v7();
    assert_eq!(
        engine.get(missing).await.unwrap_err(),
        PolicyError::NotFound(missing)
    );
    assert_eq!(engine.get(missing).await.unwrap_err().sqlstate(), "42704");

    let e = engine
        .issue(req("alice", "prod", "readonly", 10))
        .await
        .unwrap();
    clock.advance(SignedDuration::from_mins(10));
    assert_eq!(
        engine.revoke(e.id, &admin("root"), None).await.unwrap_err(),
        PolicyError::NotRevocable {
            id: e.id,
            state: GrantState::Expired
        }
    );
}

#[tokio::test]
async fn list_state_means_effective_state_now() {
    let (engine, clock) = setup();
    let short = engine
        .issue(req("alice", "prod", "readonly", 10))
        .await
        .unwrap();
    clock.advance(SignedDuration::from_mins(1));
    let long = engine
        .issue(req("alice", "prod", "readonly", 60))
        .await
        .unwrap();
    clock.advance(SignedDuration::from_mins(1));
    let gone = engine
        .issue(req("bob", "prod", "readonly", 60))
        .await
        .unwrap();
    engine.revoke(gone.id, &admin("root"), None).await.unwrap();
    clock.set(at_min(30));

    let by_state = |state| {
        let engine = &engine;
        async move {
            let f = GrantFilter {
                state: Some(state),
                ..Default::default()
            };
            engine
                .list(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|g| g.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(by_state(GrantState::Approved).await, vec![long.id]);
    assert_eq!(by_state(GrantState::Expired).await, vec![short.id]);
    assert_eq!(by_state(GrantState::Revoked).await, vec![gone.id]);
    let all = engine.list(&GrantFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|g| g.id).collect::<Vec<_>>(),
        vec![gone.id, long.id, short.id]
    );
}

#[tokio::test]
async fn engine_times_are_whole_microseconds_so_grants_read_back_equal() {
    let start: Timestamp = "2030-01-01T00:00:00.123456789Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let engine = Engine::new(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        clock,
        catalog(),
    );
    let mut r = req("alice", "prod", "readonly", 0);
    r.duration = SignedDuration::new(60, 999);
    let g = engine.issue(r).await.unwrap();
    assert_eq!(
        g.created_at,
        "2030-01-01T00:00:00.123456Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(
        g.expires_at,
        "2030-01-01T00:01:00.123456Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(engine.get(g.id).await.unwrap(), g);
}

/// A store whose every call fails, as a broken disk or unreachable database would.
#[derive(Debug)]
struct BrokenStore;

#[async_trait::async_trait]
impl GrantStore for BrokenStore {
    async fn insert(&self, _: &Grant) -> Result<(), PolicyError> {
        Err(PolicyError::Store("disk I/O error".into()))
    }
    async fn get(&self, _: Uuid) -> Result<Option<Grant>, PolicyError> {
        Err(PolicyError::Store("disk I/O error".into()))
    }
    async fn list(&self, _: &GrantFilter) -> Result<Vec<Grant>, PolicyError> {
        Err(PolicyError::Store("disk I/O error".into()))
    }
    async fn update(&self, _: &[Grant]) -> Result<Vec<Grant>, PolicyError> {
        Err(PolicyError::Store("disk I/O error".into()))
    }
    async fn ping(&self) -> Result<(), PolicyError> {
        Err(PolicyError::Store("disk I/O error".into()))
    }
    async fn active_for(&self, _: &str, _: &str, _: Timestamp) -> Result<Vec<Grant>, PolicyError> {
        Err(PolicyError::Store("disk I/O error".into()))
    }
}

/// A store that answers `active_for` with whatever it was given, ignoring the question.
#[derive(Debug)]
struct CarelessStore(Vec<Grant>);

#[async_trait::async_trait]
impl GrantStore for CarelessStore {
    async fn insert(&self, _: &Grant) -> Result<(), PolicyError> {
        Ok(())
    }
    async fn get(&self, _: Uuid) -> Result<Option<Grant>, PolicyError> {
        Ok(None)
    }
    async fn list(&self, _: &GrantFilter) -> Result<Vec<Grant>, PolicyError> {
        Ok(self.0.clone())
    }
    async fn update(&self, grants: &[Grant]) -> Result<Vec<Grant>, PolicyError> {
        Err(PolicyError::NotFound(
            grants.first().map_or_else(Uuid::nil, |g| g.id),
        ))
    }
    async fn ping(&self) -> Result<(), PolicyError> {
        Ok(())
    }
    async fn active_for(&self, _: &str, _: &str, _: Timestamp) -> Result<Vec<Grant>, PolicyError> {
        Ok(self.0.clone())
    }
}

#[tokio::test]
async fn admission_fails_closed_when_the_store_fails() {
    let engine = Engine::new(
        Arc::new(BrokenStore),
        Arc::new(ManualClock::new(t0())),
        catalog(),
    );
    let err = engine.admit("alice", "prod", None).await.unwrap_err();
    assert!(matches!(err, PolicyError::Store(_)), "{err:?}");
    assert_eq!(err.sqlstate(), "58000");
    assert!(!err.is_denial());
    assert!(
        !err.client_message().contains("disk I/O"),
        "store detail stays in the log"
    );
    assert!(matches!(
        engine.issue(req("alice", "prod", "readonly", 5)).await,
        Err(PolicyError::Store(_))
    ));
}

#[tokio::test]
async fn admission_rechecks_what_the_store_returns() {
    let mut revoked = grant("alice", "prod", "readonly", at_min(0), at_min(30));
    revoked.state = GrantState::Revoked;
    let careless = CarelessStore(vec![
        grant("alice", "prod", "readonly", at_min(10), at_min(30)), // not started
        grant("alice", "prod", "readonly", at_min(-30), at_min(0)), // over
        revoked,
        grant("bob", "prod", "readonly", at_min(0), at_min(30)), // someone else
        grant("alice", "stage", "readonly", at_min(0), at_min(30)), // elsewhere
        grant("alice", "prod", "dropped-role", at_min(0), at_min(30)), // not configured
    ]);
    let engine = Engine::new(
        Arc::new(careless),
        Arc::new(ManualClock::new(t0())),
        catalog(),
    );
    assert!(matches!(
        engine.admit("alice", "prod", None).await,
        Err(PolicyError::NoActiveGrant { .. })
    ));
}
