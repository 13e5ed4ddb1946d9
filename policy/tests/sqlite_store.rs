//! What only the SQLite store does: a private file in WAL mode and its schema version.
//!
//! The grant store contract itself (round trips, filters, compare-and-swap updates,
//! concurrency) runs against every store in the root package's `tests/grant_store.rs`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{at_min, grant, t0};
use jitgate_policy::store::sqlite::SCHEMA_VERSION;
use jitgate_policy::{GrantStore, PolicyError, SqliteStore};

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
