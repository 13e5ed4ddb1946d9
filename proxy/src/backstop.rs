//! The backstop: a grant is enforced even when a session's own thread cannot run.
//!
//! A session enforces its grant itself: a timer and a control channel on the thread that
//! relays its bytes (see `session::enforce`). That thread can stop turning — its audit
//! write(2) blocked on a hung disk or a hard NFS mount, say — and with it every session it
//! carries: their timers do not fire, and a query they forwarded before goes on running
//! upstream past the grant. The backstop does not depend on those threads. It runs on the
//! shared runtime and keeps, per live session, duplicates of both sockets' descriptors and
//! what it takes to end the session's backend ([`BackstopHandle`]). A session that has not begun
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

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

#[cfg(doc)]
use crate::backstop_handle::BackstopHandle;
use crate::protocol::PgError;
use crate::registry::{Overdue, SessionRegistry};
#[cfg(doc)]
use crate::registry::{ENDING_GRACE, GRACE};
use crate::session::farewell::{self, GrantHolder};

/// What the session would have told its client.
fn farewell(cut: &Overdue) -> PgError {
    let info = &cut.info;
    let holder = GrantHolder {
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
        handle,
        ..
    } = overdue;
    let (told_client, stopped) = handle.cut(&error).await;
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
