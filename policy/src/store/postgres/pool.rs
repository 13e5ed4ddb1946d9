//! A small fixed pool of PostgreSQL connections, (re)connected lazily, every use bounded
//! by a deadline.
//!
//! Each slot holds at most one `tokio_postgres::Client` behind a mutex; a store call
//! leases one slot (round-robin, preferring a free one) for the whole operation, so a
//! transaction never shares its connection. A slot whose connection failed, timed out, or
//! was left mid-operation by a cancelled call is marked broken — its connection task is
//! aborted, which closes the socket and makes the server roll back — and the next lease
//! of that slot connects afresh. The first connection that works runs the schema
//! migrations ([`super::schema`]) before anything else uses the store.
//!
//! Nothing here waits without a bound: a store that does not answer turns every call into
//! [`PolicyError::Store`] within the call timeout (fail closed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_postgres::config::Host;
use tokio_postgres::error::Severity;
use tokio_postgres::{Client, Config, Statement};

use super::describe::describe;
use super::schema;
use super::tls::{self, Connector};
use crate::error::PolicyError;

/// Aborts a spawned task when dropped, so no connection task outlives its owner.
#[derive(Debug)]
pub(super) struct AbortOnDrop(pub(super) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `host:port/dbname as user` for messages and `Debug`; never the password.
pub(super) fn describe_target(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(dir) => dir.display().to_string(),
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "(no host)".to_owned()
    } else {
        hosts.join(",")
    };
    let port = config.get_ports().first().copied().unwrap_or(DEFAULT_PORT);
    let user = config.get_user().unwrap_or("(no user)");
    let dbname = config.get_dbname().unwrap_or(user);
    format!("{hosts}:{port}/{dbname} as {user}")
}

/// libpq's default port.
const DEFAULT_PORT: u16 = 5432;

/// What went wrong inside an operation on a leased connection.
#[derive(Debug)]
pub(super) enum OpError {
    /// The database or the connection failed.
    Pg(tokio_postgres::Error),
    /// A contract outcome (conflict, stale update, not found, bad row): the connection
    /// is fine.
    Policy(PolicyError),
}

impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> Self {
        OpError::Pg(e)
    }
}

impl From<PolicyError> for OpError {
    fn from(e: PolicyError) -> Self {
        OpError::Policy(e)
    }
}

/// One pooled connection.
pub(super) struct Conn {
    pub(super) client: Client,
    /// Drives the socket; aborted when the connection is discarded.
    task: JoinHandle<()>,
    /// Prepared statements by SQL text (a bounded set: the store's fixed statements and
    /// the `list` filter combinations).
    statements: HashMap<String, Statement>,
    /// Set when the connection must not be used again.
    broken: bool,
}

impl Conn {
    /// The prepared statement for `sql`, preparing it on first use.
    pub(super) async fn prepare(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Marks the connection unusable and closes its socket now.
    fn discard(&mut self) {
        self.broken = true;
        self.task.abort();
    }

    fn usable(&self) -> bool {
        !self.broken && !self.client.is_closed()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A healthy connection closes gracefully once its client is gone (Terminate);
        // a broken one was aborted already.
        if self.broken {
            self.task.abort();
        }
    }
}

/// Pool settings, taken from [`super::PostgresStoreOptions`].
#[derive(Clone, Debug)]
pub(super) struct PoolSettings {
    pub(super) connect_timeout: Duration,
    pub(super) call_timeout: Duration,
    pub(super) statement_timeout: Option<Duration>,
    pub(super) size: usize,
    pub(super) tls: Connector,
}

/// The pool.
pub(super) struct Pool {
    config: Config,
    target: String,
    settings: PoolSettings,
    slots: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
    /// Set once the schema is known to be current (by the first working connection).
    migrated: OnceCell<()>,
}

impl Pool {
    pub(super) fn new(config: Config, settings: PoolSettings) -> Self {
        let target = describe_target(&config);
        let slots = (0..settings.size.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        Pool {
            config,
            target,
            settings,
            slots,
            next: AtomicUsize::new(0),
            migrated: OnceCell::new(),
        }
    }

    /// Where the pool connects, for messages.
    pub(super) fn target(&self) -> &str {
        &self.target
    }

    /// How many connections the pool keeps.
    pub(super) fn size(&self) -> usize {
        self.slots.len()
    }

    /// The error for a deadline that passed while doing `what`.
    fn unreachable(&self, op: &str, what: &str) -> PolicyError {
        PolicyError::Store(format!(
            "{op}: the grant store at {} did not answer within {:?} ({what}); it is \
             unreachable or overloaded",
            self.target, self.settings.call_timeout
        ))
    }

    /// A connection for one operation named `op`, connecting if the slot has none. The
    /// returned lease's [`Lease::deadline`] bounds the operation.
    pub(super) async fn lease(&self, op: &'static str) -> Result<Lease<'_>, PolicyError> {
        let deadline = Instant::now() + self.settings.call_timeout;
        let mut guard = self.free_slot(op, deadline).await?;
        if !guard.as_ref().is_some_and(Conn::usable) {
            // Drop the old connection (if any) before opening its replacement.
            *guard = None;
            *guard = Some(self.open(op, deadline).await?);
        }
        match MutexGuard::try_map(guard, Option::as_mut) {
            Ok(conn) => Ok(Lease {
                conn,
                pool: self,
                op,
                deadline,
                settled: false,
            }),
            Err(_) => Err(PolicyError::Store(format!(
                "{op}: grant store connection slot unexpectedly empty"
            ))),
        }
    }

    /// A free slot with a working connection if there is one (looking round-robin),
    /// else a free slot to connect in, else waits for the next slot in turn until
    /// `deadline`. So the pool only opens connections that concurrency needs.
    async fn free_slot(
        &self,
        op: &str,
        deadline: Instant,
    ) -> Result<MutexGuard<'_, Option<Conn>>, PolicyError> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut empty = None;
        for i in 0..n {
            if let Ok(guard) = self.slots[(start + i) % n].try_lock() {
                if guard.as_ref().is_some_and(Conn::usable) {
                    return Ok(guard);
                }
                empty.get_or_insert(guard);
            }
        }
        if let Some(guard) = empty {
            return Ok(guard);
        }
        timeout_at(deadline, self.slots[start].lock())
            .await
            .map_err(|_| self.unreachable(op, "waiting for a free connection"))
    }

    /// Connects (bounded by the connect timeout and `deadline`), sets the session up and
    /// makes sure the schema is current.
    async fn open(&self, op: &str, deadline: Instant) -> Result<Conn, PolicyError> {
        let started = Instant::now();
        let connect_deadline = deadline.min(started + self.settings.connect_timeout);
        let (client, connection) = match timeout_at(
            connect_deadline,
            self.config.connect(self.settings.tls.make()),
        )
        .await
        {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                return Err(PolicyError::Store(format!(
                    "{op}: cannot connect to the grant store at {}: {}; {}",
                    self.target,
                    describe(&e),
                    tls::advice(&e, "it is unreachable or refuses the connection")
                )))
            }
            Err(_) => {
                return Err(PolicyError::Store(format!(
                    "{op}: cannot connect to the grant store at {}: no answer within {:?}; it \
                     is unreachable",
                    self.target,
                    connect_deadline.saturating_duration_since(started)
                )))
            }
        };
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %describe(&e), "grant store connection ended");
            }
        });
        // Broken until set up: dropped half-way (deadline), it is aborted.
        let mut conn = Conn {
            client,
            task,
            statements: HashMap::new(),
            broken: true,
        };
        match timeout_at(deadline, self.set_up(&mut conn.client)).await {
            Ok(Ok(())) => {
                conn.broken = false;
                Ok(conn)
            }
            Ok(Err(e)) => Err(match e {
                OpError::Policy(p) => p,
                OpError::Pg(e) => PolicyError::store(
                    &format!("{op}: set up grant store connection"),
                    describe(&e),
                ),
            }),
            Err(_) => Err(self.unreachable(op, "setting up a new connection")),
        }
    }

    /// Per-session settings, then the schema check/migration (once per pool).
    async fn set_up(&self, client: &mut Client) -> Result<(), OpError> {
        if let Some(limit) = self.settings.statement_timeout {
            // An integer in milliseconds: nothing to quote.
            client
                .batch_execute(&format!(
                    "SET statement_timeout = {}",
                    limit.as_millis().max(1)
                ))
                .await?;
        }
        self.migrated
            .get_or_try_init(move || schema::migrate(client))
            .await?;
        Ok(())
    }
}

/// One leased connection. Settle it with [`Lease::settle`]; dropped unsettled (the
/// calling future was cancelled mid-operation) the connection is discarded, since its
/// state is unknown.
pub(super) struct Lease<'p> {
    conn: MappedMutexGuard<'p, Conn>,
    pool: &'p Pool,
    op: &'static str,
    deadline: Instant,
    settled: bool,
}

impl Lease<'_> {
    /// The connection.
    pub(super) fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// When the operation must be over.
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Turns the operation's outcome (`Err(Elapsed)` = the deadline passed) into the
    /// call's result, discarding the connection when it can no longer be trusted.
    pub(super) fn settle<T>(
        mut self,
        outcome: Result<Result<T, OpError>, tokio::time::error::Elapsed>,
    ) -> Result<T, PolicyError> {
        self.settled = true;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(OpError::Policy(e))) => Err(e),
            Ok(Err(OpError::Pg(e))) => {
                // An ERROR leaves the session usable (a transaction was rolled back when
                // it was dropped); anything else — I/O, FATAL, protocol — does not.
                let recoverable = e
                    .as_db_error()
                    .is_some_and(|db| db.parsed_severity() == Some(Severity::Error));
                if recoverable {
                    // Statements may be invalid now (e.g. after a schema change).
                    self.conn.statements.clear();
                } else {
                    self.conn.discard();
                }
                Err(PolicyError::store(self.op, describe(&e)))
            }
            Err(_) => {
                self.conn.discard();
                Err(self.pool.unreachable(self.op, "running the query"))
            }
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.conn.discard();
        }
    }
}
