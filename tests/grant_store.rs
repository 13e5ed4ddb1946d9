//! The grant store contract ([`GrantStore`]), written once and run against both stores:
//! [`SqliteStore`] on a temp file and [`PostgresStore`] on a database of its own in the
//! test binary's PostgreSQL cluster. Then what only the shared store does: migrations
//! under concurrent start-up, change notifications from other replicas (and their
//! latency), reconnecting the listener, and failing fast when the store is unreachable.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jitgate_policy::store::postgres::{PostgresStoreOptions, SCHEMA_VERSION};
use jitgate_policy::{
    Decision, Grant, GrantFilter, GrantState, GrantStore, PolicyError, PostgresStore,
    SignedDuration, SqliteStore, Timestamp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// Password of the per-test PostgreSQL roles; must never show up in an error message.
const PASSWORD: &str = "gs-Secret-pw-7f3a";

// ---------------------------------------------------------------------------------------
// Fixtures

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A store under test, plus what it lives on (so a second instance can open the same
/// data, as another process or replica would).
struct Fixture {
    store: Arc<dyn GrantStore>,
    backend: Backend,
    /// SQLite: the temp dir holding the file.
    dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the test's own database.
    db: Option<PgDb>,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let store = SqliteStore::open(&dir.path().join("grants.db")).unwrap();
                Fixture {
                    store: Arc::new(store),
                    backend,
                    dir: Some(dir),
                    db: None,
                }
            }
            Backend::Postgres => {
                let db = pg_database().await;
                let store = PostgresStore::connect(&db.url, options()).await.unwrap();
                Fixture {
                    store: Arc::new(store),
                    backend,
                    dir: None,
                    db: Some(db),
                }
            }
        }
    }

    /// Another store instance on the same data.
    async fn reopen(&self) -> Arc<dyn GrantStore> {
        match self.backend {
            Backend::Sqlite => {
                let path = self.dir.as_ref().unwrap().path().join("grants.db");
                Arc::new(SqliteStore::open(&path).unwrap())
            }
            Backend::Postgres => {
                let url = &self.db.as_ref().unwrap().url;
                Arc::new(PostgresStore::connect(url, options()).await.unwrap())
            }
        }
    }
}

/// A fresh database owned by a fresh password (SCRAM) role.
#[derive(Clone)]
struct PgDb {
    name: String,
    /// As its owner, with a password (SCRAM): how a replica would connect.
    url: String,
    /// As the superuser, trusted from loopback: no SCRAM exchange, so connecting stays
    /// fast on a loaded machine, for the tests with tight timeouts.
    trusted_url: String,
}

async fn pg_database() -> PgDb {
    tokio::task::spawn_blocking(|| {
        let cluster = common::cluster();
        let role = common::unique_name("gs_role");
        let name = common::unique_name("gs_db");
        cluster.create_role(&role, PASSWORD).unwrap();
        cluster.create_database(&name, &role).unwrap();
        PgDb {
            url: cluster.url(&role, PASSWORD, &name),
            trusted_url: cluster.admin_url(&name),
            name,
        }
    })
    .await
    .unwrap()
}

/// A superuser client on `db`, for looking behind the store's back.
async fn admin(db: &str) -> tokio_postgres::Client {
    let url = tokio::task::spawn_blocking({
        let db = db.to_owned();
        move || common::cluster().admin_url(&db)
    })
    .await
    .unwrap();
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Store options for tests: quick reconnection, and timeouts generous enough for SCRAM
/// logins by a debug build on a loaded machine (these tests are about correctness; the
/// timeout tests use [`impatient`]).
fn options() -> PostgresStoreOptions {
    PostgresStoreOptions {
        connect_timeout: Duration::from_secs(30),
        call_timeout: Duration::from_secs(30),
        reconnect_backoff_max: Duration::from_millis(200),
        ..PostgresStoreOptions::default()
    }
}

// ---------------------------------------------------------------------------------------
// Grant builders

fn t0() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

fn at_min(mins: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_mins(mins)).unwrap()
}

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// An approved grant of `identity` on `target` as `role` for `[nb, exp)`, every optional
/// field empty.
fn grant(identity: &str, target: &str, role: &str, nb: Timestamp, exp: Timestamp) -> Grant {
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

fn decision(by: &str, at: &str, comment: Option<&str>) -> Decision {
    Decision {
        by: by.into(),
        at: ts(at),
        comment: comment.map(Into::into),
    }
}

/// Every field set, with odd-but-valid values: microsecond instants on both sides of
/// 1970 and 2000 (the Unix and PostgreSQL epochs), JSON decisions with nanoseconds,
/// quotes and non-ASCII text, a version that is not 0.
fn full_grant() -> Grant {
    Grant {
        id: Uuid::now_v7(),
        identity: "alice@example.com".into(),
        target: "prod-db".into(),
        role: "readwrite".into(),
        not_before: ts("1999-12-31T23:59:59.999999Z"),
        expires_at: ts("2030-01-01T00:30:00.000001Z"),
        reason: "INC-42: fix \"broken\" index; it's ünïcødé ✓\nsecond line".into(),
        issued_by: "bob".into(),
        created_at: ts("1969-12-31T23:59:59.999999Z"),
        state: GrantState::Revoked,
        approvals: vec![
            // Decisions are JSON: full nanosecond precision survives.
            decision(
                "carol",
                "2029-12-31T23:59:00.123456789Z",
                Some("ok, ticket checked"),
            ),
            decision("dave", "2029-12-31T23:59:30Z", None),
        ],
        revoked_by: Some("erin".into()),
        revoked_at: Some(ts("2030-01-01T00:10:00.5Z")),
        revoke_reason: Some("done early".into()),
        rule: Some("prod-write".into()),
        ticket: Some("INC-42".into()),
        duration: SignedDuration::from_micros(30 * 60 * 1_000_000 + 1),
        pending_until: Some(ts("0001-01-01T00:00:00.000001Z")),
        denial: Some(decision(
            "frank",
            "2030-01-01T00:05:00Z",
            Some("not during the freeze"),
        )),
        cancellation: Some(decision("alice@example.com", "2030-01-01T00:06:00Z", None)),
        break_glass: true,
        review: Some(decision("grace", "2030-01-02T00:00:00Z", Some("fine"))),
        extends: Some(Uuid::now_v7()),
        notified: vec!["activated".into(), "expiring_soon".into()],
        idempotency_key: Some("retry-key-1".into()),
        version: 7,
    }
}

fn ids(grants: &[Grant]) -> Vec<Uuid> {
    grants.iter().map(|g| g.id).collect()
}

fn one_ns_before(t: Timestamp) -> Timestamp {
    t.checked_sub(SignedDuration::from_nanos(1)).unwrap()
}

// ---------------------------------------------------------------------------------------
// The contract, once, for every store

/// Generates `sqlite::<name>` and `postgres::<name>` for each contract function.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Fixture::new(super::Backend::Sqlite).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Fixture::new(super::Backend::Postgres).await).await;
                }
            )*
        }
    };
}

contract!(
    every_field_round_trips_and_another_instance_reads_it,
    insert_refuses_sub_microsecond_times,
    insert_refuses_duplicate_ids_and_idempotency_keys,
    list_filters_combine_and_return_newest_first,
    active_for_respects_the_window_and_excludes_extensions,
    update_is_a_compare_and_swap_on_version,
    multi_record_update_is_all_or_nothing,
    concurrent_updates_each_land_exactly_once,
    update_keeps_issued_by_and_created_at,
    ping_answers,
);

async fn every_field_round_trips_and_another_instance_reads_it(f: Fixture) {
    let full = full_grant();
    let bare = grant("bob", "stage", "ro", at_min(0), at_min(5));
    f.store.insert(&full).await.unwrap();
    f.store.insert(&bare).await.unwrap();
    assert_eq!(f.store.get(full.id).await.unwrap().as_ref(), Some(&full));
    assert_eq!(f.store.get(bare.id).await.unwrap().as_ref(), Some(&bare));
    assert_eq!(f.store.get(Uuid::now_v7()).await.unwrap(), None);

    // Another process (replica) sees exactly what was written.
    let other = f.reopen().await;
    assert_eq!(other.get(full.id).await.unwrap(), Some(full.clone()));
    // Newest first: bare was created in 2030, full in 1969.
    assert_eq!(
        other.list(&GrantFilter::default()).await.unwrap(),
        vec![bare, full]
    );
}

async fn insert_refuses_sub_microsecond_times(f: Fixture) {
    let mut fine = grant("a", "t", "r", t0(), at_min(5));
    fine.expires_at = ts("2030-01-01T00:05:00.000000001Z");
    let err = f.store.insert(&fine).await.unwrap_err();
    assert!(
        matches!(err, PolicyError::InvalidRequest(ref m) if m.contains("expires_at")),
        "{err}"
    );
    let mut fine_optional = grant("a", "t", "r", t0(), at_min(5));
    fine_optional.pending_until = Some(ts("2030-01-01T00:01:00.0000005Z"));
    let err = f.store.insert(&fine_optional).await.unwrap_err();
    assert!(
        matches!(err, PolicyError::InvalidRequest(ref m) if m.contains("pending_until")),
        "{err}"
    );
    assert_eq!(f.store.get(fine.id).await.unwrap(), None);
    assert_eq!(f.store.get(fine_optional.id).await.unwrap(), None);
    assert!(f
        .store
        .list(&GrantFilter::default())
        .await
        .unwrap()
        .is_empty());
}

async fn insert_refuses_duplicate_ids_and_idempotency_keys(f: Fixture) {
    let mut g = grant("a", "t", "r", t0(), at_min(5));
    g.idempotency_key = Some("key-1".into());
    f.store.insert(&g).await.unwrap();

    // Same id.
    let mut same_id = grant("b", "t", "r", t0(), at_min(5));
    same_id.id = g.id;
    let err = f.store.insert(&same_id).await.unwrap_err();
    assert!(matches!(err, PolicyError::Conflict(_)), "{err}");
    assert_eq!(err.sqlstate(), "55000");

    // Same (issued_by, idempotency_key), new id.
    let mut same_key = grant("a", "t", "r", t0(), at_min(5));
    same_key.idempotency_key = g.idempotency_key.clone();
    let err = f.store.insert(&same_key).await.unwrap_err();
    assert!(matches!(err, PolicyError::Conflict(_)), "{err}");
    assert_eq!(f.store.get(same_key.id).await.unwrap(), None);

    // The key is unique per requester only, and records without a key never clash.
    let mut other_requester = same_key.clone();
    other_requester.id = Uuid::now_v7();
    other_requester.issued_by = "someone-else".into();
    f.store.insert(&other_requester).await.unwrap();
    for _ in 0..2 {
        f.store
            .insert(&grant("a", "t", "r", t0(), at_min(5)))
            .await
            .unwrap();
    }
    assert_eq!(f.store.get(g.id).await.unwrap(), Some(g));
    assert_eq!(
        f.store.list(&GrantFilter::default()).await.unwrap().len(),
        4
    );
}

async fn list_filters_combine_and_return_newest_first(f: Fixture) {
    let mut a1 = grant("alice", "prod", "ro", at_min(0), at_min(30));
    a1.created_at = at_min(-3);
    let mut a2 = grant("alice", "stage", "rw", at_min(10), at_min(40));
    a2.created_at = at_min(-1);
    let mut b1 = grant("bob", "prod", "ro", at_min(0), at_min(60));
    b1.created_at = at_min(-2);
    b1.issued_by = "carol".into();
    b1.idempotency_key = Some("k1".into());
    let mut b2 = grant("bob", "prod", "rw", at_min(0), at_min(60));
    b2.created_at = at_min(-4);
    b2.state = GrantState::Pending;
    b2.issued_by = "carol".into();
    b2.idempotency_key = Some("k2".into());
    // An approved extension request inside its window: never "active".
    let mut ext = grant("bob", "prod", "ro", at_min(0), at_min(90));
    ext.created_at = at_min(-5);
    ext.extends = Some(b1.id);
    // Two records created at the same instant: the larger id comes first.
    let (first, second) = {
        let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
        (x.min(y), x.max(y))
    };
    let mut t1 = grant("carl", "dev", "ro", at_min(0), at_min(5));
    t1.id = first;
    t1.created_at = at_min(-6);
    t1.state = GrantState::Denied;
    let mut t2 = t1.clone();
    t2.id = second;
    for g in [&t1, &ext, &a1, &b2, &a2, &t2, &b1] {
        f.store.insert(g).await.unwrap();
    }
    let list = |filter: GrantFilter| {
        let store = Arc::clone(&f.store);
        async move { ids(&store.list(&filter).await.unwrap()) }
    };
    let all = GrantFilter::default;
    assert_eq!(
        list(all()).await,
        vec![a2.id, b1.id, a1.id, b2.id, ext.id, t2.id, t1.id]
    );
    let by_identity = GrantFilter {
        identity: Some("alice".into()),
        ..all()
    };
    assert_eq!(list(by_identity).await, vec![a2.id, a1.id]);
    let by_target = GrantFilter {
        target: Some("prod".into()),
        ..all()
    };
    assert_eq!(list(by_target).await, vec![b1.id, a1.id, b2.id, ext.id]);
    let pending = GrantFilter {
        state: Some(GrantState::Pending),
        ..all()
    };
    assert_eq!(list(pending).await, vec![b2.id]);
    let denied = GrantFilter {
        state: Some(GrantState::Denied),
        ..all()
    };
    assert_eq!(list(denied).await, vec![t2.id, t1.id]);
    // active_at: approved, not an extension, inside the window (a2 starts at 10, a1
    // ends at 30).
    let active_5 = GrantFilter {
        active_at: Some(at_min(5)),
        ..all()
    };
    assert_eq!(list(active_5).await, vec![b1.id, a1.id]);
    let active_30 = GrantFilter {
        active_at: Some(at_min(30)),
        ..all()
    };
    assert_eq!(list(active_30).await, vec![a2.id, b1.id]);
    // Sub-microsecond query instants answer like the microsecond below them.
    let just_before_30 = GrantFilter {
        active_at: Some(one_ns_before(at_min(30))),
        ..all()
    };
    assert_eq!(list(just_before_30).await, vec![a2.id, b1.id, a1.id]);
    let by_requester = GrantFilter {
        issued_by: Some("carol".into()),
        ..all()
    };
    assert_eq!(list(by_requester).await, vec![b1.id, b2.id]);
    let extensions = GrantFilter {
        extends: Some(b1.id),
        ..all()
    };
    assert_eq!(list(extensions).await, vec![ext.id]);
    let by_key = GrantFilter {
        idempotency_key: Some("k1".into()),
        ..all()
    };
    assert_eq!(list(by_key).await, vec![b1.id]);
    let requester_and_key = GrantFilter {
        issued_by: Some("carol".into()),
        idempotency_key: Some("k2".into()),
        ..all()
    };
    assert_eq!(list(requester_and_key).await, vec![b2.id]);
    let other_requesters_key = GrantFilter {
        issued_by: Some("admin".into()),
        idempotency_key: Some("k1".into()),
        ..all()
    };
    assert!(list(other_requesters_key).await.is_empty());
    let combined = GrantFilter {
        identity: Some("bob".into()),
        target: Some("prod".into()),
        state: Some(GrantState::Approved),
        active_at: Some(at_min(59)),
        ..all()
    };
    assert_eq!(list(combined).await, vec![b1.id]);
    let nobody = GrantFilter {
        identity: Some("nobody".into()),
        ..all()
    };
    assert!(list(nobody).await.is_empty());
}

async fn active_for_respects_the_window_and_excludes_extensions(f: Fixture) {
    let short = grant("alice", "prod", "ro", at_min(0), at_min(10));
    let long = grant("alice", "prod", "rw", at_min(0), at_min(20));
    // Same expiry as `long`, created later: comes first.
    let mut long2 = grant("alice", "prod", "ro", at_min(0), at_min(20));
    long2.created_at = at_min(1);
    let other_target = grant("alice", "stage", "ro", at_min(0), at_min(20));
    let other_identity = grant("bob", "prod", "ro", at_min(0), at_min(20));
    let mut revoked = grant("alice", "prod", "ro", at_min(0), at_min(50));
    revoked.state = GrantState::Revoked;
    let mut pending = grant("alice", "prod", "ro", at_min(0), at_min(50));
    pending.state = GrantState::Pending;
    let mut expired = grant("alice", "prod", "ro", at_min(0), at_min(50));
    expired.state = GrantState::Expired;
    let mut extension = grant("alice", "prod", "ro", at_min(0), at_min(50));
    extension.extends = Some(long.id);
    for g in [
        &short,
        &long,
        &long2,
        &other_target,
        &other_identity,
        &revoked,
        &pending,
        &expired,
        &extension,
    ] {
        f.store.insert(g).await.unwrap();
    }
    let active = |t: Timestamp| {
        let store = Arc::clone(&f.store);
        async move { ids(&store.active_for("alice", "prod", t).await.unwrap()) }
    };
    assert!(active(one_ns_before(at_min(0))).await.is_empty());
    assert_eq!(active(at_min(0)).await, vec![long2.id, long.id, short.id]);
    // Sub-microsecond query instants give the same answer as exact ones.
    assert_eq!(
        active(one_ns_before(at_min(10))).await,
        vec![long2.id, long.id, short.id]
    );
    assert_eq!(active(at_min(10)).await, vec![long2.id, long.id]);
    assert!(active(at_min(20)).await.is_empty());
    assert!(
        active(at_min(45)).await.is_empty(),
        "revoked/pending/expired/extension"
    );
    assert!(f
        .store
        .active_for("nobody", "prod", at_min(5))
        .await
        .unwrap()
        .is_empty());
}

async fn update_is_a_compare_and_swap_on_version(f: Fixture) {
    let g = grant("alice", "prod", "ro", at_min(0), at_min(30));
    f.store.insert(&g).await.unwrap();

    let mut revoke = g.clone();
    revoke.state = GrantState::Revoked;
    revoke.revoked_by = Some("bob".into());
    revoke.revoked_at = Some(at_min(5));
    revoke.revoke_reason = Some("done".into());
    revoke.notified.push("revoked".into());
    let written = f.store.update(std::slice::from_ref(&revoke)).await.unwrap();
    let expected = Grant {
        version: 1,
        ..revoke.clone()
    };
    assert_eq!(written, vec![expected.clone()]);
    assert_eq!(f.store.get(g.id).await.unwrap(), Some(expected.clone()));
    assert!(f
        .store
        .active_for("alice", "prod", at_min(6))
        .await
        .unwrap()
        .is_empty());

    // A writer that read version 0 loses, and nothing changes.
    let mut stale = g.clone();
    stale.expires_at = at_min(90);
    let err = f.store.update(&[stale]).await.unwrap_err();
    assert_eq!(err, PolicyError::StaleUpdate(g.id));
    assert_eq!(err.sqlstate(), "40001");
    assert_eq!(f.store.get(g.id).await.unwrap(), Some(expected.clone()));

    // The next change starts from the new version.
    let mut again = expected.clone();
    again.review = Some(decision("grace", "2030-01-02T00:00:00Z", None));
    let written = f.store.update(&[again.clone()]).await.unwrap();
    assert_eq!(written[0].version, 2);
    assert_eq!(f.store.get(g.id).await.unwrap(), Some(written[0].clone()));

    // Sub-microsecond values are refused on update too, and change nothing.
    let mut fine = written[0].clone();
    fine.revoked_at = Some(ts("2030-01-01T00:05:00.000000001Z"));
    let err = f.store.update(&[fine]).await.unwrap_err();
    assert!(matches!(err, PolicyError::InvalidRequest(_)), "{err}");
    assert_eq!(f.store.get(g.id).await.unwrap(), Some(written[0].clone()));

    let missing = grant("nobody", "prod", "ro", at_min(0), at_min(30));
    assert_eq!(
        f.store
            .update(std::slice::from_ref(&missing))
            .await
            .unwrap_err(),
        PolicyError::NotFound(missing.id)
    );
    assert_eq!(f.store.update(&[]).await.unwrap(), Vec::<Grant>::new());
}

async fn multi_record_update_is_all_or_nothing(f: Fixture) {
    // `first` sorts before `second` by id, so a store that applies records in id order
    // has written `first` by the time it meets `second`.
    let mut first = grant("alice", "prod", "ro", at_min(0), at_min(30));
    let mut second = grant("alice", "prod", "ro", at_min(0), at_min(30));
    if first.id > second.id {
        std::mem::swap(&mut first.id, &mut second.id);
    }
    f.store.insert(&first).await.unwrap();
    f.store.insert(&second).await.unwrap();

    let mut first_next = first.clone();
    first_next.expires_at = at_min(60);
    let mut second_stale = second.clone();
    second_stale.version = 5;
    let err = f
        .store
        .update(&[first_next.clone(), second_stale])
        .await
        .unwrap_err();
    assert_eq!(err, PolicyError::StaleUpdate(second.id));
    assert_eq!(f.store.get(first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(f.store.get(second.id).await.unwrap(), Some(second.clone()));

    let missing = grant("alice", "prod", "ro", at_min(0), at_min(30));
    let err = f
        .store
        .update(&[first_next.clone(), missing.clone()])
        .await
        .unwrap_err();
    assert_eq!(err, PolicyError::NotFound(missing.id));
    assert_eq!(f.store.get(first.id).await.unwrap(), Some(first.clone()));

    // Both current: both written, results in the order given.
    let mut second_next = second.clone();
    second_next.state = GrantState::Revoked;
    let written = f
        .store
        .update(&[second_next.clone(), first_next.clone()])
        .await
        .unwrap();
    assert_eq!(ids(&written), vec![second.id, first.id]);
    assert!(written.iter().all(|g| g.version == 1));
    assert_eq!(
        f.store.get(first.id).await.unwrap().as_ref(),
        Some(&written[1])
    );
    assert_eq!(
        f.store.get(second.id).await.unwrap().as_ref(),
        Some(&written[0])
    );
}

async fn concurrent_updates_each_land_exactly_once(f: Fixture) {
    const TASKS: usize = 8;
    const ROUNDS: usize = 10;
    let g = grant("alice", "prod", "ro", at_min(0), at_min(30));
    f.store.insert(&g).await.unwrap();
    // Two instances stand for two processes/replicas: the compare-and-swap must hold
    // across connections, not only inside one.
    let stores = [Arc::clone(&f.store), f.reopen().await];
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = Arc::clone(&stores[task % 2]);
            tokio::spawn(async move {
                let mut retries = 0u32;
                for round in 0..ROUNDS {
                    loop {
                        let mut current = store.get(g.id).await.unwrap().unwrap();
                        current.notified.push(format!("t{task}-r{round}"));
                        match store.update(&[current]).await {
                            Ok(_) => break,
                            Err(PolicyError::StaleUpdate(id)) if id == g.id => retries += 1,
                            Err(other) => panic!("task {task}: unexpected error {other}"),
                        }
                    }
                }
                retries
            })
        })
        .collect();
    let mut retries = 0;
    for task in tasks {
        retries += task.await.unwrap();
    }
    let stored = f.store.get(g.id).await.unwrap().unwrap();
    assert_eq!(stored.version, (TASKS * ROUNDS) as u64);
    let mut markers = stored.notified.clone();
    markers.sort();
    let mut expected: Vec<String> = (0..TASKS)
        .flat_map(|t| (0..ROUNDS).map(move |r| format!("t{t}-r{r}")))
        .collect();
    expected.sort();
    assert_eq!(markers, expected, "every increment exactly once");
    println!(
        "{:?}: {} updates from {TASKS} tasks, {retries} stale retries",
        f.backend,
        TASKS * ROUNDS
    );
}

async fn ping_answers(f: Fixture) {
    f.store.ping().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// PostgreSQL only: schema, notifications, failures

/// The next message on `rx` within `limit`.
async fn recv_within(rx: &mut broadcast::Receiver<Uuid>, limit: Duration) -> Uuid {
    match tokio::time::timeout(limit, rx.recv()).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => panic!("changes channel: {e}"),
        Err(_) => panic!("no change notification within {limit:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_schema_is_versioned_and_newer_schemas_are_refused() {
    let db = pg_database().await;
    let store = PostgresStore::connect(&db.url, options()).await.unwrap();
    drop(store);
    let admin = admin(&db.name).await;
    let version: i32 = admin
        .query_one("SELECT version FROM jitgate_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    // The table has the contract's indexes.
    let indexes: Vec<String> = admin
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'jitgate_grants' \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        indexes,
        [
            "jitgate_grants_created",
            "jitgate_grants_extends",
            "jitgate_grants_idempotency",
            "jitgate_grants_identity_target_expires",
            "jitgate_grants_pkey",
            "jitgate_grants_state"
        ]
    );
    // Connecting again to a current schema changes nothing.
    PostgresStore::connect(&db.url, options()).await.unwrap();

    admin
        .execute(
            "UPDATE jitgate_schema SET version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    let err = PostgresStore::connect(&db.url, options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::Store(ref m) if m.contains("schema version")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_starting_together_migrate_once() {
    let db = pg_database().await;
    let connects: Vec<_> = (0..6)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url, options()).await })
        })
        .collect();
    let mut stores = Vec::new();
    for c in connects {
        stores.push(c.await.unwrap().unwrap());
    }
    let g = grant("alice", "prod", "ro", at_min(0), at_min(30));
    stores[0].insert(&g).await.unwrap();
    for store in &stores {
        assert_eq!(store.get(g.id).await.unwrap(), Some(g.clone()));
    }
}

/// `issued_by` and `created_at` never change: an update that tries is refused.
async fn update_keeps_issued_by_and_created_at(f: Fixture) {
    let g = grant("alice", "prod", "ro", at_min(0), at_min(30));
    f.store.insert(&g).await.unwrap();
    for change in [
        Grant {
            issued_by: "mallory".into(),
            ..g.clone()
        },
        Grant {
            created_at: at_min(-10),
            ..g.clone()
        },
    ] {
        let err = f.store.update(&[change]).await.unwrap_err();
        assert!(matches!(err, PolicyError::InvalidRequest(_)), "{err}");
    }
    assert_eq!(f.store.get(g.id).await.unwrap(), Some(g));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_changes_arrive_from_other_replicas_only_on_commit() {
    let db = pg_database().await;
    let listener = PostgresStore::connect(&db.url, options()).await.unwrap();
    let writer = PostgresStore::connect(&db.url, options()).await.unwrap();
    let mut rx = listener.changes().unwrap();
    assert!(SqliteStore::open_in_memory().unwrap().changes().is_none());

    // Warm up: the writer's first write may have to open a pooled connection.
    let warm_up = grant("warm-up", "prod", "ro", at_min(0), at_min(30));
    writer.insert(&warm_up).await.unwrap();
    assert_eq!(
        recv_within(&mut rx, Duration::from_secs(2)).await,
        warm_up.id
    );

    let mut latencies = Vec::new();
    let mut grants = Vec::new();
    for i in 0..10 {
        let g = grant(&format!("user{i}"), "prod", "ro", at_min(0), at_min(30));
        let started = Instant::now();
        writer.insert(&g).await.unwrap();
        assert_eq!(recv_within(&mut rx, Duration::from_secs(2)).await, g.id);
        latencies.push(started.elapsed());
        grants.push(g);
    }
    for g in &grants {
        let mut next = g.clone();
        next.state = GrantState::Revoked;
        let started = Instant::now();
        writer.update(&[next]).await.unwrap();
        assert_eq!(recv_within(&mut rx, Duration::from_secs(2)).await, g.id);
        latencies.push(started.elapsed());
    }
    // A two-record update announces both ids.
    let pair: Vec<Grant> = grants[..2]
        .iter()
        .map(|g| Grant {
            version: 1,
            ..g.clone()
        })
        .collect();
    writer.update(&pair).await.unwrap();
    let mut got = vec![
        recv_within(&mut rx, Duration::from_secs(2)).await,
        recv_within(&mut rx, Duration::from_secs(2)).await,
    ];
    got.sort();
    let mut want = ids(&pair);
    want.sort();
    assert_eq!(got, want);

    // Nothing is announced for writes that did not commit: a duplicate insert, a stale
    // update, a multi-record update rolled back by its second record.
    assert!(writer.insert(&grants[3]).await.is_err());
    assert!(writer.update(&[grants[4].clone()]).await.is_err());
    let rolled_back = [
        Grant {
            version: 1,
            ..grants[5].clone()
        },
        grants[6].clone(),
    ];
    assert!(writer.update(&rolled_back).await.is_err());
    let marker = grant("marker", "prod", "ro", at_min(0), at_min(30));
    writer.insert(&marker).await.unwrap();
    assert_eq!(
        recv_within(&mut rx, Duration::from_secs(2)).await,
        marker.id,
        "the first notification after the failed writes is the marker's"
    );

    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    println!(
        "NOTIFY latency (write call start → id received on the other replica), {} writes: \
         min {:?}, median {median:?}, max {max:?}",
        latencies.len(),
        latencies[0]
    );
    assert!(max < Duration::from_secs(2), "max latency {max:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_listener_reconnects_after_its_connection_is_killed() {
    let db = pg_database().await;
    let listener = PostgresStore::connect(&db.url, options()).await.unwrap();
    // The writer's connections get their own application_name, so only the listener's
    // listening connection ("jitgate-listen") is killed.
    let writer_url = format!("{}?application_name=writer", db.url);
    let writer = PostgresStore::connect(&writer_url, options())
        .await
        .unwrap();
    let mut rx = listener.changes().unwrap();
    let admin = admin(&db.name).await;
    let kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                WHERE datname = $1 AND application_name = 'jitgate-listen'";

    for round in 0..2 {
        let killed = admin.query(kill, &[&db.name]).await.unwrap().len();
        assert_eq!(killed, 1, "round {round}: the listener's connection");
        let started = Instant::now();
        // After reconnecting the listener says "you may have missed changes".
        assert_eq!(
            recv_within(&mut rx, Duration::from_secs(10)).await,
            Uuid::nil(),
            "round {round}"
        );
        println!(
            "round {round}: listener re-established and announced after {:?}",
            started.elapsed()
        );
        let g = grant("alice", "prod", "ro", at_min(0), at_min(30));
        writer.insert(&g).await.unwrap();
        assert_eq!(recv_within(&mut rx, Duration::from_secs(2)).await, g.id);
    }
    // The store calls themselves were never affected.
    listener.ping().await.unwrap();
}

/// A TCP forwarder in front of the cluster that can be cut — bytes silently dropped both
/// ways, new connections accepted but never answered, like a network partition or a
/// blackholed host — and healed.
struct Partition {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Partition {
    async fn start(upstream: Option<SocketAddr>) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(upstream.is_none()));
        let task = tokio::spawn({
            let cut = Arc::clone(&cut);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(forward(client, upstream, Arc::clone(&cut)));
                }
            }
        });
        Partition {
            addr,
            cut,
            _task: task,
        }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    /// `url` with the port of this forwarder.
    fn url(&self, url: &str) -> String {
        let port = url_port(url);
        url.replace(&format!(":{port}/"), &format!(":{}/", self.addr.port()))
    }
}

fn url_port(url: &str) -> u16 {
    let after_at = &url[url.rfind('@').unwrap() + 1..];
    let host_port = &after_at[..after_at.find('/').unwrap()];
    host_port[host_port.rfind(':').unwrap() + 1..]
        .parse()
        .unwrap()
}

async fn forward(mut client: TcpStream, upstream: Option<SocketAddr>, cut: Arc<AtomicBool>) {
    let upstream = match upstream {
        Some(addr) if !cut.load(Ordering::SeqCst) => addr,
        // Cut (or a pure blackhole): hold the connection, answer nothing.
        _ => {
            let mut sink = [0u8; 4096];
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
    };
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, Arc::clone(&cut)),
        pump(server_read, client_write, cut)
    );
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !cut.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Options that give up quickly, for the unreachable-store tests.
fn impatient() -> PostgresStoreOptions {
    PostgresStoreOptions {
        connect_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_millis(1500),
        listen_check_interval: Duration::from_millis(200),
        reconnect_backoff_max: Duration::from_millis(300),
        ..PostgresStoreOptions::default()
    }
}

/// Runs every store method; each must fail with `PolicyError::Store` saying the store is
/// unreachable, quickly, and without the password.
async fn assert_every_call_fails_fast(store: &dyn GrantStore, existing: Uuid) {
    let g = grant("alice", "prod", "ro", at_min(0), at_min(30));
    let mut stale = g.clone();
    stale.id = existing;
    let bound = Duration::from_secs(5);
    macro_rules! check {
        ($name:literal, $call:expr) => {{
            let started = Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(30), $call)
                .await
                .unwrap_or_else(|_| panic!("{} hung", $name));
            let took = started.elapsed();
            match result {
                Err(PolicyError::Store(msg)) => {
                    assert!(msg.contains("unreachable"), "{}: {msg}", $name);
                    assert!(!msg.contains(PASSWORD), "{}: password in {msg}", $name);
                }
                other => panic!("{}: expected a store error, got {other:?}", $name),
            }
            assert!(took < bound, "{} took {took:?}", $name);
        }};
    }
    check!("insert", store.insert(&g));
    check!("get", store.get(existing));
    check!("list", store.list(&GrantFilter::default()));
    check!("update", store.update(&[stale.clone()]));
    check!("active_for", store.active_for("alice", "prod", at_min(1)));
    check!("ping", store.ping());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_unreachable_store_fails_fast() {
    let db = pg_database().await;
    // A host that accepts TCP connections and never answers.
    let blackhole = Partition::start(None).await;
    let started = Instant::now();
    let err = PostgresStore::connect(&blackhole.url(&db.url), impatient())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::Store(ref m) if m.contains("unreachable") && !m.contains(PASSWORD)),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Nothing listening at all.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = db.url.replace(
        &format!(":{}/", url_port(&db.url)),
        &format!(":{closed_port}/"),
    );
    let started = Instant::now();
    let err = PostgresStore::connect(&refused, impatient())
        .await
        .unwrap_err();
    assert!(matches!(err, PolicyError::Store(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A lazily connected store starts anyway, and every call fails closed, promptly.
    let lazy = PostgresStore::connect_lazy(&blackhole.url(&db.url), impatient()).unwrap();
    let debug = format!("{lazy:?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert_every_call_fails_fast(&lazy, Uuid::now_v7()).await;
    let mut rx = lazy.changes().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "no change news from a store that never answered"
    );

    // Unix sockets: a directory without a server socket is just as unreachable.
    let socket = PostgresStore::connect_lazy(
        "host=/nonexistent-jitgate-socket-dir user=u dbname=d",
        impatient(),
    )
    .unwrap();
    assert!(format!("{socket:?}").contains("/nonexistent-jitgate-socket-dir"));
    let err = socket.ping().await.unwrap_err();
    assert!(
        matches!(err, PolicyError::Store(ref m) if m.contains("unreachable")),
        "{err}"
    );

    // Misconfiguration is reported without the password.
    let err = PostgresStore::connect(&format!("{}?sslmode=require", db.url), impatient())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::Store(ref m) if m.contains("sslmode") && !m.contains(PASSWORD)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_partition_fails_closed_then_recovers() {
    let db = pg_database().await;
    let upstream: SocketAddr = format!("127.0.0.1:{}", url_port(&db.url)).parse().unwrap();
    let partition = Partition::start(Some(upstream)).await;
    // Trusted login: a SCRAM exchange by a debug build on a loaded machine could take
    // longer than these short timeouts.
    let store = PostgresStore::connect(&partition.url(&db.trusted_url), impatient())
        .await
        .unwrap();
    let writer = PostgresStore::connect(&db.trusted_url, options())
        .await
        .unwrap();
    let mut rx = store.changes().unwrap();
    let g = grant("alice", "prod", "ro", at_min(0), at_min(30));
    store.insert(&g).await.unwrap();
    assert_eq!(recv_within(&mut rx, Duration::from_secs(2)).await, g.id);

    partition.set_cut(true);
    assert_every_call_fails_fast(&store, g.id).await;

    partition.set_cut(false);
    let healed = Instant::now();
    // The listener noticed (health check), reconnected, and says "reconcile".
    assert_eq!(
        recv_within(&mut rx, Duration::from_secs(10)).await,
        Uuid::nil()
    );
    println!(
        "listener back {:?} after the partition healed",
        healed.elapsed()
    );
    // Every call works again (failed connections were replaced), and news flows.
    assert_eq!(store.get(g.id).await.unwrap(), Some(g.clone()));
    store.ping().await.unwrap();
    let h = grant("bob", "prod", "ro", at_min(0), at_min(30));
    writer.insert(&h).await.unwrap();
    assert_eq!(recv_within(&mut rx, Duration::from_secs(2)).await, h.id);
    let all = store.list(&GrantFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
}
