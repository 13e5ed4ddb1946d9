//! Ending a session: tell the client why, cancel what runs upstream, make sure the
//! upstream backend is gone, and say how late the drop was.

use std::time::Duration;

use jiff::Timestamp;
use jitgate_audit::EndReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::ClientConn;
use super::farewell::{self, Holder};
use super::meta::SessionMeta;
use super::relay::End;
use super::stream::UpstreamStream;
use super::tracker::Tracker;
use super::upstream::send_cancel;
use crate::cancel::CancelTarget;
use crate::protocol::{sqlstate, tags, PgError};

/// How long teardown waits on a peer at each step (a stalled peer must not hold it).
const STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// What `session_end` records.
pub struct Outcome {
    pub reason: EndReason,
    pub detail: Option<String>,
    pub late_ms: Option<f64>,
    /// The upstream connection is still open and idle (the client quit cleanly): the
    /// caller parks it for reuse or closes it.
    pub upstream_open: bool,
}

fn holder(meta: &SessionMeta) -> Holder<'_> {
    Holder {
        grant_id: meta.grant_id,
        identity: &meta.identity,
        target: &meta.target,
        role: &meta.role,
    }
}

fn ms_since(t: Timestamp) -> f64 {
    let d = Timestamp::now().duration_since(t);
    d.as_secs_f64() * 1000.0
}

/// Ends the upstream session: Terminate (the relay never forwards the client's own),
/// then wait for the backend to close its side.
pub async fn close_upstream(upstream: &mut UpstreamStream) {
    let step = async {
        let _ = upstream.write_all(&tags::TERMINATE_MESSAGE).await;
        let _ = upstream.flush().await;
        let _ = upstream.shutdown().await;
        // Wait for the backend to close its side: then it has exited.
        let mut sink = [0u8; 4096];
        loop {
            match upstream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    if tokio::time::timeout(STEP_TIMEOUT, step).await.is_err() {
        tracing::warn!("upstream did not close within {STEP_TIMEOUT:?} after Terminate");
    }
}

async fn tell_client(client: &mut ClientConn, error: PgError) {
    if tokio::time::timeout(STEP_TIMEOUT, client.send_error(&error))
        .await
        .is_err()
    {
        tracing::debug!("client did not take the final error in time");
    }
}

/// Drops a session whose grant ended or that must stop: cancel upstream if a query
/// runs, FATAL to the client, Terminate upstream, wait for the backend to go.
async fn drop_session(
    client: &mut ClientConn,
    upstream: &mut UpstreamStream,
    tracker: &Tracker,
    cancel: &CancelTarget,
    error: PgError,
) {
    let cancel_task = tracker.in_flight().then(|| {
        let target = cancel.clone();
        tokio::spawn(async move {
            if let Err(e) = send_cancel(&target).await {
                tracing::warn!(error = %e, "could not cancel the running query upstream");
            }
        })
    });
    tokio::join!(tell_client(client, error), async {
        if let Some(task) = cancel_task {
            let _ = task.await;
        }
        close_upstream(upstream).await;
    });
}

/// Carries out the end of the relay and returns what to record.
pub async fn teardown(
    end: End,
    client: &mut ClientConn,
    upstream: &mut UpstreamStream,
    tracker: &Tracker,
    cancel: &CancelTarget,
    meta: &SessionMeta,
    deadline: Timestamp,
) -> Outcome {
    match end {
        End::ClientQuit { clean } => {
            let _ = client.stream.shutdown().await;
            // After a clean Terminate the caller decides: park the connection or close it.
            if !clean {
                close_upstream(upstream).await;
            }
            Outcome {
                reason: EndReason::ClientQuit,
                detail: (!clean).then(|| "client closed the connection without Terminate".into()),
                late_ms: None,
                upstream_open: clean,
            }
        }
        End::ClientIo(e) => {
            close_upstream(upstream).await;
            Outcome {
                reason: EndReason::ClientQuit,
                detail: Some(format!("client connection error: {e}")),
                late_ms: None,
                upstream_open: false,
            }
        }
        End::Expired => {
            let error = farewell::expired(&holder(meta), deadline);
            drop_session(client, upstream, tracker, cancel, error).await;
            Outcome {
                reason: EndReason::GrantExpired,
                detail: Some(format!("grant expired at {deadline}")),
                late_ms: Some(ms_since(deadline)),
                upstream_open: false,
            }
        }
        End::Revoked(revocation) => {
            let why = revocation
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            let error = farewell::revoked(&holder(meta), &revocation);
            drop_session(client, upstream, tracker, cancel, error).await;
            Outcome {
                reason: EndReason::GrantRevoked,
                detail: Some(format!("revoked by {}{}", revocation.by, why)),
                late_ms: Some(ms_since(revocation.at)),
                upstream_open: false,
            }
        }
        End::Shutdown => {
            let error = PgError::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because jitgate is shutting down",
            )
            .with_hint("reconnect in a moment; your grant is unchanged");
            drop_session(client, upstream, tracker, cancel, error).await;
            Outcome {
                reason: EndReason::Shutdown,
                detail: None,
                late_ms: None,
                upstream_open: false,
            }
        }
        End::UpstreamClosed | End::UpstreamIo(_) | End::UpstreamProtocol(_) => {
            let detail = match &end {
                End::UpstreamIo(e) => format!("upstream connection error: {e}"),
                End::UpstreamProtocol(m) => m.clone(),
                _ => "the database closed the connection".to_owned(),
            };
            if !tracker.saw_fatal() {
                let error = PgError::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    format!(
                        "the database server of target \"{}\" closed the connection unexpectedly",
                        meta.target
                    ),
                )
                .with_detail(detail.clone());
                tell_client(client, error).await;
            } else {
                let _ = client.stream.shutdown().await;
            }
            let _ = upstream.shutdown().await;
            Outcome {
                reason: EndReason::UpstreamClosed,
                detail: Some(detail),
                late_ms: None,
                upstream_open: false,
            }
        }
        End::ClientProtocol(e) => {
            let error = PgError::fatal(e.sqlstate(), e.to_string());
            tell_client(client, error).await;
            close_upstream(upstream).await;
            Outcome {
                reason: EndReason::ProtocolError,
                detail: Some(e.to_string()),
                late_ms: None,
                upstream_open: false,
            }
        }
        End::Audit(e) => {
            let error = PgError::fatal(
                sqlstate::SYSTEM_ERROR,
                "the audit log is unavailable, so jitgate did not run the statement and is ending the session; any open transaction is rolled back",
            )
            .with_detail(e.to_string())
            .with_hint("jitgate never runs a query it cannot audit; ask the operator to check the audit log's disk");
            tell_client(client, error).await;
            close_upstream(upstream).await;
            Outcome {
                reason: EndReason::AuditUnavailable,
                detail: Some(e.to_string()),
                late_ms: None,
                upstream_open: false,
            }
        }
    }
}
