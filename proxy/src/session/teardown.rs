//! Ending a session: tell the client why, stop whatever the server is still doing for
//! it and see the backend go (or stay idle for reuse), and say how late the drop was and
//! what had to be stopped.
//!
//! Every way a session ends while the server may still be working — the client hung
//! up or sent Terminate behind a running statement, an I/O or protocol error, an audit
//! failure, the grant's end, shutdown — goes through [`crate::stop::finish`]: with work in
//! flight the backend is terminated, not just cancelled, because statements pipelined
//! behind the running one would otherwise run next. Only a clean quit with nothing in
//! flight leaves the connection open, for the caller to park or close.

use std::time::Duration;

use jiff::Timestamp;
use jitgate_audit::{EndReason, Stopped, StoppedWork};
use tokio::io::AsyncWriteExt;

use super::client::ClientConn;
use super::farewell::{self, Holder};
use super::meta::SessionMeta;
use super::relay::End;
use super::stream::UpstreamStream;
use crate::protocol::{sqlstate, PgError};
use crate::stop::{self, side, Held, StopTarget};

/// How long teardown waits for the client to take its final error.
const STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// What `session_end` records.
pub struct Outcome {
    pub reason: EndReason,
    pub detail: Option<String>,
    pub late_ms: Option<f64>,
    /// The upstream connection is still open and idle (the client quit cleanly with
    /// nothing in flight): the caller parks it for reuse or closes it.
    pub upstream_open: bool,
    /// What the server was still doing and how it was stopped.
    pub stopped: Option<Stopped>,
}

/// The session's side of its end: its connections and what is known of the server.
pub struct Ending<'a> {
    pub client: &'a mut ClientConn,
    pub upstream: &'a mut UpstreamStream,
    /// The server may still be working for the session (`Tracker::in_flight`).
    pub in_flight: bool,
    /// The server sent a FATAL error (it then closes; the client already knows why).
    pub saw_fatal: bool,
    pub stop: &'a StopTarget,
    pub meta: &'a SessionMeta,
    /// The grant's deadline as the session last knew it.
    pub deadline: Timestamp,
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

async fn tell_client(client: &mut ClientConn, error: PgError) {
    if tokio::time::timeout(STEP_TIMEOUT, client.send_error(&error))
        .await
        .is_err()
    {
        tracing::debug!("client did not take the final error in time");
    }
}

async fn close_client(client: &mut ClientConn) {
    let _ = tokio::time::timeout(STEP_TIMEOUT, client.stream.shutdown()).await;
}

impl Ending<'_> {
    /// Tells the client `error` while the backend is made to stop (both at once: a
    /// client that does not read must not delay the stop).
    async fn drop_session(&mut self, error: PgError) -> Option<Stopped> {
        let (_, stopped) = tokio::join!(
            tell_client(self.client, error),
            stop::finish(self.upstream, self.in_flight, self.stop)
        );
        stopped
    }

    /// Closes the client while the backend is made to stop.
    async fn close_both(&mut self) -> Option<Stopped> {
        let (_, stopped) = tokio::join!(
            close_client(self.client),
            stop::finish(self.upstream, self.in_flight, self.stop)
        );
        stopped
    }

    /// The upstream connection ended or broke: tell the client (unless the server did
    /// already), and stop the backend if it may still be working.
    async fn upstream_failed(&mut self, end: &End, detail: &str) -> Option<Stopped> {
        let client = &mut *self.client;
        let (saw_fatal, target) = (self.saw_fatal, &self.meta.target);
        let tell = async move {
            if saw_fatal {
                close_client(client).await;
                return;
            }
            let error = PgError::fatal(
                sqlstate::CONNECTION_FAILURE,
                format!(
                    "the database server of target \"{target}\" closed the connection unexpectedly"
                ),
            )
            .with_detail(detail.to_owned());
            tell_client(client, error).await;
        };
        match end {
            // The backend closed the connection: it has exited.
            End::UpstreamClosed => {
                tell.await;
                let _ = self.upstream.shutdown().await;
                None
            }
            // The connection broke while the server was working: stop the backend
            // through a connection of our own, and see it leave pg_stat_activity (an
            // error reading our broken connection says nothing about the backend).
            End::UpstreamIo(_) if self.in_flight => {
                let port = side::local_port(self.upstream);
                let stop = stop::stop(self.stop, StoppedWork::Statements, Held::Port(port));
                let (_, stopped) = tokio::join!(tell, stop);
                let _ = self.upstream.shutdown().await;
                Some(stopped)
            }
            // The connection broke with nothing in flight, or its stream can no longer
            // be followed (then whether the server is working cannot be told): stop the
            // backend when it may be working.
            _ => {
                let busy = self.in_flight || matches!(end, End::UpstreamProtocol(_));
                let (_, stopped) = tokio::join!(tell, stop::finish(self.upstream, busy, self.stop));
                stopped
            }
        }
    }
}

/// Carries out the end of the relay and returns what to record.
pub async fn teardown(end: End, mut s: Ending<'_>) -> Outcome {
    let meta = s.meta;
    match end {
        End::ClientQuit { clean: true } if !s.in_flight => {
            close_client(s.client).await;
            // The caller decides: park the connection or close it.
            Outcome {
                reason: EndReason::ClientQuit,
                detail: None,
                late_ms: None,
                upstream_open: true,
                stopped: None,
            }
        }
        End::ClientQuit { clean } => {
            let stopped = s.close_both().await;
            let detail = if clean {
                "client sent Terminate while statements were still running"
            } else {
                "client closed the connection without Terminate"
            };
            Outcome {
                reason: EndReason::ClientQuit,
                detail: Some(detail.into()),
                late_ms: None,
                upstream_open: false,
                stopped,
            }
        }
        End::ClientIo(e) => {
            let stopped = s.close_both().await;
            Outcome {
                reason: EndReason::ClientQuit,
                detail: Some(format!("client connection error: {e}")),
                late_ms: None,
                upstream_open: false,
                stopped,
            }
        }
        End::Expired => {
            let error = farewell::expired(&holder(meta), s.deadline);
            let stopped = s.drop_session(error).await;
            Outcome {
                reason: EndReason::GrantExpired,
                detail: Some(format!("grant expired at {}", s.deadline)),
                late_ms: Some(ms_since(s.deadline)),
                upstream_open: false,
                stopped,
            }
        }
        End::Revoked(revocation) => {
            let why = revocation
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            let error = farewell::revoked(&holder(meta), &revocation);
            let stopped = s.drop_session(error).await;
            Outcome {
                reason: EndReason::GrantRevoked,
                detail: Some(format!("revoked by {}{}", revocation.by, why)),
                late_ms: Some(ms_since(revocation.at)),
                upstream_open: false,
                stopped,
            }
        }
        End::Shutdown => {
            let error = PgError::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because jitgate is shutting down",
            )
            .with_hint("reconnect in a moment; your grant is unchanged");
            let stopped = s.drop_session(error).await;
            Outcome {
                reason: EndReason::Shutdown,
                detail: None,
                late_ms: None,
                upstream_open: false,
                stopped,
            }
        }
        End::UpstreamClosed | End::UpstreamIo(_) | End::UpstreamProtocol(_) => {
            let detail = match &end {
                End::UpstreamIo(e) => format!("upstream connection error: {e}"),
                End::UpstreamProtocol(m) => m.clone(),
                _ => "the database closed the connection".to_owned(),
            };
            let stopped = s.upstream_failed(&end, &detail).await;
            Outcome {
                reason: EndReason::UpstreamClosed,
                detail: Some(detail),
                late_ms: None,
                upstream_open: false,
                stopped,
            }
        }
        End::Limit(limit) => {
            let stopped = s.drop_session(limit.pg_error()).await;
            Outcome {
                reason: EndReason::LimitExceeded,
                detail: Some(limit.to_string()),
                late_ms: None,
                upstream_open: false,
                stopped,
            }
        }
        End::ClientProtocol(e) => {
            let error = PgError::fatal(e.sqlstate(), e.to_string());
            let stopped = s.drop_session(error).await;
            Outcome {
                reason: EndReason::ProtocolError,
                detail: Some(e.to_string()),
                late_ms: None,
                upstream_open: false,
                stopped,
            }
        }
        End::Audit(e) => {
            let error = PgError::fatal(
                sqlstate::SYSTEM_ERROR,
                "the audit log is unavailable, so jitgate did not run the statement and is ending the session; any open transaction is rolled back",
            )
            .with_detail(e.to_string())
            .with_hint("jitgate never runs a query it cannot audit; ask the operator to check the audit log's disk");
            let stopped = s.drop_session(error).await;
            Outcome {
                reason: EndReason::AuditUnavailable,
                detail: Some(e.to_string()),
                late_ms: None,
                upstream_open: false,
                stopped,
            }
        }
    }
}
