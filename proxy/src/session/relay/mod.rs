//! The relay loop of an admitted session, and the enforcement of its grant.
//!
//! One task per session `select!`s over: the shutdown token, the grant's control channel
//! (revocation, moved deadline), a timer at the grant's absolute deadline, the flush
//! timer of deferred outcomes, upstream input and client input. Every client batch is
//! decoded just enough to audit it; its `query` events are acknowledged by the audit
//! writer *before* the bytes go upstream. Server bytes are scanned header by header and
//! forwarded in whole chunks, one write per read. Every write is itself raced against
//! enforcement, so a slow peer cannot hold a session past its grant. When enforcement
//! ends the session inside a server message (large results are relayed in chunks that
//! end anywhere), the rest of that message — and not a byte more — goes to the client
//! first, within [`FINISH_LIMIT`], so the final error arrives whole, between messages.
//!
//! Outcomes (`query_result`, `copy`) are not written when the server's reply passes:
//! they are kept, stamped with the time they were seen, and go to the log together with
//! the `query` events of the client's next statement — one `write(2)` per transaction
//! instead of two, results first so `seq` order is unchanged. They never wait long: a
//! timer writes them on their own once they have waited [`RESULT_FLUSH_DELAY`], more
//! than [`MAX_DEFERRED`] are written at once, and every way out of [`Relay::run`] writes
//! them before returning, so the caller's `session_end` follows all of them. (The timer
//! is served by the loop: while the session waits on a slow peer or a stalled audit log,
//! they wait with it.) If the write that carries them fails, they are lost with the
//! statement it refuses; the log is failing then, and that is logged.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use jitgate_audit::{AuditError, AuditWriter, Event, EventBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::client::ClientConn;
use super::end::End;
use super::enforce::Enforcer;
use super::limits::AuditBudget;
use super::meta::SessionMeta;
use super::refuse::{self, RefusalState};
use super::stream::UpstreamStream;
use super::tracker::{Halt, Mark, Step, Tracker};
use crate::protocol::error::PgError;
use crate::protocol::frame::peek_header;
use crate::protocol::scan::{BackendScanner, BadLength};
use crate::protocol::tags;

/// Runs `fut` unless enforcement ends the session first. The operation is polled once
/// on its own first: most writes complete at once, and then no enforcement futures
/// need to be polled for them.
macro_rules! guarded {
    ($enforcer:expr, $fut:expr) => {{
        let fut = $fut;
        tokio::pin!(fut);
        match futures_util::poll!(fut.as_mut()) {
            std::task::Poll::Ready(r) => Ok(r),
            std::task::Poll::Pending => tokio::select! {
                biased;
                end = $enforcer.wait() => Err(end),
                r = fut => Ok(r),
            },
        }
    }};
}

/// Writes all of `buf` and flushes: a TLS stream keeps written bytes in its own buffer
/// until flushed, and nothing else would push the tail of a batch out (on plain TCP the
/// flush costs nothing).
async fn write_flush<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &[u8],
) -> std::io::Result<()> {
    stream.write_all(buf).await?;
    stream.flush().await
}

/// The relay's sockets, buffers and bookkeeping.
pub struct Relay<'a> {
    pub client: &'a mut ClientConn,
    pub upstream: &'a mut UpstreamStream,
    pub tracker: &'a mut Tracker,
    pub audit: &'a AuditWriter,
    pub meta: &'a SessionMeta,
    pub max_message_len: usize,
    /// A client batch is audited and forwarded in slices whose events come to at most
    /// about this many bytes (`session_limits.max_audit_batch_bytes`).
    pub max_audit_batch_bytes: usize,
    /// Transaction status and refusal state (fail closed when the audit log fails).
    pub refusal: RefusalState,
    /// Frame positions of the current client batch (kept to reuse its allocation).
    pub frames: Vec<(u8, usize, usize)>,
    /// An Execute waits for the server's answers (see [`Step::Wait`]): client bytes are
    /// not read until it has been forwarded.
    pub waiting: bool,
}

/// Initial capacity of the server → client buffer; it grows with large reads and is
/// reused across reads.
const UPSTREAM_BUF: usize = 16 * 1024;

/// Longest time an outcome waits for the next statement's write before it is written on
/// its own. A client that sends its next statement within it (a busy application,
/// pgbench) pays one audit `write(2)` per transaction instead of two; the log lags what
/// clients saw by at most this much, which is also what a crash of jitgate may lose.
const RESULT_FLUSH_DELAY: Duration = Duration::from_millis(20);

/// Longest the end of a session waits for the rest of a server message the client is in
/// the middle of (see [`Relay::finish_message`]): a client reading a streaming result
/// takes it in microseconds. It is spent before the teardown closes the upstream, so it
/// is also how long a client that stops reading can keep its backend past the grant:
/// 100 ms leaves the teardown room inside the 200 ms we promise from deadline to backend
/// gone (BENCHMARKS.md), and stays well inside the backstop's grace.
const FINISH_LIMIT: Duration = Duration::from_millis(100);

/// More deferred outcomes than this (a pipelined burst) are written at once, so the
/// list and the one write that takes it stay small.
const MAX_DEFERRED: usize = 64;

/// A client read buffer larger than this is "large": the tracker copies what it keeps
/// past the batch out of it (see `Tracker::set_copy_retained`), and the buffer is
/// replaced by a fresh one after the batch, so no later batch lives in it. Smaller
/// buffers are left alone: what is kept from them pins at most this much.
const LARGE_INBUF: usize = 64 * 1024;

/// Capacity of the fresh client read buffer that replaces a large one.
const FRESH_INBUF: usize = 8 * 1024;

/// The server → client side of the relay: the read buffer (after a write cut short by
/// enforcement: what was not sent), where the server's stream stands, and the outcomes
/// read from it not yet handed on.
struct ServerSide {
    ubuf: BytesMut,
    scanner: BackendScanner,
    results: Vec<EventBody>,
}

/// Outcome events waiting to be written with the next statement's `query` events.
struct Deferred<'t> {
    events: Vec<Event>,
    /// Due [`RESULT_FLUSH_DELAY`] after `events` last became non-empty; created once per
    /// relay, reset only then, and polled only while `events` is not empty.
    timer: Pin<&'t mut Sleep>,
}

/// The write that carried `outcomes` deferred outcomes failed (out of line: logging
/// code is large, and this path is rare).
#[cold]
#[inline(never)]
fn outcomes_lost(error: &AuditError, outcomes: usize) {
    tracing::error!(error = %error, outcomes, "could not audit the outcome of a query");
}

impl Relay<'_> {
    /// Relays until the session ends, and says why. Whatever the reason, the outcomes
    /// seen so far are in the log (or their failure logged) when this returns.
    pub async fn run(&mut self, enforcer: &mut Enforcer) -> End {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut deferred = Deferred {
            events: Vec::new(),
            timer,
        };
        let mut server = ServerSide {
            ubuf: BytesMut::with_capacity(UPSTREAM_BUF),
            scanner: BackendScanner::default(),
            results: Vec::new(),
        };
        let end = self.relay(enforcer, &mut deferred, &mut server).await;
        if matches!(end, End::UpstreamIo(_)) {
            // The server may have answered, and closed, before the write that failed:
            // its last answers (a FATAL, what it skipped) are still to be read.
            self.drain_upstream(&mut server, &mut deferred).await;
        }
        if matches!(end, End::Expired | End::Revoked(_) | End::Shutdown) {
            // The client is told why next: first let it have the rest of the server
            // message it is in the middle of, if that comes at once.
            self.finish_message(&mut server, &mut deferred).await;
        }
        // Not raced against enforcement (it may have ended the session already); the
        // writer's stall timeout bounds it.
        self.write_deferred(&mut deferred.events).await;
        end
    }

    /// The relay loop; every `return` passes through `run`'s final write.
    async fn relay(
        &mut self,
        enforcer: &mut Enforcer,
        deferred: &mut Deferred<'_>,
        server: &mut ServerSide,
    ) -> End {
        let ServerSide {
            ubuf,
            scanner,
            results,
        } = server;
        let mut events: Vec<EventBody> = Vec::new();
        // A client may pipeline queries right behind its startup packet.
        if !self.client.inbuf.is_empty() {
            if let Err(end) = self.on_client_bytes(enforcer, &mut events, deferred).await {
                return end;
            }
        }
        loop {
            tokio::select! {
                biased;
                end = enforcer.wait() => return end,
                () = deferred.timer.as_mut(), if !deferred.events.is_empty() => {
                    if let Err(end) = self.flush_deferred(enforcer, deferred).await {
                        return end;
                    }
                }
                r = self.upstream.read_buf(ubuf) => {
                    match r {
                        Ok(0) => return End::UpstreamClosed,
                        Ok(_) => {}
                        Err(e) => return End::UpstreamIo(e),
                    }
                    if let Err(end) = self.on_upstream(enforcer, scanner, ubuf, results, deferred).await {
                        return end;
                    }
                    if self.waiting {
                        // The answers may have decided what the waiting Execute runs.
                        self.waiting = false;
                        if let Err(end) = self.on_client_bytes(enforcer, &mut events, deferred).await {
                            return end;
                        }
                    }
                }
                () = std::future::ready(()), if self.waiting && !self.tracker.in_flight() => {
                    // Nothing left to answer: the prediction is the server's state.
                    self.waiting = false;
                    if let Err(end) = self.on_client_bytes(enforcer, &mut events, deferred).await {
                        return end;
                    }
                }
                r = self.client.stream.read_buf(&mut self.client.inbuf), if !self.waiting => {
                    match r {
                        Ok(0) => return End::ClientQuit { clean: false },
                        Ok(_) => {}
                        Err(e) => return End::ClientIo(e),
                    }
                    if let Err(end) = self.on_client_bytes(enforcer, &mut events, deferred).await {
                        return end;
                    }
                }
            }
        }
    }
}

mod client;
mod refused;
mod server;
