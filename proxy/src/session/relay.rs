//! The relay loop of an admitted session, and the enforcement of its grant.
//!
//! One task per session `select!`s over: the shutdown token, the grant's control channel
//! (revocation, moved deadline), a timer at the grant's absolute deadline, upstream input
//! and client input. Every client batch is decoded just enough to audit it; its `query`
//! events are acknowledged by the audit writer *before* the bytes go upstream. Server
//! bytes are scanned header by header and forwarded in whole chunks, one write per read.
//! Every write is itself raced against enforcement, so a slow peer cannot hold a session
//! past its grant.

use bytes::{Buf, BytesMut};
use jitgate_audit::{AuditError, AuditWriter, EventBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::ClientConn;
use super::enforce::Enforcer;
use super::meta::SessionMeta;
use super::refuse::{self, RefusalState};
use super::scan::BackendScanner;
use super::stream::UpstreamStream;
use super::tracker::Tracker;
use crate::error::ProtocolError;
use crate::protocol::frame::peek_header;
use crate::protocol::tags;
use crate::registry::Revocation;

/// Why the relay stopped.
#[derive(Debug)]
pub enum End {
    /// The client sent Terminate (`clean`) or closed its socket.
    ClientQuit {
        clean: bool,
    },
    Expired,
    Revoked(Revocation),
    UpstreamClosed,
    Shutdown,
    /// The client broke the protocol.
    ClientProtocol(ProtocolError),
    /// The upstream sent something that is not the protocol.
    UpstreamProtocol(String),
    /// The audit log could not take a `query` event: nothing was forwarded.
    Audit(AuditError),
    ClientIo(std::io::Error),
    UpstreamIo(std::io::Error),
}

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
    /// Transaction status and refusal state (fail closed when the audit log fails).
    pub refusal: RefusalState,
    /// Frame positions of the current client batch (kept to reuse its allocation).
    pub frames: Vec<(u8, usize, usize)>,
}

/// Initial capacity of the server → client buffer; it grows with large reads and is
/// reused across reads.
const UPSTREAM_BUF: usize = 16 * 1024;

impl Relay<'_> {
    /// Relays until the session ends, and says why.
    pub async fn run(&mut self, enforcer: &mut Enforcer) -> End {
        let mut ubuf = BytesMut::with_capacity(UPSTREAM_BUF);
        let mut scanner = BackendScanner::default();
        let mut results: Vec<EventBody> = Vec::new();
        let mut events: Vec<EventBody> = Vec::new();
        // A client may pipeline queries right behind its startup packet.
        if !self.client.inbuf.is_empty() {
            if let Err(end) = self.on_client_bytes(enforcer, &mut events).await {
                return end;
            }
        }
        loop {
            tokio::select! {
                biased;
                end = enforcer.wait() => return end,
                r = self.upstream.read_buf(&mut ubuf) => {
                    match r {
                        Ok(0) => return End::UpstreamClosed,
                        Ok(_) => {}
                        Err(e) => return End::UpstreamIo(e),
                    }
                    if let Err(end) = self.on_upstream_bytes(enforcer, &mut scanner, &mut ubuf, &mut results).await {
                        return end;
                    }
                }
                r = self.client.stream.read_buf(&mut self.client.inbuf) => {
                    match r {
                        Ok(0) => return End::ClientQuit { clean: false },
                        Ok(_) => {}
                        Err(e) => return End::ClientIo(e),
                    }
                    if let Err(end) = self.on_client_bytes(enforcer, &mut events).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Server bytes: note what closes queries, forward the chunk, audit the outcomes.
    async fn on_upstream_bytes(
        &mut self,
        enforcer: &mut Enforcer,
        scanner: &mut BackendScanner,
        ubuf: &mut BytesMut,
        results: &mut Vec<EventBody>,
    ) -> Result<(), End> {
        let tracker = &mut *self.tracker;
        let tx_status = &mut self.refusal.tx_status;
        scanner
            .feed(ubuf, |m| match m.body {
                Some(body) => {
                    if m.tag == tags::READY_FOR_QUERY {
                        if let Some(&status) = body.first() {
                            *tx_status = status;
                        }
                    }
                    tracker.on_server(m.tag, body, results)
                }
                None => tracker.on_server_data(m.len),
            })
            .map_err(|bad| {
                End::UpstreamProtocol(format!("invalid message length {} from the server", bad.0))
            })?;
        let stream = &mut self.client.stream;
        guarded!(enforcer, write_flush(stream, ubuf))?.map_err(End::ClientIo)?;
        ubuf.clear();
        if ubuf.capacity() > 4 * 1024 * 1024 {
            // Give back memory after a large result.
            *ubuf = BytesMut::with_capacity(UPSTREAM_BUF);
        }
        for body in results.drain(..) {
            let event = self.meta.event(body);
            // The query itself is in the log already; if its outcome cannot be written
            // the next statement will be refused, so the session need not end here.
            if let Err(e) = guarded!(enforcer, self.audit.write(event))? {
                tracing::error!(error = %e, "could not audit the outcome of a query");
            }
        }
        Ok(())
    }

    /// Client bytes: audit every whole message that runs a query, then forward them.
    async fn on_client_bytes(
        &mut self,
        enforcer: &mut Enforcer,
        events: &mut Vec<EventBody>,
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
            .on_client_frames(enforcer, events, &mut frames, consumed, quit)
            .await;
        self.frames = frames;
        result
    }

    /// The whole frames at the front of the client buffer: audit, then forward (or refuse).
    async fn on_client_frames(
        &mut self,
        enforcer: &mut Enforcer,
        events: &mut Vec<EventBody>,
        frames: &mut Vec<(u8, usize, usize)>,
        consumed: usize,
        quit: bool,
    ) -> Result<(), End> {
        let inbuf = &mut self.client.inbuf;
        let mut chunk = inbuf.split_to(consumed).freeze();
        if quit && inbuf.has_remaining() {
            inbuf.clear();
        }
        if self.refusal.discarding {
            // Still inside a refused extended group: drop messages up to its Sync.
            let upto = frames
                .iter()
                .position(|f| f.0 == tags::SYNC)
                .map_or(frames.len(), |i| i + 1);
            let error = refuse::audit_unavailable("an earlier message of this group was refused");
            let mut out = BytesMut::new();
            let quit_now = refuse::respond(
                &mut self.refusal,
                frames[..upto].iter().map(|f| f.0),
                &error,
                &mut out,
            );
            let stream = &mut self.client.stream;
            guarded!(enforcer, write_flush(stream, &out))?.map_err(End::ClientIo)?;
            if quit_now {
                return Err(End::ClientQuit { clean: true });
            }
            if upto == frames.len() {
                return Ok(());
            }
            let offset = frames[upto].1 - 5;
            chunk = chunk.slice(offset..);
            frames.drain(..upto);
            for f in frames.iter_mut() {
                f.1 -= offset;
                f.2 -= offset;
            }
        }
        let mark = self.tracker.mark();
        for &(tag, start, end) in frames.iter() {
            if let Some(event) = self
                .tracker
                .on_client(tag, chunk.slice(start..end))
                .map_err(End::ClientProtocol)?
            {
                events.push(event);
            }
        }
        let mut failure = None;
        for body in events.drain(..) {
            if failure.is_some() {
                continue;
            }
            let event = self.meta.event(body);
            if let Err(e) = guarded!(enforcer, self.audit.write(event))? {
                failure = Some(e);
            }
        }
        if let Some(e) = failure {
            self.tracker.rollback(mark);
            return self.refuse_batch(enforcer, frames, e).await;
        }
        let upstream = &mut *self.upstream;
        guarded!(enforcer, write_flush(upstream, &chunk))?.map_err(End::UpstreamIo)?;
        if quit {
            return Err(End::ClientQuit { clean: true });
        }
        Ok(())
    }

    /// The audit log refused this batch: it is not forwarded; the client is told, or —
    /// inside a transaction — the session ends (see `refuse`).
    async fn refuse_batch(
        &mut self,
        enforcer: &mut Enforcer,
        frames: &[(u8, usize, usize)],
        error: AuditError,
    ) -> Result<(), End> {
        if self.refusal.tx_status != tags::TX_IDLE && self.refusal.tx_status != tags::TX_FAILED {
            return Err(End::Audit(error));
        }
        tracing::error!(error = %error, "audit log unavailable: refusing the client's statements");
        let pg_error = refuse::audit_unavailable(&error.to_string());
        let mut out = BytesMut::new();
        let quit = refuse::respond(
            &mut self.refusal,
            frames.iter().map(|f| f.0),
            &pg_error,
            &mut out,
        );
        let stream = &mut self.client.stream;
        guarded!(enforcer, write_flush(stream, &out))?.map_err(End::ClientIo)?;
        if quit {
            return Err(End::ClientQuit { clean: true });
        }
        Ok(())
    }
}
