//! The backstop: a grant is enforced even when a session's own thread cannot run.
//!
//! A session enforces its grant itself: a timer and a control channel on the thread that
//! relays its bytes (see `session::enforce`). That thread can stop turning — its audit
//! write(2) blocked on a hung disk or a hard NFS mount, say — and with it every session it
//! carries: their timers do not fire, and a query they forwarded before goes on running
//! upstream past the grant. The backstop does not depend on those threads. It runs on the
//! shared runtime and keeps, per live session, duplicates of both sockets' descriptors and
//! what it takes to end the session's backend ([`Escape`]). A session that has not begun
//! to end [`GRACE`] after it had to (its deadline, or the moment it was told of a
//! revocation or a shortened grant), or that has not finished ending [`ENDING_GRACE`]
//! after, is cut from outside: its client connection is shut down, its backend is
//! terminated from a connection of the backstop's own and watched until it has left
//! `pg_stat_activity` ([`crate::stop::stop`]), and the upstream connection is shut down.
//!
//! A cancel and a shut-down socket would not be enough: the statement running is
//! cancelled, but statements the client pipelined behind it are in the server's input
//! buffer already, and the backend reads and runs them before it sees the end of the
//! connection. Only when the backend cannot be terminated (no connection can be opened
//! for it) does the backstop fall back to that, and says so in its log.
//!
//! The client is told why — the FATAL its session would have sent — when that is safe:
//! on plain TCP, while the session is not writing to it and its stream is between two
//! messages ([`ClientGate`]), which is where a session stopped by its audit write leaves
//! it. Otherwise (TLS, a write stopped inside a message) the connection is only closed.
//! When the thread runs again the session's own teardown finds both connections closed
//! and records `session_end` as usual (its `late_ms` shows the stall).
//!
//! The backstop has a thread and a runtime of its own, on which nothing writes to the
//! audit log: a hung disk can stop the shared runtime's workers too. It does not poll: it
//! sleeps until the earliest moment a live session could be overdue, and the registry
//! wakes it when a change makes that moment earlier.

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use jiff::Timestamp;
use jitgate_audit::{Stopped, StoppedWork};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::gate::ClientGate;
use crate::protocol::{backend, PgError};
use crate::registry::{Overdue, SessionRegistry};
use crate::session::farewell::{self, Holder};
use crate::session::stream::{ClientStream, UpstreamStream};
use crate::stop::{self, Held, StopTarget};

/// How long after it had to end a session may take to begin ending before the backstop
/// cuts it. Sessions on a running thread begin within milliseconds (BENCHMARKS.md,
/// enforcement: max ~40 ms with 1 000 sessions).
pub const GRACE: Duration = Duration::from_millis(500);

/// How long a session that has begun to end may take to finish. Its teardown waits up to
/// 2 s for the client to take the error while, at the same time, it ends the backend: up
/// to 2 s for an idle one to leave on Terminate, else (or when work is in flight) up to
/// 2 s to open a connection to terminate it and 2 s to see it go (`crate::stop`).
pub const ENDING_GRACE: Duration = Duration::from_secs(8);

/// What the backstop needs to end one session from outside its thread: duplicates of
/// both sockets (shutting a duplicate down shuts the socket down) and what it takes to
/// terminate the backend. The duplicates are closed when the session leaves the registry.
pub struct Escape {
    client: std::net::TcpStream,
    /// Whether a message of ours may go to the client now.
    gate: Arc<ClientGate>,
    upstream: std::net::TcpStream,
    stop: Arc<StopTarget>,
}

impl std::fmt::Debug for Escape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escape")
            .field("upstream_pid", &self.stop.cancel.upstream_pid)
            .finish_non_exhaustive()
    }
}

fn duplicate(tcp: &tokio::net::TcpStream) -> std::io::Result<std::net::TcpStream> {
    Ok(std::net::TcpStream::from(tcp.as_fd().try_clone_to_owned()?))
}

impl Escape {
    /// Duplicates the descriptors under both connections (TLS or not).
    pub fn new(
        client: &ClientStream,
        gate: Arc<ClientGate>,
        upstream: &UpstreamStream,
        stop: Arc<StopTarget>,
    ) -> std::io::Result<Escape> {
        let client = match client {
            Either::Left(tcp) => duplicate(tcp)?,
            Either::Right(tls) => duplicate(tls.get_ref().0)?,
        };
        let upstream = match upstream {
            Either::Left(tcp) => duplicate(tcp)?,
            Either::Right(tls) => duplicate(tls.get_ref().0)?,
        };
        Ok(Escape {
            client,
            gate,
            upstream,
            stop,
        })
    }

    /// Ends the session from outside: the client is told `farewell` if its stream allows
    /// (see the module doc) and disconnected, the backend is terminated and watched until
    /// it is gone, then disconnected. Says whether the client was told, and how the
    /// backend was stopped.
    pub async fn cut(self, farewell: &PgError) -> (bool, Stopped) {
        let mut told = false;
        if self.gate.take() {
            let mut out = BytesMut::new();
            backend::error_response(&mut out, farewell);
            // One non-blocking write (the descriptor shares the session's O_NONBLOCK):
            // a client that is not reading gets no wait, only the close.
            told = matches!((&self.client).write(&out), Ok(n) if n == out.len());
        }
        let _ = self.client.shutdown(Shutdown::Both);
        // The session's connection is not ours to read: the backend's exit is seen in
        // pg_stat_activity.
        let stopped = stop::stop(
            &self.stop,
            StoppedWork::Statements,
            Held::Port(self.upstream.local_addr().ok().map(|a| a.port())),
        )
        .await;
        let _ = self.upstream.shutdown(Shutdown::Both);
        (told, stopped)
    }
}

/// What the session would have told its client.
fn farewell(cut: &Overdue) -> PgError {
    let info = &cut.info;
    let holder = Holder {
        grant_id: info.grant_id,
        identity: &info.identity,
        target: &info.target,
        role: &info.role,
    };
    match &cut.revocation {
        Some(revocation) => farewell::revoked(&holder, revocation),
        None => farewell::expired(&holder, info.deadline),
    }
}

/// Cuts one overdue session, and says so in the server log.
async fn cut(overdue: Overdue) {
    let error = farewell(&overdue);
    let Overdue {
        info,
        ending,
        escape,
        ..
    } = overdue;
    let (told_client, stopped) = escape.cut(&error).await;
    tracing::error!(
        session_id = %info.session_id,
        grant = %info.grant_id,
        identity = %info.identity,
        upstream_pid = ?info.upstream_pid,
        ending,
        told_client,
        how = stopped.how.as_str(),
        backend_gone = stopped.backend_gone,
        stop_ms = stopped.ms,
        "session overdue: its thread has not ended it (a stalled audit disk?); stopped its backend and closed both connections from the backstop"
    );
}

/// Starts the backstop on its own thread; it ends soon after `stop` is cancelled.
pub fn start(
    registry: Arc<SessionRegistry>,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("jitgate-backstop".into())
        .spawn(move || runtime.block_on(run(registry, stop)))
}

/// Cuts overdue sessions until `stop` is cancelled.
async fn run(registry: Arc<SessionRegistry>, stop: CancellationToken) {
    loop {
        let now = Timestamp::now();
        let (overdue, next) = registry.overdue(now);
        for overdue in overdue {
            tokio::spawn(cut(overdue));
        }
        let wait = next
            .map(|t| {
                let d = t.duration_since(Timestamp::now());
                Duration::try_from(d).unwrap_or(Duration::ZERO)
            })
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = registry.backstop_woken() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
