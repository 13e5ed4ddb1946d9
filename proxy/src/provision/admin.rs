//! jitgate's own connection to a target as the target's admin role, and the statements
//! it runs there: create a per-grant role, move its `VALID UNTIL`, list the per-grant
//! roles, and retire one (terminate its backends, hand what it owns to the granted role,
//! drop it).
//!
//! The connection goes over the same TCP/TLS path as sessions (`connect_stream`: the
//! target's `verify-full` TLS applies) and is then driven by `tokio-postgres`. Every
//! relation and function is written with its schema and every name is quoted, so
//! nothing a grantee may have set (a per-grant role can `ALTER ROLE … SET` itself, not
//! the admin) or named steers these statements.

use jiff::Timestamp;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use super::authcheck::AuthChecked;
use super::names::{self, ident, literal};
use crate::session::error::UpstreamError;
use crate::session::upstream::{connect_stream, CONNECT_TIMEOUT};
use crate::settings::{RoleCredentials, TargetSettings};

/// Key of the advisory lock that lets one replica at a time sweep a target.
const SWEEP_LOCK: i64 = 0x6a69_7467_6174_6531; // "jitgate1"

/// How long `pg_terminate_backend` waits for each backend of a retired role to exit.
const TERMINATE_WAIT_MS: i64 = 5000;

/// A per-grant role as the server lists it.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub name: String,
    pub grant_id: Uuid,
    /// `VALID UNTIL` in microseconds since the epoch; `None`: no limit (or infinity).
    pub valid_until: Option<i64>,
    /// The role it is a member of (the granted role), if any.
    pub granted: Option<String>,
}

/// An error of `what` from `tokio-postgres`, with the server's SQLSTATE when it sent one.
fn failed(what: &'static str) -> impl Fn(tokio_postgres::Error) -> UpstreamError {
    move |e| match e.as_db_error() {
        Some(db) => UpstreamError::Provision {
            what,
            code: Some(db.code().code().to_owned()),
            message: db.message().to_owned(),
        },
        None => UpstreamError::Provision {
            what,
            code: None,
            message: with_causes(&e),
        },
    }
}

/// `e` and its causes: `tokio-postgres` says only "error communicating with the server"
/// and keeps the reason (e.g. `authcheck`'s refusal of a method) as its source.
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The SQLSTATE of a failed statement.
fn code_of(e: &UpstreamError) -> Option<&str> {
    match e {
        UpstreamError::Provision { code, .. } => code.as_deref(),
        _ => None,
    }
}

/// Opens an admin connection to `target` as `admin`; `purpose` is its application_name.
pub async fn connect(
    target: &TargetSettings,
    admin: &RoleCredentials,
    purpose: &str,
) -> Result<Client, UpstreamError> {
    let open = async {
        let stream = connect_stream(&target.host, target.port, &target.tls).await?;
        // The target's auth_methods and SCRAM iteration cap, as for sessions.
        let stream = AuthChecked::new(stream, target);
        let mut config = tokio_postgres::Config::new();
        config
            .user(&admin.user)
            .password(admin.password.expose())
            .dbname(&target.database)
            .application_name(purpose)
            .options("-c statement_timeout=30s -c lock_timeout=10s")
            // TLS, when the target wants it, is already under `stream`.
            .ssl_mode(SslMode::Disable);
        let (client, connection) = config
            .connect_raw(stream, NoTls)
            .await
            .map_err(failed("log in as the target's admin role"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
        Ok(client)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .map_err(|_| UpstreamError::Timeout(CONNECT_TIMEOUT))?
}

/// What [`create`] needs to know of the role.
pub struct NewRole<'a> {
    pub name: &'a str,
    pub granted: &'a str,
    pub admin: &'a str,
    pub identity: &'a str,
    pub grant_id: Uuid,
    /// `SCRAM-SHA-256$…`: the clear password never reaches the server or its log.
    pub verifier: &'a str,
    pub valid_until: Timestamp,
}

/// Creates the role in one round trip (one implicit transaction: the role never exists
/// without its marker). When it exists already (another replica, or an earlier login of
/// this grant, made it: 42710, or 23505 when both created it at once), it is left as it is, or with `reset` its password and
/// `VALID UNTIL` are set again (the grantee may have changed the password).
///
/// Decisions: `INHERIT` — the role has the granted role's privileges as that role's own
/// members do, with nothing a client can `RESET` away; what it creates is its own (the
/// catalog says who made it) and is handed to the granted role when the grant ends.
/// No `CONNECTION LIMIT` — only jitgate knows the password, so every connection is a
/// jitgate session under jitgate's own limits, and a server-side limit would refuse
/// sessions jitgate admitted. `ROLE <admin>` makes the admin a member, so it may end the
/// role's backends and reassign what it owns on PostgreSQL 15 as on 16+.
pub async fn create(client: &Client, role: &NewRole<'_>, reset: bool) -> Result<(), UpstreamError> {
    let name = ident(role.name);
    let password = literal(role.verifier);
    let until = literal(&role.valid_until.to_string());
    let sql = format!(
        "CREATE ROLE {name} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
         NOBYPASSRLS CONNECTION LIMIT -1 PASSWORD {password} VALID UNTIL {until} \
         IN ROLE {granted} ROLE {admin}; COMMENT ON ROLE {name} IS {comment}",
        granted = ident(role.granted),
        admin = ident(role.admin),
        comment = literal(&names::marker(role.grant_id, role.admin, role.identity)),
    );
    match client
        .batch_execute(&sql)
        .await
        .map_err(failed("create the per-grant role"))
    {
        // 42710: it existed; 23505: another replica's CREATE committed while this one
        // waited on the name (PostgreSQL reports that race as a unique violation).
        Err(e) if matches!(code_of(&e), Some("42710" | "23505")) => {
            if reset {
                client
                    .batch_execute(&format!(
                        "ALTER ROLE {name} LOGIN PASSWORD {password} VALID UNTIL {until}"
                    ))
                    .await
                    .map_err(failed("reset the per-grant role's password"))?;
            }
            Ok(())
        }
        other => other,
    }
}

/// Moves the role's `VALID UNTIL` (an extension of its grant).
pub async fn set_valid_until(
    client: &Client,
    name: &str,
    until: Timestamp,
) -> Result<(), UpstreamError> {
    client
        .batch_execute(&format!(
            "ALTER ROLE {} VALID UNTIL {}",
            ident(name),
            literal(&until.to_string())
        ))
        .await
        .map_err(failed("move the per-grant role's VALID UNTIL"))
}

/// Every per-grant role on the server (marked, and named after the grant its marker names).
pub async fn list(client: &Client, admin: &str) -> Result<Vec<Provisioned>, UpstreamError> {
    let rows = client
        .query(
            "SELECT r.rolname::pg_catalog.text, d.description, \
               CASE WHEN pg_catalog.isfinite(r.rolvaliduntil) \
                 THEN (pg_catalog.date_part('epoch', r.rolvaliduntil) * 1000000)::pg_catalog.int8 END, \
               (SELECT g.rolname::pg_catalog.text FROM pg_catalog.pg_auth_members m \
                  JOIN pg_catalog.pg_roles g ON g.oid = m.roleid \
                  WHERE m.member = r.oid ORDER BY g.rolname LIMIT 1) \
             FROM pg_catalog.pg_roles r \
             JOIN pg_catalog.pg_shdescription d \
               ON d.objoid = r.oid AND d.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass \
             WHERE r.rolname OPERATOR(pg_catalog.~~) 'jit\\_%' \
               AND d.description OPERATOR(pg_catalog.~~) 'jitgate ephemeral role of grant %'",
            &[],
        )
        .await
        .map_err(failed("list the per-grant roles"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0).map_err(failed("read a per-grant role"))?;
        let comment: String = row.try_get(1).map_err(failed("read a per-grant role"))?;
        let Some(grant_id) = names::grant_of(&name, &comment, admin) else {
            continue;
        };
        out.push(Provisioned {
            name,
            grant_id,
            valid_until: row.try_get(2).map_err(failed("read a per-grant role"))?,
            granted: row.try_get(3).map_err(failed("read a per-grant role"))?,
        });
    }
    Ok(out)
}

/// Takes the sweep lock of this target for this connection's life; `false`: another
/// replica holds it.
pub async fn try_lock(client: &Client) -> Result<bool, UpstreamError> {
    let row = client
        .query_one("SELECT pg_catalog.pg_try_advisory_lock($1)", &[&SWEEP_LOCK])
        .await
        .map_err(failed("take the sweep lock"))?;
    row.try_get(0).map_err(failed("take the sweep lock"))
}

/// Retires the role: no more logins, its backends terminated (and waited for), what it
/// owns in the target database reassigned to `granted` (the admin when unknown), its
/// privileges and default privileges dropped, then the role. A role already gone is
/// not an error.
pub async fn retire(
    client: &Client,
    name: &str,
    granted: Option<&str>,
) -> Result<(), UpstreamError> {
    let role = ident(name);
    match client
        .batch_execute(&format!("ALTER ROLE {role} NOLOGIN"))
        .await
        .map_err(failed("stop logins of the per-grant role"))
    {
        Err(e) if code_of(&e) == Some("42704") => return Ok(()),
        other => other?,
    }
    // In the select list, so it runs only on the rows the WHERE clause kept.
    let rows = client
        .query(
            "SELECT pg_catalog.pg_terminate_backend(a.pid, $2) FROM pg_catalog.pg_stat_activity a \
             WHERE a.usename OPERATOR(pg_catalog.=) $1",
            &[&name, &TERMINATE_WAIT_MS],
        )
        .await
        .map_err(failed("terminate the per-grant role's backends"))?;
    let mut left = 0;
    for row in rows {
        let gone: bool = row
            .try_get(0)
            .map_err(failed("terminate the per-grant role's backends"))?;
        left += usize::from(!gone);
    }
    if left > 0 {
        tracing::warn!(
            role = name,
            left,
            "backends of a retired per-grant role did not exit in time; dropping the role anyway"
        );
    }
    // jitgate made the admin a member when it created the role; a role made by another
    // admin (or by hand) gets the membership now, or the reassignment below says why not.
    let member = client
        .query_one("SELECT pg_catalog.pg_has_role($1, 'USAGE')", &[&name])
        .await
        .map_err(failed("check the admin's membership in the per-grant role"))?
        .try_get::<_, bool>(0)
        .map_err(failed("check the admin's membership in the per-grant role"))?;
    if !member {
        if let Err(e) = client
            .batch_execute(&format!("GRANT {role} TO CURRENT_USER"))
            .await
        {
            tracing::debug!(role = name, error = %e, "could not join the per-grant role");
        }
    }
    let heir = granted
        .map(ident)
        .unwrap_or_else(|| "CURRENT_USER".to_owned());
    client
        .batch_execute(&format!(
            "REASSIGN OWNED BY {role} TO {heir}; DROP OWNED BY {role}; DROP ROLE {role}"
        ))
        .await
        .map_err(failed("drop the per-grant role"))
}
