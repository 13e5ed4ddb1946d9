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
//!
//! What the client is told and what `session_end` records come from one
//! [`Exit`](super::exit::Exit) per end, built by `exit_of` from the relay's [`End`].

use jiff::Timestamp;
use jitgate_audit::{EndReason, Stopped, StoppedWork};
use tokio::io::AsyncWriteExt;

use super::client::ClientConn;
use super::end::{End, UNFOLLOWED};
use super::exit::Exit;
use super::farewell::{self, GrantHolder};
use super::meta::SessionMeta;
use super::stream::UpstreamStream;
use crate::protocol::{sqlstate, PgError};
use crate::stop::{self, side, Held, StopTarget};

/// How the session ended, and what teardown left for the caller.
pub struct Outcome {
    /// The session's one end: its `session_end` (the client has been told), for the
    /// caller to complete ([`Exit::tally`]) and report.
    pub exit: Exit,
    /// The upstream connection is still open and idle (the client quit cleanly with
    /// nothing in flight): the caller parks it for reuse or closes it.
    pub upstream_open: bool,
    /// What the server was still doing and how it was stopped.
    pub stopped: Option<Stopped>,
}

/// The session's side of its end: its connections and what is known of the server.
pub struct SessionAtEnd<'a> {
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

fn holder(meta: &SessionMeta) -> GrantHolder<'_> {
    GrantHolder {
        grant_id: meta.grant_id,
        identity: &meta.identity,
        target: &meta.target,
        role: &meta.role,
    }
}

/// The session's [`Exit`] for `end`: the reason and detail `session_end` records, and
/// what the client is told (nothing when it left, or when the server already told it).
fn exit_of(end: &End, s: &SessionAtEnd<'_>) -> Exit {
    let meta = s.meta;
    let ended =
        |reason, detail: Option<String>, error| Exit::ended(meta, reason, detail, None, error);
    match end {
        End::ClientQuit { clean: true } if !s.in_flight => ended(EndReason::ClientQuit, None, None),
        End::ClientQuit { clean } => {
            let detail = if *clean {
                "client sent Terminate while statements were still running"
            } else {
                "client closed the connection without Terminate"
            };
            ended(EndReason::ClientQuit, Some(detail.into()), None)
        }
        End::ClientIo(e) => ended(
            EndReason::ClientQuit,
            Some(format!("client connection error: {e}")),
            None,
        ),
        End::Expired => Exit::ended(
            meta,
            EndReason::GrantExpired,
            Some(format!("grant expired at {}", s.deadline)),
            Some(s.deadline),
            Some(farewell::expired(&holder(meta), s.deadline)),
        ),
        End::Revoked(revocation) => {
            let why = revocation
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            Exit::ended(
                meta,
                EndReason::GrantRevoked,
                Some(format!("revoked by {}{}", revocation.by, why)),
                Some(revocation.at),
                Some(farewell::revoked(&holder(meta), revocation)),
            )
        }
        End::Shutdown => {
            let error = PgError::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because jitgate is shutting down",
            )
            .with_hint("reconnect in a moment; your grant is unchanged");
            ended(EndReason::Shutdown, None, Some(error))
        }
        End::UpstreamClosed | End::UpstreamIo(_) | End::UpstreamProtocol(_) => {
            let detail = match end {
                End::UpstreamIo(e) => format!("upstream connection error: {e}"),
                End::UpstreamProtocol(m) => m.clone(),
                _ => "the database closed the connection".to_owned(),
            };
            // A server's FATAL error already told the client why.
            let error = (!s.saw_fatal).then(|| {
                PgError::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    format!(
                        "the database server of target \"{}\" closed the connection unexpectedly",
                        meta.target
                    ),
                )
                .with_detail(detail.clone())
            });
            ended(EndReason::UpstreamClosed, Some(detail), error)
        }
        End::Limit(limit) => ended(
            EndReason::LimitExceeded,
            Some(limit.to_string()),
            Some(limit.pg_error()),
        ),
        End::Unfollowed => ended(
            EndReason::ProtocolError,
            Some(UNFOLLOWED.to_owned()),
            Some(PgError::fatal(sqlstate::INTERNAL_ERROR, UNFOLLOWED)),
        ),
        End::ClientProtocol(e) => ended(
            EndReason::ProtocolError,
            Some(e.to_string()),
            Some(PgError::fatal(e.sqlstate(), e.to_string())),
        ),
        End::Audit(e) => {
            let error = PgError::fatal(
                sqlstate::SYSTEM_ERROR,
                "the audit log is unavailable, so jitgate did not run the statement and is ending the session; any open transaction is rolled back",
            )
            .with_detail(e.to_string())
            .with_hint("jitgate never runs a query it cannot audit; ask the operator to check the audit log's disk");
            ended(
                EndReason::AuditUnavailable,
                Some(e.to_string()),
                Some(error),
            )
        }
    }
}

impl SessionAtEnd<'_> {
    /// Tells the client (or closes it) while the backend is made to stop (both at once: a
    /// client that does not read must not delay the stop).
    async fn drop_session(&mut self, exit: &mut Exit) -> Option<Stopped> {
        let (_, stopped) = tokio::join!(
            exit.tell(self.client),
            stop::finish(self.upstream, self.in_flight, self.stop)
        );
        stopped
    }

    /// The upstream connection ended or broke: tell the client (unless the server did
    /// already), and stop the backend if it may still be working.
    async fn upstream_failed(&mut self, end: &End, exit: &mut Exit) -> Option<Stopped> {
        let tell = exit.tell(self.client);
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

/// Carries out the end of the relay: the client is told (or closed) while whatever the
/// server still does for the session is stopped. Returns the session's [`Exit`] to
/// complete and report.
pub async fn teardown(end: End, mut s: SessionAtEnd<'_>) -> Outcome {
    let mut exit = exit_of(&end, &s);
    let (upstream_open, stopped) = match end {
        End::ClientQuit { clean: true } if !s.in_flight => {
            // The caller decides: park the connection or close it.
            exit.tell(s.client).await;
            (true, None)
        }
        End::UpstreamClosed | End::UpstreamIo(_) | End::UpstreamProtocol(_) => {
            (false, s.upstream_failed(&end, &mut exit).await)
        }
        _ => (false, s.drop_session(&mut exit).await),
    };
    exit.dropped();
    Outcome {
        exit,
        upstream_open,
        stopped,
    }
}
