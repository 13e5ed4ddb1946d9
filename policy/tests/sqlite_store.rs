//! SqliteStore against real files: round trips, restarts, filters, atomic revocation.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::sync::Arc;

use common::{at_min, full_grant, grant, t0};
use jitgate_policy::store::sqlite::SCHEMA_VERSION;
use jitgate_policy::{GrantFilter, GrantState, GrantStore, PolicyError, SqliteStore, Timestamp};
use uuid::Uuid;

fn ids(grants: &[jitgate_policy::Grant]) -> Vec<Uuid> {
    grants.iter().map(|g| g.id).collect()
}

#[tokio::test]
async fn every_field_round_trips_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/grants.db");
    let g = full_grant();
    {
        let store = SqliteStore::open(&path).unwrap();
        store.insert(&g).await.unwrap();
        assert_eq!(store.get(g.id).await.unwrap().as_ref(), Some(&g));
    }
    // A new process: nothing in memory, only the file.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.get(g.id).await.unwrap(), Some(g.clone()));
    assert_eq!(store.list(&GrantFilter::default()).await.unwrap(), vec![g]);
    assert_eq!(store.get(Uuid::now_v7()).await.unwrap(), None);
}

#[cfg(unix)]
#[tokio::test]
async fn file_is_private_and_in_wal_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/grants.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .insert(&grant("a", "t", "r", t0(), at_min(5)))
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        mode(path.parent().unwrap()) & 0o077,
        0,
        "parent dir not private"
    );
    let wal = path.with_file_name("grants.db-wal");
    assert!(wal.exists(), "WAL mode should create {wal:?}");
    assert_eq!(mode(&wal) & 0o077, 0);

    // An existing file readable by others is tightened on open.
    drop(store);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = SqliteStore::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[tokio::test]
async fn schema_version_is_recorded_and_newer_schemas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(err, PolicyError::Store(ref m) if m.contains("schema version")),
        "{err}"
    );
}

#[tokio::test]
async fn insert_refuses_duplicates_and_sub_microsecond_times() {
    let store = SqliteStore::open_in_memory().unwrap();
    let g = grant("a", "t", "r", t0(), at_min(5));
    store.insert(&g).await.unwrap();
    let err = store.insert(&g).await.unwrap_err();
    assert!(matches!(err, PolicyError::InvalidRequest(ref m) if m.contains("already exists")));

    let mut fine = grant("a", "t", "r", t0(), at_min(5));
    fine.expires_at = "2030-01-01T00:05:00.000000001Z"
        .parse::<Timestamp>()
        .unwrap();
    let err = store.insert(&fine).await.unwrap_err();
    assert!(
        matches!(err, PolicyError::InvalidRequest(ref m) if m.contains("expires_at")),
        "{err}"
    );
    assert_eq!(store.get(fine.id).await.unwrap(), None);
}

#[tokio::test]
async fn list_filters_combine_and_return_newest_first() {
    let store = SqliteStore::open_in_memory().unwrap();
    let mut a1 = grant("alice", "prod", "ro", at_min(0), at_min(30));
    a1.created_at = at_min(-3);
    let mut a2 = grant("alice", "stage", "rw", at_min(10), at_min(40));
    a2.created_at = at_min(-1);
    let mut b1 = grant("bob", "prod", "ro", at_min(0), at_min(60));
    b1.created_at = at_min(-2);
    let mut b2 = grant("bob", "prod", "rw", at_min(0), at_min(60));
    b2.created_at = at_min(-4);
    b2.state = GrantState::Pending;
    for g in [&a1, &a2, &b1, &b2] {
        store.insert(g).await.unwrap();
    }
    let list = |f: GrantFilter| {
        let store = &store;
        async move { ids(&store.list(&f).await.unwrap()) }
    };
    assert_eq!(
        list(GrantFilter::default()).await,
        vec![a2.id, b1.id, a1.id, b2.id]
    );
    assert_eq!(
        list(GrantFilter {
            identity: Some("alice".into()),
            ..Default::default()
        })
        .await,
        vec![a2.id, a1.id]
    );
    assert_eq!(
        list(GrantFilter {
            target: Some("prod".into()),
            ..Default::default()
        })
        .await,
        vec![b1.id, a1.id, b2.id]
    );
    assert_eq!(
        list(GrantFilter {
            state: Some(GrantState::Pending),
            ..Default::default()
        })
        .await,
        vec![b2.id]
    );
    // active_at: approved and inside the window (a2 starts at 10, a1 ends at 30).
    assert_eq!(
        list(GrantFilter {
            active_at: Some(at_min(5)),
            ..Default::default()
        })
        .await,
        vec![b1.id, a1.id]
    );
    assert_eq!(
        list(GrantFilter {
            active_at: Some(at_min(30)),
            ..Default::default()
        })
        .await,
        vec![a2.id, b1.id]
    );
    assert_eq!(
        list(GrantFilter {
            identity: Some("bob".into()),
            target: Some("prod".into()),
            state: Some(GrantState::Approved),
            active_at: Some(at_min(59)),
        })
        .await,
        vec![b1.id]
    );
    assert!(list(GrantFilter {
        identity: Some("nobody".into()),
        ..Default::default()
    })
    .await
    .is_empty());
}

#[tokio::test]
async fn active_for_respects_boundaries_and_orders_by_expiry() {
    let store = SqliteStore::open_in_memory().unwrap();
    let short = grant("alice", "prod", "ro", at_min(0), at_min(10));
    let long = grant("alice", "prod", "rw", at_min(0), at_min(20));
    let other = grant("alice", "stage", "ro", at_min(0), at_min(20));
    let mut revoked = grant("alice", "prod", "ro", at_min(0), at_min(50));
    revoked.state = GrantState::Revoked;
    for g in [&short, &long, &other, &revoked] {
        store.insert(g).await.unwrap();
    }
    let active = |t| {
        let store = &store;
        async move { ids(&store.active_for("alice", "prod", t).await.unwrap()) }
    };
    assert!(active(at_min(-1)).await.is_empty());
    assert_eq!(active(at_min(0)).await, vec![long.id, short.id]);
    // Sub-microsecond query instants give the same answer as exact ones.
    let just_before_10 = at_min(10)
        .checked_sub(jitgate_policy::SignedDuration::from_nanos(1))
        .unwrap();
    assert_eq!(active(just_before_10).await, vec![long.id, short.id]);
    assert_eq!(active(at_min(10)).await, vec![long.id]);
    assert!(active(at_min(20)).await.is_empty());
}

#[tokio::test]
async fn revoke_records_who_when_why_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.db");
    let store = SqliteStore::open(&path).unwrap();
    let g = grant("alice", "prod", "ro", at_min(0), at_min(30));
    store.insert(&g).await.unwrap();

    let revoked = store
        .revoke(g.id, "bob", Some("done"), at_min(5))
        .await
        .unwrap();
    assert_eq!(revoked.state, GrantState::Revoked);
    assert_eq!(revoked.revoked_by.as_deref(), Some("bob"));
    assert_eq!(revoked.revoked_at, Some(at_min(5)));
    assert_eq!(revoked.revoke_reason.as_deref(), Some("done"));
    assert!(!revoked.is_active(at_min(6)));

    let err = store
        .revoke(g.id, "carol", None, at_min(6))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::NotRevocable {
            id: g.id,
            state: GrantState::Revoked
        }
    );
    assert_eq!(err.sqlstate(), "55000");

    // What the first revocation wrote is what a restarted process reads.
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.get(g.id).await.unwrap(), Some(revoked));
    assert!(store
        .active_for("alice", "prod", at_min(6))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn revoke_refuses_expired_denied_and_missing_grants_but_takes_pending() {
    let store = SqliteStore::open_in_memory().unwrap();
    let g = grant("alice", "prod", "ro", at_min(0), at_min(30));
    store.insert(&g).await.unwrap();
    let err = store
        .revoke(g.id, "bob", None, at_min(30))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::NotRevocable {
            id: g.id,
            state: GrantState::Expired
        }
    );
    assert_eq!(
        store.get(g.id).await.unwrap().unwrap().state,
        GrantState::Approved,
        "unchanged"
    );

    let mut denied = grant("alice", "prod", "ro", at_min(0), at_min(30));
    denied.state = GrantState::Denied;
    store.insert(&denied).await.unwrap();
    let err = store
        .revoke(denied.id, "bob", None, at_min(1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::NotRevocable {
            id: denied.id,
            state: GrantState::Denied
        }
    );

    let mut pending = grant("alice", "prod", "ro", at_min(0), at_min(30));
    pending.state = GrantState::Pending;
    store.insert(&pending).await.unwrap();
    assert_eq!(
        store
            .revoke(pending.id, "bob", None, at_min(1))
            .await
            .unwrap()
            .state,
        GrantState::Revoked
    );

    let missing = Uuid::now_v7();
    assert_eq!(
        store
            .revoke(missing, "bob", None, at_min(1))
            .await
            .unwrap_err(),
        PolicyError::NotFound(missing)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_revokes_of_one_grant_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.db");
    // Two stores on one file stand for two processes: atomicity must hold across
    // connections, not just behind one mutex.
    let stores: Vec<Arc<SqliteStore>> = (0..2)
        .map(|_| Arc::new(SqliteStore::open(&path).unwrap()))
        .collect();
    for round in 0..5 {
        let g = grant("alice", "prod", "ro", at_min(0), at_min(30));
        stores[0].insert(&g).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&stores[i % 2]);
                tokio::spawn(async move {
                    store
                        .revoke(g.id, &format!("admin{i}"), None, at_min(1))
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(revoked) => winners.push(revoked),
                Err(PolicyError::NotRevocable {
                    state: GrantState::Revoked,
                    ..
                }) => {}
                Err(other) => panic!("round {round}: unexpected error {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let stored = stores[1].get(g.id).await.unwrap().unwrap();
        assert_eq!(
            stored.revoked_by, winners[0].revoked_by,
            "stored revoker is the winner"
        );
    }
}
