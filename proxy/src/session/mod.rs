//! One client session, from the first byte to the last: handshake, authentication,
//! admission against the grant store, upstream connection with brokered credentials,
//! relay with audit and enforcement, teardown.

// Bytes from the wire never panic the proxy: no panics, no indexing that can.
#![deny(clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

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
mod live;
mod login;
mod meta;
pub mod params;
mod recheck;
mod refuse;
mod relay;
mod release;
pub(crate) mod stream;
mod teardown;
mod tracker;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use jitgate_audit::AuditWriter;
use jitgate_policy::Engine;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use self::client::{ClientConn, MAX_AUTH_MESSAGE_LEN};
use self::exit::Exit;
use self::handshake::{handshake, ClientRequest, HandshakeError};
use crate::auth::ScramKeyCache;
use crate::cancel::CancelMap;
use crate::limits::{ConnectionLimits, LimitHit, RefusalAudit};
use crate::protocol::{sqlstate, PgError};
use crate::registry::SessionRegistry;
use crate::settings::ProxySettings;

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
        ClientRequest::Cancel { pid, secret } => {
            return forward_cancel(&ctx, peer, pid, secret).await
        }
        ClientRequest::Startup {
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
) -> Option<ClientRequest> {
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
        ClientRequest::Cancel { pid, secret } => {
            forward_cancel(&ctx, peer, pid, secret).await;
            return;
        }
        ClientRequest::Startup {
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
    live::live(&ctx, conn, peer, tls, logged_in).await;
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
