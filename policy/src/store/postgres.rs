//! [`PostgresStore`]: the grant store several jitgate replicas share, in PostgreSQL.
//!
//! Same contract as [`super::sqlite::SqliteStore`] (see [`super`]): microsecond
//! timestamps, compare-and-swap updates on `version`, idempotency keys unique per
//! requester, extension records never active. In addition every insert and update
//! notifies the channel [`CHANNEL`] in its own transaction, and [`GrantStore::changes`]
//! delivers the changed ids from every replica (see [`listen`]).
//!
//! Connections: a small pool ([`PostgresStoreOptions::pool_size`]) for store calls plus
//! one listening connection, described by a libpq-style connection string or URL, over
//! TLS verified as libpq's `verify-full` does ([`PostgresStoreOptions::tls`], see
//! [`tls`]) or, when explicitly disabled, plain TCP or a unix socket
//! (`host=/run/postgresql`).
//!
//! Every call is bounded by [`PostgresStoreOptions::call_timeout`]: an unreachable store
//! yields [`PolicyError::Store`] ("… unreachable …") quickly, never a hang, so the engine
//! fails closed. Connections are re-established lazily after failures.

mod describe;
mod listen;
mod pool;
mod row;
mod schema;
mod tls;
mod witness;

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast;
use tokio::time::timeout_at;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Config;
use uuid::Uuid;

use crate::error::PolicyError;
use crate::grant::Grant;
use crate::store::columns::{self, COLUMNS, IMMUTABLE};
use crate::store::{GrantFilter, GrantStore};

pub use listen::CHANNEL;
pub use schema::{MIGRATION_LOCK, SCHEMA_VERSION};
pub use tls::StoreTls;
pub use witness::WITNESS_TABLE;

use describe::describe;
use pool::{AbortOnDrop, Conn, OpError, Pool, PoolSettings};
use row::{Encoded, PgTimestamp};

/// How a [`PostgresStore`] connects and how long it waits.
#[derive(Clone, Debug)]
pub struct PostgresStoreOptions {
    /// Longest one connection attempt may take (TCP connect, startup, authentication).
    pub connect_timeout: Duration,
    /// Longest any store call may take in all — waiting for a free pooled connection,
    /// reconnecting, and the queries themselves. Past it the call fails with
    /// [`PolicyError::Store`] and its connection is dropped.
    pub call_timeout: Duration,
    /// Server-side `statement_timeout` for pooled connections, so the server also stops
    /// work nobody waits for; `None` leaves the server's setting.
    pub statement_timeout: Option<Duration>,
    /// Pooled connections for store calls (at least 1), besides the listening one.
    pub pool_size: usize,
    /// How many change notifications a slow [`GrantStore::changes`] receiver may fall
    /// behind before it sees `RecvError::Lagged`.
    pub changes_capacity: usize,
    /// How often the listening connection is checked with `SELECT 1`, so a silently dead
    /// network is noticed and the listener reconnects.
    pub listen_check_interval: Duration,
    /// Longest wait between attempts to re-establish the listening connection.
    pub reconnect_backoff_max: Duration,
    /// TLS to the store (default: none; the config file makes the operator choose).
    pub tls: StoreTls,
}

impl Default for PostgresStoreOptions {
    fn default() -> Self {
        PostgresStoreOptions {
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            statement_timeout: Some(Duration::from_secs(10)),
            pool_size: 4,
            changes_capacity: 1024,
            listen_check_interval: Duration::from_secs(10),
            reconnect_backoff_max: Duration::from_secs(5),
            tls: StoreTls::Disable,
        }
    }
}

/// The `application_name` of pooled connections when the connection string sets none;
/// the listening connection uses it with `-listen` appended.
const DEFAULT_APPLICATION_NAME: &str = "jitgate";

/// The shared grant store. Cheap to share behind an `Arc<dyn GrantStore>`; dropping it
/// closes its connections and stops the listener.
pub struct PostgresStore {
    pool: Pool,
    sql: Sql,
    changes: broadcast::Sender<Uuid>,
    /// The listener supervisor; aborted (closing the listening connection) on drop.
    _listener: AbortOnDrop,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.pool.target())
            .field("pool_size", &self.pool.size())
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the store described by `conninfo` (libpq key/value or URL form),
    /// migrates its schema, and starts listening for changes. Fails with
    /// [`PolicyError::Store`] when the store cannot be reached within the timeouts.
    pub async fn connect(
        conninfo: &str,
        options: PostgresStoreOptions,
    ) -> Result<Self, PolicyError> {
        let (pool, listen, changes) = prepare(conninfo, &options)?;
        // A working connection, with the schema migrated.
        ping(&pool).await?;
        let session = listen::establish(&listen, &changes).await?;
        let listener = tokio::spawn(listen::supervise(listen, changes.clone(), Some(session)));
        Ok(PostgresStore {
            pool,
            sql: Sql::new(),
            changes,
            _listener: AbortOnDrop(listener),
        })
    }

    /// Like [`PostgresStore::connect`] but without waiting for the store: connections
    /// (and the migration) happen on first use and calls fail with
    /// [`PolicyError::Store`] until the store answers. For a replica that must start (and
    /// report itself unhealthy) while its store is down. The first established listener
    /// announces itself with [`Uuid::nil`] on [`GrantStore::changes`]. Must be called
    /// within a tokio runtime.
    pub fn connect_lazy(
        conninfo: &str,
        options: PostgresStoreOptions,
    ) -> Result<Self, PolicyError> {
        let (pool, listen, changes) = prepare(conninfo, &options)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            PolicyError::Store("PostgresStore::connect_lazy needs a tokio runtime".to_owned())
        })?;
        let listener = runtime.spawn(listen::supervise(listen, changes.clone(), None));
        Ok(PostgresStore {
            pool,
            sql: Sql::new(),
            changes,
            _listener: AbortOnDrop(listener),
        })
    }
}

/// Parses the connection string and builds the pool and listener settings.
fn prepare(
    conninfo: &str,
    options: &PostgresStoreOptions,
) -> Result<(Pool, listen::ListenSettings, broadcast::Sender<Uuid>), PolicyError> {
    let mut config: Config = conninfo.parse().map_err(|e| {
        PolicyError::Store(format!(
            "grant store connection string: {}{}",
            describe(&e),
            tls::libpq_only_hint(conninfo)
        ))
    })?;
    let connector = tls::apply(&mut config, &options.tls)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    let application_name = config
        .get_application_name()
        .unwrap_or(DEFAULT_APPLICATION_NAME)
        .to_owned();
    config.application_name(&application_name);
    let mut listen_config = config.clone();
    listen_config.application_name(format!("{application_name}-listen"));
    let pool = Pool::new(
        config,
        PoolSettings {
            connect_timeout: options.connect_timeout,
            call_timeout: options.call_timeout,
            statement_timeout: options.statement_timeout,
            size: options.pool_size,
            tls: connector.clone(),
        },
    );
    let listen = listen::ListenSettings {
        config: listen_config,
        target: pool.target().to_owned(),
        connect_timeout: options.connect_timeout,
        call_timeout: options.call_timeout,
        check_interval: options.listen_check_interval.max(Duration::from_millis(10)),
        backoff_max: options.reconnect_backoff_max,
        tls: connector,
    };
    let (changes, _) = broadcast::channel(options.changes_capacity.max(1));
    Ok((pool, listen, changes))
}

/// `SELECT 1` on a pooled connection (connecting and migrating if needed).
async fn ping(pool: &Pool) -> Result<(), PolicyError> {
    let mut lease = pool.lease("ping").await?;
    let deadline = lease.deadline();
    let outcome = timeout_at(deadline, async {
        lease.conn().client.simple_query("SELECT 1").await?;
        Ok(())
    })
    .await;
    lease.settle(outcome)
}

/// The store's fixed SQL text, built once.
struct Sql {
    insert: String,
    get: String,
    update: String,
    probe: String,
    active_for: String,
    list_prefix: String,
}

/// `WHERE` condition for "approved and active at `$n`". Extension requests admit nobody.
fn active_at(n: usize) -> String {
    format!("state = 'approved' AND extends IS NULL AND not_before <= ${n} AND expires_at > ${n}")
}

impl Sql {
    fn new() -> Self {
        let columns = columns::list();
        let placeholders = (1..=COLUMNS.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let notify = format!("SELECT pg_notify('{CHANNEL}', id::text) FROM changed");
        // Every column but the immutable ones, bound by position in COLUMNS; the
        // immutable ones take part in the WHERE clause instead.
        let set = COLUMNS
            .iter()
            .enumerate()
            .filter(|(_, c)| !IMMUTABLE.contains(c))
            .map(|(i, c)| format!("{c} = ${}", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let param = |name: &str| COLUMNS.iter().position(|c| *c == name).map_or(0, |i| i + 1);
        let old_version = COLUMNS.len() + 1;
        Sql {
            insert: format!(
                "WITH changed AS (INSERT INTO jitgate_grants ({columns}) VALUES \
                 ({placeholders}) RETURNING id) {notify}"
            ),
            get: format!("SELECT {columns} FROM jitgate_grants WHERE id = $1"),
            update: format!(
                "WITH changed AS (UPDATE jitgate_grants SET {set} WHERE id = ${} AND \
                 version = ${old_version} AND issued_by = ${} AND created_at = ${} \
                 RETURNING id) {notify}",
                param("id"),
                param("issued_by"),
                param("created_at"),
            ),
            probe: "SELECT version, issued_by, created_at FROM jitgate_grants WHERE id = $1"
                .to_owned(),
            active_for: format!(
                "SELECT {columns} FROM jitgate_grants WHERE identity = $1 AND target = $2 \
                 AND {} ORDER BY expires_at DESC, created_at DESC, id DESC",
                active_at(3)
            ),
            list_prefix: format!("SELECT {columns} FROM jitgate_grants WHERE true"),
        }
    }
}

/// One record of an update: the new values and the version it must still have.
struct Change {
    id: Uuid,
    row: Encoded,
    old_version: i64,
    issued_by: String,
    created_at: Timestamp,
}

/// Runs `sql` with `params` and decodes every row.
async fn query_grants(
    conn: &mut Conn,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Grant>, OpError> {
    let statement = conn.prepare(sql).await?;
    let rows = conn.client.query(&statement, params).await?;
    rows.iter()
        .map(|r| row::decode(r).map_err(OpError::from))
        .collect()
}

/// The error for a conflicting insert, naming what conflicted.
fn insert_conflict(grant: &Grant, e: &tokio_postgres::Error) -> PolicyError {
    let constraint = e.as_db_error().and_then(|db| db.constraint()).unwrap_or("");
    match (&grant.idempotency_key, constraint) {
        (Some(key), "jitgate_grants_idempotency") => PolicyError::Conflict(format!(
            "a request with idempotency key {key:?} from {} already exists",
            grant.issued_by
        )),
        (_, "jitgate_grants_pkey") => {
            PolicyError::Conflict(format!("a grant with id {} already exists", grant.id))
        }
        _ => PolicyError::Conflict(format!(
            "a grant with id {} (or a request with the same idempotency key from the same \
             requester) already exists",
            grant.id
        )),
    }
}

/// Why an update of `change` matched no row, read in the same transaction.
async fn diagnose<C: tokio_postgres::GenericClient>(
    client: &C,
    probe: &tokio_postgres::Statement,
    change: &Change,
) -> Result<PolicyError, OpError> {
    let Some(stored) = client.query_opt(probe, &[&change.id]).await? else {
        return Ok(PolicyError::NotFound(change.id));
    };
    let version: i64 = stored.try_get("version")?;
    let issued_by: String = stored.try_get("issued_by")?;
    let created_at = PgTimestamp::stored("created_at", change.created_at)?;
    let stored_created: PgTimestamp = stored.try_get("created_at")?;
    Ok(if version != change.old_version {
        PolicyError::StaleUpdate(change.id)
    } else if issued_by != change.issued_by || stored_created != created_at {
        PolicyError::InvalidRequest(format!(
            "grant {}: an update may not change issued_by or created_at",
            change.id
        ))
    } else {
        // Matching version and fields but no row updated: only a concurrent change
        // between the two statements explains it.
        PolicyError::StaleUpdate(change.id)
    })
}

/// Whether `e` says the transaction lost against a concurrent one (deadlock victim,
/// serialization failure): the engine's answer to both is to re-read and retry.
fn lost_race(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// Applies `changes` (sorted by id, so concurrent multi-record updates lock rows in the
/// same order and cannot deadlock) all or nothing.
async fn update_in(conn: &mut Conn, sql: &Sql, changes: &[Change]) -> Result<(), OpError> {
    let update = conn.prepare(&sql.update).await?;
    let probe = conn.prepare(&sql.probe).await?;
    if let [change] = changes {
        // One statement is atomic by itself: no explicit transaction needed.
        let params = change_params(change);
        return match conn.client.execute(&update, &params).await {
            Ok(1) => Ok(()),
            Ok(_) => Err(diagnose(&conn.client, &probe, change).await?.into()),
            Err(e) if lost_race(&e) => Err(PolicyError::StaleUpdate(change.id).into()),
            Err(e) => Err(e.into()),
        };
    }
    let tx = conn.client.transaction().await?;
    for change in changes {
        let params = change_params(change);
        match tx.execute(&update, &params).await {
            Ok(1) => {}
            // Returning the error drops `tx`, which rolls back the rows already written.
            Ok(_) => return Err(diagnose(&tx, &probe, change).await?.into()),
            Err(e) if lost_race(&e) => return Err(PolicyError::StaleUpdate(change.id).into()),
            Err(e) => return Err(e.into()),
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The update statement's parameters: the new row in [`COLUMNS`] order, then the version
/// the stored row must still have.
fn change_params(change: &Change) -> Vec<&(dyn ToSql + Sync)> {
    let mut params = change.row.params();
    params.push(&change.old_version);
    params
}

#[async_trait::async_trait]
impl GrantStore for PostgresStore {
    async fn insert(&self, grant: &Grant) -> Result<(), PolicyError> {
        let row = row::encode(grant)?;
        let mut lease = self.pool.lease("insert grant").await?;
        let deadline = lease.deadline();
        let conn = lease.conn();
        let outcome = timeout_at(deadline, async {
            let statement = conn.prepare(&self.sql.insert).await?;
            match conn.client.execute(&statement, &row.params()).await {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(insert_conflict(grant, &e).into())
                }
                Err(e) => Err(e.into()),
            }
        })
        .await;
        lease.settle(outcome)
    }

    async fn get(&self, id: Uuid) -> Result<Option<Grant>, PolicyError> {
        let mut lease = self.pool.lease("get grant").await?;
        let deadline = lease.deadline();
        let conn = lease.conn();
        let outcome = timeout_at(deadline, async {
            let mut grants = query_grants(conn, &self.sql.get, &[&id]).await?;
            Ok(grants.pop())
        })
        .await;
        lease.settle(outcome)
    }

    async fn list(&self, filter: &GrantFilter) -> Result<Vec<Grant>, PolicyError> {
        let mut sql = self.sql.list_prefix.clone();
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut bind = |sql: &mut String, column: &str, value: Box<dyn ToSql + Sync + Send>| {
            params.push(value);
            sql.push_str(&format!(" AND {column} = ${}", params.len()));
        };
        if let Some(identity) = &filter.identity {
            bind(&mut sql, "identity", Box::new(identity.clone()));
        }
        if let Some(target) = &filter.target {
            bind(&mut sql, "target", Box::new(target.clone()));
        }
        if let Some(state) = filter.state {
            bind(&mut sql, "state", Box::new(state.as_str()));
        }
        if let Some(by) = &filter.issued_by {
            bind(&mut sql, "issued_by", Box::new(by.clone()));
        }
        if let Some(extends) = filter.extends {
            bind(&mut sql, "extends", Box::new(extends));
        }
        if let Some(key) = &filter.idempotency_key {
            bind(&mut sql, "idempotency_key", Box::new(key.clone()));
        }
        if let Some(at) = filter.active_at {
            params.push(Box::new(PgTimestamp::query(at)));
            sql.push_str(" AND ");
            sql.push_str(&active_at(params.len()));
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let mut lease = self.pool.lease("list grants").await?;
        let deadline = lease.deadline();
        let conn = lease.conn();
        let outcome = timeout_at(deadline, query_grants(conn, &sql, &refs)).await;
        lease.settle(outcome)
    }

    async fn update(&self, grants: &[Grant]) -> Result<Vec<Grant>, PolicyError> {
        let mut updated = Vec::with_capacity(grants.len());
        let mut changes = Vec::with_capacity(grants.len());
        for grant in grants {
            let mut next = grant.clone();
            next.version = grant.version.checked_add(1).ok_or_else(|| {
                PolicyError::store("encode version", format!("{} overflows", grant.version))
            })?;
            let old_version = i64::try_from(grant.version)
                .map_err(|_| PolicyError::store("encode version", grant.version))?;
            changes.push(Change {
                id: grant.id,
                row: row::encode(&next)?,
                old_version,
                issued_by: grant.issued_by.clone(),
                created_at: grant.created_at,
            });
            updated.push(next);
        }
        if changes.is_empty() {
            return Ok(updated);
        }
        // Stable: the same id twice keeps its order (and the second is stale, as in
        // SQLite).
        changes.sort_by_key(|c| c.id);
        let mut lease = self.pool.lease("update grant").await?;
        let deadline = lease.deadline();
        let conn = lease.conn();
        let outcome = timeout_at(deadline, update_in(conn, &self.sql, &changes)).await;
        lease.settle(outcome)?;
        Ok(updated)
    }

    async fn active_for(
        &self,
        identity: &str,
        target: &str,
        at: Timestamp,
    ) -> Result<Vec<Grant>, PolicyError> {
        let at = PgTimestamp::query(at);
        let mut lease = self.pool.lease("list active grants").await?;
        let deadline = lease.deadline();
        let conn = lease.conn();
        let outcome = timeout_at(
            deadline,
            query_grants(conn, &self.sql.active_for, &[&identity, &target, &at]),
        )
        .await;
        lease.settle(outcome)
    }

    async fn ping(&self) -> Result<(), PolicyError> {
        ping(&self.pool).await
    }

    fn changes(&self) -> Option<broadcast::Receiver<Uuid>> {
        Some(self.changes.subscribe())
    }
}
