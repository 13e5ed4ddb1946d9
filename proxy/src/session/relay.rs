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

    /// Server bytes: forward them and keep the outcomes they carry — also when the
    /// session ends while forwarding (the server did answer) — writing the outcomes at
    /// once when too many wait.
    async fn on_upstream(
        &mut self,
        enforcer: &mut Enforcer,
        scanner: &mut BackendScanner,
        ubuf: &mut BytesMut,
        results: &mut Vec<EventBody>,
        deferred: &mut Deferred<'_>,
    ) -> Result<(), End> {
        let forwarded = self
            .on_upstream_bytes(enforcer, scanner, ubuf, results)
            .await;
        self.defer(results, deferred);
        // After an `End` the enforcer must not be polled again: return before any write.
        forwarded?;
        if deferred.events.len() > MAX_DEFERRED {
            self.flush_deferred(enforcer, deferred).await?;
        }
        Ok(())
    }

    /// Before the final error: sends the client what enforcement cut off of the last
    /// server chunk, then the rest of the server message the stream is in the middle of
    /// (a large result is relayed in chunks that end anywhere) and not a byte past it,
    /// so the error lands between two messages. Bounded by [`FINISH_LIMIT`]: a client
    /// that does not read, or a server that does not send, leaves the stream as it is,
    /// and the client is then closed without the error. At a boundary with nothing
    /// unsent (the common case) it does nothing.
    async fn finish_message(&mut self, server: &mut ServerSide, deferred: &mut Deferred<'_>) {
        let ServerSide {
            ubuf,
            scanner,
            results,
        } = server;
        if ubuf.is_empty() && scanner.at_boundary() {
            return;
        }
        let until = Instant::now() + FINISH_LIMIT;
        let finish = async {
            loop {
                if !ubuf.is_empty() {
                    self.client
                        .write_relayed(ubuf, scanner.at_boundary())
                        .await?;
                }
                if scanner.at_boundary() {
                    return Ok::<(), std::io::Error>(());
                }
                let need = u64::try_from(scanner.needed()).unwrap_or(u64::MAX);
                ubuf.clear();
                if (&mut *self.upstream).take(need).read_buf(ubuf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.scan(scanner, ubuf, results)
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            }
        };
        match tokio::time::timeout_at(until, finish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "could not finish the server message before ending the session"),
            Err(_) => tracing::debug!("the server message was not finished in time; ending the session without telling the client"),
        }
        ubuf.clear();
        self.defer(results, deferred);
    }

    /// After the upstream connection failed: reads what the server sent before it went
    /// (a write to a server that has closed fails while its last answers are still
    /// unread), so the tracker learns how the statements ended, and passes it on to the
    /// client. Bounded by [`FINISH_LIMIT`]; stops at the end of the stream or an error.
    async fn drain_upstream(&mut self, server: &mut ServerSide, deferred: &mut Deferred<'_>) {
        let until = Instant::now() + FINISH_LIMIT;
        let mut client_open = true;
        loop {
            server.ubuf.clear();
            match tokio::time::timeout_at(until, self.upstream.read_buf(&mut server.ubuf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
            let ServerSide {
                ubuf,
                scanner,
                results,
            } = server;
            if self.scan(scanner, ubuf, results).is_err() {
                break;
            }
            if client_open {
                let at_boundary = scanner.at_boundary();
                let sent =
                    tokio::time::timeout_at(until, self.client.write_relayed(ubuf, at_boundary))
                        .await;
                // The answers still count for the audit when the client is gone.
                client_open = matches!(sent, Ok(Ok(())));
            }
        }
        server.ubuf.clear();
        self.defer(&mut server.results, deferred);
    }

    /// Keeps outcomes for the next write, stamped now; arms the timer when they are the
    /// first to wait.
    fn defer(&self, results: &mut Vec<EventBody>, deferred: &mut Deferred<'_>) {
        if results.is_empty() {
            return;
        }
        if deferred.events.is_empty() {
            deferred
                .timer
                .as_mut()
                .reset(Instant::now() + RESULT_FLUSH_DELAY);
        }
        let meta = self.meta;
        deferred
            .events
            .extend(results.drain(..).map(|body| meta.event(body)));
    }

    /// Writes the deferred outcomes on their own (timer, or too many), unless enforcement
    /// ends the session first: then what was not handed to the writer stays for `run`.
    async fn flush_deferred(
        &mut self,
        enforcer: &mut Enforcer,
        deferred: &mut Deferred<'_>,
    ) -> Result<(), End> {
        guarded!(enforcer, self.write_deferred(&mut deferred.events))
    }

    /// Writes `events` (outcomes only). The queries are in the log already; if their
    /// outcomes cannot be written the next statement will be refused, so the session
    /// need not end here.
    async fn write_deferred(&self, events: &mut Vec<Event>) {
        if let Err(e) = self.audit.write_batch(events).await {
            tracing::error!(error = %e, "could not audit the outcome of a query");
        }
    }

    /// Feeds server bytes to the scanner: the tracker learns what closes queries (into
    /// `results`), the refusal state the transaction status.
    fn scan(
        &mut self,
        scanner: &mut BackendScanner,
        ubuf: &[u8],
        results: &mut Vec<EventBody>,
    ) -> Result<(), BadLength> {
        let tracker = &mut *self.tracker;
        let tx_status = &mut self.refusal.tx_status;
        scanner.feed(ubuf, |m| match m.body {
            Some(body) => {
                if m.tag == tags::READY_FOR_QUERY {
                    if let Some(&status) = body.first() {
                        *tx_status = status;
                    }
                }
                tracker.on_server(m.tag, body, results)
            }
            None => tracker.on_server_header(m.tag, m.len, results),
        })
    }

    /// Server bytes: note what closes queries (into `results`), forward the chunk.
    async fn on_upstream_bytes(
        &mut self,
        enforcer: &mut Enforcer,
        scanner: &mut BackendScanner,
        ubuf: &mut BytesMut,
        results: &mut Vec<EventBody>,
    ) -> Result<(), End> {
        self.scan(scanner, ubuf, results).map_err(|bad| {
            End::UpstreamProtocol(format!("invalid message length {} from the server", bad.0))
        })?;
        let client = &mut *self.client;
        let at_boundary = scanner.at_boundary();
        // Cut short by enforcement, `ubuf` keeps what was not sent (see `finish_message`).
        guarded!(enforcer, client.write_relayed(ubuf, at_boundary))?.map_err(End::ClientIo)?;
        ubuf.clear();
        if ubuf.capacity() > 4 * 1024 * 1024 {
            // Give back memory after a large result.
            *ubuf = BytesMut::with_capacity(UPSTREAM_BUF);
        }
        Ok(())
    }

    /// Client bytes: audit every whole message that runs a query, then forward them.
    async fn on_client_bytes(
        &mut self,
        enforcer: &mut Enforcer,
        events: &mut Vec<EventBody>,
        deferred: &mut Deferred<'_>,
    ) -> Result<(), End> {
        let inbuf = &mut self.client.inbuf;
        let mut consumed = 0;
        let mut quit = false;
        // Reused across batches: (tag, body start, frame end) of each whole frame.
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        while let Some(header) =
            peek_header(&inbuf[consumed..], self.max_message_len).map_err(End::ClientProtocol)?
        {
            if inbuf.len() - consumed < header.len {
                inbuf.reserve(header.len - (inbuf.len() - consumed));
                break;
            }
            frames.push((header.tag, consumed + 5, consumed + header.len));
            consumed += header.len;
            if header.tag == tags::TERMINATE {
                quit = true;
                break;
            }
        }
        if consumed == 0 {
            self.frames = frames;
            return Ok(());
        }
        let result = self
            .on_client_frames(enforcer, events, deferred, &mut frames, consumed, quit)
            .await;
        self.frames = frames;
        result
    }

    /// The whole frames at the front of the client buffer: audit, then forward (or refuse).
    /// A large read buffer is left behind (see [`LARGE_INBUF`]).
    async fn on_client_frames(
        &mut self,
        enforcer: &mut Enforcer,
        events: &mut Vec<EventBody>,
        deferred: &mut Deferred<'_>,
        frames: &mut Vec<(u8, usize, usize)>,
        consumed: usize,
        quit: bool,
    ) -> Result<(), End> {
        let inbuf = &mut self.client.inbuf;
        let large = inbuf.capacity() > LARGE_INBUF;
        let mut chunk = inbuf.split_to(consumed).freeze();
        if quit && inbuf.has_remaining() {
            inbuf.clear();
        }
        if large {
            // The rest (part of a message at most) moves to a fresh buffer: the large one
            // is freed once this batch and what is in flight from it are done.
            let mut fresh = BytesMut::with_capacity(FRESH_INBUF.max(inbuf.len()));
            fresh.extend_from_slice(inbuf);
            *inbuf = fresh;
        }
        self.tracker.set_copy_retained(large);
        if self.refusal.discarding {
            // Out of line (boxed): a refused group is rare, the path below is not.
            if Box::pin(self.discard_refused(enforcer, &mut chunk, frames)).await? {
                return Ok(());
            }
        }
        // Audited and forwarded in slices: the events of one slice come to at most about
        // `max_audit_batch_bytes`, so a huge pipelined batch never has all its events in
        // memory at once.
        let mut from = 0;
        loop {
            let mark = self.tracker.mark();
            let mut budget = AuditBudget::new(self.max_audit_batch_bytes);
            // Frames the server would ignore (left out: `None`) or must get in another
            // form (a refusal's substitute), where an Execute must wait, and where the
            // slice ends.
            let mut edits: Vec<(usize, Option<bytes::Bytes>)> = Vec::new();
            let mut stop = frames.len();
            let mut to = frames.len();
            for (i, &(tag, start, end)) in frames.iter().enumerate().skip(from) {
                let before = events.len();
                let step = match self.tracker.on_client(tag, chunk.slice(start..end), events) {
                    Ok(step) => step,
                    Err(e) => {
                        // Nothing of this slice is forwarded, so nothing of it is recorded.
                        self.tracker.rollback(mark);
                        events.clear();
                        return Err(match e {
                            Halt::Protocol(e) => End::ClientProtocol(e),
                            Halt::Limit(limit) => End::Limit(limit),
                            Halt::Unfollowed => End::Unfollowed,
                        });
                    }
                };
                match step {
                    Step::Forward => {}
                    Step::Drop => edits.push((i, None)),
                    Step::Replace(frame) => edits.push((i, Some(frame))),
                    Step::Wait => {
                        stop = i;
                        to = i;
                        break;
                    }
                }
                if budget.add(&events[before..]) && i + 1 < frames.len() {
                    to = i + 1;
                    break;
                }
            }
            let mut quit = quit && to == frames.len();
            if stop < frames.len() {
                self.hold_back(&mut chunk, frames, stop);
                quit = false;
            }
            if let Err(e) = self.write_queries(enforcer, events, deferred).await? {
                self.tracker.rollback(mark);
                // Out of line (boxed), as the refused group above.
                return Box::pin(self.refuse_batch(enforcer, &frames[from..], e)).await;
            }
            // The clock, not only the timer: nothing is forwarded past the grant. Asked
            // once the statements are in the log, since the write may take a while:
            // statements that came after the deadline are then in the log, recorded as
            // never run.
            if let Some(end) = enforcer.due() {
                self.abandon(mark, deferred);
                return Err(end);
            }
            // The slice's bytes: from its first frame to its last, or to the end of what
            // is left of the chunk. The client's Terminate stays here: the session's end
            // decides whether the upstream connection is closed (Terminate) or reset and
            // parked for reuse.
            let begin = frames.get(from).map_or(chunk.len(), |f| f.1 - 5);
            let upto = match (quit, frames.last()) {
                (true, Some(&(_, body_start, _))) => body_start - 5,
                _ if to < frames.len() => frames[to].1 - 5,
                _ => chunk.len(),
            };
            if edits.is_empty() && !self.waiting {
                if upto > begin {
                    let upstream = &mut *self.upstream;
                    guarded!(enforcer, write_flush(upstream, &chunk[begin..upto]))?
                        .map_err(End::UpstreamIo)?;
                }
            } else {
                let out = self.edited(&chunk, frames, &edits, begin, upto);
                let upstream = &mut *self.upstream;
                guarded!(enforcer, write_flush(upstream, &out))?.map_err(End::UpstreamIo)?;
            }
            if quit {
                return Err(End::ClientQuit { clean: true });
            }
            if to >= frames.len() {
                return Ok(());
            }
            from = to;
        }
    }

    /// Still inside a refused extended group: answers the messages up to its Sync for
    /// the server, and leaves `chunk` and `frames` with what follows. True when nothing
    /// follows.
    async fn discard_refused(
        &mut self,
        enforcer: &mut Enforcer,
        chunk: &mut bytes::Bytes,
        frames: &mut Vec<(u8, usize, usize)>,
    ) -> Result<bool, End> {
        let upto = frames
            .iter()
            .position(|f| f.0 == tags::SYNC)
            .map_or(frames.len(), |i| i + 1);
        let error = refuse::audit_unavailable("an earlier message of this group was refused");
        self.answer_refused(enforcer, frames[..upto].iter().map(|f| f.0), &error)
            .await?;
        if upto == frames.len() {
            return Ok(true);
        }
        let offset = frames[upto].1 - 5;
        *chunk = chunk.slice(offset..);
        frames.drain(..upto);
        for f in frames.iter_mut() {
            f.1 -= offset;
            f.2 -= offset;
        }
        Ok(false)
    }

    /// An Execute must wait (see [`Step::Wait`]): it and what follows it go back in
    /// front of the client buffer.
    #[cold]
    #[inline(never)]
    fn hold_back(
        &mut self,
        chunk: &mut bytes::Bytes,
        frames: &mut Vec<(u8, usize, usize)>,
        stop: usize,
    ) {
        let offset = frames[stop].1 - 5;
        let inbuf = &mut self.client.inbuf;
        let mut held = BytesMut::with_capacity(chunk.len() - offset + inbuf.len());
        held.extend_from_slice(&chunk[offset..]);
        held.extend_from_slice(inbuf);
        *inbuf = held;
        chunk.truncate(offset);
        frames.truncate(stop);
        self.waiting = true;
    }

    /// The grant ended while the audit log took the slice's statements: they are in the
    /// log, and are recorded as never run.
    #[cold]
    #[inline(never)]
    fn abandon(&mut self, mark: Mark, deferred: &mut Deferred<'_>) {
        let mut skipped = Vec::new();
        self.tracker.abandon(mark, &mut skipped);
        self.defer(&mut skipped, deferred);
    }

    /// The bytes of `chunk[begin..upto]` as the server must get them: frames it would
    /// ignore left out, refused ones replaced, and — when an Execute waits — a Flush of
    /// our own behind them.
    #[inline(never)]
    fn edited(
        &mut self,
        chunk: &[u8],
        frames: &[(u8, usize, usize)],
        edits: &[(usize, Option<bytes::Bytes>)],
        begin: usize,
        upto: usize,
    ) -> BytesMut {
        let mut out = BytesMut::with_capacity(upto - begin + tags::FLUSH_MESSAGE.len());
        let mut at = begin;
        for (i, replacement) in edits {
            let (_, body_start, end) = frames[*i];
            out.extend_from_slice(&chunk[at..body_start - 5]);
            if let Some(frame) = replacement {
                out.extend_from_slice(frame);
            }
            at = end;
        }
        out.extend_from_slice(&chunk[at..upto]);
        if self.waiting {
            // Have the server send the answers the waiting Execute needs now, not at the
            // client's next Sync (which is behind the Execute).
            out.extend_from_slice(&tags::FLUSH_MESSAGE);
            self.tracker.flush_sent();
        }
        out
    }

    /// Writes the batch's events (its `query` events) behind the deferred outcomes, in one
    /// write; the batch may be forwarded only when this is `Ok(Ok(()))`. A batch without
    /// events leaves the outcomes waiting. The outcomes are gone either way (written, or
    /// refused with the queries: the log is failing).
    async fn write_queries(
        &mut self,
        enforcer: &mut Enforcer,
        events: &mut Vec<EventBody>,
        deferred: &mut Deferred<'_>,
    ) -> Result<Result<(), AuditError>, End> {
        if events.is_empty() {
            return Ok(Ok(()));
        }
        let outcomes = deferred.events.len();
        let meta = self.meta;
        deferred
            .events
            .extend(events.drain(..).map(|body| meta.event(body)));
        match guarded!(enforcer, self.audit.write_batch(&mut deferred.events)) {
            Ok(Ok(_)) => Ok(Ok(())),
            Ok(Err(e)) => {
                if outcomes > 0 {
                    outcomes_lost(&e, outcomes);
                }
                Ok(Err(e))
            }
            Err(end) => {
                // Not handed to the writer: the statements will not run, so only the
                // outcomes are left for `run` to write.
                deferred.events.truncate(outcomes);
                Err(end)
            }
        }
    }

    /// The audit log refused this batch: it is not forwarded; the client is told, or —
    /// inside a transaction, or while earlier statements are still being answered — the
    /// session ends (see `refuse`).
    async fn refuse_batch(
        &mut self,
        enforcer: &mut Enforcer,
        frames: &[(u8, usize, usize)],
        error: AuditError,
    ) -> Result<(), End> {
        if self.refusal.tx_status != tags::TX_IDLE && self.refusal.tx_status != tags::TX_FAILED {
            return Err(End::Audit(error));
        }
        if self.tracker.in_flight() {
            // A pipelining client: earlier statements are still being answered, and an
            // answer of ours now would reach it before theirs (and be taken for theirs).
            return Err(End::Audit(error));
        }
        tracing::error!(error = %error, "audit log unavailable: refusing the client's statements");
        let pg_error = refuse::audit_unavailable(&error.to_string());
        self.answer_refused(enforcer, frames.iter().map(|f| f.0), &pg_error)
            .await
    }

    /// Answers refused messages in the server's stead (`refuse::respond`) and sends the
    /// answers to the client; a Terminate among them ends the session.
    async fn answer_refused(
        &mut self,
        enforcer: &mut Enforcer,
        frame_tags: impl Iterator<Item = u8>,
        error: &PgError,
    ) -> Result<(), End> {
        let mut out = BytesMut::new();
        let quit = refuse::respond(&mut self.refusal, frame_tags, error, &mut out);
        let client = &mut *self.client;
        guarded!(enforcer, client.write_own(&out))?.map_err(End::ClientIo)?;
        if quit {
            return Err(End::ClientQuit { clean: true });
        }
        Ok(())
    }
}
