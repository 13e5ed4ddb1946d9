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
    let settings = &ctx.settings;
    let startup = match params::interpret(params) {
        Ok(s) => s,
        Err(error) => {
            let identity = params
                .iter()
                .find(|(k, _)| k == "user")
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            let reason = error.message.clone();
            return Err(Exit::denied(peer, identity, "", reason, error).before_auth());
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

    // Authenticate within what is left of the login timeout.
    let verifier = settings.identities.get(&startup.identity);
    let auth = tokio::time::timeout_at(
        login_deadline,
        authenticate(conn, verifier, &startup.identity, &ctx.mock_secret),
    )
    .await;
    let failure = match auth {
        Ok(Ok(())) => None,
        Ok(Err(AuthFailure::Auth(e))) => Some((
            PgError::fatal(
                e.sqlstate(),
                format!(
                    "password authentication failed for identity \"{}\"",
                    startup.identity
                ),
            ),
            e.to_string(),
        )),
        Ok(Err(AuthFailure::Read(ReadError::Protocol(e)))) => {
            Some((PgError::fatal(e.sqlstate(), e.to_string()), e.to_string()))
        }
        // The client left: nothing to tell it, but the attempt is recorded (psql does
        // this once when it must ask its user for a password, then logs in again).
        Ok(Err(AuthFailure::Read(ReadError::Io(e)))) | Ok(Err(AuthFailure::Io(e))) => {
            let reason = format!("connection error during authentication: {e}");
            return Err(Exit::auth_failed(
                peer,
                &startup.identity,
                &startup.target,
                reason,
                None,
            ));
        }
        Ok(Err(AuthFailure::Read(ReadError::Closed))) => {
            let reason = "the client closed the connection before it finished authenticating";
            return Err(Exit::auth_failed(
                peer,
                &startup.identity,
                &startup.target,
                reason,
                None,
            ));
        }
        Err(_) => Some((
            PgError::fatal(
                sqlstate::CONNECTION_FAILURE,
                "authentication timed out: the client did not finish logging in in time",
            ),
            format!(
                "the client did not finish authenticating within login_timeout ({:?})",
                settings.login_timeout
            ),
        )),
    };
    if let Some((error, reason)) = failure {
        return Err(Exit::auth_failed(
            peer,
            &startup.identity,
            &startup.target,
            reason,
            Some(error),
        ));
    }

    // Admission: the session is bound to one grant from here on. Changes to it made
    // from the store read on reach the session through `ticket` until it registers.
    let ticket = ctx.registry.admission();
    let admission = match ctx
        .engine
        .admit(&startup.identity, &startup.target, startup.role.as_deref())
        .await
    {
        Ok(a) => a,
        Err(e) => {
            let error = PgError::fatal(e.sqlstate(), e.client_message());
            return Err(Exit::denied(
                peer,
                &startup.identity,
                &startup.target,
                e.to_string(),
                error,
            ));
        }
    };
    let grant = admission.grant;
    let meta = SessionMeta {
        session_id,
        identity: grant.identity.clone(),
        target: grant.target.clone(),
        role: grant.role.clone(),
        grant_id: grant.id,
    };

    let Some((target, granted)) = settings
        .targets
        .get(&grant.target)
        .and_then(|t| t.roles.get(&grant.role).map(|c| (t, c)))
    else {
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
        return Err(Exit::denied(
            peer,
            &startup.identity,
            &startup.target,
            reason,
            error,
        ));
    };

    // A connection parked by an earlier session of this same grant, else a new one.
    let creds = ctx
        .provisioner
        .credentials(&grant, target, granted)
        .into_owned();
    let creds = &creds;
    let park_key = ParkKey::new(grant.id, target, creds, &startup.forward);
    let mut parked = ctx.registry.parked().take(&park_key, &settings.reuse);
    if settings.session_threads > 0 {
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
    let opened = match parked {
        Some(u) => Ok(u),
        None => {
            let (forward, keys) = (&startup.forward, &ctx.scram_keys);
            let opening = ctx
                .provisioner
                .open(&grant, target, granted, creds, forward, keys);
            opening.await
        }
    };
    let upstream = match opened {
        Ok(u) => u,
        Err(e) => {
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
            return Err(Exit::denied(
                peer,
                &startup.identity,
                &startup.target,
                reason,
                error,
            ));
        }
    };

    Ok(LoggedIn {
        startup,
        grant,
        meta,
        target,
        upstream,
        creds: creds.clone(),
        park_key,
        admission: ticket,
    })
}
