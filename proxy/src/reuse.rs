//! Upstream connections kept between sessions of one grant ("parked"), so a client that
//! reconnects often does not pay a Postgres backend fork and login every time.
//!
//! # Why this is safe
//! - **Same grant only.** A parked connection is found by the grant it was opened under
//!   plus everything that shaped its login (host, port, database, upstream user, every
//!   forwarded startup parameter). Only a session admitted under that same grant — the
//!   same identity, target and role, still valid — can take it. Nothing of one person's
//!   session can reach another person's.
//! - **Only a quiet, clean end.** A connection is parked only when the client said
//!   Terminate, the server's last ReadyForQuery was `I` (no transaction), no request or
//!   COPY was in flight, and the grant was neither expired nor revoked. Anything else
//!   closes it as before.
//! - **Full reset, verified.** `DISCARD ALL` runs first (closes cursors, drops prepared
//!   statements and temporary tables, resets every setting, the session authorization
//!   and role, releases advisory locks, UNLISTENs); the connection is parked only if the
//!   server answers exactly `DISCARD ALL` and ReadyForQuery `I` within a bound.
//! - **Bounded life.** A parked connection is closed once it has been idle for
//!   `idle_timeout`, is older than `max_lifetime`, its grant's deadline passes (it is
//!   moved with the grant), or its grant is revoked — by the registry at once, and by
//!   the sweeper every second otherwise.
//! - **Checked on the way out.** A connection that sent anything (or closed) while
//!   parked is discarded, not handed out.
//! - **Accounted.** The new session gets its own cancel key (the old one is gone), and
//!   its `session_start` says `upstream_reused`, so the audit trail ties the backend pid
//!   to every session that used it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use jiff::Timestamp;
use postgres_protocol::message::backend::Message;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use uuid::Uuid;

use crate::connection::{read_message, ReadFailure};
use crate::protocol::backend::{parse_error_fields, server_message};
use crate::protocol::tags;
use crate::session::upstream::Upstream;
use crate::settings::{ReuseSettings, RoleCredentials, TargetSettings};

/// How long the reset (`DISCARD ALL`) may take before the connection is closed instead.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything that shaped an upstream login, plus the grant it serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ParkKey {
    grant_id: Uuid,
    host: String,
    port: u16,
    database: String,
    user: String,
    params: Vec<(String, String)>,
}

impl ParkKey {
    pub fn new(
        grant_id: Uuid,
        target: &TargetSettings,
        creds: &RoleCredentials,
        params: &[(String, String)],
    ) -> Self {
        ParkKey {
            grant_id,
            host: target.host.clone(),
            port: target.port,
            database: target.database.clone(),
            user: creds.user.clone(),
            params: params.to_vec(),
        }
    }
}

struct Parked {
    upstream: Upstream,
    parked_at: Instant,
    /// The grant's deadline: the connection goes when the grant does.
    not_after: Timestamp,
}

/// The parked connections of this proxy process.
#[derive(Default)]
pub struct ParkedUpstreams {
    map: Mutex<HashMap<ParkKey, Vec<Parked>>>,
}

impl std::fmt::Debug for ParkedUpstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedUpstreams")
            .field("parked", &self.len())
            .finish()
    }
}

impl Parked {
    fn usable(&self, now: Instant, wall: Timestamp, settings: &ReuseSettings) -> bool {
        now.duration_since(self.parked_at) < settings.idle_timeout
            && now.duration_since(self.upstream.opened_at) < settings.max_lifetime
            && wall < self.not_after
    }
}

impl ParkedUpstreams {
    /// A poisoned lock only means another thread panicked mid-update of a plain map.
    fn lock(&self) -> MutexGuard<'_, HashMap<ParkKey, Vec<Parked>>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many connections are parked.
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A parked connection for `key` that is still within its limits and quiet, newest
    /// first; stale or noisy ones met on the way are closed.
    pub fn take(&self, key: &ParkKey, settings: &ReuseSettings) -> Option<Upstream> {
        if !settings.enabled {
            return None;
        }
        let now = Instant::now();
        let wall = Timestamp::now();
        let mut stale = Vec::new();
        let found = {
            let mut map = self.lock();
            let list = map.get_mut(key)?;
            let mut found = None;
            while let Some(parked) = list.pop() {
                if parked.usable(now, wall, settings) {
                    found = Some(parked.upstream);
                    break;
                }
                stale.push(parked.upstream);
            }
            if list.is_empty() {
                map.remove(key);
            }
            found
        };
        stale.into_iter().for_each(close);
        let mut upstream = found?;
        if !is_quiet(&mut upstream) {
            close(upstream);
            return None;
        }
        upstream.reused = true;
        Some(upstream)
    }

    /// Parks a connection that was reset; closes it instead when the grant's list is full.
    pub fn put(
        &self,
        key: ParkKey,
        upstream: Upstream,
        not_after: Timestamp,
        settings: &ReuseSettings,
    ) -> bool {
        let mut map = self.lock();
        let list = map.entry(key).or_default();
        if !settings.enabled || list.len() >= settings.max_idle_per_grant {
            drop(map);
            close(upstream);
            return false;
        }
        list.push(Parked {
            upstream,
            parked_at: Instant::now(),
            not_after,
        });
        true
    }

    /// Closes every connection parked under `grant_id` (the grant was revoked).
    pub fn close_grant(&self, grant_id: Uuid) -> usize {
        let removed: Vec<Parked> = {
            let mut map = self.lock();
            let keys: Vec<ParkKey> = map
                .keys()
                .filter(|k| k.grant_id == grant_id)
                .cloned()
                .collect();
            keys.iter()
                .filter_map(|k| map.remove(k))
                .flatten()
                .collect()
        };
        let n = removed.len();
        removed.into_iter().for_each(|p| close(p.upstream));
        n
    }

    /// The grants that have parked connections.
    pub fn grant_ids(&self) -> impl Iterator<Item = Uuid> {
        let ids: Vec<Uuid> = self.lock().keys().map(|k| k.grant_id).collect();
        ids.into_iter()
    }

    /// Moves the deadline of connections parked under `grant_id` with their grant.
    pub fn set_grant_deadline(&self, grant_id: Uuid, deadline: Timestamp) {
        let mut map = self.lock();
        for (_, list) in map.iter_mut().filter(|(k, _)| k.grant_id == grant_id) {
            for parked in list.iter_mut() {
                parked.not_after = deadline;
            }
        }
    }

    /// Closes connections past their idle time, lifetime or grant deadline.
    pub fn sweep(&self, settings: &ReuseSettings) -> usize {
        let now = Instant::now();
        let wall = Timestamp::now();
        let mut stale = Vec::new();
        {
            let mut map = self.lock();
            map.retain(|_, list| {
                let (keep, gone): (Vec<Parked>, Vec<Parked>) = std::mem::take(list)
                    .into_iter()
                    .partition(|p| p.usable(now, wall, settings));
                *list = keep;
                stale.extend(gone);
                !list.is_empty()
            });
        }
        let n = stale.len();
        stale.into_iter().for_each(|p| close(p.upstream));
        n
    }

    /// Closes every parked connection and waits (bounded) until each one is (shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Parked> = self.lock().drain().flat_map(|(_, v)| v).collect();
        futures_util::future::join_all(all.into_iter().map(|p| terminate(p.upstream))).await;
    }
}

/// Whether the parked connection has nothing to say: no message, no EOF, no error.
/// Polls the socket once without waiting.
fn is_quiet(upstream: &mut Upstream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(
        Pin::new(&mut upstream.stream).poll_read(&mut cx, &mut buf),
        Poll::Pending
    )
}

/// Ends a connection politely: Terminate, then close (bounded by [`RESET_TIMEOUT`]).
async fn terminate(mut upstream: Upstream) {
    let bye = async {
        let _ = upstream.stream.write_all(&tags::TERMINATE_MESSAGE).await;
        let _ = upstream.stream.shutdown().await;
    };
    let _ = tokio::time::timeout(RESET_TIMEOUT, bye).await;
}

/// Ends a connection without making the caller wait (outside a runtime it is dropped,
/// which closes the socket).
pub(crate) fn close(upstream: Upstream) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(terminate(upstream));
    }
}

/// Why a connection could not be reset for reuse.
#[derive(Debug)]
pub enum ResetError {
    Io(std::io::Error),
    Timeout,
    /// The server answered something other than a clean `DISCARD ALL`.
    Unexpected(&'static str),
}

impl std::fmt::Display for ResetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResetError::Io(e) => write!(f, "connection error during reset: {e}"),
            ResetError::Timeout => write!(f, "reset took longer than {RESET_TIMEOUT:?}"),
            ResetError::Unexpected(what) => write!(f, "unexpected {what} during reset"),
        }
    }
}

/// Runs `DISCARD ALL` and checks the answer: exactly its CommandComplete (ParameterStatus
/// and notices may come along) and ReadyForQuery `I`, nothing after it.
pub async fn reset(upstream: &mut Upstream) -> Result<(), ResetError> {
    tokio::time::timeout(RESET_TIMEOUT, reset_inner(upstream))
        .await
        .map_err(|_| ResetError::Timeout)?
}

async fn reset_inner(upstream: &mut Upstream) -> Result<(), ResetError> {
    let mut out = BytesMut::with_capacity(32);
    postgres_protocol::message::frontend::query("DISCARD ALL", &mut out).map_err(ResetError::Io)?;
    upstream
        .stream
        .write_all(&out)
        .await
        .map_err(ResetError::Io)?;
    upstream.stream.flush().await.map_err(ResetError::Io)?;
    let mut inbuf = BytesMut::with_capacity(256);
    let mut completed = false;
    loop {
        let read = read_message(&mut upstream.stream, &mut inbuf, server_message).await;
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(ResetError::Unexpected("end of connection")),
            Err(ReadFailure::Decode(e) | ReadFailure::Io(e)) => return Err(ResetError::Io(e)),
        };
        match &frame.message {
            Message::CommandComplete(body) => {
                let tag = body.tag().map_err(ResetError::Io)?;
                if completed || tag != "DISCARD ALL" {
                    return Err(ResetError::Unexpected("command tag"));
                }
                completed = true;
            }
            Message::ParameterStatus(_) | Message::NoticeResponse(_) => {}
            Message::ReadyForQuery(body) => {
                if !completed || body.status() != b'I' || !inbuf.is_empty() {
                    return Err(ResetError::Unexpected("ReadyForQuery"));
                }
                return Ok(());
            }
            Message::ErrorResponse(_) => {
                let fields = parse_error_fields(frame.body());
                let message = fields.message.unwrap_or_default();
                tracing::debug!(%message, "DISCARD ALL failed");
                return Err(ResetError::Unexpected("error"));
            }
            _ => return Err(ResetError::Unexpected("message")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::either::Either;

    use super::*;

    /// A parked-style connection to a local socket whose other end the test holds.
    async fn pair() -> (Upstream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let upstream = Upstream {
            stream: Either::Left(client),
            pid: 1,
            secret: 2,
            greeting: BytesMut::new(),
            opened_at: Instant::now(),
            reused: false,
        };
        (upstream, server)
    }

    fn key(grant_id: Uuid) -> ParkKey {
        ParkKey {
            grant_id,
            host: "db".into(),
            port: 5432,
            database: "app".into(),
            user: "u".into(),
            params: vec![("application_name".into(), "psql".into())],
        }
    }

    fn later() -> Timestamp {
        Timestamp::now() + jiff::SignedDuration::from_secs(600)
    }

    #[tokio::test]
    async fn only_the_same_key_takes_a_parked_connection() {
        let parked = ParkedUpstreams::default();
        let settings = ReuseSettings::default();
        let grant = Uuid::now_v7();
        let (up, _server) = pair().await;
        assert!(parked.put(key(grant), up, later(), &settings));
        assert!(parked.take(&key(Uuid::now_v7()), &settings).is_none());
        let mut other_params = key(grant);
        other_params.params.clear();
        assert!(parked.take(&other_params, &settings).is_none());
        let taken = parked.take(&key(grant), &settings).unwrap();
        assert!(taken.reused);
        assert!(parked.is_empty());
    }

    #[tokio::test]
    async fn a_connection_that_spoke_or_closed_while_parked_is_not_handed_out() {
        let parked = ParkedUpstreams::default();
        let settings = ReuseSettings::default();
        let grant = Uuid::now_v7();
        let (up, mut server) = pair().await;
        parked.put(key(grant), up, later(), &settings);
        server.write_all(b"N").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(parked.take(&key(grant), &settings).is_none());

        let (up, server) = pair().await;
        parked.put(key(grant), up, later(), &settings);
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(parked.take(&key(grant), &settings).is_none());
        assert!(parked.is_empty());
    }

    #[tokio::test]
    async fn limits_deadline_and_revocation_close_parked_connections() {
        let parked = ParkedUpstreams::default();
        let grant = Uuid::now_v7();
        let settings = ReuseSettings {
            max_idle_per_grant: 1,
            ..ReuseSettings::default()
        };
        let (a, _sa) = pair().await;
        let (b, _sb) = pair().await;
        assert!(parked.put(key(grant), a, later(), &settings));
        assert!(
            !parked.put(key(grant), b, later(), &settings),
            "over the cap"
        );
        assert_eq!(parked.len(), 1);

        // The grant's deadline moves earlier: the sweeper closes it.
        parked.set_grant_deadline(grant, Timestamp::now());
        assert_eq!(parked.sweep(&settings), 1);
        assert!(parked.is_empty());

        // Idle timeout.
        let (c, _sc) = pair().await;
        parked.put(key(grant), c, later(), &settings);
        let short = ReuseSettings {
            idle_timeout: Duration::from_millis(10),
            ..settings.clone()
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(parked.take(&key(grant), &short).is_none());
        assert!(parked.is_empty());

        // Revocation.
        let (d, _sd) = pair().await;
        parked.put(key(grant), d, later(), &settings);
        assert_eq!(parked.close_grant(Uuid::now_v7()), 0);
        assert_eq!(parked.close_grant(grant), 1);
        assert!(parked.is_empty());

        // Disabled: nothing parked, nothing taken.
        let off = ReuseSettings {
            enabled: false,
            ..settings
        };
        let (e, _se) = pair().await;
        assert!(!parked.put(key(grant), e, later(), &off));
        assert!(parked.take(&key(grant), &off).is_none());
    }
}
