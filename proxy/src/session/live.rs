//! An admitted session, from registration to `session_end`: it joins the registry with
//! what the backstop needs to end it, records `session_start` and greets the client
//! ([`open`]); relays until the grant, the client or an error ends it ([`relay`]); then
//! ends its upstream work, releases the connection and records how it ended ([`close`]).
//!
//! The session stays registered until its backend is confirmed idle (parked) or gone, so
//! a revocation or expiry during the teardown still reaches it (and the backstop still
//! guards it); `session_end` is written after that, and says what had to be stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use jitgate_audit::{AuditError, EndReason, EventBody};
use jitgate_policy::Grant;

use super::client::ClientConn;
use super::end::End;
use super::enforce::Enforcer;
use super::exit::{Exit, Tally};
use super::login::LoggedIn;
use super::meta::SessionMeta;
use super::refuse::RefusalState;
use super::relay::Relay;
use super::release::{self, UpstreamAtEnd};
use super::teardown::{self, SessionAtEnd};
use super::tracker::Tracker;
use super::upstream::Upstream;
use super::ProxyContext;
use crate::backstop_handle::BackstopHandle;
use crate::cancel::{CancelKey, CancelTarget};
use crate::protocol::{backend, sqlstate, tags, PgError};
use crate::registry::{Admission, SessionHandle, SessionInfo};
use crate::reuse::ParkKey;
use crate::settings::{RoleCredentials, TargetSettings};
use crate::stop::StopTarget;

/// Runs an admitted session to its end (see the module doc).
pub(super) async fn live(
    ctx: &ProxyContext,
    mut conn: ClientConn,
    peer: SocketAddr,
    tls: bool,
    logged_in: LoggedIn<'_>,
) {
    let LoggedIn {
        startup,
        grant,
        meta,
        target,
        mut upstream,
        creds,
        park_key,
        admission,
    } = logged_in;
    let (cancel_target, stop_target) = stop_targets(ctx, &grant, target, &upstream, creds);
    let at = Opening {
        peer,
        tls,
        grant: &grant,
        meta: &meta,
        stop_target: &stop_target,
        application_name: startup.application_name.clone(),
    };
    let Some((mut handle, cancel_key)) =
        open(ctx, &mut conn, &upstream, at, cancel_target, admission).await
    else {
        return;
    };
    tracing::info!(grant = %grant.id, role = %grant.role, upstream_pid = upstream.pid, reused = upstream.reused, "session started");

    let started = Instant::now();
    let mut tracker = Tracker::new(target.audit.rules_for(&grant.role))
        .with_role_changes(target.role_changes)
        .with_limits(ctx.settings.session_limits);
    let (end, refusal) = relay(
        ctx,
        &mut conn,
        &mut upstream,
        &mut tracker,
        &meta,
        &mut handle,
    )
    .await;
    let closing = Closing {
        end,
        refusal,
        started,
        park_key,
        grant: &grant,
        meta: &meta,
        stop_target: &stop_target,
    };
    close(ctx, conn, upstream, tracker, handle, cancel_key, closing).await;
}

/// Where a cancel request for the session goes, and what it takes to end its backend.
fn stop_targets(
    ctx: &ProxyContext,
    grant: &Grant,
    target: &TargetSettings,
    upstream: &Upstream,
    creds: RoleCredentials,
) -> (CancelTarget, Arc<StopTarget>) {
    let cancel = CancelTarget {
        host: target.host.clone(),
        port: target.port,
        tls: target.tls.clone(),
        upstream_pid: upstream.pid,
        upstream_secret: upstream.secret,
    };
    let stop = Arc::new(StopTarget {
        settings: Arc::clone(&ctx.settings),
        target: grant.target.clone(),
        role: grant.role.clone(),
        keys: Arc::clone(&ctx.scram_keys),
        cancel: cancel.clone(),
        creds: Some(creds),
    });
    (cancel, stop)
}

/// What the session opens with.
struct Opening<'a> {
    peer: SocketAddr,
    tls: bool,
    grant: &'a Grant,
    meta: &'a SessionMeta,
    stop_target: &'a Arc<StopTarget>,
    application_name: Option<String>,
}

/// Registers the session (with what the backstop needs to end it), records
/// `session_start` and greets the client. `None`: the session was refused and that was
/// reported (it could not be guarded by the backstop, or the audit log did not take
/// its start).
async fn open(
    ctx: &ProxyContext,
    conn: &mut ClientConn,
    upstream: &Upstream,
    at: Opening<'_>,
    cancel_target: CancelTarget,
    admission: Admission,
) -> Option<(SessionHandle, CancelKey)> {
    let Opening {
        peer,
        tls,
        grant,
        meta,
        stop_target,
        application_name,
    } = at;
    let session_id = meta.session_id;
    // Duplicates of both sockets for the backstop, which ends the session should this
    // thread stop running; a session it could not end is not started.
    let backstop = match BackstopHandle::new(
        &conn.stream,
        Arc::clone(&conn.gate),
        &upstream.stream,
        Arc::clone(stop_target),
    ) {
        Ok(backstop) => backstop,
        Err(e) => {
            refuse(ctx, conn, peer, grant, session_id, Unopened::Unguarded(e)).await;
            return None;
        }
    };
    let cancel_key = ctx.cancels.register(cancel_target);
    let started_at = jiff::Timestamp::now();
    #[cfg(feature = "failpoints")]
    super::failpoints::before_register(&grant.target).await;
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
    let handle = registered.handle;
    if registered.stale {
        // A grant change was applied while this login was between the store and here.
        super::recheck::recheck(ctx, &handle, grant).await;
    }

    let start_event = meta.event(EventBody::SessionStart {
        client_addr: peer.to_string(),
        tls,
        application_name,
        deadline: grant.expires_at,
        upstream_pid: Some(upstream.pid),
        upstream_reused: upstream.reused,
    });
    if let Err(e) = ctx.audit.write(start_event).await {
        refuse(ctx, conn, peer, grant, session_id, Unopened::Unrecorded(e)).await;
        return None;
    }

    // The client sees the upstream's parameters and process id, with our cancel secret.
    conn.out.extend_from_slice(&upstream.greeting);
    backend::backend_key_data(&mut conn.out, cancel_key.pid, cancel_key.secret);
    backend::ready_for_query(&mut conn.out, b'I');
    if let Err(e) = conn.flush().await {
        tracing::info!(error = %e, "client left before the session started");
    }
    Some((handle, cancel_key))
}

/// Why an admitted session could not be opened.
enum Unopened {
    /// Its sockets could not be duplicated for the backstop: nothing could end it should
    /// its thread stop.
    Unguarded(std::io::Error),
    /// The audit log did not take its `session_start`.
    Unrecorded(AuditError),
}

/// Refuses an admitted session that cannot be opened: recorded, and the client told.
#[cold]
async fn refuse(
    ctx: &ProxyContext,
    conn: &mut ClientConn,
    peer: SocketAddr,
    grant: &Grant,
    session_id: uuid::Uuid,
    why: Unopened,
) {
    let (reason, error) = match why {
        Unopened::Unguarded(e) => {
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
            (reason, error)
        }
        Unopened::Unrecorded(e) => {
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
            (reason, error)
        }
    };
    Exit::denied(peer, &grant.identity, &grant.target, reason, error)
        .report(ctx, Some(conn), session_id)
        .await;
}

/// Relays until the session ends: why it ended, and what the relay knew of the server's
/// transaction and of refused extended-protocol groups.
async fn relay(
    ctx: &ProxyContext,
    conn: &mut ClientConn,
    upstream: &mut Upstream,
    tracker: &mut Tracker,
    meta: &SessionMeta,
    handle: &mut SessionHandle,
) -> (End, RefusalState) {
    let mut enforcer = Enforcer::new(
        handle.control().clone(),
        ctx.terminate.clone(),
        Arc::clone(ctx.engine.clock()),
    );
    let settings = &ctx.settings;
    let mut relay = Relay {
        client: conn,
        upstream: &mut upstream.stream,
        tracker,
        audit: &ctx.audit,
        meta,
        max_message_len: settings.max_message_len,
        max_audit_batch_bytes: settings.session_limits.max_audit_batch_bytes,
        refusal: Default::default(),
        frames: Vec::with_capacity(16),
        waiting: false,
    };
    let end = relay.run(&mut enforcer).await;
    (end, relay.refusal)
}

/// How the relay left the session, for [`close`].
struct Closing<'a> {
    end: End,
    refusal: RefusalState,
    /// When the session started relaying (its `duration_ms`).
    started: Instant,
    park_key: ParkKey,
    grant: &'a Grant,
    meta: &'a SessionMeta,
    stop_target: &'a StopTarget,
}

/// Ends the session: tells the client why while its backend is stopped, records the
/// outcome of statements never answered, parks or closes the upstream connection, leaves
/// the registry once the backend is idle or gone, and writes `session_end`.
async fn close(
    ctx: &ProxyContext,
    mut conn: ClientConn,
    mut upstream: Upstream,
    mut tracker: Tracker,
    mut handle: SessionHandle,
    cancel_key: CancelKey,
    c: Closing<'_>,
) {
    handle.set_ending();
    let deadline = handle.control().borrow().deadline;
    let in_flight = tracker.in_flight();
    let outcome = teardown::teardown(
        c.end,
        SessionAtEnd {
            client: &mut conn,
            upstream: &mut upstream.stream,
            in_flight,
            saw_fatal: tracker.saw_fatal(),
            stop: c.stop_target,
            meta: c.meta,
            deadline,
        },
    )
    .await;
    drop(cancel_key);
    let end_state = UpstreamAtEnd {
        upstream_open: outcome.upstream_open,
        tx_idle: c.refusal.tx_status == tags::TX_IDLE,
        busy: in_flight || c.refusal.discarding,
    };
    // Statements the server never answered: the end stopped them, or they never ran.
    let mut unanswered = Vec::new();
    tracker.unanswered(&mut unanswered);
    let audit_failed = outcome.exit.end_reason() == Some(EndReason::AuditUnavailable);
    if !unanswered.is_empty() && !audit_failed {
        let mut events = unanswered.into_iter().map(|b| c.meta.event(b)).collect();
        if let Err(e) = ctx.audit.write_batch(&mut events).await {
            tracing::error!(error = %e, "could not audit the outcome of unanswered statements");
        }
    }
    let released = release::release(
        ctx,
        upstream,
        c.park_key,
        c.grant.id,
        end_state,
        handle.control(),
        c.stop_target,
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
        duration_ms: u64::try_from(c.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        upstream_parked: parked,
        stopped,
    });
    // The client was told by the teardown: this writes `session_end`.
    exit.report(ctx, None, c.meta.session_id).await;
}
