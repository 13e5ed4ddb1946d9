//! [`SqliteStore`]: the embedded grant store, one SQLite file.
//!
//! rusqlite is blocking, so every call runs on tokio's blocking pool
//! (`spawn_blocking`) over one connection behind a std `Mutex`; async workers never wait
//! on disk. The file is opened in WAL mode with `synchronous=FULL` (a committed revocation
//! survives a power cut) and a busy timeout, so another process on the same file waits
//! instead of failing. The file is created `0600` in a parent directory created `0700`:
//! grants say who may reach which database.

mod row;
mod schema;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use uuid::Uuid;

use crate::error::PolicyError;
use crate::grant::Grant;
use crate::store::columns::{self, COLUMNS, IMMUTABLE};
use crate::store::{GrantFilter, GrantStore};

pub use schema::SCHEMA_VERSION;

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedded grant store. Cheap to share behind an `Arc<dyn GrantStore>`.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Where the data lives, for `Debug` and logs (`None` = in memory).
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let location = match &self.path {
            Some(p) => p.display().to_string(),
            None => ":memory:".to_owned(),
        };
        f.debug_struct("SqliteStore")
            .field("path", &location)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and migrates its schema.
    pub fn open(path: &Path) -> Result<Self, PolicyError> {
        prepare_file(path)?;
        let mut conn = Connection::open(path)
            .map_err(|e| PolicyError::store(&format!("open {}", path.display()), e))?;
        configure(&conn, true)?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: Some(path.to_owned()),
        })
    }

    /// A private store that lives as long as this value; for tests and demos.
    pub fn open_in_memory() -> Result<Self, PolicyError> {
        let mut conn =
            Connection::open_in_memory().map_err(|e| PolicyError::store("open in memory", e))?;
        configure(&conn, false)?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: None,
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, PolicyError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, PolicyError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock rolled its transaction back on unwind, so the
            // connection is still consistent.
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| PolicyError::store("grant store task", e))?
    }
}

/// Creates the parent directory (0700) and the file (0600), and tightens an existing
/// file that others could read.
fn prepare_file(path: &Path) -> Result<(), PolicyError> {
    let io_err = |what: &str, e: std::io::Error| {
        PolicyError::Store(format!("{what} {}: {e}", path.display()))
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(parent)
            .map_err(|e| io_err("create directory for", e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(|e| io_err("create", e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(|e| io_err("stat", e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "grant store file was readable by others; setting mode 0600"
            );
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io_err("chmod 0600", e))?;
        }
    }
    Ok(())
}

/// Connection settings; WAL only for files (in-memory databases cannot use it).
fn configure(conn: &Connection, file: bool) -> Result<(), PolicyError> {
    let err = |e: rusqlite::Error| PolicyError::store("configure sqlite", e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    if file {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                journal_mode = %mode,
                "grant store could not switch to WAL mode (filesystem without shared memory?)"
            );
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    Ok(())
}

fn get_in(conn: &Connection, id: Uuid) -> Result<Option<Grant>, PolicyError> {
    let err = |e: rusqlite::Error| PolicyError::store("get grant", e);
    let sql = format!("SELECT {} FROM grants WHERE id = ?1", columns::list());
    let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
    let mut rows = stmt.query([id.hyphenated().to_string()]).map_err(err)?;
    match rows.next().map_err(err)? {
        Some(r) => row::decode(r).map(Some),
        None => Ok(None),
    }
}

fn query_grants(conn: &Connection, sql: &str, args: Vec<Value>) -> Result<Vec<Grant>, PolicyError> {
    let err = |e: rusqlite::Error| PolicyError::store("list grants", e);
    let mut stmt = conn.prepare_cached(sql).map_err(err)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args)).map_err(err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        out.push(row::decode(r)?);
    }
    Ok(out)
}

/// `WHERE` condition for "approved and active at `at`"; binds `at` twice (µs). Extension
/// requests admit nobody.
const ACTIVE_AT: &str =
    "state = 'approved' AND extends IS NULL AND not_before <= ? AND expires_at > ?";

/// The `UPDATE` of one record, and which of `values` (in [`COLUMNS`] order) it
/// binds: the mutable columns in SET, then `id`, `version`, `issued_by`, `created_at` in
/// WHERE — so a record whose creator or creation time differs is not touched.
fn update_statement(values: Vec<Value>, old_version: i64) -> (String, Vec<Value>) {
    let mut set = Vec::new();
    let mut binds = Vec::new();
    let mut fixed = std::collections::HashMap::new();
    for (column, value) in COLUMNS.into_iter().zip(values) {
        if IMMUTABLE.contains(&column) {
            fixed.insert(column, value);
        } else {
            set.push(format!("{column} = ?"));
            binds.push(value);
        }
    }
    for column in ["id", "version", "issued_by", "created_at"] {
        let value = match column {
            "version" => Value::Integer(old_version),
            other => fixed.remove(other).unwrap_or(Value::Null),
        };
        binds.push(value);
    }
    let sql = format!(
        "UPDATE grants SET {} WHERE id = ? AND version = ? AND issued_by = ? AND created_at = ?",
        set.join(", ")
    );
    (sql, binds)
}

#[async_trait::async_trait]
impl GrantStore for SqliteStore {
    async fn insert(&self, grant: &Grant) -> Result<(), PolicyError> {
        let values = row::encode(grant)?;
        let id = grant.id;
        self.call(move |conn| {
            let sql = format!(
                "INSERT INTO grants ({}) VALUES ({})",
                columns::list(),
                row::placeholders()
            );
            match conn.execute(&sql, rusqlite::params_from_iter(values)) {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    Err(PolicyError::Conflict(format!(
                        "a grant with id {id} (or a request with the same idempotency key \
                         from the same requester) already exists"
                    )))
                }
                Err(e) => Err(PolicyError::store("insert grant", e)),
            }
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Grant>, PolicyError> {
        self.call(move |conn| get_in(conn, id)).await
    }

    async fn list(&self, filter: &GrantFilter) -> Result<Vec<Grant>, PolicyError> {
        let mut sql = format!("SELECT {} FROM grants WHERE 1 = 1", columns::list());
        let mut args = Vec::new();
        if let Some(identity) = &filter.identity {
            sql.push_str(" AND identity = ?");
            args.push(Value::Text(identity.clone()));
        }
        if let Some(target) = &filter.target {
            sql.push_str(" AND target = ?");
            args.push(Value::Text(target.clone()));
        }
        if let Some(state) = filter.state {
            sql.push_str(" AND state = ?");
            args.push(Value::Text(state.as_str().to_owned()));
        }
        if let Some(at) = filter.active_at {
            sql.push_str(" AND ");
            sql.push_str(ACTIVE_AT);
            let at = row::query_micros(at);
            args.extend([Value::Integer(at), Value::Integer(at)]);
        }
        if let Some(by) = &filter.issued_by {
            sql.push_str(" AND issued_by = ?");
            args.push(Value::Text(by.clone()));
        }
        if let Some(extends) = filter.extends {
            sql.push_str(" AND extends = ?");
            args.push(Value::Text(extends.hyphenated().to_string()));
        }
        if let Some(key) = &filter.idempotency_key {
            sql.push_str(" AND idempotency_key = ?");
            args.push(Value::Text(key.clone()));
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        self.call(move |conn| query_grants(conn, &sql, args)).await
    }

    async fn update(&self, grants: &[Grant]) -> Result<Vec<Grant>, PolicyError> {
        let mut updated = Vec::with_capacity(grants.len());
        let mut rows = Vec::with_capacity(grants.len());
        for grant in grants {
            let mut next = grant.clone();
            next.version = grant.version + 1;
            let old = i64::try_from(grant.version)
                .map_err(|_| PolicyError::store("encode version", grant.version))?;
            let (sql, values) = update_statement(row::encode(&next)?, old);
            rows.push((grant.id, grant.version, sql, values));
            updated.push(next);
        }
        self.call(move |conn| {
            let err = |e: rusqlite::Error| PolicyError::store("update grant", e);
            // IMMEDIATE takes the write lock up front: the version checks and the writes
            // see the same rows even with other processes on the file.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            for (id, version, sql, values) in rows {
                let changed = tx
                    .execute(&sql, rusqlite::params_from_iter(values))
                    .map_err(err)?;
                if changed != 1 {
                    // Dropping the transaction rolls back the rows already written.
                    return Err(match get_in(&tx, id)? {
                        None => PolicyError::NotFound(id),
                        Some(stored) if stored.version != version => PolicyError::StaleUpdate(id),
                        Some(_) => PolicyError::InvalidRequest(format!(
                            "grant {id}: issued_by and created_at never change"
                        )),
                    });
                }
            }
            tx.commit().map_err(err)?;
            Ok(updated)
        })
        .await
    }

    async fn active_for(
        &self,
        identity: &str,
        target: &str,
        at: Timestamp,
    ) -> Result<Vec<Grant>, PolicyError> {
        let sql = format!(
            "SELECT {} FROM grants WHERE identity = ? AND target = ? AND {ACTIVE_AT} \
             ORDER BY expires_at DESC, created_at DESC, id DESC",
            columns::list()
        );
        let at = row::query_micros(at);
        let args = vec![
            Value::Text(identity.to_owned()),
            Value::Text(target.to_owned()),
            Value::Integer(at),
            Value::Integer(at),
        ];
        self.call(move |conn| query_grants(conn, &sql, args)).await
    }

    async fn ping(&self) -> Result<(), PolicyError> {
        self.call(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| PolicyError::store("ping", e))
        })
        .await
    }
}
