//! Logging a client in: startup parameters, SCRAM, admission against the grant store,
//! and the upstream session with brokered credentials. Every refusal, and a client that
//! leaves before it is logged in, is handed back as an [`Exit`] — the client's
//! ErrorResponse and the audit event together — for the caller to report once.

use std::net::SocketAddr;

use jitgate_policy::Grant;
use uuid::Uuid;

use super::authenticate::{authenticate, AuthFailure};
use super::client::{negotiate_protocol_version, ClientConn, ReadError};
use super::error::UpstreamError;
use super::exit::Exit;
use super::meta::SessionMeta;
use super::params::{self, ClientStartup};
use super::stream;
use super::upstream::Upstream;
use super::ProxyContext;
use crate::protocol::{sqlstate, PgError};
use crate::registry::Admission;
use crate::reuse::{self, ParkKey};
use crate::settings::{RoleCredentials, TargetSettings};

/// A client that is authenticated, admitted under a grant, and has its upstream session.
pub struct LoggedIn<'a> {
    pub startup: ClientStartup,
    pub grant: Grant,
    pub meta: SessionMeta,
    pub target: &'a TargetSettings,
    pub upstream: Upstream,
    /// The credentials the upstream session logged in with (the granted role's, or
    /// its per-grant role's: see [`crate::provision`]).
    pub creds: RoleCredentials,
    /// Where the upstream connection may be parked when the session ends cleanly.
    pub park_key: ParkKey,
    /// Held from before the grant store was read until the session registers, so a
    /// grant change in between is not lost (see [`crate::registry::Admission`]).
    pub admission: Admission,
}

/// Runs the login steps. `Err(exit)`: the client is refused, or left during
/// authentication — the caller reports it (audit, then the client is told if it can be).
pub async fn login<'a>(
    ctx: &'a ProxyContext,
    conn: &mut ClientConn,
    peer: SocketAddr,
    session_id: Uuid,
    minor: u16,
    params: &[(String, String)],
    login_deadline: tokio::time::Instant,
) -> Result<LoggedIn<'a>, Exit> {
    let startup = startup(conn, peer, minor, params).map_err(|e| *e)?;
    authenticated(ctx, conn, peer, &startup, login_deadline).await?;
    // Admission: the session is bound to one grant from here on. Changes to it made
    // from the store read on reach the session through `ticket` until it registers.
    let ticket = ctx.registry.admission();
    let grant = admitted(ctx, peer, &startup).await?;
    let meta = SessionMeta {
        session_id,
        identity: grant.identity.clone(),
        target: grant.target.clone(),
        role: grant.role.clone(),
        grant_id: grant.id,
    };
    let (target, granted) = configured(ctx, peer, &startup, &grant).map_err(|e| *e)?;
    let creds = ctx
        .provisioner
        .credentials(&grant, target, granted)
        .into_owned();
    let park_key = ParkKey::new(grant.id, target, &creds, &startup.forward);
    let upstream = upstream(ctx, &startup, &grant, target, granted, &creds, &park_key)
        .await
        .map_err(|e| unopened(peer, &startup, &grant, &e))?;
    Ok(LoggedIn {
        startup,
        grant,
        meta,
        target,
        upstream,
        creds,
        park_key,
        admission: ticket,
    })
}

/// The startup parameters, interpreted; protocol options jitgate does not support are
/// negotiated away (NegotiateProtocolVersion).
fn startup(
    conn: &mut ClientConn,
    peer: SocketAddr,
    minor: u16,
    params: &[(String, String)],
) -> Result<ClientStartup, Box<Exit>> {
    let startup = match params::interpret(params) {
        Ok(s) => s,
        Err(error) => {
            let identity = params
                .iter()
                .find(|(k, _)| k == "user")
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            let reason = error.message.clone();
            return Err(Box::new(
                Exit::denied(peer, identity, "", reason, error).before_auth(),
            ));
        }
    };
    let span = tracing::Span::current();
    span.record("identity", startup.identity.as_str());
    span.record("target", startup.target.as_str());

    let unsupported: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if minor > 0 || !unsupported.is_empty() {
        negotiate_protocol_version(&mut conn.out, &unsupported);
    }
    Ok(startup)
}

/// SCRAM with the client, within what is left of the login timeout.
async fn authenticated(
    ctx: &ProxyContext,
    conn: &mut ClientConn,
    peer: SocketAddr,
    startup: &ClientStartup,
    login_deadline: tokio::time::Instant,
) -> Result<(), Exit> {
    let verifier = ctx.settings.identities.get(&startup.identity);
    let auth = tokio::time::timeout_at(
        login_deadline,
        authenticate(conn, verifier, &startup.identity, &ctx.mock_secret),
    )
    .await;
    let (identity, target) = (startup.identity.as_str(), startup.target.as_str());
    let (error, reason) = match auth {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(AuthFailure::Auth(e))) => (
            Some(PgError::fatal(
                e.sqlstate(),
                format!("password authentication failed for identity \"{identity}\""),
            )),
            e.to_string(),
        ),
        Ok(Err(AuthFailure::Read(ReadError::Protocol(e)))) => (
            Some(PgError::fatal(e.sqlstate(), e.to_string())),
            e.to_string(),
        ),
        // The client left: nothing to tell it, but the attempt is recorded (psql does
        // this once when it must ask its user for a password, then logs in again).
        Ok(Err(AuthFailure::Read(ReadError::Io(e)))) | Ok(Err(AuthFailure::Io(e))) => {
            (None, format!("connection error during authentication: {e}"))
        }
        Ok(Err(AuthFailure::Read(ReadError::Closed))) => (
            None,
            "the client closed the connection before it finished authenticating".to_owned(),
        ),
        Err(_) => (
            Some(PgError::fatal(
                sqlstate::CONNECTION_FAILURE,
                "authentication timed out: the client did not finish logging in in time",
            )),
            format!(
                "the client did not finish authenticating within login_timeout ({:?})",
                ctx.settings.login_timeout
            ),
        ),
    };
    Err(Exit::auth_failed(peer, identity, target, reason, error))
}

/// The grant the session runs under, from the grant store.
async fn admitted(
    ctx: &ProxyContext,
    peer: SocketAddr,
    startup: &ClientStartup,
) -> Result<Grant, Exit> {
    let admitted = ctx
        .engine
        .admit(&startup.identity, &startup.target, startup.role.as_deref())
        .await;
    match admitted {
        Ok(a) => Ok(a.grant),
        Err(e) => {
            let error = PgError::fatal(e.sqlstate(), e.client_message());
            Err(Exit::denied(
                peer,
                &startup.identity,
                &startup.target,
                e.to_string(),
                error,
            ))
        }
    }
}

/// The configured target of `grant`, and the credentials of its role.
fn configured<'a>(
    ctx: &'a ProxyContext,
    peer: SocketAddr,
    startup: &ClientStartup,
    grant: &Grant,
) -> Result<(&'a TargetSettings, &'a RoleCredentials), Box<Exit>> {
    let found = ctx
        .settings
        .targets
        .get(&grant.target)
        .and_then(|t| t.roles.get(&grant.role).map(|c| (t, c)));
    found.ok_or_else(|| {
        let error = PgError::fatal(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!(
                "target \"{}\" has no credentials configured for role \"{}\"",
                grant.target, grant.role
            ),
        )
        .with_hint("ask the jitgate operator to add the role to the target's configuration");
        let reason = format!(
            "admitted under grant {}, but target \"{}\" has no credentials for role \"{}\"",
            grant.id, grant.target, grant.role
        );
        Box::new(Exit::denied(
            peer,
            &startup.identity,
            &startup.target,
            reason,
            error,
        ))
    })
}

/// The upstream session: a connection parked by an earlier session of this same grant,
/// else a new one with the brokered credentials.
async fn upstream(
    ctx: &ProxyContext,
    startup: &ClientStartup,
    grant: &Grant,
    target: &TargetSettings,
    granted: &RoleCredentials,
    creds: &RoleCredentials,
    park_key: &ParkKey,
) -> Result<Upstream, UpstreamError> {
    let mut parked = ctx.registry.parked().take(park_key, &ctx.settings.reuse);
    if ctx.settings.session_threads > 0 {
        if let Some(mut u) = parked.take() {
            match stream::rehome_upstream(&mut u.stream) {
                Ok(()) => parked = Some(u),
                Err(e) => {
                    // Not usable from this thread: close it and open a new one.
                    tracing::warn!(error = %e, "could not take up a parked upstream connection");
                    reuse::close(u);
                }
            }
        }
    }
    match parked {
        Some(u) => Ok(u),
        None => {
            let (forward, keys) = (&startup.forward, &ctx.scram_keys);
            let opening = ctx
                .provisioner
                .open(grant, target, granted, creds, forward, keys);
            opening.await
        }
    }
}

/// The refusal of a session whose upstream session could not be opened.
#[cold]
fn unopened(peer: SocketAddr, startup: &ClientStartup, grant: &Grant, e: &UpstreamError) -> Exit {
    tracing::warn!(error = %e, "could not open the upstream session");
    let reason = format!(
        "admitted under grant {}, but the upstream session could not be opened: {e}",
        grant.id
    );
    let mut error = PgError::fatal(
        sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        format!(
            "jitgate could not open a session on target \"{}\" as role \"{}\"",
            grant.target, grant.role
        ),
    )
    .with_hint(
        "the target database may be down or misconfigured; tell the jitgate operator (details are in its log)",
    );
    // Only the database's own refusal is shown; network and TLS details (host
    // names, certificate contents) stay in the operator's log.
    if let UpstreamError::Refused { .. }
    | UpstreamError::Timeout(_)
    | UpstreamError::AuthMethodNotAllowed { .. }
    | UpstreamError::ScramIterations { .. } = e
    {
        error = error.with_detail(e.to_string());
    }
    Exit::denied(peer, &startup.identity, &startup.target, reason, error)
}
