//! The server → client side of the relay: server bytes scanned header by header and
//! forwarded in whole chunks, the outcomes they complete deferred and written with the
//! next statement's events, and a message cut by enforcement finished first.

use super::*;

impl Relay<'_> {
    /// Server bytes: forward them and keep the outcomes they carry — also when the
    /// session ends while forwarding (the server did answer) — writing the outcomes at
    /// once when too many wait.
    pub(super) async fn on_upstream(
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
    pub(super) async fn finish_message(
        &mut self,
        server: &mut ServerSide,
        deferred: &mut Deferred<'_>,
    ) {
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
    pub(super) async fn drain_upstream(
        &mut self,
        server: &mut ServerSide,
        deferred: &mut Deferred<'_>,
    ) {
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
    pub(super) fn defer(&self, results: &mut Vec<EventBody>, deferred: &mut Deferred<'_>) {
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
    pub(super) async fn flush_deferred(
        &mut self,
        enforcer: &mut Enforcer,
        deferred: &mut Deferred<'_>,
    ) -> Result<(), End> {
        guarded!(enforcer, self.write_deferred(&mut deferred.events))
    }

    /// Writes `events` (outcomes only). The queries are in the log already; if their
    /// outcomes cannot be written the next statement will be refused, so the session
    /// need not end here.
    pub(super) async fn write_deferred(&self, events: &mut Vec<Event>) {
        if let Err(e) = self.audit.write_batch(events).await {
            tracing::error!(error = %e, "could not audit the outcome of a query");
        }
    }

    /// Feeds server bytes to the scanner: the tracker learns what closes queries (into
    /// `results`), the refusal state the transaction status.
    pub(super) fn scan(
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
    pub(super) async fn on_upstream_bytes(
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
}
