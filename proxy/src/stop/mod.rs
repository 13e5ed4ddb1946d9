//! Ending a session's upstream backend so that nothing it was asked to do runs after the
//! session: the one place that decides how, used by the session's own teardown and by
//! the [`crate::backstop`].
//!
//! # Why a cancel is not enough
//! A CancelRequest stops the statement running at that instant. Statements a client
//! pipelined behind it (more Query messages in the same write, or further extended
//! groups) are already in the server's input buffer: after the cancel the backend reads
//! the next one and runs it. Closing or shutting down jitgate's side of the connection
//! does not stop them either — the backend reads everything that arrived before the FIN
//! and runs it; it notices the lost client only when it next writes, or with
//! `client_connection_check_interval`, which the grantee can switch off with `SET`.
//!
//! # What is done
//! - **Nothing in flight** ([`finish`] with `busy == false`, the common clean quit):
//!   Terminate, then wait for the server to close the connection — which it does only
//!   when the backend process exits (PostgreSQL's `socket_close` leaves the socket to
//!   the process's exit so that clients can wait for exactly this). No extra connection:
//!   a pgbench `-C` storm pays nothing here. If the backend does not leave within
//!   [`QUIT_TIMEOUT`], it is terminated as below.
//! - **Work in flight** ([`stop`]): jitgate opens a connection of its own under the
//!   same brokered role ([`side`]) and runs `pg_terminate_backend` on the session's
//!   backend: SIGTERM ends the running statement, and the backend exits without reading
//!   what was queued behind it; an open transaction is rolled back. The backend is then
//!   watched until it is gone — its connection to jitgate closes, or it leaves
//!   `pg_stat_activity` — for at most [`CONFIRM_TIMEOUT`].
//! - **Fallback**, when that connection cannot be opened or the statement fails (the
//!   role's connection limit, `max_connections`, the server unreachable): CancelRequest,
//!   Terminate, close, and wait for the close as above. The running statement is
//!   stopped but pipelined ones may run; `session_end.stopped` says `cancel` and why,
//!   and the server log has an ERROR.
//!
//! What was done is returned as [`Stopped`] for `session_end`. The caller keeps the
//! session registered until this returns, so a revocation or expiry in the meantime still
//! finds it (and the backstop still guards it).

pub mod side;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jitgate_audit::{StopMethod, Stopped, StoppedWork};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::side::SideConn;
use crate::auth::ScramKeyCache;
use crate::cancel::CancelTarget;
use crate::protocol::tags;
use crate::session::stream::UpstreamStream;
use crate::session::upstream::send_cancel;
use crate::settings::{ProxySettings, RoleCredentials};

/// How long a backend that was sent Terminate with nothing in flight may take to leave
/// before it is terminated instead.
pub const QUIT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long after `pg_terminate_backend` (or, in the fallback, after the cancel and
/// close) the backend is watched for its exit.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// Between two looks at `pg_stat_activity` (only the backstop, which cannot read the
/// session's connection, normally needs them; a look costs the server microseconds).
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Everything needed to end one session's backend from outside the session's own
/// connection. Made once per session and shared with its backstop escape; nothing of it
/// is looked at unless the session ends with work in flight.
pub struct StopTarget {
    /// The settings the session started with: its target's address, TLS and the
    /// brokered credentials of its role.
    pub settings: Arc<ProxySettings>,
    pub target: String,
    pub role: String,
    /// SCRAM keys of the upstream role (so the side connection costs no PBKDF2).
    pub keys: Arc<ScramKeyCache>,
    /// The credentials the session logged in with (a per-grant role's under
    /// `provisioning: ephemeral`); `None`: those configured for `role`.
    pub creds: Option<RoleCredentials>,
    /// The backend's pid and cancel key, and where the server listens.
    pub cancel: CancelTarget,
}

/// The session's upstream connection, as the one stopping its backend holds it.
pub enum Held<'a> {
    /// The connection itself (the session's teardown): read to see the backend exit,
    /// closed by the fallback.
    Stream(&'a mut UpstreamStream),
    /// Not to be read here — the backstop holds only a duplicate of the socket (its
    /// session may be in the middle of a read of its own), or the connection broke —
    /// only its local port is known. The backend's exit is seen in `pg_stat_activity`;
    /// the caller shuts the connection down afterwards.
    Port(Option<u16>),
}

impl Held<'_> {
    /// The connection's local port: with the pid it names the backend in
    /// `pg_stat_activity` (see [`side`]). Looked up only when a stop needs it.
    fn local_port(&self) -> Option<u16> {
        match self {
            Held::Stream(stream) => side::local_port(stream),
            Held::Port(port) => *port,
        }
    }

    fn stream(&mut self) -> Option<&mut UpstreamStream> {
        match self {
            Held::Stream(stream) => Some(stream),
            Held::Port(_) => None,
        }
    }
}

impl std::fmt::Debug for StopTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopTarget")
            .field("target", &self.target)
            .field("role", &self.role)
            .field("upstream_pid", &self.cancel.upstream_pid)
            .finish_non_exhaustive()
    }
}

/// Ends the upstream connection at a session's end. `busy`: the server may still be
/// working for the session (see the module doc). Returns what had to be stopped, or
/// `None` when the idle backend left on Terminate.
pub async fn finish(upstream: &mut UpstreamStream, busy: bool, t: &StopTarget) -> Option<Stopped> {
    if busy {
        return Some(stop(t, StoppedWork::Statements, Held::Stream(upstream)).await);
    }
    if quit(upstream).await {
        return None;
    }
    tracing::warn!(
        upstream_pid = t.cancel.upstream_pid,
        "the idle backend did not leave within {QUIT_TIMEOUT:?} of Terminate; terminating it"
    );
    Some(stop(t, StoppedWork::Backend, Held::Stream(upstream)).await)
}

/// Terminate, then wait for the backend to close the connection. Says whether it did
/// within [`QUIT_TIMEOUT`].
pub async fn quit(upstream: &mut UpstreamStream) -> bool {
    let step = async {
        let _ = upstream.write_all(&tags::TERMINATE_MESSAGE).await;
        let _ = upstream.flush().await;
        let _ = upstream.shutdown().await;
        // Any end of the stream means the backend is gone: an idle backend answers
        // Terminate by exiting.
        let mut sink = [0u8; 4096];
        loop {
            match upstream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(QUIT_TIMEOUT, step).await.is_ok()
}

/// Stops everything the backend is doing (see the module doc).
pub async fn stop(t: &StopTarget, work: StoppedWork, mut upstream: Held<'_>) -> Stopped {
    let started = Instant::now();
    let pid = t.cancel.upstream_pid;
    let port = upstream.local_port();
    let mut signalled = false;
    let (how, backend_gone, detail) = match terminate(t, port, upstream.stream()).await {
        Ok((sent, gone)) => {
            signalled = sent;
            let detail = (!gone).then(|| {
                format!(
                    "the backend was still there {CONFIRM_TIMEOUT:?} after pg_terminate_backend"
                )
            });
            (StopMethod::Terminate, gone, detail)
        }
        Err(why) => {
            let gone = cancel_and_close(t, upstream.stream()).await;
            let detail = format!(
                "{why}; cancelled the running statement and closed the connection instead, so statements pipelined behind it may have run"
            );
            (StopMethod::Cancel, gone, Some(detail))
        }
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match (&detail, backend_gone) {
        (None, true) if signalled => tracing::info!(
            upstream_pid = pid,
            work = work.as_str(),
            ms,
            "terminated the session's backend"
        ),
        // The backstop (or the server) ended it already.
        (None, true) => tracing::info!(
            upstream_pid = pid,
            work = work.as_str(),
            "the session's backend was gone already"
        ),
        (detail, gone) => tracing::error!(
            upstream_pid = pid,
            work = work.as_str(),
            how = how.as_str(),
            backend_gone = gone,
            ms,
            detail = detail.as_deref().unwrap_or(""),
            "could not make sure the session's backend stopped everything it was asked to do"
        ),
    }
    Stopped {
        work,
        how,
        backend_gone,
        ms,
        detail,
    }
}

/// `pg_terminate_backend` from a side connection, then watch the backend leave: whether
/// it was signalled (it may have been gone already) and whether it was seen gone.
/// `Err`: the backend could not be signalled (why, for the record).
async fn terminate(
    t: &StopTarget,
    port: Option<u16>,
    upstream: Option<&mut UpstreamStream>,
) -> Result<(bool, bool), String> {
    let mut side = SideConn::open(t, port)
        .await
        .map_err(|e| format!("could not open a connection to terminate the backend: {e}"))?;
    let signalled = match side.terminate().await {
        Ok(signalled) => signalled,
        Err(e) => {
            side.close().await;
            return Err(format!("pg_terminate_backend failed: {e}"));
        }
    };
    let gone = confirm(&mut side, upstream).await;
    side.close().await;
    Ok((signalled, gone))
}

/// Waits for the backend to exit: its connection to jitgate ends, or it is no longer in
/// `pg_stat_activity` (when the connection is not ours to read, or was broken already).
async fn confirm(side: &mut SideConn, upstream: Option<&mut UpstreamStream>) -> bool {
    let left_activity = async {
        loop {
            match side.backend_present().await {
                Ok(false) => return true,
                Ok(true) => tokio::time::sleep(POLL_INTERVAL).await,
                Err(e) => {
                    tracing::debug!(error = %e, "could not look at pg_stat_activity");
                    return std::future::pending().await;
                }
            }
        }
    };
    let closed = async {
        if let Some(u) = upstream {
            if closes(u).await {
                return true;
            }
        }
        std::future::pending().await
    };
    let seen = async {
        tokio::select! {
            gone = left_activity => gone,
            gone = closed => gone,
        }
    };
    tokio::time::timeout(CONFIRM_TIMEOUT, seen)
        .await
        .unwrap_or(false)
}

/// Reads (and drops) what the backend still sends until its end: `true` when the
/// connection ended the way a backend's exit ends it, `false` on another error.
async fn closes(upstream: &mut UpstreamStream) -> bool {
    use std::io::ErrorKind;
    let mut sink = vec![0u8; 16 * 1024];
    loop {
        match upstream.read(&mut sink).await {
            Ok(0) => return true,
            Ok(_) => {}
            // A backend that exits with our unread bytes in its buffer (the pipelined
            // statements it never ran) resets the connection; a TLS peer may skip
            // close_notify.
            Err(e) => {
                return matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::UnexpectedEof
                        | ErrorKind::BrokenPipe
                )
            }
        }
    }
}

/// The fallback: CancelRequest, then Terminate and close; says whether the backend was
/// seen to leave.
async fn cancel_and_close(t: &StopTarget, upstream: Option<&mut UpstreamStream>) -> bool {
    if let Err(e) = send_cancel(&t.cancel).await {
        tracing::warn!(error = %e, upstream_pid = t.cancel.upstream_pid, "could not cancel the running statement");
    }
    let Some(upstream) = upstream else {
        return false;
    };
    let close = async {
        // A backend busy with pipelined statements may not be reading: the write of
        // Terminate is bounded with the wait.
        let _ = upstream.write_all(&tags::TERMINATE_MESSAGE).await;
        let _ = upstream.flush().await;
        let _ = upstream.shutdown().await;
        closes(upstream).await
    };
    tokio::time::timeout(CONFIRM_TIMEOUT, close)
        .await
        .unwrap_or(false)
}

/// A stop target whose target has no credentials configured: every stop falls back to
/// the cancel, which goes to a closed port.
#[cfg(test)]
pub(crate) fn unconfigured_target() -> StopTarget {
    StopTarget {
        settings: Arc::new(ProxySettings {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            tls_required: false,
            login_timeout: Duration::from_secs(1),
            max_message_len: 1 << 20,
            drain_timeout: Duration::from_secs(1),
            identities: std::collections::HashMap::new(),
            targets: std::collections::HashMap::new(),
            reuse: crate::settings::ReuseSettings::default(),
            session_threads: 0,
            client_limits: Default::default(),
            unknown_identity_key: [0; 32],
            session_limits: Default::default(),
        }),
        target: "prod".into(),
        role: "ro".into(),
        keys: Arc::default(),
        creds: None,
        cancel: CancelTarget {
            host: "127.0.0.1".into(),
            port: 1,
            tls: crate::settings::UpstreamTls::Disable,
            upstream_pid: 1,
            upstream_secret: 1,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::either::Either;

    use super::*;

    /// A connection to a fake backend, and the fake backend's end.
    async fn pair() -> (UpstreamStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (theirs, _) = listener.accept().await.unwrap();
        (Either::Left(ours), theirs)
    }

    #[tokio::test]
    async fn an_idle_backend_that_leaves_on_terminate_needs_nothing_more() {
        let (mut upstream, mut backend) = pair().await;
        tokio::spawn(async move {
            // Exits on Terminate, as an idle backend does.
            let mut got = [0u8; 5];
            backend.read_exact(&mut got).await.unwrap();
            assert_eq!(got, tags::TERMINATE_MESSAGE);
        });
        assert_eq!(
            finish(&mut upstream, false, &unconfigured_target()).await,
            None
        );
    }

    #[tokio::test]
    async fn a_backend_that_stays_is_stopped_and_the_record_says_how() {
        let (mut upstream, backend) = pair().await;
        let stays = tokio::spawn(async move {
            // Ignores Terminate for longer than jitgate waits, then goes.
            tokio::time::sleep(QUIT_TIMEOUT + Duration::from_millis(300)).await;
            drop(backend);
        });
        let stopped = finish(&mut upstream, false, &unconfigured_target())
            .await
            .expect("something had to be stopped");
        assert_eq!(stopped.work, StoppedWork::Backend);
        // No connection could be opened to terminate it: the fallback, and why.
        assert_eq!(stopped.how, StopMethod::Cancel);
        assert!(stopped.backend_gone, "{stopped:?}");
        let detail = stopped.detail.unwrap();
        assert!(detail.contains("could not open a connection"), "{detail}");
        assert!(detail.contains("may have run"), "{detail}");
        stays.await.unwrap();
    }

    #[tokio::test]
    async fn work_in_flight_is_never_left_to_a_terminate_message() {
        let (mut upstream, backend) = pair().await;
        let _backend = backend;
        // Busy: no Terminate-and-wait first; straight to stopping the backend (here, with
        // nothing to terminate it with, the fallback, which does not see it go).
        let started = Instant::now();
        let stopped = finish(&mut upstream, true, &unconfigured_target())
            .await
            .unwrap();
        assert_eq!(stopped.work, StoppedWork::Statements);
        assert_eq!(stopped.how, StopMethod::Cancel);
        assert!(!stopped.backend_gone);
        assert!(started.elapsed() < QUIT_TIMEOUT + CONFIRM_TIMEOUT);
    }
}
