//! One client session, from the first byte to the last: handshake, authentication,
//! admission against the grant store, upstream connection with brokered credentials,
//! relay with audit and enforcement, teardown.

mod authenticate;
mod client;
mod end;
mod enforce;
pub mod error;
mod exit;
#[cfg(feature = "failpoints")]
mod failpoints;
pub(crate) mod farewell;
mod handshake;
pub mod limits;
mod login;
mod meta;
pub mod params;
mod recheck;
mod refuse;
mod relay;
mod release;
mod scan;
pub(crate) mod stream;
mod teardown;
mod tracker;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use jitgate_audit::{AuditWriter, EndReason, EventBody};
use jitgate_policy::Engine;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use self::client::{ClientConn, MAX_AUTH_MESSAGE_LEN};
use self::enforce::Enforcer;
use self::exit::{Exit, Tally};
use self::handshake::{handshake, HandshakeError, Hello};
use self::relay::Relay;
use self::teardown::Ending;
use self::tracker::Tracker;
use crate::auth::ScramKeyCache;
use crate::backstop_handle::BackstopHandle;
use crate::cancel::{CancelMap, CancelTarget};
use crate::limits::{ConnectionLimits, LimitHit, RefusalAudit};
use crate::protocol::{backend, sqlstate, tags, PgError};
use crate::registry::{SessionInfo, SessionRegistry};
use crate::settings::ProxySettings;
use crate::stop::StopTarget;

/// Everything sessions share.
pub struct ProxyContext {
    pub settings: Arc<ProxySettings>,
    pub engine: Engine,
    pub audit: AuditWriter,
    pub registry: Arc<SessionRegistry>,
    pub cancels: Arc<CancelMap>,
    /// Cancelled when shutdown begins: logins in progress are refused (57P03), live
    /// sessions go on until `terminate`.
    pub draining: CancellationToken,
    /// Cancelled when live sessions must end (after the drain deadline at shutdown).
    pub terminate: CancellationToken,
    /// Key for the mock verifiers of unknown identities (`settings.unknown_identity_key`:
    /// the same across restarts and replicas).
    pub mock_secret: [u8; 32],
    /// Open client connections, in all and per address (`client_limits`).
    pub connections: Arc<ConnectionLimits>,
    /// Rate limits and counts of pre-authentication refusal events; shared with the
    /// admin API's `/v1/login`.
    pub refusal_audit: Arc<RefusalAudit>,
    /// Connections over a limit that are being told so (bounded: see [`run`]).
    refusing: Arc<tokio::sync::Semaphore>,
    /// Upstream SCRAM keys per (credential, salt, iterations): PBKDF2 once per role.
    /// Shared with the backstop, which may open connections of its own (see `stop`).
    pub scram_keys: Arc<ScramKeyCache>,
    /// Per-grant upstream roles (targets with `provisioning: ephemeral`).
    pub provisioner: Arc<crate::provision::Provisioner>,
}

impl ProxyContext {
    pub fn new(
        settings: Arc<ProxySettings>,
        engine: Engine,
        audit: AuditWriter,
        registry: Arc<SessionRegistry>,
        provisioner: Arc<crate::provision::Provisioner>,
    ) -> Arc<Self> {
        Arc::new(ProxyContext {
            engine,
            audit,
            registry,
            cancels: CancelMap::new(),
            draining: CancellationToken::new(),
            terminate: CancellationToken::new(),
            mock_secret: settings.unknown_identity_key,
            connections: ConnectionLimits::new(&settings.client_limits),
            refusal_audit: Arc::new(RefusalAudit::new(&settings.client_limits)),
            refusing: Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING)),
            scram_keys: Arc::default(),
            settings,
            provisioner,
        })
    }
}

/// Connections over a connection limit that may be in their startup at once, to be told
/// why they are refused; past this they are closed without a word.
const MAX_REFUSING: usize = 64;

/// Serves one accepted connection to its end. Never panics on client input; however it
/// ends, it ends with one [`Exit`] (see `exit.rs`): recorded, and the client told with an
/// ErrorResponse wherever the protocol still allows one.
///
/// The connection holds a slot of the connection limits from here to its end; one over
/// a limit is refused (53300) after its startup packet, where libpq shows the error.
pub async fn run(ctx: Arc<ProxyContext>, tcp: TcpStream, peer: SocketAddr) {
    let session_id = Uuid::now_v7();
    let span = tracing::info_span!(
        "session",
        %session_id,
        %peer,
        identity = tracing::field::Empty,
        target = tracing::field::Empty
    );
    match ctx.connections.acquire(peer.ip()) {
        Ok(_slot) => run_inner(ctx, tcp, peer, session_id).instrument(span).await,
        Err(hit) => {
            over_limit(ctx, tcp, peer, session_id, hit)
                .instrument(span)
                .await
        }
    }
}

/// Tells a client over a connection limit which limit and what to do, after its
/// startup packet (within `login_timeout`); a CancelRequest is still forwarded.
async fn over_limit(
    ctx: Arc<ProxyContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    session_id: Uuid,
    hit: LimitHit,
) {
    let Ok(_refusing) = Arc::clone(&ctx.refusing).try_acquire_owned() else {
        let reason = format!(
            "{}; closed without an answer because {MAX_REFUSING} other connections over a limit were being refused at that moment",
            limit_reason(&hit)
        );
        return Exit::at_startup(peer, reason, None)
            .report(&ctx, None, session_id)
            .await;
    };
    let deadline = tokio::time::Instant::now() + ctx.settings.login_timeout;
    let Some(hello) = startup(&ctx, tcp, peer, session_id, deadline).await else {
        return;
    };
    let (stream, buf, params) = match hello {
        Hello::Cancel { pid, secret } => return forward_cancel(&ctx, peer, pid, secret).await,
        Hello::Startup {
            stream,
            buf,
            params,
            ..
        } => (stream, buf, params),
    };
    let (message, hint) = match hit {
        LimitHit::PerIp(n, group) => (
            format!("too many connections from {group}: jitgate allows {n} per client {}", group.unit()),
            "close some of your other connections, or ask the jitgate operator to raise client_limits.max_connections_per_ip",
        ),
        LimitHit::Total(n) => (
            format!("too many connections: jitgate allows {n} client connections in all"),
            "try again later, or ask the jitgate operator to raise client_limits.max_connections",
        ),
    };
    let reason = limit_reason(&hit);
    tracing::info!(?hit, "connection over the limit refused");
    let error = PgError::fatal(sqlstate::TOO_MANY_CONNECTIONS, message).with_hint(hint);
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map_or("", |(_, v)| v.as_str());
    let target = params
        .iter()
        .find(|(k, _)| k == "database")
        .map_or("", |(_, v)| v.as_str());
    let mut conn = ClientConn::new(stream, buf, MAX_AUTH_MESSAGE_LEN);
    Exit::denied(peer, user, target, reason, error)
        .before_auth()
        .report(&ctx, Some(&mut conn), session_id)
        .await;
}

/// The handshake, up to the startup packet (or a CancelRequest); `None`: it failed, and
/// that has been reported.
///
/// Shutdown does not cut a handshake short: a client that completes its startup packet
/// during the drain is told jitgate is shutting down (57P03, by the caller); one still in
/// its handshake at the drain deadline is recorded and closed.
async fn startup(
    ctx: &ProxyContext,
    tcp: TcpStream,
    peer: SocketAddr,
    session_id: Uuid,
    deadline: tokio::time::Instant,
) -> Option<Hello> {
    let handshake = tokio::time::timeout_at(deadline, handshake(tcp, ctx.settings.tls.as_ref()));
    tokio::select! {
        biased;
        _ = ctx.terminate.cancelled() => {
            let reason = "jitgate shut down before the client completed its startup packet";
            Exit::at_startup(peer, reason, None).report(ctx, None, session_id).await;
            None
        }
        r = handshake => match r {
            Ok(Ok(hello)) => Some(hello),
            Ok(Err(e)) => {
                handshake_failed(ctx, peer, session_id, e).await;
                None
            }
            Err(_) => {
                startup_timed_out(ctx, peer, session_id).await;
                None
            }
        },
    }
}

/// Which connection limit a client hit, for the DBA.
fn limit_reason(hit: &LimitHit) -> String {
    match hit {
        LimitHit::PerIp(n, group) => format!(
            "connection limit per client {} reached for {group} (client_limits.max_connections_per_ip = {n})",
            group.unit()
        ),
        LimitHit::Total(n) => {
            format!("global connection limit reached (client_limits.max_connections = {n})")
        }
    }
}

/// Reports a failed handshake: recorded (unless the client left without asking for
/// anything), and told when the protocol still allows it.
async fn handshake_failed(
    ctx: &ProxyContext,
    peer: SocketAddr,
    session_id: Uuid,
    e: HandshakeError,
) {
    tracing::info!(error = %e, "handshake failed");
    let (exit, stream) = e.into_exit(peer);
    let mut conn = stream.map(|s| ClientConn::new(s, bytes::BytesMut::new(), MAX_AUTH_MESSAGE_LEN));
    exit.report(ctx, conn.as_mut(), session_id).await;
}

/// Reports a client that did not complete its startup packet within `login_timeout`
/// (it cannot be answered: it is not waiting for an answer).
async fn startup_timed_out(ctx: &ProxyContext, peer: SocketAddr, session_id: Uuid) {
    tracing::info!("login timed out during startup");
    let reason = format!(
        "no startup packet within login_timeout ({:?})",
        ctx.settings.login_timeout
    );
    Exit::at_startup(peer, reason, None)
        .report(ctx, None, session_id)
        .await;
}

async fn run_inner(ctx: Arc<ProxyContext>, tcp: TcpStream, peer: SocketAddr, session_id: Uuid) {
    let _ = tcp.set_nodelay(true);
    let settings = Arc::clone(&ctx.settings);
    let login_deadline = tokio::time::Instant::now() + settings.login_timeout;

    let Some(hello) = startup(&ctx, tcp, peer, session_id, login_deadline).await else {
        return;
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
    // Until it is authenticated, a client may not make us buffer large messages.
    let mut conn = ClientConn::new(stream, buf, MAX_AUTH_MESSAGE_LEN);
    if settings.tls_required && !tls {
        return Exit::tls_required(peer, &params)
            .report(&ctx, Some(&mut conn), session_id)
            .await;
    }
    let logged_in = tokio::select! {
        biased;
        _ = ctx.draining.cancelled() => Err(Exit::shutting_down(peer, &params)),
        r = login::login(&ctx, &mut conn, peer, session_id, minor, &params, login_deadline) => r,
    };
    let logged_in = match logged_in {
        Ok(l) => l,
        Err(exit) => return exit.report(&ctx, Some(&mut conn), session_id).await,
    };
    conn.set_max_message_len(settings.max_message_len);
    live(&ctx, conn, peer, tls, logged_in).await;
}

/// Runs an admitted session: registration, greeting, relay, teardown, `session_end`.
///
/// The session stays registered until its backend is confirmed idle (parked) or gone, so
/// a revocation or expiry during the teardown still reaches it (and the backstop still
/// guards it); `session_end` is written after that, and says what had to be stopped.
async fn live(
    ctx: &ProxyContext,
    mut conn: ClientConn,
    peer: SocketAddr,
    tls: bool,
    logged_in: login::LoggedIn<'_>,
) {
    let login::LoggedIn {
        startup,
        grant,
        meta,
        target,
        mut upstream,
        creds,
        park_key,
        admission,
    } = logged_in;
    let session_id = meta.session_id;
    let settings = &ctx.settings;
    let cancel_target = CancelTarget {
        host: target.host.clone(),
        port: target.port,
        tls: target.tls.clone(),
        upstream_pid: upstream.pid,
        upstream_secret: upstream.secret,
    };
    let stop_target = Arc::new(StopTarget {
        settings: Arc::clone(&ctx.settings),
        target: grant.target.clone(),
        role: grant.role.clone(),
        keys: Arc::clone(&ctx.scram_keys),
        cancel: cancel_target.clone(),
        creds: Some(creds.clone()),
    });
    // Duplicates of both sockets for the backstop, which ends the session should this
    // thread stop running; a session it could not end is not started.
    let backstop = match BackstopHandle::new(
        &conn.stream,
        Arc::clone(&conn.gate),
        &upstream.stream,
        Arc::clone(&stop_target),
    ) {
        Ok(backstop) => backstop,
        Err(e) => {
            tracing::error!(error = %e, "could not duplicate the session's sockets; refusing the session");
            let error = PgError::fatal(
                sqlstate::INSUFFICIENT_RESOURCES,
                "jitgate is out of file descriptors and cannot guarantee this session ends with its grant",
            )
            .with_hint("try again shortly; the operator may need to raise jitgate's open-files limit");
            let reason = format!(
                "admitted under grant {}, but the session's sockets could not be duplicated for the enforcement backstop: {e}",
                grant.id
            );
            return Exit::denied(peer, &grant.identity, &grant.target, reason, error)
                .report(ctx, Some(&mut conn), session_id)
                .await;
        }
    };
    let cancel_key = ctx.cancels.register(cancel_target);
    let started_at = jiff::Timestamp::now();
    #[cfg(feature = "failpoints")]
    failpoints::before_register(&grant.target).await;
    let registered = admission.register(
        SessionInfo {
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
        },
        Some(backstop),
    );
    let mut handle = registered.handle;
    if registered.stale {
        // A grant change was applied while this login was between the store and here.
        recheck::recheck(ctx, &handle, &grant).await;
    }

    let start_event = meta.event(EventBody::SessionStart {
        client_addr: peer.to_string(),
        tls,
        application_name: startup.application_name.clone(),
        deadline: grant.expires_at,
        upstream_pid: Some(upstream.pid),
        upstream_reused: upstream.reused,
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
        // Recorded if the log takes this one after all (it failed a moment ago).
        let reason = format!(
            "admitted under grant {}, but the audit log could not record the session's start: {e}",
            grant.id
        );
        return Exit::denied(peer, &grant.identity, &grant.target, reason, error)
            .report(ctx, Some(&mut conn), session_id)
            .await;
    }

    // The client sees the upstream's parameters and process id, with our cancel secret.
    conn.out.extend_from_slice(&upstream.greeting);
    backend::backend_key_data(&mut conn.out, cancel_key.pid, cancel_key.secret);
    backend::ready_for_query(&mut conn.out, b'I');
    if let Err(e) = conn.flush().await {
        tracing::info!(error = %e, "client left before the session started");
    }
    tracing::info!(grant = %grant.id, role = %grant.role, upstream_pid = upstream.pid, reused = upstream.reused, "session started");

    let started = Instant::now();
    let mut tracker = Tracker::new(target.audit.rules_for(&grant.role))
        .with_role_changes(target.role_changes)
        .with_limits(settings.session_limits);
    let (end, refusal) = {
        let mut enforcer = Enforcer::new(
            handle.control().clone(),
            ctx.terminate.clone(),
            Arc::clone(ctx.engine.clock()),
        );
        let mut relay = Relay {
            client: &mut conn,
            upstream: &mut upstream.stream,
            tracker: &mut tracker,
            audit: &ctx.audit,
            meta: &meta,
            max_message_len: settings.max_message_len,
            max_audit_batch_bytes: settings.session_limits.max_audit_batch_bytes,
            refusal: Default::default(),
            frames: Vec::with_capacity(16),
            waiting: false,
        };
        let end = relay.run(&mut enforcer).await;
        (end, relay.refusal)
    };
    handle.set_ending();
    let deadline = handle.control().borrow().deadline;
    let in_flight = tracker.in_flight();
    let outcome = teardown::teardown(
        end,
        Ending {
            client: &mut conn,
            upstream: &mut upstream.stream,
            in_flight,
            saw_fatal: tracker.saw_fatal(),
            stop: &stop_target,
            meta: &meta,
            deadline,
        },
    )
    .await;
    drop(cancel_key);
    let end_state = release::EndState {
        upstream_open: outcome.upstream_open,
        tx_idle: refusal.tx_status == tags::TX_IDLE,
        busy: in_flight || refusal.discarding,
    };
    // Statements the server never answered: the end stopped them, or they never ran.
    let mut unanswered = Vec::new();
    tracker.unanswered(&mut unanswered);
    let audit_failed = outcome.exit.end_reason() == Some(EndReason::AuditUnavailable);
    if !unanswered.is_empty() && !audit_failed {
        let mut events = unanswered.into_iter().map(|b| meta.event(b)).collect();
        if let Err(e) = ctx.audit.write_batch(&mut events).await {
            tracing::error!(error = %e, "could not audit the outcome of unanswered statements");
        }
    }
    let released = release::release(
        ctx,
        upstream,
        park_key,
        grant.id,
        end_state,
        handle.control(),
        &stop_target,
    )
    .await;
    // The backend is idle (parked) or gone: only now may the session leave the registry.
    drop(handle);
    if tracker.disagreements() > 0 {
        tracing::error!(
            executes = tracker.disagreements(),
            "some Executes of this session ran a definition other than the one recorded (changed outside the protocol)"
        );
    }
    let parked = released.parked;
    let stopped = outcome.stopped.or(released.stopped);
    tracing::info!(reason = ?outcome.exit.end_reason(), parked, stopped = ?stopped, "session ended");
    let mut exit = outcome.exit;
    exit.tally(Tally {
        queries: tracker.queries(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        upstream_parked: parked,
        stopped,
    });
    // The client was told by the teardown: this writes `session_end`.
    exit.report(ctx, None, session_id).await;
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
