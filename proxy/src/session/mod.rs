//! One client session, from the first byte to the last: handshake, authentication,
//! admission against the grant store, upstream connection with brokered credentials,
//! relay with audit and enforcement, teardown.

mod authenticate;
mod client;
pub mod error;
mod handshake;
mod meta;
pub mod params;
mod relay;
mod scan;
mod stream;
mod teardown;
mod tracker;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use jitgate_audit::{AuditWriter, EndReason, Event, EventBody};
use jitgate_policy::Engine;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use self::authenticate::{authenticate, AuthFailure};
use self::client::{negotiate_protocol_version, ClientConn, ReadError};
use self::handshake::{handshake, Hello};
use self::meta::SessionMeta;
use self::relay::{Enforcer, Relay};
use self::tracker::Tracker;
use crate::cancel::{CancelMap, CancelTarget};
use crate::protocol::{backend, sqlstate, PgError};
use crate::registry::{SessionInfo, SessionRegistry};
use crate::settings::ProxySettings;

/// Everything sessions share.
pub struct ProxyContext {
    pub settings: Arc<ProxySettings>,
    pub engine: Engine,
    pub audit: AuditWriter,
    pub registry: Arc<SessionRegistry>,
    pub cancels: Arc<CancelMap>,
    /// Cancelled when live sessions must end (after the drain deadline at shutdown).
    pub terminate: CancellationToken,
    /// Key for the mock verifiers of unknown identities (random per process).
    pub mock_secret: [u8; 32],
}

impl ProxyContext {
    pub fn new(
        settings: Arc<ProxySettings>,
        engine: Engine,
        audit: AuditWriter,
        registry: Arc<SessionRegistry>,
    ) -> Arc<Self> {
        Arc::new(ProxyContext {
            settings,
            engine,
            audit,
            registry,
            cancels: CancelMap::new(),
            terminate: CancellationToken::new(),
            mock_secret: rand::random(),
        })
    }
}

/// Serves one accepted connection to its end. Never panics on client input; every
/// refusal reaches the client as an ErrorResponse.
pub async fn run(ctx: Arc<ProxyContext>, tcp: TcpStream, peer: SocketAddr) {
    let session_id = Uuid::now_v7();
    let span = tracing::info_span!(
        "session",
        %session_id,
        %peer,
        identity = tracing::field::Empty,
        target = tracing::field::Empty
    );
    run_inner(ctx, tcp, peer, session_id).instrument(span).await
}

async fn audit_refusal(
    ctx: &ProxyContext,
    session_id: Uuid,
    identity: &str,
    target: &str,
    body: EventBody,
) {
    let event = Event::new(body)
        .with_session(session_id)
        .with_identity(identity)
        .with_target(target);
    if let Err(e) = ctx.audit.write(event).await {
        tracing::error!(error = %e, "could not audit a refused connection");
    }
}

async fn run_inner(ctx: Arc<ProxyContext>, tcp: TcpStream, peer: SocketAddr, session_id: Uuid) {
    let _ = tcp.set_nodelay(true);
    let settings = Arc::clone(&ctx.settings);
    let login_deadline = tokio::time::Instant::now() + settings.login_timeout;

    let hello = match tokio::time::timeout_at(login_deadline, handshake(tcp, settings.tls.as_ref()))
        .await
    {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!("login timed out during startup");
            return;
        }
    };
    let (stream, buf, minor, params, tls) = match hello {
        Hello::Cancel { pid, secret } => {
            forward_cancel(&ctx, peer, pid, secret).await;
            return;
        }
        Hello::Startup {
            stream,
            buf,
            minor,
            params,
            tls,
        } => (stream, buf, minor, params, tls),
    };
    let mut conn = ClientConn::new(stream, buf, settings.max_message_len);

    let startup = match params::interpret(&params) {
        Ok(s) => s,
        Err(error) => {
            let identity = params
                .iter()
                .find(|(k, _)| k == "user")
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            audit_refusal(
                &ctx,
                session_id,
                identity,
                "",
                EventBody::AccessDenied {
                    client_addr: peer.to_string(),
                    reason: error.message.clone(),
                },
            )
            .await;
            conn.send_error(&error).await;
            return;
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
        authenticate(&mut conn, verifier, &startup.identity, &ctx.mock_secret),
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
        Ok(Err(AuthFailure::Read(ReadError::Io(e)))) | Ok(Err(AuthFailure::Io(e))) => {
            tracing::info!(error = %e, "client connection failed during authentication");
            return;
        }
        Ok(Err(AuthFailure::Read(ReadError::Closed))) => {
            tracing::info!("client left during authentication");
            return;
        }
        Err(_) => Some((
            PgError::fatal(
                sqlstate::CONNECTION_FAILURE,
                "authentication timed out: the client did not finish logging in in time",
            ),
            "login timeout".to_owned(),
        )),
    };
    if let Some((error, reason)) = failure {
        tracing::info!(%reason, "authentication failed");
        audit_refusal(
            &ctx,
            session_id,
            &startup.identity,
            &startup.target,
            EventBody::AuthFailure {
                client_addr: peer.to_string(),
                reason,
            },
        )
        .await;
        conn.send_error(&error).await;
        return;
    }

    // Admission: the session is bound to one grant from here on.
    let admission = match ctx
        .engine
        .admit(&startup.identity, &startup.target, startup.role.as_deref())
        .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(error = %e, "access denied");
            audit_refusal(
                &ctx,
                session_id,
                &startup.identity,
                &startup.target,
                EventBody::AccessDenied {
                    client_addr: peer.to_string(),
                    reason: e.to_string(),
                },
            )
            .await;
            conn.send_error(&PgError::fatal(e.sqlstate(), e.client_message()))
                .await;
            return;
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

    let Some((target, creds)) = settings
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
        conn.send_error(&error).await;
        return;
    };

    let mut upstream = match upstream::connect(target, creds, &startup.forward).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "could not open the upstream session");
            let error = PgError::fatal(
                sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                format!(
                    "jitgate could not open a session on target \"{}\" as role \"{}\"",
                    grant.target, grant.role
                ),
            )
            .with_detail(e.to_string())
            .with_hint(
                "the target database may be down or misconfigured; tell the jitgate operator",
            );
            conn.send_error(&error).await;
            return;
        }
    };

    let cancel_target = CancelTarget {
        host: target.host.clone(),
        port: target.port,
        tls: target.tls.clone(),
        upstream_pid: upstream.pid,
        upstream_secret: upstream.secret,
    };
    let cancel_key = ctx.cancels.register(cancel_target.clone());
    let started_at = jiff::Timestamp::now();
    let mut handle = ctx.registry.register(SessionInfo {
        session_id,
        identity: grant.identity.clone(),
        target: grant.target.clone(),
        role: grant.role.clone(),
        grant_id: grant.id,
        client_addr: peer.to_string(),
        tls,
        started_at,
        deadline: grant.expires_at,
        upstream_pid: Some(upstream.pid),
    });

    let start_event = meta.event(EventBody::SessionStart {
        client_addr: peer.to_string(),
        tls,
        application_name: startup.application_name.clone(),
        deadline: grant.expires_at,
        upstream_pid: Some(upstream.pid),
    });
    if let Err(e) = ctx.audit.write(start_event).await {
        tracing::error!(error = %e, "audit log unavailable; refusing the session");
        let error = PgError::fatal(
            sqlstate::SYSTEM_ERROR,
            "the audit log is unavailable, so jitgate cannot open a session",
        )
        .with_hint(
            "jitgate never runs a query it cannot audit; ask the operator to check the audit log",
        );
        conn.send_error(&error).await;
        return;
    }

    // The client sees the upstream's parameters and process id, with our cancel secret.
    conn.out.extend_from_slice(&upstream.greeting);
    backend::backend_key_data(&mut conn.out, cancel_key.pid, cancel_key.secret);
    backend::ready_for_query(&mut conn.out, b'I');
    if let Err(e) = conn.flush().await {
        tracing::info!(error = %e, "client left before the session started");
    }
    tracing::info!(grant = %grant.id, role = %grant.role, upstream_pid = upstream.pid, "session started");

    let started = Instant::now();
    let mut tracker = Tracker::default();
    let end = {
        let terminate = ctx.terminate.clone();
        let mut enforcer = Enforcer::new(handle.control(), &terminate);
        let mut relay = Relay {
            client: &mut conn,
            upstream: &mut upstream.stream,
            tracker: &mut tracker,
            audit: &ctx.audit,
            meta: &meta,
            max_message_len: settings.max_message_len,
        };
        relay.run(&mut enforcer).await
    };
    let deadline = handle.control().borrow().deadline;
    let outcome = teardown::teardown(
        end,
        &mut conn,
        &mut upstream.stream,
        &tracker,
        &cancel_target,
        &meta,
        deadline,
    )
    .await;
    drop(cancel_key);
    drop(handle);
    tracing::info!(reason = ?outcome.reason, late_ms = ?outcome.late_ms, "session ended");
    let end_event = meta.event(EventBody::SessionEnd {
        reason: outcome.reason,
        detail: outcome.detail,
        late_ms: outcome.late_ms,
        queries: tracker.queries(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    if outcome.reason != EndReason::AuditUnavailable {
        if let Err(e) = ctx.audit.write(end_event).await {
            tracing::error!(error = %e, "could not audit the end of the session");
        }
    }
}

async fn forward_cancel(ctx: &ProxyContext, peer: SocketAddr, pid: i32, secret: i32) {
    match ctx.cancels.lookup(peer.ip(), pid, secret) {
        Some(target) => {
            if let Err(e) = upstream::send_cancel(&target).await {
                tracing::warn!(error = %e, "could not forward the cancel request");
            } else {
                tracing::info!(pid, "cancel request forwarded");
            }
        }
        None => tracing::info!(
            pid,
            "cancel request with an unknown key (or rate-limited) ignored"
        ),
    }
}
