//! What the backstop holds of one live session to end it from outside the session's
//! thread ([`BackstopHandle`]); see [`crate::backstop`] for when it does.

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::Arc;

use bytes::BytesMut;
use jitgate_audit::{Stopped, StoppedWork};
use tokio_util::either::Either;

use crate::gate::ClientGate;
use crate::protocol::{backend, PgError};
use crate::session::stream::{ClientStream, UpstreamStream};
use crate::stop::{self, Held, StopTarget};

/// What the backstop needs to end one session from outside its thread: duplicates of
/// both sockets (shutting a duplicate down shuts the socket down) and what it takes to
/// terminate the backend. The duplicates are closed when the session leaves the registry.
pub struct BackstopHandle {
    client: std::net::TcpStream,
    /// Whether a message of ours may go to the client now.
    gate: Arc<ClientGate>,
    upstream: std::net::TcpStream,
    stop: Arc<StopTarget>,
}

impl std::fmt::Debug for BackstopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackstopHandle")
            .field("upstream_pid", &self.stop.cancel.upstream_pid)
            .finish_non_exhaustive()
    }
}

fn duplicate(tcp: &tokio::net::TcpStream) -> std::io::Result<std::net::TcpStream> {
    Ok(std::net::TcpStream::from(tcp.as_fd().try_clone_to_owned()?))
}

impl BackstopHandle {
    /// Duplicates the descriptors under both connections (TLS or not).
    pub fn new(
        client: &ClientStream,
        gate: Arc<ClientGate>,
        upstream: &UpstreamStream,
        stop: Arc<StopTarget>,
    ) -> std::io::Result<BackstopHandle> {
        let client = match client {
            Either::Left(tcp) => duplicate(tcp)?,
            Either::Right(tls) => duplicate(tls.get_ref().0)?,
        };
        let upstream = match upstream {
            Either::Left(tcp) => duplicate(tcp)?,
            Either::Right(tls) => duplicate(tls.get_ref().0)?,
        };
        Ok(BackstopHandle {
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
